package reporter

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/gossip"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// These tests run the reporter against three real in-process coordinators
// (hashicorp/raft over raft-wal with fdatasync, real gRPC).

// taggedAlert carries its identity in Summary and leaves Id empty, so the
// coordinators name it sensor/seq: only the seq dedupe stands between a
// resend and a duplicate.
func taggedAlert(dev, n int) *medmeshv1.SensorRecord {
	return &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_Alert{Alert: &medmeshv1.Alert{
		DeviceMac: fmt.Sprintf("00:1b:4f:00:00:%02x", dev),
		Kind:      "new_peer",
		Summary:   fmt.Sprintf("dev%d-%04d", dev, n),
	}}}
}

func TestOutageWithRealCoordinators(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped: starts three coordinators (-short)")
	}
	cl := startCoords(t, 3, nil)
	cfg := testConfig("sensor-icu-1", cl.addrs()...)
	x := run(t, cfg, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	enq := func(from, to int) {
		for n := from; n < to; n++ {
			if err := x.r.Enqueue(ctx, taggedAlert(n%4, n)); err != nil {
				t.Fatal(err)
			}
		}
	}
	enq(0, 100)
	testutil.Eventually(t, 20*time.Second, 10*time.Millisecond, func() bool {
		return x.sp.Stats().AckedSeq == 100
	}, "first alerts not acknowledged (acked %d)", x.sp.Stats().AckedSeq)

	// Every coordinator stops; the sensor keeps detecting and spooling.
	cl.stop()
	enq(100, 300)
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() bool {
		return x.sp.Stats().Records == 200
	}, "outage alerts not spooled (%d)", x.sp.Stats().Records)

	cl.start()
	enq(300, 350)
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, func() bool {
		return x.sp.Stats().AckedSeq == 350 && x.sp.Stats().Records == 0
	}, "alerts not delivered after the coordinators came back (acked %d)", x.sp.Stats().AckedSeq)

	alerts, err := cl.alerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	last := map[string]int{}
	for _, a := range alerts {
		if a.GetSensorId() != "sensor-icu-1" {
			continue
		}
		tag := a.GetSummary()
		seen[tag]++
		num, _ := strconv.Atoi(tag[strings.IndexByte(tag, '-')+1:])
		if prev, ok := last[a.GetDeviceMac()]; ok && num <= prev {
			t.Fatalf("device %s: alert %d committed after %d", a.GetDeviceMac(), num, prev)
		}
		last[a.GetDeviceMac()] = num
	}
	for n := range 350 {
		if tag := fmt.Sprintf("dev%d-%04d", n%4, n); seen[tag] != 1 {
			t.Fatalf("alert %s committed %d times", tag, seen[tag])
		}
	}
	if len(seen) != 350 {
		t.Fatalf("%d distinct alerts committed, want 350", len(seen))
	}
	t.Logf("350 alerts committed exactly once, in order per device, across a full outage of 3 coordinators")
}

func TestRoamingWithRealCoordinators(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped: starts three coordinators (-short)")
	}
	cl := startCoords(t, 3, nil)
	pump := flow.MAC{0x00, 0x1b, 0x4f, 0, 0, 0x42}

	// Sensor A learned the pump and reports its frozen baseline.
	a := run(t, testConfig("sensor-ed", cl.addrs()...), t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bl := &medmeshv1.Baseline{
		DeviceMac: pump.String(), DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, Version: 1,
		Entries: []*medmeshv1.BaselineEntry{{PeerCidr: "10.2.0.5/32", Protocol: 6, Port: 2575, App: "hl7", Direction: medmeshv1.Direction_DIRECTION_OUTBOUND}},
	}
	if err := a.r.Enqueue(ctx, &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_Baseline{Baseline: bl}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, 10*time.Millisecond, func() bool {
		return a.sp.Stats().AckedSeq == 1
	}, "baseline not committed")

	// Gossip tells sensor B that A saw the pump; the pump then shows up at B.
	ga := startGossip(t, "sensor-ed", "")
	gb := startGossip(t, "sensor-icu", ga.Addr())
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() bool { return gb.NumAlive() == 2 }, "gossip did not form")
	ga.Observe(pump, time.Now())
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() bool {
		s, ok := gb.Sighting(pump)
		return ok && s.Sensor == "sensor-ed"
	}, "sighting did not reach B")

	b := run(t, testConfig("sensor-icu", cl.addrs()[2], cl.addrs()[0]), t.TempDir())
	prev, arrived := gb.Observe(pump, time.Now())
	if !arrived || prev.Sensor != "sensor-ed" {
		t.Fatalf("roaming hook: arrived=%v prev=%+v", arrived, prev)
	}
	resp, err := b.r.GetBaseline(ctx, pump.String(), medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP)
	if err != nil {
		t.Fatal(err)
	}
	got := resp.GetBaseline()
	if resp.GetClassBaseline() || got.GetSensorId() != "sensor-ed" || len(got.GetEntries()) != 1 ||
		got.GetEntries()[0].GetPort() != 2575 || got.GetEntries()[0].GetPeerCidr() != "10.2.0.5/32" {
		t.Fatalf("replicated baseline at B: %v", resp)
	}
}

func startGossip(t *testing.T, name, join string) *gossip.Gossip {
	t.Helper()
	cfg := gossip.TestConfig(name)
	cfg.Keys = [][]byte{[]byte("0123456789abcdef")}
	if join != "" {
		cfg.Join = []string{join}
	}
	g, err := gossip.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}
