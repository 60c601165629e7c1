package reporter

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator"
	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/internal/spool"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestBenchReporting measures the reporting path: 100 simulated sensors,
// each a real reporter with its own fsynced spool, stream alerts and flow
// summaries (1 alert to 9 summaries) into three real in-process
// coordinators for a fixed window at a given offered rate per sensor. It
// reports the committed (acknowledged) records per second and the Raft
// entries per second they cost. Run with MEDMESH_BENCH=1 (make
// bench-mesh); MEDMESH_BENCH_OUT names a file for the markdown table.
func TestBenchReporting(t *testing.T) {
	if os.Getenv("MEDMESH_BENCH") == "" {
		t.Skip("skipped: benchmark; run with MEDMESH_BENCH=1 (make bench-mesh)")
	}
	const sensors = 100
	window := 10 * time.Second
	rows := []string{
		"| offered per sensor | offered total | committed records/s | alerts/s | summaries/s | Raft entries/s | records per entry |",
		"| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
	}
	for _, rate := range []int{10, 30, 100} {
		r := benchReport(t, sensors, rate, window)
		offered := "unbounded"
		total := "—"
		if rate > 0 {
			offered, total = fmt.Sprintf("%d/s", rate), fmt.Sprintf("%d/s", rate*sensors)
		}
		row := fmt.Sprintf("| %s | %s | %.0f | %.0f | %.0f | %.1f | %.0f |", offered, total,
			r.recordsPS, r.alertsPS, r.summariesPS, r.entriesPS, r.recordsPS/max(r.entriesPS, 1e-9))
		t.Log(row)
		rows = append(rows, row)
	}
	rows = append(rows, fmt.Sprintf("\n%d sensors (reporter + bbolt spool each, fsync per batch) -> 3 coordinators (raft-wal, fdatasync), all in one process on loopback; window %v per row; Raft entries = commit index delta.", sensors, window))
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		rows = append(rows, fmt.Sprintf("Load average at the end (shared 2-core machine): %s.", strings.Fields(string(la))[0]))
	}
	out := strings.Join(rows, "\n") + "\n"
	fmt.Print(out)
	if path := os.Getenv("MEDMESH_BENCH_OUT"); path != "" {
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type reportResult struct {
	recordsPS, alertsPS, summariesPS, entriesPS float64
}

func benchRecord(sensor string, k int) *medmeshv1.SensorRecord {
	if k%10 == 0 {
		return &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_Alert{Alert: &medmeshv1.Alert{
			DeviceMac: fmt.Sprintf("02:00:00:00:%02x:%02x", k%7, k%5), Kind: "new_peer", Summary: "bench",
		}}}
	}
	return &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_FlowSummary{FlowSummary: &medmeshv1.FlowSummary{
		DeviceMac: fmt.Sprintf("02:00:00:00:%02x:%02x", k%7, k%5), DeviceIp: "10.1.0.9", PeerIp: fmt.Sprintf("10.2.%d.%d", k%13, k%200),
		Protocol: 6, Port: 443, Direction: medmeshv1.Direction_DIRECTION_OUTBOUND,
		WindowStart: timestamppb.Now(), WindowSeconds: 60, Flows: 3, PacketsOut: 30, BytesOut: 3000, PacketsIn: 20, BytesIn: 9000,
	}}}
}

func benchReport(t *testing.T, sensors, rate int, window time.Duration) reportResult {
	// Production Raft timers: the bench measures the real batching.
	cl := startCoords(t, 3, func(c *coordinator.Config) {
		d := coordinator.DefaultConfig()
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout, c.CommitTimeout =
			d.HeartbeatTimeout, d.ElectionTimeout, d.LeaderLeaseTimeout, d.CommitTimeout
	})
	defer cl.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	type sensor struct {
		r    *Reporter
		sp   *spool.Spool
		done chan error
	}
	var ss []*sensor
	runCtx, stopRun := context.WithCancel(context.Background())
	for i := range sensors {
		scfg := spool.DefaultConfig()
		scfg.Dir = t.TempDir()
		sp, err := spool.Open(scfg, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		addrs := cl.addrs()
		// Spread the sensors over the replicas: followers forward.
		addrs = append(addrs[i%3:], addrs[:i%3]...)
		cfg := DefaultConfig()
		cfg.SensorID = fmt.Sprintf("sensor-%03d", i)
		cfg.Coordinators = addrs
		r, err := New(cfg, sp, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		s := &sensor{r: r, sp: sp, done: make(chan error, 1)}
		go func() { s.done <- r.Run(runCtx) }()
		ss = append(ss, s)
	}
	defer func() {
		stopRun()
		for _, s := range ss {
			<-s.done
			s.r.Close()
			s.sp.Close()
		}
	}()

	acked := func() uint64 {
		var a uint64
		for _, s := range ss {
			a += s.sp.Stats().AckedSeq
		}
		return a
	}
	var st0 *medmeshv1.GetClusterStatusResponse
	var err error
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, func() bool {
		st0, err = cl.status(ctx)
		return err == nil
	}, "cluster status: %v", err)
	a0, t0 := acked(), time.Now()
	var wg sync.WaitGroup
	prodCtx, stopProd := context.WithTimeout(ctx, window)
	defer stopProd()
	for _, s := range ss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := 0
			if rate == 0 { // as fast as backpressure allows
				for prodCtx.Err() == nil {
					if s.r.Enqueue(prodCtx, benchRecord(s.r.cfg.SensorID, k)) != nil {
						return
					}
					k++
				}
				return
			}
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			per := max(rate/10, 1)
			for {
				select {
				case <-prodCtx.Done():
					return
				case <-tick.C:
				}
				for range per {
					if s.r.Enqueue(prodCtx, benchRecord(s.r.cfg.SensorID, k)) != nil {
						return
					}
					k++
				}
			}
		}()
	}
	wg.Wait()
	t1 := time.Now()
	var a1, alerts uint64
	for _, s := range ss {
		a := s.sp.Stats().AckedSeq
		a1 += a
		// Alerts are every tenth record of each sensor, from seq 1.
		alerts += (a + 9) / 10
	}
	var st1 *medmeshv1.GetClusterStatusResponse
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, func() bool {
		st1, err = cl.status(ctx)
		return err == nil
	}, "cluster status: %v", err)
	el := t1.Sub(t0).Seconds()
	res := reportResult{
		recordsPS: float64(a1-a0) / el,
		entriesPS: float64(st1.GetCommitIndex()-st0.GetCommitIndex()) / el,
	}
	res.alertsPS = float64(alerts) / el
	res.summariesPS = res.recordsPS - res.alertsPS
	// Everything offered is eventually committed (drain), or the row lies.
	testutil.Eventually(t, 120*time.Second, 50*time.Millisecond, func() bool {
		for _, s := range ss {
			if st := s.sp.Stats(); st.AckedSeq != st.LastSeq {
				return false
			}
		}
		return true
	}, "reports not drained")
	t.Logf("rate=%d/sensor: %.0f records/s committed, %.1f raft entries/s (acked %d in %.1fs; drained)", rate, res.recordsPS, res.entriesPS, a1-a0, el)
	return res
}
