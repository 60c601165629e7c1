package raftnet

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/raft"
)

type fakeRaft struct {
	commit, term atomic.Uint64
	follower     atomic.Bool
	config       atomic.Pointer[raft.Configuration] // nil: voters c1, c2, c3
}

func (f *fakeRaft) GetConfiguration() raft.ConfigurationFuture {
	c := f.config.Load()
	if c == nil {
		c = &raft.Configuration{Servers: []raft.Server{{ID: "c1"}, {ID: "c2"}, {ID: "c3"}}} // Suffrage 0 is Voter
	}
	return fakeConfig{*c}
}

type fakeConfig struct{ c raft.Configuration }

func (fakeConfig) Error() error                        { return nil }
func (fakeConfig) Index() uint64                       { return 0 }
func (f fakeConfig) Configuration() raft.Configuration { return f.c }

func (f *fakeRaft) CommitIndex() uint64 { return f.commit.Load() }
func (f *fakeRaft) CurrentTerm() uint64 { return f.term.Load() }
func (f *fakeRaft) State() raft.RaftState {
	if f.follower.Load() {
		return raft.Follower
	}
	return raft.Leader
}

type recordingSender struct {
	wg   sync.WaitGroup // sender goroutines
	mu   sync.Mutex
	reqs []raft.AppendEntriesRequest
	fail bool
	gate chan struct{} // if set, each send waits for it before answering
}

func (s *recordingSender) AppendEntries(_ raft.ServerID, _ raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	s.mu.Lock()
	s.reqs = append(s.reqs, *req)
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	resp.Term, resp.Success = req.Term, !s.fail
	resp.RPCHeader = raft.RPCHeader{ID: []byte("follower")}
	return nil
}

// take waits for the senders, then returns what they sent.
func (s *recordingSender) take() []raft.AppendEntriesRequest {
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.reqs
	s.reqs = nil
	return out
}

func newTestNotices() (*CommitNotices, *fakeRaft, *recordingSender) {
	fr, rs := &fakeRaft{}, &recordingSender{}
	spawn := func(f func()) bool {
		rs.wg.Add(1)
		go func() {
			defer rs.wg.Done()
			f()
		}()
		return true
	}
	n := NewCommitNotices(rs, spawn)
	n.Start(fr, "c1")
	return n, fr, rs
}

func appendOK(term, prev, prevTerm uint64, entries ...raft.Log) (*raft.AppendEntriesRequest, *raft.AppendEntriesResponse) {
	req := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ID: []byte("c1"), Addr: []byte("127.0.0.1:1")},
		Term:      term, PrevLogEntry: prev, PrevLogTerm: prevTerm,
	}
	for i := range entries {
		req.Entries = append(req.Entries, &entries[i])
	}
	return req, &raft.AppendEntriesResponse{Term: term, Success: true}
}

// TestCommitNoticeCarriesProvenMatch: a notice names the index and term the
// follower's last successful AppendEntries proved, and commits no further
// than that index even when the leader's commit index is beyond it.
func TestCommitNoticeCarriesProvenMatch(t *testing.T) {
	n, fr, rs := newTestNotices()
	fr.term.Store(3)
	fr.commit.Store(12)
	req, resp := appendOK(3, 9, 2, raft.Log{Index: 10, Term: 3})
	n.observe("c2", "127.0.0.1:2", req, resp)
	if got := rs.take(); len(got) != 0 {
		t.Fatalf("notice sent before any commit was announced: %+v", got)
	}
	n.announce(12)
	got := rs.take()
	if len(got) != 1 {
		t.Fatalf("sent %d notices, want 1", len(got))
	}
	g := got[0]
	if g.Term != 3 || g.PrevLogEntry != 10 || g.PrevLogTerm != 3 || g.LeaderCommitIndex != 10 || len(g.Entries) != 0 || string(g.ID) != "c1" {
		t.Fatalf("notice %+v: want term 3, prev 10/3, commit 10 (capped at the proven match), no entries, the leader's header", g)
	}
	// Announcing what was already announced sends nothing.
	n.announce(12)
	if got := rs.take(); len(got) != 0 {
		t.Fatalf("repeated notice: %+v", got)
	}
	// The follower's next success proves more: the pending announcement
	// reaches it without another announce.
	req, resp = appendOK(3, 10, 3, raft.Log{Index: 11, Term: 3}, raft.Log{Index: 12, Term: 3})
	n.observe("c2", "127.0.0.1:2", req, resp)
	got = rs.take()
	if len(got) != 1 || got[0].LeaderCommitIndex != 12 || got[0].PrevLogEntry != 12 {
		t.Fatalf("after the match moved to 12: %+v, want one notice committing 12", got)
	}
}

// TestCommitNoticeNeverStale: what an AppendEntries of an earlier term
// proved is never announced once the term moved on (the log it matched may
// have been replaced), nor is a failed AppendEntries or a heartbeat taken
// as proof.
func TestCommitNoticeNeverStale(t *testing.T) {
	n, fr, rs := newTestNotices()
	fr.term.Store(4)
	fr.commit.Store(20)
	req, resp := appendOK(3, 9, 2, raft.Log{Index: 10, Term: 3})
	n.observe("c2", "127.0.0.1:2", req, resp) // term 3: this node led term 3, now term 4
	n.announce(20)
	if got := rs.take(); len(got) != 0 {
		t.Fatalf("announced a match proved in term 3 during term 4: %+v", got)
	}
	hb := &raft.AppendEntriesRequest{Term: 4}
	n.observe("c3", "127.0.0.1:3", hb, &raft.AppendEntriesResponse{Term: 4, Success: true})
	req, _ = appendOK(4, 15, 4)
	n.observe("c3", "127.0.0.1:3", req, &raft.AppendEntriesResponse{Term: 4, Success: false})
	req, _ = appendOK(4, 15, 4)
	n.observe("c3", "127.0.0.1:3", req, &raft.AppendEntriesResponse{Term: 5, Success: true})
	n.announce(21)
	if got := rs.take(); len(got) != 0 {
		t.Fatalf("a heartbeat, a failure or a newer-term answer taken as proof: %+v", got)
	}
	// A success in the current term is proof: c2's record is replaced.
	req, resp = appendOK(4, 19, 4)
	n.observe("c2", "127.0.0.1:2", req, resp)
	got := rs.take()
	if len(got) != 1 || got[0].Term != 4 || got[0].PrevLogEntry != 19 || got[0].LeaderCommitIndex != 19 {
		t.Fatalf("after a term-4 success: %+v, want one term-4 notice committing 19", got)
	}
}

// TestCommitNoticeRefused: a follower that refuses a notice in its term
// gets no retry of that index, and the match it was proven to hold is
// withdrawn (its log no longer matches there); Raft's own replication
// carries the commit index and proves a match again.
func TestCommitNoticeRefused(t *testing.T) {
	n, fr, rs := newTestNotices()
	fr.term.Store(2)
	fr.commit.Store(5)
	rs.fail = true
	req, resp := appendOK(2, 5, 2)
	n.observe("c2", "127.0.0.1:2", req, resp)
	n.announce(5)
	first := rs.take()
	n.announce(5)
	if got := rs.take(); len(first) != 1 || len(got) != 0 {
		t.Fatalf("sent %d then %d notices for index 5 to a refusing follower, want 1 then 0", len(first), len(got))
	}
	n.mu.Lock()
	match := n.peers["c2"].match
	n.mu.Unlock()
	if match != 0 {
		t.Fatalf("after a refused notice the follower is still taken to hold index %d", match)
	}
}

// TestCommitNoticeFromQuorum: once the leader's own write and a follower's
// acknowledgement make a majority of the voters store an entry of the
// current term, the notices announce it without waiting for Raft's commit
// index or the FSM; never beyond what each follower is proven to hold,
// never for an entry of an older term counted in replicas (Raft 5.4.2),
// never counting a non-voter or a write made while not leading.
func TestCommitNoticeFromQuorum(t *testing.T) {
	n, fr, rs := newTestNotices()
	fr.term.Store(3)
	fr.commit.Store(10) // Raft's own commit index lags
	req, resp := appendOK(3, 9, 2, raft.Log{Index: 10, Term: 3})
	n.observe("c2", "127.0.0.1:2", req, resp)
	n.observe("c3", "127.0.0.1:3", req, resp)
	rs.take()
	n.stored([]*raft.Log{command(11, 3), command(12, 3)}) // the leader's own write
	if got := rs.take(); len(got) != 0 {
		t.Fatalf("announced with only the leader's write: %+v", got)
	}
	req, resp = appendOK(3, 10, 3, raft.Log{Index: 11, Term: 3}, raft.Log{Index: 12, Term: 3})
	n.observe("c2", "127.0.0.1:2", req, resp) // c1 and c2 of three: 12 is committed
	got := rs.take()
	if len(got) != 1 || got[0].LeaderCommitIndex != 12 || got[0].PrevLogEntry != 12 {
		t.Fatalf("after a majority stored 12: %+v, want one notice to c2 committing 12", got)
	}
	// c3 holds through 11 only: it is told 11, not 12.
	req, resp = appendOK(3, 10, 3, raft.Log{Index: 11, Term: 3})
	n.observe("c3", "127.0.0.1:3", req, resp)
	if got := rs.take(); len(got) != 1 || got[0].LeaderCommitIndex != 11 {
		t.Fatalf("c3 proven through 11: %+v, want one notice committing 11", got)
	}

	// Term 4: the followers are proven through 15, an entry of term 3;
	// the leader wrote 16 in term 4. 15 sits on a majority but is of an
	// older term: nothing is announced until an entry of term 4 is.
	fr.term.Store(4)
	req, resp = appendOK(4, 15, 3)
	n.observe("c2", "127.0.0.1:2", req, resp)
	n.observe("c3", "127.0.0.1:3", req, resp)
	n.stored([]*raft.Log{command(16, 4)})
	if got := rs.take(); len(got) != 0 {
		t.Fatalf("announced an older term's entry counted in replicas: %+v", got)
	}
	req, resp = appendOK(4, 15, 3, raft.Log{Index: 16, Term: 4})
	n.observe("c2", "127.0.0.1:2", req, resp)
	// 16 committed commits 15 too: c2 is told 16, c3 (proven through 15)
	// 15.
	got = rs.take()
	commits := map[uint64]uint64{} // prev -> commit
	for _, g := range got {
		commits[g.PrevLogEntry] = g.LeaderCommitIndex
	}
	if len(got) != 2 || commits[16] != 16 || commits[15] != 15 {
		t.Fatalf("after 16 (term 4) on a majority: %+v, want notices committing 16 (c2) and 15 (c3)", got)
	}

	// c3 a non-voter: c1 and c2 must both store an entry.
	n2, fr2, rs2 := newTestNotices()
	fr2.term.Store(5)
	fr2.config.Store(&raft.Configuration{Servers: []raft.Server{{ID: "c1"}, {ID: "c2"}, {ID: "c3", Suffrage: raft.Nonvoter}}})
	req, resp = appendOK(5, 19, 5, raft.Log{Index: 20, Term: 5})
	n2.observe("c3", "127.0.0.1:3", req, resp)
	n2.stored([]*raft.Log{command(20, 5)})
	if got := rs2.take(); len(got) != 0 {
		t.Fatalf("a non-voter counted towards the majority: %+v", got)
	}
	// A write while not leading is not this node's own.
	fr2.follower.Store(true)
	n2.stored([]*raft.Log{command(21, 5)})
	fr2.follower.Store(false)
	req, resp = appendOK(5, 20, 5, raft.Log{Index: 21, Term: 5})
	n2.observe("c2", "127.0.0.1:2", req, resp)
	// Committed: 20. The non-voter, proven through 20, is told too.
	got = rs2.take()
	commits = map[uint64]uint64{}
	for _, g := range got {
		commits[g.PrevLogEntry] = g.LeaderCommitIndex
	}
	if len(got) != 2 || commits[21] != 20 || commits[20] != 20 {
		t.Fatalf("c1 stored through 20 as leader, c2 through 21: %+v, want notices committing 20 to c2 and c3", got)
	}
}
