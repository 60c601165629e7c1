package raftnet

import (
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/medmesh/medmesh/coordinator/internal/raftlog"
)

func command(index, term uint64) *raft.Log {
	return &raft.Log{Index: index, Term: term, Type: raft.LogCommand, Data: []byte("x")}
}

// caughtUp is the notices of the leader of term 3 whose follower c2 is
// proven to hold its log through index 10 (term 3), nothing sent yet.
func caughtUp() (*CommitNotices, *fakeRaft, *recordingSender) {
	n, fr, rs := newTestNotices()
	fr.term.Store(3)
	req, resp := appendOK(3, 9, 2, raft.Log{Index: 10, Term: 3})
	n.observe("c2", "127.0.0.1:2", req, resp)
	rs.take()
	return n, fr, rs
}

// TestEarlyAppend: the leader's new entries go at once to each follower
// whose log is proven to match through the entry before them, with that
// entry as PrevLogEntry, the entries themselves and no commit index; the
// follower's answer is recorded as a proven match. Nothing goes to a
// follower behind, in another term, from a follower, or for entries other
// than commands.
func TestEarlyAppend(t *testing.T) {
	n, fr, rs := newTestNotices()
	fr.term.Store(3)
	req, resp := appendOK(3, 9, 2, raft.Log{Index: 10, Term: 3})
	n.observe("c2", "127.0.0.1:2", req, resp) // caught up: matches through 10
	req, resp = appendOK(3, 7, 2, raft.Log{Index: 8, Term: 3})
	n.observe("c3", "127.0.0.1:3", req, resp) // behind: matches through 8
	rs.take()

	n.appendEarly([]*raft.Log{command(11, 3), command(12, 3)})
	got := rs.take()
	if len(got) != 1 {
		t.Fatalf("sent %d early appends, want 1 (to the caught-up follower)", len(got))
	}
	g := got[0]
	if g.Term != 3 || g.PrevLogEntry != 10 || g.PrevLogTerm != 3 || g.LeaderCommitIndex != 0 ||
		len(g.Entries) != 2 || g.Entries[0].Index != 11 || g.Entries[1].Index != 12 || string(g.ID) != "c1" {
		t.Fatalf("early append %+v: want term 3, prev 10/3, entries 11-12, no commit index, the leader's header", g)
	}
	n.mu.Lock()
	match, logTerm := n.peers["c2"].match, n.peers["c2"].logTerm
	n.mu.Unlock()
	if match != 12 || logTerm != 3 || n.early.Load() != 1 {
		t.Fatalf("after the follower's answer: match %d/%d, %d acknowledged; want 12/3, 1", match, logTerm, n.early.Load())
	}

	for _, c := range []struct {
		name  string
		setup func()
		logs  []*raft.Log
	}{
		{"not the next entry", nil, []*raft.Log{command(14, 3)}},
		{"not a command", nil, []*raft.Log{command(13, 3), {Index: 14, Term: 3, Type: raft.LogConfiguration}}},
		{"another term", func() { fr.term.Store(4) }, []*raft.Log{command(13, 4)}},
		{"entries of an older term", nil, []*raft.Log{command(13, 3)}},
		{"a follower's write", func() { fr.follower.Store(true) }, []*raft.Log{command(13, 4)}},
	} {
		if c.setup != nil {
			c.setup()
		}
		n.appendEarly(c.logs)
		if got := rs.take(); len(got) != 0 {
			t.Fatalf("%s: sent %+v", c.name, got)
		}
	}
}

// TestEarlyAppendRefused: a follower that refuses an early append in the
// same term (its log no longer matches where it once did: its data was
// lost, or its disk failed) loses what it was proven to hold: Raft's own
// AppendEntries of entries it held is sent, not answered, no notice or
// early append goes to it, and it counts towards no majority, until Raft's
// own AppendEntries proves a match again.
func TestEarlyAppendRefused(t *testing.T) {
	n, _, rs := caughtUp()
	rs.fail = true
	n.appendEarly([]*raft.Log{command(11, 3)})
	if got := rs.take(); len(got) != 1 {
		t.Fatalf("sent %d, want 1", len(got))
	}
	n.mu.Lock()
	match, early := n.peers["c2"].match, n.peers["c2"].early
	n.mu.Unlock()
	if match != 0 || early != nil || n.early.Load() != 0 {
		t.Fatalf("after a refusal: match %d, in flight %v, %d acknowledged; want 0 (forgotten), none, 0", match, early, n.early.Load())
	}
	own, _ := appendOK(3, 9, 2, raft.Log{Index: 10, Term: 3})
	var got raft.AppendEntriesResponse
	if n.answer("c2", own, &got) {
		t.Fatalf("answered %+v from a proof the follower's refusal withdrew", got)
	}
	n.stored([]*raft.Log{command(11, 3)}) // the leader's write alone commits nothing
	n.appendEarly([]*raft.Log{command(12, 3)})
	if sent := rs.take(); len(sent) != 0 {
		t.Fatalf("sent %+v to a follower whose proof was withdrawn", sent)
	}
	rs.fail = false
	req, resp := appendOK(3, 10, 3, raft.Log{Index: 11, Term: 3})
	n.observe("c2", "127.0.0.1:2", req, resp)
	n.appendEarly([]*raft.Log{command(12, 3)})
	// 11, on the leader and now proven on c2, is committed: a notice
	// may go with the early append of 12.
	var earlies int
	for _, g := range rs.take() {
		switch {
		case len(g.Entries) == 1 && g.PrevLogEntry == 11:
			earlies++
		case len(g.Entries) == 0 && g.LeaderCommitIndex == 11:
		default:
			t.Fatalf("after Raft's own append proved 11: unexpected %+v", g)
		}
	}
	if earlies != 1 {
		t.Fatalf("after Raft's own append proved 11: %d early appends after 11, want 1", earlies)
	}
}

// TestLogStoreIsMonotonic: the store chain Raft sees (LogCache, earlyStore,
// WAL) tells Raft that the log accepts no gaps.
func TestLogStoreIsMonotonic(t *testing.T) {
	s, err := raftlog.OpenWAL(t.TempDir(), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	logs, err := raft.NewLogCache(16, earlyStore{s, nil})
	if err != nil {
		t.Fatal(err)
	}
	if !logs.IsMonotonic() {
		t.Fatal("raft sees a log store that allows gaps")
	}
}

// TestRaftAppendAnsweredEarly: Raft's own AppendEntries of entries an
// early append already got acknowledged is answered without being sent
// (success, the request's term); one that asks for more than was proven,
// in another term, to a follower with no record, or without entries is
// sent.
func TestRaftAppendAnsweredEarly(t *testing.T) {
	n, _, rs := caughtUp()
	n.appendEarly([]*raft.Log{command(11, 3), command(12, 3)})
	if got := rs.take(); len(got) != 1 {
		t.Fatalf("sent %d early appends, want 1", len(got))
	}

	own, _ := appendOK(3, 10, 3, raft.Log{Index: 11, Term: 3}, raft.Log{Index: 12, Term: 3})
	var got raft.AppendEntriesResponse
	if !n.answer("c2", own, &got) {
		t.Fatal("Raft's own AppendEntries of the acknowledged entries was not answered")
	}
	if !got.Success || got.Term != 3 || got.LastLog != 12 || string(got.ID) != "follower" || n.Answered() != 1 {
		t.Fatalf("answer %+v (%d answered): want success in term 3, last log 12, the follower's header, 1", got, n.Answered())
	}
	// A shorter request (entries 11 only) is proven too.
	short, _ := appendOK(3, 10, 3, raft.Log{Index: 11, Term: 3})
	if !n.answer("c2", short, &got) {
		t.Fatal("a request for a proven prefix was not answered")
	}
	for _, c := range []struct {
		name string
		id   raft.ServerID
		req  *raft.AppendEntriesRequest
	}{
		{"beyond the proven match", "c2", func() *raft.AppendEntriesRequest {
			r, _ := appendOK(3, 10, 3, raft.Log{Index: 11, Term: 3}, raft.Log{Index: 12, Term: 3}, raft.Log{Index: 13, Term: 3})
			return r
		}()},
		{"another term", "c2", func() *raft.AppendEntriesRequest {
			r, _ := appendOK(4, 12, 3, raft.Log{Index: 13, Term: 4})
			return r
		}()},
		{"no record of the follower", "c3", own},
		{"no entries", "c2", &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 12, PrevLogTerm: 3, LeaderCommitIndex: 12}},
	} {
		if n.answer(c.id, c.req, &got) {
			t.Fatalf("%s: answered %+v without sending", c.name, got)
		}
	}
	if sent := rs.take(); len(sent) != 0 {
		t.Fatalf("answer sent %+v", sent)
	}
}

// TestRaftAppendWaitsForEarly: Raft's own AppendEntries of entries whose
// early append is in flight waits for that append's answer, then is
// answered by it if the follower accepted, or must be sent if it refused.
func TestRaftAppendWaitsForEarly(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		n, _, rs := caughtUp()
		gate := make(chan struct{})
		rs.mu.Lock()
		rs.gate, rs.fail = gate, refuse
		rs.mu.Unlock()
		n.appendEarly([]*raft.Log{command(11, 3)})

		own, _ := appendOK(3, 10, 3, raft.Log{Index: 11, Term: 3})
		answered := make(chan bool, 1)
		var got raft.AppendEntriesResponse
		go func() { answered <- n.answer("c2", own, &got) }()
		// answer must not return while the early append is unanswered
		// (the gate holds it): give it time to do so wrongly.
		time.Sleep(20 * time.Millisecond)
		select {
		case ok := <-answered:
			t.Fatalf("refuse=%v: answer returned %v before the early append was answered", refuse, ok)
		default:
		}
		close(gate)
		ok := <-answered
		if rs.take(); ok == refuse {
			t.Fatalf("refuse=%v: answered %v (%+v)", refuse, ok, got)
		}
		if !refuse && (!got.Success || got.LastLog != 11) {
			t.Fatalf("answer %+v: want success through 11", got)
		}
	}
}

// TestEarlyAppendCommitsThenNotifies: an early append whose
// acknowledgement makes the entry stored on a majority (the leader wrote
// it) is followed, from the same sender, by a notice committing it.
func TestEarlyAppendCommitsThenNotifies(t *testing.T) {
	n, _, rs := caughtUp()
	logs := []*raft.Log{command(11, 3)}
	if !n.appendEarly(logs) {
		t.Fatal("no early append sent to a caught-up follower")
	}
	n.stored(logs) // the leader's own write; the follower's answer may come before or after it
	// If the leader's write is recorded first, 10 (on the leader and c2)
	// is committed already and may be announced on its own.
	got := rs.take()
	var early int
	var committed uint64
	for _, g := range got {
		switch {
		case len(g.Entries) == 1 && g.Entries[0].Index == 11 && g.LeaderCommitIndex == 0:
			early++
		case len(g.Entries) == 0 && g.LeaderCommitIndex <= g.PrevLogEntry && g.LeaderCommitIndex >= 10:
			committed = max(committed, g.LeaderCommitIndex)
		default:
			t.Fatalf("unexpected request %+v", g)
		}
	}
	if early != 1 || committed != 11 {
		t.Fatalf("sent %+v: want the early append of 11 and a notice committing 11", got)
	}
}

// TestEarlyAppendWhileStopping: once the coordinator stops starting
// goroutines, no early append is recorded as in flight, so Raft's own
// AppendEntries is sent rather than waiting for one that never runs (a
// fresh-clone CI run hung a coordinator's Close on exactly that).
func TestEarlyAppendWhileStopping(t *testing.T) {
	rs := &recordingSender{}
	fr := &fakeRaft{}
	fr.term.Store(3)
	n := NewCommitNotices(rs, func(func()) bool { return false })
	n.Start(fr, "c1")
	req, resp := appendOK(3, 9, 2, raft.Log{Index: 10, Term: 3})
	n.observe("c2", "127.0.0.1:2", req, resp)
	if n.appendEarly([]*raft.Log{command(11, 3)}) {
		t.Fatal("appendEarly reports a send although nothing could run")
	}
	own, _ := appendOK(3, 10, 3, raft.Log{Index: 11, Term: 3})
	answered := make(chan bool, 1)
	go func() {
		var got raft.AppendEntriesResponse
		answered <- n.answer("c2", own, &got)
	}()
	select {
	case ok := <-answered:
		if ok {
			t.Fatal("Raft's own AppendEntries answered without any proof")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Raft's own AppendEntries waits for an early append that never started")
	}
	// The leader's write makes 10 committed (c1 and c2): a notice is due
	// but cannot start.
	n.stored([]*raft.Log{command(11, 3)})
	n.mu.Lock()
	busy := n.peers["c2"].busy
	n.mu.Unlock()
	if busy {
		t.Fatal("a notice sender is recorded as running although none started")
	}
}
