package gossip

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/flow"
)

// TestBenchMesh measures, for N = 8, 32 and 64 in-process members on
// loopback with the production (LAN) timers: join convergence, failure
// detection of a member killed without leaving next to memberlist's
// configured bound, and gossip bytes per second per member, idle and with
// one device sighting per member per second. Run with MEDMESH_BENCH=1
// (make bench-mesh); MEDMESH_BENCH_OUT names a file for the markdown
// table. The reporting-path measurement (100 sensors into three real
// coordinators) lives next to the reporter it drives, in
// node/internal/reporter.
func TestBenchMesh(t *testing.T) {
	if os.Getenv("MEDMESH_BENCH") == "" {
		t.Skip("skipped: benchmark; run with MEDMESH_BENCH=1 (make bench-mesh)")
	}
	const window = 10 * time.Second
	rows := []string{
		"| members | join convergence | failure detected by all | memberlist bound (min–max) | gossip B/s per member, idle | with 1 sighting/s per member |",
		"| ---: | ---: | ---: | ---: | ---: | ---: |",
	}
	for _, n := range []int{8, 32, 64} {
		r := benchGossip(t, n, window)
		row := fmt.Sprintf("| %d | %v | %v | %v – %v | %.0f | %.0f |", n,
			r.converge.Round(time.Millisecond), r.detect.Round(time.Millisecond),
			r.boundMin.Round(time.Millisecond), r.boundMax.Round(time.Millisecond), r.idleBps, r.sightBps)
		t.Log(row)
		rows = append(rows, row)
	}
	cfg := DefaultConfig()
	rows = append(rows, fmt.Sprintf("\nTimers: probe interval %v, probe timeout %v, gossip interval %v, suspicion multiplier %d, push/pull %v; AES-GCM keyring and label on; bytes counted on every UDP packet and TCP stream byte sent (window %v).",
		cfg.ProbeInterval, cfg.ProbeTimeout, cfg.GossipInterval, cfg.SuspicionMult, cfg.PushPullInterval, window))
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

type gossipResult struct {
	converge, detect, boundMin, boundMax time.Duration
	idleBps, sightBps                    float64
}

func benchGossip(t *testing.T, n int, window time.Duration) gossipResult {
	var res gossipResult
	var gs []*Gossip
	defer func() {
		for _, g := range gs {
			g.Close()
		}
	}()
	begin := time.Now()
	for i := range n {
		cfg := DefaultConfig()
		cfg.NodeName = fmt.Sprintf("s%03d", i)
		cfg.BindAddr, cfg.BindPort = "127.0.0.1", 0
		cfg.Keys = [][]byte{[]byte("0123456789abcdef0123456789abcdef")}
		cfg.Label = "bench"
		cfg.Floor = fmt.Sprint(i % 10)
		cfg.APIAddr = "127.0.0.1:7400"
		cfg.JoinRetryMin = 50 * time.Millisecond
		if i > 0 {
			cfg.Join = []string{gs[0].Addr()}
		}
		g, err := New(cfg, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		gs = append(gs, g)
	}
	allSee := func(want int, members []*Gossip) func() bool {
		return func() bool {
			for _, g := range members {
				if g.NumAlive() != want {
					return false
				}
			}
			return true
		}
	}
	testutil.Eventually(t, 180*time.Second, 5*time.Millisecond, allSee(n, gs), "%d members did not converge", n)
	res.converge = time.Since(begin)

	sent := func() uint64 {
		var s uint64
		for _, g := range gs {
			s += g.BytesSent()
		}
		return s
	}
	s0, t0 := sent(), time.Now()
	time.Sleep(window)
	res.idleBps = float64(sent()-s0) / time.Since(t0).Seconds() / float64(n)

	// One new device sighting per member per second.
	s0, t0 = sent(), time.Now()
	tick := time.NewTicker(time.Second)
	for k := 0; time.Since(t0) < window; k++ {
		<-tick.C
		for i, g := range gs {
			g.Observe(flow.MAC{0x02, 0, byte(i), byte(k >> 8), byte(k), 1}, time.Now())
		}
	}
	tick.Stop()
	res.sightBps = float64(sent()-s0) / time.Since(t0).Seconds() / float64(n)

	victim := gs[n-1]
	rest := gs[:n-1]
	gs = rest
	killed := time.Now()
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 120*time.Second, 5*time.Millisecond, allSee(n-1, rest), "killed member not detected with %d members", n)
	res.detect = time.Since(killed)
	cfg := DefaultConfig()
	res.boundMin = SuspicionTimeout(cfg.SuspicionMult, n, cfg.ProbeInterval)
	res.boundMax = 6 * res.boundMin // memberlist's SuspicionMaxTimeoutMult (LAN profile)
	t.Logf("n=%d converge=%v detect=%v bound=%v..%v idle=%.0fB/s sightings=%.0fB/s",
		n, res.converge, res.detect, res.boundMin, res.boundMax, res.idleBps, res.sightBps)
	return res
}
