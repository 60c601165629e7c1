package coordinator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// putOnce retries one policy write, with its one request id, through the
// running coordinators until it is acknowledged, as the CLI does.
func putOnce(t *testing.T, cl *cluster, req *medmeshv1.PutPolicyRequest) *medmeshv1.PutPolicyResponse {
	t.Helper()
	return writeOnce(t, cl, "put "+req.GetPolicy().GetName()+" (request "+req.GetRequestId()+")",
		func(ctx context.Context, cc *grpc.ClientConn) (*medmeshv1.PutPolicyResponse, error) {
			return medmeshv1.NewPolicyServiceClient(cc).PutPolicy(ctx, req)
		})
}

// writeOnce retries one write through the running coordinators until it is
// acknowledged, as the CLI does: UNAVAILABLE, UNKNOWN and deadlines say
// nothing about whether an earlier attempt committed, and the request id
// the call carries makes the retry safe.
func writeOnce[R any](t *testing.T, cl *cluster, what string, call func(context.Context, *grpc.ClientConn) (R, error)) R {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for try := 0; ; try++ {
		var up []*node
		for _, n := range cl.nodes {
			if n.up {
				up = append(up, n)
			}
		}
		n := up[try%len(up)]
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := call(ctx, n.raw)
		cancel()
		if err == nil {
			return resp
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.Unknown, codes.DeadlineExceeded, codes.Canceled:
		default:
			t.Fatalf("%s via %s: %v", what, n.cfg.ID, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no answer in 20 s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A write whose leader is killed while it is in flight, retried with the
// same request id through the survivors, takes effect exactly once: the
// policy's version counts each logical write once and the audit trail
// holds one record per request id. A retry of an acknowledged write (an
// answer lost on the way back) returns the first answer, same index.
func TestRetriedWriteAcrossLeaderKillAppliesOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: kills and restarts leaders (~10 s)")
	}
	cl := newCluster(t, 3, nil)
	long := &medmeshv1.PutPolicyRequest{Policy: classPolicy("long-id", "x"), RequestId: strings.Repeat("x", 65)}
	if _, err := cl.leader().policies().PutPolicy(ctxT(t, 5*time.Second), long); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a 65-byte request id: %v, want InvalidArgument", err)
	}
	rnd := rand.New(rand.NewPCG(16, 5))
	const name, writes = "counter", 12
	for i := 0; i < writes; i++ {
		req := &medmeshv1.PutPolicyRequest{Policy: classPolicy(name, fmt.Sprintf("w%d", i)), Actor: "test", RequestId: fmt.Sprintf("req-%d", i)}
		if i%4 != 1 {
			putOnce(t, cl, req)
			continue
		}
		// Kill the leader while the write is in flight through it.
		leader := cl.leader()
		first := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := medmeshv1.NewPolicyServiceClient(leader.raw).PutPolicy(ctx, req)
			first <- err
		}()
		time.Sleep(time.Duration(rnd.IntN(1500)) * time.Microsecond)
		leader.stop(true)
		err := <-first
		// Whatever the first attempt answered, the client retries with the
		// same id: the answer may have been lost on the way back.
		resp := putOnce(t, cl, req)
		again := putOnce(t, cl, req)
		if again.GetIndex() != resp.GetIndex() || again.GetPolicy().GetVersion() != resp.GetPolicy().GetVersion() {
			t.Fatalf("write %d: retry answered index %d v%d, first answer index %d v%d", i, again.GetIndex(), again.GetPolicy().GetVersion(), resp.GetIndex(), resp.GetPolicy().GetVersion())
		}
		t.Logf("write %d: leader %s killed in flight (first attempt: %v); acknowledged at index %d, v%d", i, leader.cfg.ID, status.Code(err), resp.GetIndex(), resp.GetPolicy().GetVersion())
		leader.start()
		cl.waitReady()
	}

	var got *medmeshv1.GetPolicyResponse
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool {
		var err error
		got, err = cl.leader().policies().GetPolicy(ctxT(t, 2*time.Second), &medmeshv1.GetPolicyRequest{Name: name})
		return err == nil
	}, "read %s", name)
	if v := got.GetPolicy().GetVersion(); v != writes {
		t.Fatalf("policy version %d after %d writes: a retried write applied %s", v, writes, map[bool]string{true: "twice", false: "never"}[v > writes])
	}
	audit, err := cl.leader().policies().ListAuditRecords(ctxT(t, 5*time.Second), &medmeshv1.ListAuditRecordsRequest{Resource: "policy/" + name, PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, r := range audit.GetRecords() {
		seen[r.GetRequestId()]++
	}
	for i := 0; i < writes; i++ {
		if id := fmt.Sprintf("req-%d", i); seen[id] != 1 {
			t.Errorf("request %s has %d audit records, want 1", id, seen[id])
		}
	}
	if len(audit.GetRecords()) != writes {
		t.Errorf("%d audit records for %d writes", len(audit.GetRecords()), writes)
	}
	// Every replica agrees, restarted ones included.
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool {
		h0, _ := cl.nodes[0].c.FSM().Hash()
		for _, n := range cl.nodes[1:] {
			if h, _ := n.c.FSM().Hash(); h != h0 || n.c.FSM().AppliedIndex() != cl.nodes[0].c.FSM().AppliedIndex() {
				return false
			}
		}
		return true
	}, "replicas differ")
}

// Response rule writes take request ids too: puts and a delete retried
// across leader kills apply once each (the rule's version counts the puts,
// one audit record per request id), and a retried delete answers its first
// result instead of NOT_FOUND.
func TestRetriedRuleWritesAcrossLeaderKillApplyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: kills and restarts leaders (~10 s)")
	}
	cl := newCluster(t, 3, nil)
	rules := func(n *node) medmeshv1.RuleServiceClient { return medmeshv1.NewRuleServiceClient(n.raw) }
	long := &medmeshv1.PutRuleRequest{Rule: &medmeshv1.ResponseRule{Name: "x", Action: medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY}, RequestId: strings.Repeat("x", 65)}
	if _, err := rules(cl.leader()).PutRule(ctxT(t, 5*time.Second), long); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a 65-byte request id: %v, want InvalidArgument", err)
	}
	rnd := rand.New(rand.NewPCG(16, 6))
	const name, puts = "retried-rule", 6
	// killInFlight sends call through the leader, kills the leader while
	// it is in flight, restarts it and returns the first attempt's error.
	killInFlight := func(call func(ctx context.Context, cc *grpc.ClientConn) error) error {
		leader := cl.leader()
		first := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			first <- call(ctx, leader.raw)
		}()
		time.Sleep(time.Duration(rnd.IntN(1500)) * time.Microsecond)
		leader.stop(true)
		err := <-first
		leader.start()
		cl.waitReady()
		return err
	}
	for i := 0; i < puts; i++ {
		req := &medmeshv1.PutRuleRequest{Rule: &medmeshv1.ResponseRule{Name: name, Kinds: []string{"scan"}, MinScore: uint32(10 + i),
			Action: medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY}, Actor: "test", RequestId: fmt.Sprintf("rule-%d", i)}
		put := func(ctx context.Context, cc *grpc.ClientConn) (*medmeshv1.PutRuleResponse, error) {
			return medmeshv1.NewRuleServiceClient(cc).PutRule(ctx, req)
		}
		what := fmt.Sprintf("put rule (request %s)", req.RequestId)
		if i%3 != 1 {
			writeOnce(t, cl, what, put)
			continue
		}
		err := killInFlight(func(ctx context.Context, cc *grpc.ClientConn) error { _, err := put(ctx, cc); return err })
		resp := writeOnce(t, cl, what, put)
		again := writeOnce(t, cl, what, put)
		if again.GetIndex() != resp.GetIndex() || again.GetRule().GetVersion() != resp.GetRule().GetVersion() {
			t.Fatalf("put %d: retry answered index %d v%d, first answer index %d v%d", i, again.GetIndex(), again.GetRule().GetVersion(), resp.GetIndex(), resp.GetRule().GetVersion())
		}
		t.Logf("put %d: leader killed in flight (first attempt: %v); acknowledged at index %d, v%d", i, status.Code(err), resp.GetIndex(), resp.GetRule().GetVersion())
	}
	list := writeOnce(t, cl, "list rules", func(ctx context.Context, cc *grpc.ClientConn) (*medmeshv1.ListRulesResponse, error) {
		return medmeshv1.NewRuleServiceClient(cc).ListRules(ctx, &medmeshv1.ListRulesRequest{})
	})
	var version uint64
	for _, r := range list.GetRules() {
		if r.GetName() == name {
			version = r.GetVersion()
		}
	}
	if version != puts {
		t.Fatalf("rule version %d after %d puts: a retried put applied %s", version, puts, map[bool]string{true: "twice", false: "never"}[version > puts])
	}

	del := &medmeshv1.DeleteRuleRequest{Name: name, Reason: "done", RequestId: "rule-delete"}
	deleteCall := func(ctx context.Context, cc *grpc.ClientConn) (*medmeshv1.DeleteRuleResponse, error) {
		return medmeshv1.NewRuleServiceClient(cc).DeleteRule(ctx, del)
	}
	err := killInFlight(func(ctx context.Context, cc *grpc.ClientConn) error { _, err := deleteCall(ctx, cc); return err })
	resp := writeOnce(t, cl, "delete rule", deleteCall)
	if again := writeOnce(t, cl, "delete rule", deleteCall); again.GetIndex() != resp.GetIndex() {
		t.Fatalf("retried delete answered index %d, first answer %d", again.GetIndex(), resp.GetIndex())
	}
	t.Logf("delete: leader killed in flight (first attempt: %v); acknowledged at index %d", status.Code(err), resp.GetIndex())
	// The connection to a restarted node may still be resetting: only an
	// answer counts.
	var newDelete error
	testutil.Eventually(t, 10*time.Second, 50*time.Millisecond, func() bool {
		_, newDelete = rules(cl.leader()).DeleteRule(ctxT(t, 5*time.Second), &medmeshv1.DeleteRuleRequest{Name: name, RequestId: "another"})
		return status.Code(newDelete) != codes.Unavailable
	}, "no coordinator answered a new delete")
	if status.Code(newDelete) != codes.NotFound {
		t.Fatalf("a new delete of the deleted rule: %v, want NotFound", newDelete)
	}

	audit := writeOnce(t, cl, "audit", func(ctx context.Context, cc *grpc.ClientConn) (*medmeshv1.ListAuditRecordsResponse, error) {
		return medmeshv1.NewPolicyServiceClient(cc).ListAuditRecords(ctx, &medmeshv1.ListAuditRecordsRequest{Resource: "rule/" + name, PageSize: 1000})
	})
	seen := map[string]int{}
	for _, r := range audit.GetRecords() {
		seen[r.GetRequestId()]++
	}
	for i := 0; i <= puts; i++ {
		id := fmt.Sprintf("rule-%d", i)
		if i == puts {
			id = "rule-delete"
		}
		if seen[id] != 1 {
			t.Errorf("request %s has %d audit records, want 1", id, seen[id])
		}
	}
	if len(audit.GetRecords()) != puts+1 {
		t.Errorf("%d audit records for %d writes", len(audit.GetRecords()), puts+1)
	}
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool {
		h0, _ := cl.nodes[0].c.FSM().Hash()
		for _, n := range cl.nodes[1:] {
			if h, _ := n.c.FSM().Hash(); h != h0 || n.c.FSM().AppliedIndex() != cl.nodes[0].c.FSM().AppliedIndex() {
				return false
			}
		}
		return true
	}, "replicas differ")
}
