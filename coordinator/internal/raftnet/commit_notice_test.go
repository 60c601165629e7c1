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
}

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
	spawn := func(f func()) {
		rs.wg.Add(1)
		go func() {
			defer rs.wg.Done()
			f()
		}()
	}
	n := NewCommitNotices(rs, spawn)
	n.Start(fr)
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

// TestCommitNoticeRefused: a follower that refuses a notice gets no retry
// of that index; Raft's own replication carries it.
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
}
