package raftnet

import (
	"github.com/hashicorp/raft"
)

// Early appends: the leader sends new entries to the followers while it
// writes them to its own log, as etcd's raft does, instead of after.
//
// hashicorp/raft's leader writes new entries to its log store (raft-wal:
// one fdatasync) and only then wakes the replication goroutines, whose
// AppendEntries a follower answers after its own write.
// A commit is two log writes in series. Raft allows the leader to write
// its log in parallel with replicating (Ongaro's thesis, 10.2.1), as long
// as it counts itself towards the commit only once its own write is
// durable, which hashicorp/raft's dispatchLogs does (commitment.match runs
// after StoreLogs). So the leader's log store, earlyStore, first hands the
// entries to CommitNotices.appendEarly, which sends each caught-up follower
// an AppendEntries with them, and then writes them itself. The follower
// writes and acknowledges as for any AppendEntries. When Raft's own
// AppendEntries with the same entries arrives, the follower finds them in
// its log (same index, same term) and skips them (appendEntries: "skip any
// duplicates"), so it answers without a write: the commit takes about one
// log write plus a round trip instead of two writes.
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
	return s.LogStore.StoreLogs(logs)
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
// in the logs' term. It returns at once; the sends run in goroutines, at
// most one per follower.
func (n *CommitNotices) appendEarly(logs []*raft.Log) {
	if len(logs) == 0 {
		return
	}
	for _, l := range logs {
		if l.Type != raft.LogCommand {
			return
		}
	}
	first, last := logs[0], logs[len(logs)-1]
	n.mu.Lock()
	defer n.mu.Unlock()
	// A follower's StoreLogs runs while it follows; only the leader's
	// dispatch writes entries of the current term while leading.
	if n.raft == nil || n.raft.State() != raft.Leader || n.raft.CurrentTerm() != last.Term {
		return
	}
	for id, p := range n.peers {
		if p.term != last.Term || p.match+1 != first.Index || p.early {
			continue
		}
		p.early = true
		req := raft.AppendEntriesRequest{
			RPCHeader: p.header, Term: p.term, Leader: p.leader,
			PrevLogEntry: p.match, PrevLogTerm: p.logTerm, Entries: logs,
		}
		addr := p.addr
		n.spawn(func() {
			var resp raft.AppendEntriesResponse
			err := n.trans.AppendEntries(id, addr, &req, &resp)
			n.mu.Lock()
			p.early = false
			n.mu.Unlock()
			if err == nil && resp.Success {
				n.early.Add(1)
				n.observe(id, addr, &req, &resp)
			}
		})
	}
}
