package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func withRequest(cmd *fsmpb.Command, identity, id string) *fsmpb.Command {
	cmd.Request = &fsmpb.ClientRequest{Identity: identity, Id: id}
	return cmd
}

// activate is the command a leader builds for one ActivatePolicy call; a
// retry of the call gets a fresh decision id.
func activate(name, decisionID string) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_PolicyActivate{PolicyActivate: &fsmpb.PolicyActivate{
		Name: name, Actor: "approver/alice", Reason: "go live", DecisionId: decisionID}}}
}

func TestRetriedRequestAppliesOnceAndAnswersTheFirstResult(t *testing.T) {
	l := newLog(t)
	l.ok(upsert("s1", pump(mac1)))
	first := l.ok(withRequest(putPolicy(policy("p", mac1), nil), "operator/bob", "req-1"))
	if first.Duplicate || first.Policy.GetVersion() != 1 {
		t.Fatalf("first put: %+v", first)
	}
	// An unrelated write moves the state on.
	l.ok(putPolicy(policy("q", mac1), nil))
	// The retry (its outcome was unknown to the client) is a new log entry
	// with the same request: nothing is applied again.
	auditBefore, _, _, _ := l.f.ListAudit(0, 1000, "")
	retry := l.ok(withRequest(putPolicy(policy("p", mac1), nil), "operator/bob", "req-1"))
	if !retry.Duplicate || retry.Index != first.Index || !proto.Equal(retry.Policy, first.Policy) {
		t.Fatalf("retry answered %+v, want the first result at index %d", retry, first.Index)
	}
	if got := l.f.Policy("p").GetVersion(); got != 1 {
		t.Fatalf("policy version after a retried put = %d, want 1", got)
	}
	if auditAfter, _, _, _ := l.f.ListAudit(0, 1000, ""); len(auditAfter) != len(auditBefore) {
		t.Fatalf("the retry added %d audit records", len(auditAfter)-len(auditBefore))
	}
	// The audit record of the first application carries the request id.
	recs, _, _, _ := l.f.ListAudit(0, 10, "policy/p")
	if len(recs) != 1 || recs[0].GetRequestId() != "req-1" {
		t.Fatalf("audit of policy/p: %v", recs)
	}

	// A decision-creating command: the retry gets the first decision, not
	// a second one under the retry's fresh decision id.
	act := l.ok(withRequest(activate("p", "d-1"), "approver/alice", "act-1"))
	again := l.ok(withRequest(activate("p", "d-2"), "approver/alice", "act-1"))
	if !again.Duplicate || again.Decision.GetId() != "d-1" || again.Decision.GetIndex() != act.Index {
		t.Fatalf("retried activate answered decision %v", again.Decision)
	}
	if l.f.Decision("d-2") != nil || l.f.Policy("p").GetVersion() != 2 {
		t.Fatalf("retried activate applied again: d-2=%v version=%d", l.f.Decision("d-2"), l.f.Policy("p").GetVersion())
	}

	// A request that failed in the FSM answers its retry with the same
	// failure, even once the retry could succeed.
	cas := l.apply(withRequest(putPolicy(policy("r", mac1), u64(7)), "operator/bob", "cas-1"))
	if !errors.Is(cas.Err, ErrVersionMismatch) {
		t.Fatalf("cas: %v", cas.Err)
	}
	l.ok(putPolicy(policy("r", mac1), nil))
	for range 6 {
		l.ok(putPolicy(policy("r", mac1), nil))
	}
	casRetry := l.apply(withRequest(putPolicy(policy("r", mac1), u64(7)), "operator/bob", "cas-1"))
	if !casRetry.Duplicate || !errors.Is(casRetry.Err, ErrVersionMismatch) || casRetry.Index != cas.Index || l.f.Policy("r").GetVersion() != 7 {
		t.Fatalf("retried failed cas: %+v, version %d", casRetry, l.f.Policy("r").GetVersion())
	}

	// The same id reused for another kind of command is refused.
	reuse := l.apply(withRequest(&fsmpb.Command{Command: &fsmpb.Command_PolicyDelete{PolicyDelete: &fsmpb.PolicyDelete{Name: "p", Actor: "operator/bob"}}}, "operator/bob", "req-1"))
	if !errors.Is(reuse.Err, ErrFailedPrecondition) || l.f.Policy("p") == nil {
		t.Fatalf("id reused for a delete: %v, policy %v", reuse.Err, l.f.Policy("p"))
	}
	// Malformed requests are refused.
	long := string(bytes.Repeat([]byte("x"), MaxRequestIDLength+1))
	for _, r := range []*fsmpb.ClientRequest{{Identity: "operator/bob", Id: long}, {Id: "x"}, {Identity: "operator/bob"}} {
		res := l.apply(&fsmpb.Command{Request: r, Command: putPolicy(policy("s", mac1), nil).Command})
		if !errors.Is(res.Err, ErrInvalid) || l.f.Policy("s") != nil {
			t.Fatalf("request %v: %v", r, res.Err)
		}
	}
}

func TestRequestIDsAreScopedByIdentity(t *testing.T) {
	l := newLog(t)
	l.ok(upsert("s1", pump(mac1)))
	a := l.ok(withRequest(putPolicy(policy("p", mac1), nil), "operator/bob", "same"))
	b := l.ok(withRequest(putPolicy(policy("p", mac1), nil), "operator/carol", "same"))
	if a.Duplicate || b.Duplicate || b.Policy.GetVersion() != 2 || l.f.Policy("p").GetVersion() != 2 {
		t.Fatalf("two identities with one id: %+v then %+v", a, b)
	}
	if idx, ok := l.f.RequestApplied("operator/carol", "same"); !ok || idx != b.Index {
		t.Fatalf("RequestApplied(carol) = %d, %v", idx, ok)
	}
}

func TestRequestTableEvictsByAgeAndCountDeterministically(t *testing.T) {
	run := func() (*FSM, []*Result) {
		f := New()
		f.st.requests.max = 3
		at := func(i uint64, d time.Duration, cmd *fsmpb.Command) *Result {
			cmd.Time = timestamppb.New(t0.Add(d))
			return f.ApplyCommand(i, cmd)
		}
		var out []*Result
		out = append(out, at(1, 0, upsert("s1", pump(mac1))))
		out = append(out, at(2, 0, withRequest(putPolicy(policy("p", mac1), nil), "operator/bob", "old")))
		// Within the window the retry is answered...
		out = append(out, at(3, RequestWindow*time.Second, withRequest(putPolicy(policy("p", mac1), nil), "operator/bob", "old")))
		// ...past it, by leader time in the log, the id is forgotten and a
		// new request with it applies.
		out = append(out, at(4, (RequestWindow+1)*time.Second, withRequest(putPolicy(policy("p", mac1), nil), "operator/bob", "old")))
		// Count: the table keeps the newest max requests.
		for i, id := range []string{"a", "b", "c"} {
			out = append(out, at(uint64(5+i), (RequestWindow+2)*time.Second, withRequest(putPolicy(policy("q", mac1), nil), "operator/bob", id)))
		}
		out = append(out, at(8, (RequestWindow+3)*time.Second, withRequest(putPolicy(policy("q", mac1), nil), "operator/bob", "b")))
		out = append(out, at(9, (RequestWindow+3)*time.Second, withRequest(putPolicy(policy("q", mac1), nil), "operator/bob", "a")))
		return f, out
	}
	f, res := run()
	if !res[2].Duplicate || res[2].Index != 2 {
		t.Fatalf("retry within the window: %+v", res[2])
	}
	if res[3].Duplicate || res[3].Policy.GetVersion() != 2 {
		t.Fatalf("request after the window: %+v", res[3])
	}
	// The table was full when "c" arrived: the oldest request ("old", as
	// re-applied at 4) went.
	if _, ok := f.RequestApplied("operator/bob", "old"); ok {
		t.Fatal("the oldest request of a full table is still remembered")
	}
	if !res[7].Duplicate || res[7].Index != 6 {
		t.Fatalf("retry of a remembered request: %+v", res[7])
	}
	// Then "a" was the oldest of a full table when "b" was retried: it
	// is forgotten and applies again.
	if res[8].Duplicate {
		t.Fatalf("evicted request answered as a duplicate: %+v", res[8])
	}
	if got := len(f.st.requests.all()); got > 3 {
		t.Fatalf("table holds %d requests, bound 3", got)
	}
	g, _ := run()
	hf, _ := f.Hash()
	hg, _ := g.Hash()
	if hf != hg {
		t.Fatal("same log, different request tables")
	}
}

func TestRequestTableSurvivesSnapshotRestore(t *testing.T) {
	l := newLog(t)
	l.ok(upsert("s1", pump(mac1)))
	first := l.ok(withRequest(putPolicy(policy("p", mac1), nil), "operator/bob", "req-1"))
	failed := l.apply(withRequest(putPolicy(policy("p", mac1), u64(9)), "operator/bob", "cas-1"))
	rule := &medmeshv1.ResponseRule{Name: "r", Kinds: []string{"scan"}, Action: medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY}
	rulePut := l.ok(withRequest(putRule(rule, nil), "approver/carol", "rule-1"))
	snap, err := l.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{failAfter: -1}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	hl, _ := l.f.Hash()
	hg, _ := g.Hash()
	if hl != hg {
		t.Fatal("restored state differs")
	}
	// A new leader that restored the snapshot answers retries the same way.
	cmd := withRequest(putPolicy(policy("p", mac1), nil), "operator/bob", "req-1")
	cmd.Time = timestamppb.New(t0.Add(time.Minute))
	retry := g.ApplyCommand(10, cmd)
	if !retry.Duplicate || retry.Index != first.Index || !proto.Equal(retry.Policy, first.Policy) || g.Policy("p").GetVersion() != 1 {
		t.Fatalf("retry after restore: %+v, version %d", retry, g.Policy("p").GetVersion())
	}
	cas := withRequest(putPolicy(policy("p", mac1), u64(9)), "operator/bob", "cas-1")
	cas.Time = timestamppb.New(t0.Add(time.Minute))
	casRetry := g.ApplyCommand(11, cas)
	if !casRetry.Duplicate || !errors.Is(casRetry.Err, ErrVersionMismatch) || casRetry.Err.Error() != failed.Err.Error() {
		t.Fatalf("failed request after restore: %+v (first: %v)", casRetry, failed.Err)
	}
	// A rule write's first result (the stored rule) survives too.
	rp := withRequest(putRule(rule, nil), "approver/carol", "rule-1")
	rp.Time = timestamppb.New(t0.Add(time.Minute))
	ruleRetry := g.ApplyCommand(12, rp)
	if !ruleRetry.Duplicate || ruleRetry.Index != rulePut.Index || ruleRetry.Rule == nil || !proto.Equal(ruleRetry.Rule, rulePut.Rule) {
		t.Fatalf("rule put retried after restore: %+v, first %+v", ruleRetry, rulePut)
	}
}
