package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// watchMAC is the device the watch tests' policies are for; reportWatched
// makes it known.
const watchMAC = "02:00:00:00:00:01"

func reportWatched(t *testing.T, n *node) {
	t.Helper()
	report(t, n, "s-watch", 1, &medmeshv1.Device{Mac: watchMAC, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION})
}

// activate puts and activates a device policy: one decision each. (A class
// policy gives one per device of the class, and these clusters have none.)
func activate(t *testing.T, n *node, name string) *medmeshv1.ActivatePolicyResponse {
	t.Helper()
	p := classPolicy(name, "x")
	p.Subject = &medmeshv1.Policy_DeviceMac{DeviceMac: watchMAC}
	for try := 0; ; try++ {
		_, err := n.policies().PutPolicy(ctxT(t, 5*time.Second), &medmeshv1.PutPolicyRequest{Policy: p, Actor: "test"})
		if err == nil {
			break
		}
		if c := status.Code(err); (c != codes.Unavailable && c != codes.Unknown) || try == 200 {
			t.Fatalf("put %s: %v", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for try := 0; ; try++ {
		resp, err := n.policies().ActivatePolicy(ctxT(t, 5*time.Second), &medmeshv1.ActivatePolicyRequest{Name: name, Actor: "test", Reason: "watch test"})
		if err == nil {
			return resp
		}
		if status.Code(err) != codes.Unavailable || try == 200 {
			t.Fatalf("activate %s: %v", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWatchDecisionsFromFollowerResumes follows the decision log on a
// follower, disconnects mid-stream, resumes with the last token, and checks
// the entries received are exactly the committed log: in index order, no
// gap, no duplicate.
func TestWatchDecisionsFromFollowerResumes(t *testing.T) {
	cl := newCluster(t, 3, nil)
	leader := cl.leader()
	fol := cl.followers()[0]
	reportWatched(t, leader)
	for i := 0; i < 5; i++ {
		activate(t, leader, fmt.Sprintf("w%d", i))
	}

	var got []*medmeshv1.Decision
	var lastHeartbeat uint64
	recv := func(ctx context.Context, req *medmeshv1.WatchDecisionsRequest, n int) string {
		stream, err := fol.decisions().WatchDecisions(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		token := ""
		for len(got) < n {
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("recv: %v", err)
			}
			if m.GetAppliedIndex() < lastHeartbeat {
				t.Fatalf("applied index went backwards: %d < %d", m.GetAppliedIndex(), lastHeartbeat)
			}
			if m.GetDecision() == nil {
				lastHeartbeat = m.GetAppliedIndex()
				continue
			}
			got = append(got, m.GetDecision())
			token = m.GetResumeToken()
		}
		return token
	}
	ctx1, cancel1 := context.WithTimeout(context.Background(), 10*time.Second)
	token := recv(ctx1, &medmeshv1.WatchDecisionsRequest{WatcherId: "e1"}, 3)
	cancel1() // disconnect after 3 of 5

	// More decisions are committed while the watcher is away.
	for i := 5; i < 8; i++ {
		activate(t, cl.nodes[i%3], fmt.Sprintf("w%d", i))
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	done := make(chan struct{})
	go func() {
		defer close(done)
		recv(ctx2, &medmeshv1.WatchDecisionsRequest{ResumeToken: token, WatcherId: "e1"}, 10)
	}()
	// And while it is connected again.
	for i := 8; i < 10; i++ {
		activate(t, leader, fmt.Sprintf("w%d", i))
	}
	select {
	case <-done:
	case <-ctx2.Done():
		t.Fatalf("resumed watch received %d of 10 decisions", len(got))
	}

	all, err := leader.decisions().ListDecisions(ctxT(t, 5*time.Second), &medmeshv1.ListDecisionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.GetDecisions()) != 10 || len(got) != 10 {
		t.Fatalf("log has %d decisions, watcher got %d", len(all.GetDecisions()), len(got))
	}
	for i, d := range got {
		if d.GetId() != all.GetDecisions()[i].GetId() || d.GetIndex() != all.GetDecisions()[i].GetIndex() {
			t.Fatalf("entry %d: got %s@%d, want %s@%d", i, d.GetId(), d.GetIndex(), all.GetDecisions()[i].GetId(), all.GetDecisions()[i].GetIndex())
		}
		if i > 0 && d.GetIndex() <= got[i-1].GetIndex() {
			t.Fatalf("not in index order at %d", i)
		}
	}
	// from_index works as well as the token.
	ctx3, cancel3 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel3()
	stream, err := fol.decisions().WatchDecisions(ctx3, &medmeshv1.WatchDecisionsRequest{FromIndex: got[8].GetIndex()})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.GetDecision() != nil {
			if m.GetDecision().GetId() != got[9].GetId() {
				t.Fatalf("from_index %d: first entry %s, want %s", got[8].GetIndex(), m.GetDecision().GetId(), got[9].GetId())
			}
			break
		}
	}
}

// TestSensorReportThroughFollowerExactlyOnce streams sensor batches to a
// follower (proxied to the leader), retries some, and checks every record
// applied once.
func TestSensorReportThroughFollowerExactlyOnce(t *testing.T) {
	cl := newCluster(t, 3, nil)
	fol := cl.followers()[0]
	ctx := ctxT(t, 10*time.Second)
	stream, err := medmeshv1.NewSensorServiceClient(fol.conn).Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(from, to uint64) *medmeshv1.ReportResponse {
		req := &medmeshv1.ReportRequest{SensorId: "s1"}
		for s := from; s <= to; s++ {
			req.Records = append(req.Records, &medmeshv1.SensorRecord{Seq: s, Record: &medmeshv1.SensorRecord_Alert{Alert: &medmeshv1.Alert{
				DeviceMac: "00:1b:44:11:3a:b7", Kind: "new_peer", Risk: &medmeshv1.RiskScore{Score: 40}}}})
		}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if r := send(1, 10); r.GetAckedSeq() != 10 || r.GetIndex() == 0 {
		t.Fatalf("ack = %v", r)
	}
	if r := send(5, 15); r.GetAckedSeq() != 15 { // 5..10 are retries
		t.Fatalf("ack = %v", r)
	}
	_ = stream.CloseSend()
	alerts := medmeshv1.NewAlertServiceClient(fol.conn)
	resp, err := alerts.ListAlerts(ctx, &medmeshv1.ListAlertsRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetAlerts()); n != 15 {
		t.Fatalf("alerts = %d, want 15 (each record once)", n)
	}
	// Pagination walks the same set.
	seen := 0
	tok := ""
	for {
		page, err := alerts.ListAlerts(ctx, &medmeshv1.ListAlertsRequest{PageSize: 4, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		seen += len(page.GetAlerts())
		if tok = page.GetNextPageToken(); tok == "" {
			break
		}
	}
	if seen != 15 {
		t.Fatalf("paged through %d alerts, want 15", seen)
	}
}

// TestDecisionReachesFollowersAtOnce: with a CommitTimeout of 1 s,
// followers still apply a decision within half of it, because the leader
// sends them a commit notice as soon as it commits (without it they would
// learn it only after 1-2 s, one to two CommitTimeouts).
func TestDecisionReachesFollowersAtOnce(t *testing.T) {
	cl := newCluster(t, 3, func(c *Config) { c.CommitTimeout = time.Second })
	leader := cl.leader()
	reportWatched(t, leader)
	for i := range 3 {
		resp := activate(t, leader, fmt.Sprintf("notice%d", i))
		idx := resp.GetDecisionIndex()
		if idx == 0 {
			t.Fatalf("activation without a decision index: %v", resp)
		}
		start := time.Now()
		for _, f := range cl.followers() {
			testutil.Eventually(t, 500*time.Millisecond-time.Since(start), time.Millisecond, func() bool {
				return f.c.FSM().AppliedIndex() >= idx
			}, "follower %s applied %d, want %d within 500 ms (CommitTimeout 1 s)", f.cfg.ID, f.c.FSM().AppliedIndex(), idx)
		}
		t.Logf("decision %d on both followers %v after the leader's commit", idx, time.Since(start))
	}
}
