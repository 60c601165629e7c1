package coordinator

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// closeDeadline bounds one Coordinator.Close in the shutdown tests: a
// graceful close is a bounded leadership transfer plus Raft's shutdown.
const closeDeadline = 5 * time.Second

// closeWithin closes n gracefully, failing the test with every goroutine's
// stack if Close does not return within d. It returns how long Close took.
func closeWithin(t *testing.T, n *node, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- n.c.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Logf("close %s: %v", n.cfg.ID, err)
		}
	case <-time.After(d):
		buf := make([]byte, 1<<22)
		buf = buf[:runtime.Stack(buf, true)]
		n.up = false // the cleanup must not wait on the hung Close
		t.Fatalf("Close of %s did not return within %v; goroutines:\n%s", n.cfg.ID, d, buf)
	}
	n.up = false
	n.gs.Stop()
	return time.Since(start)
}

// TestSequentialCloseOfWholeCluster stops every coordinator of a three-node
// cluster one after the other with the graceful Close (the leader transfers
// leadership first), repeatedly: the last nodes close while their peers are
// already gone, and no Close may hang.
func TestSequentialCloseOfWholeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped: starts ten three-node clusters (-short)")
	}
	const rounds = 10
	var worst time.Duration
	for i := range rounds {
		cl := newCluster(t, 3, nil)
		// Writes keep flowing through every node while they stop, as
		// sensors' reports do.
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, n := range cl.nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := medmeshv1.NewPolicyServiceClient(n.raw)
				for k := 0; ctx.Err() == nil; k++ {
					cctx, ccancel := context.WithTimeout(ctx, 200*time.Millisecond)
					c.PutPolicy(cctx, &medmeshv1.PutPolicyRequest{Policy: classPolicy(fmt.Sprintf("p-%s-%d", n.cfg.ID, k%8), "v"), Actor: "test"})
					ccancel()
				}
			}()
		}
		// Round by round: leader first (its transfer targets a peer that
		// closes next), id order, and leader last.
		var order []*node
		switch i % 3 {
		case 0:
			order = append([]*node{cl.leader()}, cl.followers()...)
		case 1:
			order = cl.nodes
		case 2:
			l := cl.leader()
			order = append(cl.followers(), l)
		}
		for _, n := range order {
			d := closeWithin(t, n, closeDeadline)
			worst = max(worst, d)
			t.Logf("round %d: close %s took %v", i, n.cfg.ID, d.Round(time.Millisecond))
		}
		cancel()
		wg.Wait()
	}
	t.Logf("worst Close over %d rounds of 3 nodes: %v", rounds, worst.Round(time.Millisecond))
}
