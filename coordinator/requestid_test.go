package coordinator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// putOnce retries one write, with its one request id, through the running
// coordinators until it is acknowledged, as the CLI does: UNAVAILABLE,
// UNKNOWN and deadlines say nothing about whether an earlier attempt
// committed, and the request id makes the retry safe.
func putOnce(t *testing.T, cl *cluster, req *medmeshv1.PutPolicyRequest) *medmeshv1.PutPolicyResponse {
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
		resp, err := medmeshv1.NewPolicyServiceClient(n.raw).PutPolicy(ctx, req)
		cancel()
		if err == nil {
			return resp
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.Unknown, codes.DeadlineExceeded, codes.Canceled:
		default:
			t.Fatalf("put %s (request %s) via %s: %v", req.GetPolicy().GetName(), req.GetRequestId(), n.cfg.ID, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("put %s (request %s): no answer in 20 s: %v", req.GetPolicy().GetName(), req.GetRequestId(), err)
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
