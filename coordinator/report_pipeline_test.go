package coordinator

import (
	"fmt"
	"testing"
	"time"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestReportPipelinedAcksInOrder sends a sensor's requests back to back on
// one stream, without waiting for any acknowledgement, through a follower
// (proxied to the leader) and to the leader: the leader proposes them as
// they arrive, and the acknowledgements come back one per request, in
// order, each at the request's last seq; every record is applied once.
// A resend of records already applied, on a new stream, is acknowledged
// without applying anything again.
func TestReportPipelinedAcksInOrder(t *testing.T) {
	cl := newCluster(t, 3, nil)
	ctx := ctxT(t, 30*time.Second)
	const requests, per = 64, 4
	send := func(n *node, sensor string, from uint64, count int) []uint64 {
		t.Helper()
		st, err := medmeshv1.NewSensorServiceClient(n.conn).Report(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var lasts []uint64
		seq := from
		for range count {
			req := &medmeshv1.ReportRequest{SensorId: sensor}
			for range per {
				req.Records = append(req.Records, &medmeshv1.SensorRecord{Seq: seq, Record: &medmeshv1.SensorRecord_Alert{Alert: &medmeshv1.Alert{
					DeviceMac: "02:00:00:00:00:01", Kind: "new_peer", Summary: fmt.Sprintf("record %d", seq),
					Risk: &medmeshv1.RiskScore{Score: 10},
				}}})
				seq++
			}
			if err := st.Send(req); err != nil {
				t.Fatal(err)
			}
			lasts = append(lasts, seq-1)
		}
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
		var acks []uint64
		for range lasts {
			resp, err := st.Recv()
			if err != nil {
				t.Fatalf("ack %d of %d: %v", len(acks)+1, len(lasts), err)
			}
			acks = append(acks, resp.GetAckedSeq())
		}
		if _, err := st.Recv(); err == nil {
			t.Fatal("a response more than requests sent")
		}
		for i := range lasts {
			if acks[i] < lasts[i] || (i > 0 && acks[i] < acks[i-1]) {
				t.Fatalf("request %d (last seq %d) acknowledged at %d; acknowledgements %v", i, lasts[i], acks[i], acks)
			}
		}
		return acks
	}
	count := func(sensor string) int {
		t.Helper()
		resp, err := medmeshv1.NewAlertServiceClient(cl.leader().conn).ListAlerts(ctx, &medmeshv1.ListAlertsRequest{PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, a := range resp.GetAlerts() {
			if a.GetSensorId() != sensor {
				continue
			}
			if seen[a.GetId()] {
				t.Fatalf("alert %s twice", a.GetId())
			}
			seen[a.GetId()] = true
		}
		return len(seen)
	}
	for _, c := range []struct {
		sensor string
		via    *node
	}{{"s-follower", cl.followers()[0]}, {"s-leader", cl.leader()}} {
		acks := send(c.via, c.sensor, 1, requests)
		if got, want := acks[len(acks)-1], uint64(requests*per); got != want {
			t.Fatalf("%s: last acknowledgement %d, want %d", c.sensor, got, want)
		}
		if n := count(c.sensor); n != requests*per {
			t.Fatalf("%s: %d alerts, want %d", c.sensor, n, requests*per)
		}
		// The sensor missed the acknowledgements and sends the last 8
		// requests again: acknowledged, not applied twice.
		again := send(c.via, c.sensor, uint64((requests-8)*per+1), 8)
		if again[len(again)-1] != uint64(requests*per) {
			t.Fatalf("%s: resend acknowledged at %v", c.sensor, again)
		}
		if n := count(c.sensor); n != requests*per {
			t.Fatalf("%s: %d alerts after the resend, want %d", c.sensor, n, requests*per)
		}
	}
}
