package raftnet

import (
	"github.com/hashicorp/raft"
)

// Early appends: the leader sends new entries to the followers while it
// writes them to its own log, as etcd's raft does, instead of after.
//
// hashicorp/raft's leader writes new entries to its log store (raft-wal:
// one fsync) and only then wakes the replication goroutines, whose
// AppendEntries a follower answers after its own write.
// A commit is two log writes in series. Raft allows the leader to write
// its log in parallel with replicating (Ongaro's thesis, 10.2.1), as long
// as it counts itself towards the commit only once its own write is
// durable, which hashicorp/raft's dispatchLogs does (commitment.match runs
// after StoreLogs). So the leader's log store, earlyStore, first hands the
// entries to CommitNotices.appendEarly, which sends each caught-up follower
// an AppendEntries with them, and then writes them itself. The follower
// writes and acknowledges as for any AppendEntries: the commit takes about
// one log write plus a round trip instead of two writes.
//
// Raft's replication goroutine then builds its own AppendEntries of the
// same entries. The transport answers it without sending it (see answer)
// when the early append's acknowledgement already proves what its success
// would, and waits for that acknowledgement when the early append is still
// in flight. A write then costs each follower one AppendEntries with
// entries, not two (Raft's own copy used to reach the follower, which found
// the entries in its log and skipped them), and the leader counts the
// follower towards the commit as soon as the early append is acknowledged,
// not one more round trip later.
//
// Safety. An early append is an AppendEntries of the leader of term T,
// carrying entries of term T at the indexes the leader just gave them:
//   - It is sent only while this node is the leader of term T, only to a
//     follower whose log the last successful AppendEntries of term T
//     proved to match the leader's through the entry just before them
//     (PrevLogEntry, PrevLogTerm), and the follower checks both again.
//   - It carries no commit index (LeaderCommitIndex 0): it never makes a
//     follower commit or apply anything. Commits still reach followers
//     only through Raft's own AppendEntries and the commit notices.
//   - Only command entries go early. Configuration changes, barriers and
//     no-ops take Raft's own path.
//   - If the leader's own write fails, it steps down (hashicorp/raft) and
//     the entries are uncommitted entries of term T on some followers: a
//     later leader keeps or overwrites them, as for any leader that fails
//     between replicating and committing. A writer whose Apply failed may
//     thus see its command take effect later, as Raft allows for any
//     leader failure.
//
// Safety of answering Raft's own AppendEntries. A successful
// AppendEntries of term T whose entries end at index L proves that the
// follower's log matched the leader's through L when it answered (the
// follower checked PrevLogEntry/PrevLogTerm and stored the entries). Within
// term T only this leader sends entries, and it never changes an entry it
// has, so the match through L holds for the rest of T; a follower that
// restarts keeps its log (fsync). A follower that lost its log anyway (its
// data directory wiped, Raft's own hazard) refuses the next AppendEntries
// or notice it is sent, and that refusal withdraws every proof of it
// (observe), so none is used again until Raft proves a match anew. Raft's
// own request of term T for entries ending at or before L would therefore
// succeed, and its only effects on the leader are the ones answer reports: success in term T, so next index and
// match index move to its last entry. That is what Raft itself does with a
// success (raft.updateLastAppended), from a proof Raft's own RPC would have
// given, so commitment counts only what the follower has durably stored.
// What the follower does not receive is the request's LeaderCommitIndex:
// the commit notices (below) and Raft's own AppendEntries without entries
// (sent every CommitTimeout and never answered here) tell it the commit
// index. Requests without entries, of another term, or reaching beyond the
// proven match are always sent.
//
// An early append is best effort: if it fails or is not sent, Raft's own
// AppendEntries carries the entries as before.

// earlyStore is the Raft log store of a coordinator: on the leader, new
// entries go to the followers as they are written here.
type earlyStore struct {
	raft.LogStore
	notices *CommitNotices
}

func (s earlyStore) StoreLogs(logs []*raft.Log) error {
	s.notices.appendEarly(logs)
	if err := s.LogStore.StoreLogs(logs); err != nil {
		return err
	}
	s.notices.stored(logs)
	return nil
}

func (s earlyStore) StoreLog(l *raft.Log) error {
	return s.StoreLogs([]*raft.Log{l})
}

// IsMonotonic passes on the wrapped store's raft.MonotonicLogStore answer,
// which the embedded interface would hide: raft-wal accepts no gap between
// entries, so after installing a snapshot Raft must delete the whole log
// (not keep trailing entries before the gap) or the follower's next
// append fails.
func (s earlyStore) IsMonotonic() bool {
	m, ok := s.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

var _ raft.MonotonicLogStore = earlyStore{}

// appendEarly sends logs to every caught-up follower, if this node leads
// in the logs' term. It returns at once, reporting whether it sent any;
// the sends run in goroutines, at most one per follower.
func (n *CommitNotices) appendEarly(logs []*raft.Log) (sent bool) {
	if len(logs) == 0 {
		return false
	}
	for _, l := range logs {
		if l.Type != raft.LogCommand {
			return false
		}
	}
	first, last := logs[0], logs[len(logs)-1]
	n.mu.Lock()
	defer n.mu.Unlock()
	// A follower's StoreLogs runs while it follows; only the leader's
	// dispatch writes entries of the current term while leading.
	if n.raft == nil || n.raft.State() != raft.Leader || n.raft.CurrentTerm() != last.Term {
		return false
	}
	for id, p := range n.peers {
		if p.term != last.Term || p.match+1 != first.Index || p.early != nil {
			continue
		}
		call := &earlyCall{term: last.Term, last: last.Index, done: make(chan struct{})}
		p.early = call
		req := raft.AppendEntriesRequest{
			RPCHeader: p.header, Term: p.term, Leader: p.leader,
			PrevLogEntry: p.match, PrevLogTerm: p.logTerm, Entries: logs,
		}
		addr := p.addr
		started := n.spawn(func() {
			var resp raft.AppendEntriesResponse
			err := n.trans.AppendEntries(id, addr, &req, &resp)
			n.mu.Lock()
			p.early = nil
			n.mu.Unlock()
			var notice *noticePeer
			if err == nil {
				if resp.Success {
					n.early.Add(1)
				}
				notice = n.note(id, addr, &req, &resp, true)
			}
			close(call.done) // after the answer is recorded: see answer
			if notice != nil {
				// The acknowledgement may have made the entries committed:
				// tell the follower from here rather than from a new
				// goroutine, which would wait behind the replication
				// goroutine just woken by done.
				n.send(id, notice)
			}
		})
		if !started {
			// Stopping: nothing was sent, and Raft's own AppendEntries must
			// not wait for it (see answer).
			p.early = nil
			close(call.done)
			continue
		}
		sent = true
	}
	return sent
}

// earlyCall is an early append in flight to one follower.
type earlyCall struct {
	term, last uint64        // its term and the index of its last entry
	done       chan struct{} // closed once its answer is recorded
}

// answer answers Raft's own AppendEntries args to follower id without
// sending it, when what its success would prove is already proven: in the
// request's term, the follower's log matches the leader's through the
// request's last entry. If an early append that would prove it is in
// flight, answer waits for it first. It reports whether resp holds the
// answer; if not, the request must be sent.
func (n *CommitNotices) answer(id raft.ServerID, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) bool {
	k := len(args.Entries)
	if k == 0 {
		return false // heartbeats and Raft's own commit-index updates go out
	}
	last := args.Entries[k-1].Index
	n.mu.Lock()
	defer n.mu.Unlock()
	for {
		p := n.peers[id]
		if p == nil || p.term != args.Term {
			return false
		}
		if p.match >= last {
			*resp = raft.AppendEntriesResponse{RPCHeader: p.reply, Term: args.Term, LastLog: p.match, Success: true}
			n.answered.Add(1)
			return true
		}
		c := p.early
		if c == nil || c.term != args.Term || c.last < last {
			return false
		}
		// The early append of these entries is in flight: its answer
		// comes sooner than a second request's would.
		n.mu.Unlock()
		<-c.done
		n.mu.Lock()
	}
}
