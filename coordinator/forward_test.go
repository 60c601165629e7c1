package coordinator

import (
	"context"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// faultListener is a coordinator's API listener whose accepted
// connections a test can stall (writes wait while stalled: the server has
// read and handled a request but its answer does not leave) and cut (every
// open connection closed, as a reset between two hosts would).
type faultListener struct {
	net.Listener
	stalled atomic.Bool
	mu      sync.Mutex
	conns   []net.Conn
}

func (l *faultListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	fc := &faultConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns = append(l.conns, fc)
	l.mu.Unlock()
	return fc, nil
}

// cut closes every connection accepted so far and lets later ones write.
func (l *faultListener) cut() {
	l.mu.Lock()
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	l.stalled.Store(false)
}

type faultConn struct {
	net.Conn
	l      *faultListener
	closed atomic.Bool
}

func (c *faultConn) Write(p []byte) (int, error) {
	for c.l.stalled.Load() {
		if c.closed.Load() {
			return 0, net.ErrClosed
		}
		time.Sleep(time.Millisecond)
	}
	return c.Conn.Write(p)
}

func (c *faultConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// A write a follower forwards is sent to the leader once. When the
// connection to the leader breaks after the leader committed the write but
// before its answer arrived, the caller learns UNKNOWN (the outcome is not
// known), never UNAVAILABLE (which says nothing happened and invites a
// retry) and never a second proposal of the same write: a write without a
// request id would be applied twice (two audit records; a policy's version
// would read 2). Both ways a follower forwards: a unary call (PutPolicy)
// and an upload stream (ImportMDS2, the file the follower kept).
func TestForwardedWriteIsSentOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: starts a 3-coordinator cluster")
	}
	cl := newCluster(t, 3, nil)
	leader := cl.leader()
	follower := cl.followers()[0]
	mds2, err := os.ReadFile("../compliance/internal/mds2/testdata/acme-infuser-3000.xlsx")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		write     func(ctx context.Context) error
		committed func(n *node) bool
		resource  string // of its audit record
	}{{
		name: "unary",
		write: func(ctx context.Context) error {
			_, err := medmeshv1.NewPolicyServiceClient(follower.raw).PutPolicy(ctx,
				&medmeshv1.PutPolicyRequest{Policy: classPolicy("forwarded-once", "v1"), Actor: "test"})
			return err
		},
		committed: func(n *node) bool { return n.c.FSM().Policy("forwarded-once") != nil },
		resource:  "policy/forwarded-once",
	}, {
		name: "upload",
		write: func(ctx context.Context) error {
			st, err := medmeshv1.NewComplianceServiceClient(follower.raw).ImportMDS2(ctx)
			if err != nil {
				return err
			}
			if err := st.Send(&medmeshv1.ImportMDS2Request{Chunk: mds2,
				Header: &medmeshv1.ImportMDS2Request_Header{Name: "acme-infuser-3000.xlsx", Reason: "vendor MDS2"}}); err != nil && err != io.EOF {
				return err
			}
			_, err = st.CloseAndRecv()
			return err
		},
		committed: func(n *node) bool { a, _ := n.c.FSM().MDS2s(); return len(a) > 0 },
		resource:  "mds2/Acme Medical/Infuser 3000",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			// The follower's connection to the leader is made (its HTTP/2
			// handshake needs the leader's writes) by a forward before.
			if _, err := medmeshv1.NewPolicyServiceClient(follower.raw).PutPolicy(ctxT(t, 5*time.Second),
				&medmeshv1.PutPolicyRequest{Policy: classPolicy("warm-"+tc.name, "x"), Actor: "test"}); err != nil {
				t.Fatal(err)
			}
			leader.api.stalled.Store(true)
			t.Cleanup(func() { leader.api.stalled.Store(false) })
			done := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				done <- tc.write(ctx)
			}()
			testutil.Eventually(t, 10*time.Second, time.Millisecond, func() bool { return tc.committed(leader) },
				"the forwarded write did not commit on the leader")
			leader.api.cut() // the leader committed; its answer is lost with the connection

			select {
			case err := <-done:
				if status.Code(err) != codes.Unknown {
					t.Errorf("forwarded write whose answer was lost: %v, want UNKNOWN", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no answer from the follower 10 s after the connection to the leader broke")
			}

			// Applied once, on every replica.
			testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() bool {
				for _, n := range cl.nodes {
					if !tc.committed(n) {
						return false
					}
				}
				return true
			}, "the write did not reach every replica")
			time.Sleep(500 * time.Millisecond) // a second proposal, if one was sent, commits by now
			audit, err := leader.policies().ListAuditRecords(ctxT(t, 5*time.Second),
				&medmeshv1.ListAuditRecordsRequest{Resource: tc.resource, PageSize: 100})
			if err != nil {
				t.Fatal(err)
			}
			if n := len(audit.GetRecords()); n != 1 {
				t.Fatalf("%d audit records of %s after one write: the forward was proposed %d times", n, tc.resource, n)
			}
		})
	}
}
