package raftnet

import (
	"cmp"
	"slices"
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
// The commit index announced is Raft's, or sooner the one the notices
// compute from the same facts Raft's commitment uses, so that a notice
// leaves as soon as the follower's acknowledgement arrives instead of after
// the leader's Raft loop and FSM took the commit up: the highest index a
// majority of the latest configuration's voters is proven to store in term
// T (this node through its own log writes as leader of T, which earlyStore
// reports once durable; each follower through its last successful
// AppendEntries of T), and only if that entry is of term T, since an entry
// of an earlier term is never committed by counting replicas (Raft 5.4.2,
// figure 8). That is Raft's definition of committed, so such an index is
// committed whether or not the leader has noticed yet; every proof is of
// term T, and the term check above still applies.
//
// A notice is best effort: a lost one costs nothing but the latency Raft
// had without it. Its response is not fed back to Raft.
type CommitNotices struct {
	trans AppendEntriesSender

	mu    sync.Mutex
	raft  RaftView      // set once Raft runs
	self  raft.ServerID // this node's ID in the configuration
	want  uint64        // the highest commit index asked to be announced
	peers map[raft.ServerID]*noticePeer
	// As leader of term own.term, this node's log is durable through
	// own.index (see earlyStore), and quorum.index, of term quorum.term,
	// is stored by a majority of the voters (see updateQuorum).
	own, quorum struct{ term, index uint64 }
	spawn       func(func()) bool // runs a sender goroutine tracked by the coordinator; false once it stops
	count       atomic.Uint64     // notices sent
	early       atomic.Uint64     // early appends acknowledged (see earlyStore)
	answered    atomic.Uint64     // Raft's own AppendEntries answered from an early append's proof
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
	GetConfiguration() raft.ConfigurationFuture
}

// NewCommitNotices makes the commit notices of a Raft node that sends its
// AppendEntries through trans (the NetworkTransport itself, not the
// Transport that wraps it) and runs each sender goroutine with spawn,
// which reports false when it ran nothing (the coordinator is stopping).
func NewCommitNotices(trans AppendEntriesSender, spawn func(func()) bool) *CommitNotices {
	return &CommitNotices{trans: trans, peers: map[raft.ServerID]*noticePeer{}, spawn: spawn}
}

// Start lets notices flow once Raft runs; self is this node's server ID.
func (n *CommitNotices) Start(r RaftView, self raft.ServerID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.raft, n.self = r, self
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

// forget drops what p's follower was proven to hold, keeping the state of
// its sender and of its early append in flight.
func (p *noticePeer) forget() { *p = noticePeer{busy: p.busy, early: p.early} }

// observe records what a successful AppendEntries to a follower proved.
// Heartbeats (no PrevLogEntry, no entries) prove nothing and are ignored.
// A refusal in the same term drops what the follower was proven to hold:
// its log no longer matches at an index it once did (its data was lost,
// or its disk failed the write), so no earlier proof is used again until
// Raft's own AppendEntries proves a match anew.
func (n *CommitNotices) observe(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) {
	n.note(id, target, args, resp, false)
}

// note is observe. With claim, it starts no sender for follower id but
// claims its sender for the caller, which must then run n.send(id, p)
// itself when note returns p; other followers get senders as observe
// gives them.
func (n *CommitNotices) note(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, claim bool) *noticePeer {
	if !resp.Success && resp.Term == args.Term {
		n.mu.Lock()
		if p := n.peers[id]; p != nil && p.term == args.Term {
			p.forget()
		}
		n.mu.Unlock()
		return nil
	}
	if !resp.Success || resp.Term != args.Term || (args.PrevLogEntry == 0 && len(args.Entries) == 0) {
		return nil
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
		p.forget()
	} else if match <= p.match {
		return nil
	}
	p.addr, p.header, p.leader = target, args.RPCHeader, append([]byte(nil), args.Leader...)
	p.term, p.match, p.logTerm, p.reply = args.Term, match, logTerm, resp.RPCHeader
	if n.updateQuorum(args.Term) {
		for other, q := range n.peers {
			if other != id {
				n.kick(other, q)
			}
		}
	}
	if claim {
		if n.due(p) {
			p.busy = true
			return p
		}
		return nil
	}
	n.kick(id, p)
	return nil
}

// stored records that this node, leading in the logs' term, wrote logs to
// its log store (durably: the store returned). earlyStore calls it.
func (n *CommitNotices) stored(logs []*raft.Log) {
	if len(logs) == 0 {
		return
	}
	last := logs[len(logs)-1]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.raft == nil || n.raft.State() != raft.Leader || n.raft.CurrentTerm() != last.Term {
		return
	}
	if n.own.term != last.Term {
		n.own.term, n.own.index = last.Term, 0
	}
	n.own.index = max(n.own.index, last.Index)
	if n.updateQuorum(last.Term) {
		n.kickAll()
	}
}

// updateQuorum recomputes, for term, the highest index of term that a
// majority of the latest configuration's voters is proven to store (this
// node through its own writes as leader, a follower through its last
// successful AppendEntries of term), as hashicorp/raft's commitment does.
// It reports whether that index grew. n.mu held.
func (n *CommitNotices) updateQuorum(term uint64) bool {
	if n.raft == nil {
		return false
	}
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	type proof struct{ index, term uint64 }
	var voters []proof
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		var v proof
		if s.ID == n.self {
			if n.own.term == term {
				v = proof{n.own.index, term}
			}
		} else if p := n.peers[s.ID]; p != nil && p.term == term {
			v = proof{p.match, p.logTerm}
		}
		voters = append(voters, v)
	}
	if len(voters) == 0 {
		return false
	}
	slices.SortFunc(voters, func(a, b proof) int { return cmp.Compare(a.index, b.index) })
	q := voters[(len(voters)-1)/2]
	// Only an entry of the current term commits by being counted (Raft,
	// 5.4.2); all proofs are of this leader's log, so the index's term is
	// the one its prover recorded.
	if q.term != term {
		return false
	}
	if n.quorum.term != term {
		n.quorum.term, n.quorum.index = term, 0
	}
	if q.index <= n.quorum.index {
		return false
	}
	n.quorum.index = q.index
	return true
}

// quorumIn is the index stored by a majority in term, 0 if none is known.
// n.mu held.
func (n *CommitNotices) quorumIn(term uint64) uint64 {
	if n.quorum.term != term {
		return 0
	}
	return n.quorum.index
}

// kickAll starts a sender for every follower with something to announce.
// n.mu held.
func (n *CommitNotices) kickAll() {
	for id, p := range n.peers {
		n.kick(id, p)
	}
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
	n.kickAll()
}

// due reports whether p needs a sender: it has none and there is
// something to announce to it. n.mu held.
func (n *CommitNotices) due(p *noticePeer) bool {
	return !p.busy && n.raft != nil && min(max(n.want, n.quorumIn(p.term)), p.match) > p.sent && n.raft.CurrentTerm() == p.term
}

// kick starts a sender for p if it has something to announce. n.mu held.
func (n *CommitNotices) kick(id raft.ServerID, p *noticePeer) {
	if !n.due(p) {
		return
	}
	p.busy = n.spawn(func() { n.send(id, p) })
}

// send announces to one follower until it has the latest asked for.
func (n *CommitNotices) send(id raft.ServerID, p *noticePeer) {
	for {
		n.mu.Lock()
		r, want := n.raft, n.want
		rec := *p
		quorum := n.quorumIn(rec.term)
		n.mu.Unlock()
		// The record first, then the commit index, then the term: see the
		// safety argument on CommitNotices.
		commit := min(max(min(r.CommitIndex(), want), quorum), rec.match)
		if commit <= rec.sent || r.CurrentTerm() != rec.term {
			n.mu.Lock()
			if p.term == rec.term && p.match == rec.match && n.want == want && n.quorumIn(rec.term) == quorum {
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
			// Unreachable, no longer in this term, or (refused in this
			// term) its log no longer matches where it was proven to: Raft's
			// own replication carries the commit index from here.
			p.busy = false
			switch {
			case err == nil && resp.Term == rec.term && p.term == rec.term:
				p.forget() // the proof is withdrawn (see observe)
			case p.term == rec.term && commit > p.sent:
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
