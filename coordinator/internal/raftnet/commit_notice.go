package raftnet

import (
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// CommitNotices tells followers the leader's commit index as soon as an
// entry commits, the way etcd's raft broadcasts a commit, so that watchers
// served by a follower see a decision about one round trip after those
// served by the leader.
//
// hashicorp/raft sends the leader's commit index only with the next
// AppendEntries that carries entries (which a follower must write and fsync
// before it looks at the commit index), or one to two CommitTimeouts later.
// Its heartbeats carry no commit index. So the transport keeps, per
// follower, what the last successful AppendEntries proved: in term T the
// follower's log matches the leader's through index M, whose entry has term
// MT. A notice is then an AppendEntries of term T with no entries,
// PrevLogEntry M, PrevLogTerm MT and LeaderCommitIndex min(commit, M): what
// the replication goroutine itself sends on its CommitTimeout, except that
// the commit index is capped at M, where Raft's rule (min(leaderCommit,
// index of last new entry)) holds even though hashicorp/raft's follower
// caps at its own last index.
//
// Safety. A notice may commit on the follower only entries that are
// committed, and only if they are the leader's:
//   - The follower accepts the notice only in term T and only if its entry
//     at M has term MT, so by the Log Matching Property its log equals the
//     leader's (of term T) through M.
//   - The commit index is read, then the current term is checked to be
//     still T. Terms only grow, and a node's log and commit index change
//     under another leader only after its term has moved past T; so the
//     commit index read belongs to this node's leadership of term T, whose
//     log is append-only: everything up to it is committed and still
//     matches through M. A stale record (an earlier term) is never sent.
//   - The follower handles a notice like any AppendEntries, in its main
//     loop, in arrival order with the leader's own RPCs; no order of the
//     two can commit beyond what one of them proves.
//
// A notice is best effort: a lost one costs nothing but the latency Raft
// had without it. Its response is not fed back to Raft.
type CommitNotices struct {
	trans AppendEntriesSender

	mu       sync.Mutex
	raft     RaftView // set once Raft runs
	want     uint64   // the highest commit index asked to be announced
	peers    map[raft.ServerID]*noticePeer
	spawn    func(func())  // runs a sender goroutine tracked by the coordinator
	count    atomic.Uint64 // notices sent
	early    atomic.Uint64 // early appends acknowledged (see earlyStore)
	answered atomic.Uint64 // Raft's own AppendEntries answered from an early append's proof
}

// AppendEntriesSender sends an AppendEntries RPC (the NetworkTransport).
type AppendEntriesSender interface {
	AppendEntries(raft.ServerID, raft.ServerAddress, *raft.AppendEntriesRequest, *raft.AppendEntriesResponse) error
}

// RaftView is what notices read of the local Raft (*raft.Raft).
type RaftView interface {
	CommitIndex() uint64
	CurrentTerm() uint64
	State() raft.RaftState
}

// NewCommitNotices makes the commit notices of a Raft node that sends its
// AppendEntries through trans (the NetworkTransport itself, not the
// Transport that wraps it) and runs each sender goroutine with spawn.
func NewCommitNotices(trans AppendEntriesSender, spawn func(func())) *CommitNotices {
	return &CommitNotices{trans: trans, peers: map[raft.ServerID]*noticePeer{}, spawn: spawn}
}

// Start lets notices flow once Raft runs.
func (n *CommitNotices) Start(r RaftView) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.raft = r
}

// Sent is the number of commit notices sent.
func (n *CommitNotices) Sent() uint64 { return n.count.Load() }

// EarlyAppends is the number of early appends followers acknowledged.
func (n *CommitNotices) EarlyAppends() uint64 { return n.early.Load() }

// Answered is the number of Raft's own AppendEntries answered without
// sending them, because an early append had already proved their success.
func (n *CommitNotices) Answered() uint64 { return n.answered.Load() }

// Transport is the Raft transport over t: pipeline replication off (see
// noPipelineTransport), and every successful AppendEntries recorded for
// the notices.
func (n *CommitNotices) Transport(t *raft.NetworkTransport) raft.Transport {
	return noticeTransport{noPipelineTransport{t}, n}
}

// FSM is f, announcing each entry's commit before applying it (see
// noticeFSM).
func (n *CommitNotices) FSM(f raft.FSM) raft.FSM { return noticeFSM{f, n} }

// LogStore is s, sending the leader's new entries early to caught-up
// followers (see earlyStore).
func (n *CommitNotices) LogStore(s raft.LogStore) raft.LogStore { return earlyStore{s, n} }

// noticePeer is what the last successful AppendEntries to one follower
// proved, and the notice state for it.
type noticePeer struct {
	addr    raft.ServerAddress
	header  raft.RPCHeader
	leader  []byte
	term    uint64         // the leader's term in that AppendEntries
	match   uint64         // the follower's log matches through this index
	logTerm uint64         // the term of the entry at match
	reply   raft.RPCHeader // the follower's header in its answer
	sent    uint64         // the highest commit index announced to it
	busy    bool           // a sender goroutine runs for it
	early   *earlyCall     // the early append to it in flight, if any
}

// observe records what a successful AppendEntries to a follower proved.
// Heartbeats (no PrevLogEntry, no entries) prove nothing and are ignored.
func (n *CommitNotices) observe(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) {
	if !resp.Success || resp.Term != args.Term || (args.PrevLogEntry == 0 && len(args.Entries) == 0) {
		return
	}
	match, logTerm := args.PrevLogEntry, args.PrevLogTerm
	if k := len(args.Entries); k > 0 {
		match, logTerm = args.Entries[k-1].Index, args.Entries[k-1].Term
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.peers[id]
	if p == nil {
		p = &noticePeer{}
		n.peers[id] = p
	}
	if args.Term != p.term {
		*p = noticePeer{busy: p.busy, early: p.early}
	} else if match <= p.match {
		return
	}
	p.addr, p.header, p.leader = target, args.RPCHeader, append([]byte(nil), args.Leader...)
	p.term, p.match, p.logTerm, p.reply = args.Term, match, logTerm, resp.RPCHeader
	n.kick(id, p)
}

// announce asks for the commit index (at least index) to reach every
// follower now. noticeFSM calls it for every entry applied.
func (n *CommitNotices) announce(index uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if index <= n.want {
		return
	}
	n.want = index
	for id, p := range n.peers {
		n.kick(id, p)
	}
}

// kick starts a sender for p if it has something to announce. n.mu held.
func (n *CommitNotices) kick(id raft.ServerID, p *noticePeer) {
	if p.busy || n.raft == nil || min(n.want, p.match) <= p.sent || n.raft.CurrentTerm() != p.term {
		return
	}
	p.busy = true
	n.spawn(func() { n.send(id, p) })
}

// send announces to one follower until it has the latest asked for.
func (n *CommitNotices) send(id raft.ServerID, p *noticePeer) {
	for {
		n.mu.Lock()
		r, want := n.raft, n.want
		rec := *p
		n.mu.Unlock()
		// The record first, then the commit index, then the term: see the
		// safety argument on CommitNotices.
		commit := min(r.CommitIndex(), want, rec.match)
		if commit <= rec.sent || r.CurrentTerm() != rec.term {
			n.mu.Lock()
			if p.term == rec.term && p.match == rec.match && n.want == want {
				p.busy = false
				n.mu.Unlock()
				return
			}
			n.mu.Unlock()
			continue // the record or the request moved meanwhile: look again
		}
		req := raft.AppendEntriesRequest{
			RPCHeader: rec.header, Term: rec.term, Leader: rec.leader,
			PrevLogEntry: rec.match, PrevLogTerm: rec.logTerm, LeaderCommitIndex: commit,
		}
		var resp raft.AppendEntriesResponse
		err := n.trans.AppendEntries(id, rec.addr, &req, &resp)
		n.mu.Lock()
		if err != nil || !resp.Success {
			// Unreachable, or no longer in this term: Raft's own
			// replication carries the commit index from here.
			p.busy = false
			if p.term == rec.term && commit > p.sent {
				p.sent = commit // do not retry this index
			}
			n.mu.Unlock()
			return
		}
		if p.term == rec.term && commit > p.sent {
			p.sent = commit
		}
		n.mu.Unlock()
		n.count.Add(1)
	}
}

// noticeTransport is the Raft transport: the NetworkTransport with pipeline
// replication off (see noPipelineTransport) and commit notices.
type noticeTransport struct {
	noPipelineTransport
	notices *CommitNotices
}

func (t noticeTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if t.notices.answer(id, args, resp) {
		return nil
	}
	if err := t.NetworkTransport.AppendEntries(id, target, args, resp); err != nil {
		return err
	}
	t.notices.observe(id, target, args, resp)
	return nil
}

// noticeFSM is the FSM Raft applies to: for each entry it asks for the
// entry's commit to be announced. On the leader that is the earliest point
// the commit is visible outside Raft; on a follower nothing has been
// recorded, so nothing is sent. The notice goes out before the entry is
// applied here: an entry Raft applies is committed, and applying a
// decision wakes every watch stream this replica serves, which would
// otherwise run first.
type noticeFSM struct {
	raft.FSM
	notices *CommitNotices
}

func (f noticeFSM) Apply(l *raft.Log) any {
	f.notices.announce(l.Index)
	return f.FSM.Apply(l)
}
