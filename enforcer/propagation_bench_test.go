//go:build linux

package enforcer_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/medmesh/medmesh/enforcer/internal/fakecoord"
	"github.com/medmesh/medmesh/enforcer/internal/state"
	"github.com/medmesh/medmesh/enforcer/internal/watch"
	"github.com/medmesh/medmesh/enforcer/internal/xdp"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// propagationSamples is how many writes each sub-benchmark makes.
const propagationSamples = 200

// BenchmarkPropagation measures decision propagation: from the commit of a
// decision in the log to its application in each enforcer's BPF maps, with
// 1 and 100 watching enforcers (real gRPC streams, real State, real
// datapath maps), next to etcd's put->watch latency with as many watchers,
// measured in the same run. Run it with -benchtime=1x.
func BenchmarkPropagation(b *testing.B) {
	testutil.RequireRoot(b)
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("medmesh-fake/watchers=%d", n), func(b *testing.B) {
			for b.Loop() {
				report(b, medmeshPropagation(b, n))
			}
		})
		b.Run(fmt.Sprintf("medmesh-raft3/watchers=%d", n), func(b *testing.B) {
			for b.Loop() {
				report(b, raftPropagation(b, n))
			}
		})
		b.Run(fmt.Sprintf("etcd/watchers=%d", n), func(b *testing.B) {
			if _, err := exec.LookPath("etcd"); err != nil {
				b.Skip("skipped: etcd binary not installed")
			}
			for b.Loop() {
				report(b, etcdPropagation(b, n))
			}
		})
	}
}

func report(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(len(lat)), "samples")
}

func benchDecision(i int) *medmeshv1.Decision {
	const mac = "02:00:00:00:00:01"
	d := &medmeshv1.Decision{State: medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE, DeviceMac: mac}
	switch i % 3 {
	case 0: // a new policy: a fresh slot written, the entry switched, the old slot cleared
		d.Action = medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY
		d.Policy = &medmeshv1.Policy{Name: "device/" + mac, Subject: &medmeshv1.Policy_DeviceMac{DeviceMac: mac}, Mode: medmeshv1.PolicyMode_POLICY_MODE_ENFORCE}
		for r := range 8 {
			d.Policy.Rules = append(d.Policy.Rules, &medmeshv1.Rule{Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: fmt.Sprintf("10.%d.%d.0/24", r, i%250)}, Protocol: 6, PortMin: 443, PortMax: 443})
		}
	case 1:
		d.Action = medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE
	case 2:
		d.Action = medmeshv1.DecisionAction_DECISION_ACTION_RELEASE
	}
	return d
}

func medmeshPropagation(b *testing.B, n int) []time.Duration {
	log := fakecoord.NewLog()
	srv, err := fakecoord.Start(log, "127.0.0.1:0", time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Stop()
	discard := slog.New(slog.DiscardHandler)
	var (
		mu        sync.Mutex
		lat       []time.Duration
		delivered []time.Duration
		applied   atomic.Int64
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i := range n {
		dp, err := xdp.Load(xdp.Config{MaxDevices: 16})
		if err != nil {
			b.Fatal(err)
		}
		defer dp.Close()
		st, err := state.New(dp, state.Snapshot{}, dp.Slots(), discard)
		if err != nil {
			b.Fatal(err)
		}
		cfg := watch.DefaultConfig()
		cfg.ID, cfg.Coordinators = fmt.Sprintf("bench-%d", i), []string{srv.Addr()}
		cfg.ReportInterval = time.Minute
		w, err := watch.New(cfg, st, discard, prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		w.OnApplied(func(d *medmeshv1.Decision, received time.Time) {
			committed := d.GetCreateTime().AsTime()
			l := time.Since(committed)
			mu.Lock()
			lat = append(lat, l)
			delivered = append(delivered, received.Sub(committed))
			mu.Unlock()
			applied.Add(1)
		})
		wg.Add(1)
		go func() { defer wg.Done(); w.Run(ctx) }()
	}
	// Let every stream connect before measuring.
	log.Commit(&medmeshv1.Decision{Action: medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY, State: medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE, DeviceMac: "02:00:00:00:00:01"}, 0)
	testutil.Eventually(b, 30*time.Second, time.Millisecond, func() bool { return applied.Load() == int64(n) }, "watchers connected")
	mu.Lock()
	lat, delivered = lat[:0], delivered[:0]
	mu.Unlock()
	applied.Store(0)
	for i := range propagationSamples {
		log.Commit(benchDecision(i), 1)
		want := int64((i + 1) * n)
		testutil.Eventually(b, 30*time.Second, 100*time.Microsecond, func() bool { return applied.Load() >= want }, "decision %d applied by all", i)
		time.Sleep(2 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(delivered)
	b.ReportMetric(float64(delivered[len(delivered)/2].Microseconds())/1000, "delivered-p50-ms")
	b.ReportMetric(float64(delivered[min(len(delivered)-1, len(delivered)*99/100)].Microseconds())/1000, "delivered-p99-ms")
	return slices.Clone(lat)
}

// raftPropagation measures against three real coordinators: each sample
// is a PutPolicy of an active policy through the leader, which commits an
// apply-policy decision through Raft (fsync on); latency runs from the
// leader's timestamp on the decision (stamped before the Raft commit) to
// its application in each enforcer's maps. Watchers spread over the three
// replicas.
func raftPropagation(b *testing.B, n int) []time.Duration {
	_, apis := startCoordinators(b, 3, false)
	conns := make([]*grpc.ClientConn, len(apis))
	for i, a := range apis {
		cc, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		conns[i] = cc
	}
	const mac = "02:00:00:00:00:01"
	reportDevice(b, conns[0], mac)
	// Writes go to any replica (followers forward to the leader), retried
	// across replicas if leadership moves.
	write := func(i int, activate bool) {
		p := benchDecision(0).GetPolicy()
		p.Rules[0].PortMin, p.Rules[0].PortMax = uint32(1000+i), uint32(1000+i)
		var last error
		for attempt := range 30 {
			pc := medmeshv1.NewPolicyServiceClient(conns[attempt%len(conns)])
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := pc.PutPolicy(ctx, &medmeshv1.PutPolicyRequest{Policy: p, Actor: "bench", Reason: "bench"})
			if err == nil && activate {
				_, err = pc.ActivatePolicy(ctx, &medmeshv1.ActivatePolicyRequest{Name: p.Name, Actor: "bench", Reason: "bench"})
			}
			cancel()
			if err == nil {
				return
			}
			last = err
			time.Sleep(100 * time.Millisecond)
		}
		b.Fatalf("write %d: %v", i, last)
	}
	write(0, true)
	discard := slog.New(slog.DiscardHandler)
	var states []*state.State
	var (
		mu      sync.Mutex
		lat     []time.Duration
		applied atomic.Int64
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i := range n {
		dp, err := xdp.Load(xdp.Config{MaxDevices: 16})
		if err != nil {
			b.Fatal(err)
		}
		defer dp.Close()
		st, err := state.New(dp, state.Snapshot{}, dp.Slots(), discard)
		if err != nil {
			b.Fatal(err)
		}
		states = append(states, st)
		cfg := watch.DefaultConfig()
		cfg.ID = fmt.Sprintf("bench-%d", i)
		cfg.Coordinators = append(slices.Clone(apis[i%3:]), apis[:i%3]...)
		cfg.ReportInterval = time.Minute
		w, err := watch.New(cfg, st, discard, prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		w.OnApplied(func(d *medmeshv1.Decision, _ time.Time) {
			l := time.Since(d.GetCreateTime().AsTime())
			mu.Lock()
			lat = append(lat, l)
			mu.Unlock()
			applied.Add(1)
		})
		wg.Add(1)
		go func() { defer wg.Done(); w.Run(ctx) }()
	}
	testutil.Eventually(b, 30*time.Second, time.Millisecond, func() bool { return applied.Load() >= int64(n) }, "watchers caught up")
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	lat = lat[:0]
	mu.Unlock()
	applied.Store(0)
	for i := range propagationSamples {
		write(i+1, false)
		want := int64((i + 1) * n)
		deadline := time.Now().Add(30 * time.Second)
		for applied.Load() < want {
			if time.Now().After(deadline) {
				var lagging []string
				for k, st := range states {
					lagging = append(lagging, fmt.Sprintf("%d:%d", k, st.Applied()))
				}
				b.Fatalf("decision %d not applied by all (%d of %d applications); applied per watcher: %v", i, applied.Load(), want, lagging)
			}
			time.Sleep(100 * time.Microsecond)
		}
		time.Sleep(2 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(lat)
}

// etcdPropagation starts a single-member etcd on loopback (fsync on, as
// shipped) and measures put->watch latency through its v3 JSON gateway with
// n watchers on the key.
func etcdPropagation(b *testing.B, n int) []time.Duration {
	dir := b.TempDir()
	client := fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(b))
	peer := fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(b))
	cmd := exec.Command("etcd", "--name", "bench", "--data-dir", dir,
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "bench="+peer, "--log-level", "error")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: 200}}
	testutil.Eventually(b, 20*time.Second, 50*time.Millisecond, func() bool {
		resp, err := hc.Get(client + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, "etcd healthy")
	key := base64.StdEncoding.EncodeToString([]byte("/medmesh/bench/decision"))
	var (
		mu      sync.Mutex
		lat     []time.Duration
		got     atomic.Int64
		started atomic.Int64
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for range n {
		req, _ := http.NewRequestWithContext(ctx, "POST", client+"/v3/watch", bytes.NewBufferString(`{"create_request":{"key":"`+key+`"}}`))
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer resp.Body.Close()
			dec := json.NewDecoder(resp.Body)
			for {
				var msg struct {
					Result struct {
						Created bool `json:"created"`
						Events  []struct {
							Kv struct {
								Value string `json:"value"`
							} `json:"kv"`
						} `json:"events"`
					} `json:"result"`
				}
				if err := dec.Decode(&msg); err != nil {
					return
				}
				if msg.Result.Created {
					started.Add(1)
				}
				for _, ev := range msg.Result.Events {
					now := time.Now()
					raw, _ := base64.StdEncoding.DecodeString(ev.Kv.Value)
					ns, _ := strconv.ParseInt(string(raw), 10, 64)
					mu.Lock()
					lat = append(lat, now.Sub(time.Unix(0, ns)))
					mu.Unlock()
					got.Add(1)
				}
			}
		}()
	}
	testutil.Eventually(b, 20*time.Second, time.Millisecond, func() bool { return started.Load() == int64(n) }, "etcd watches created")
	for i := range propagationSamples {
		val := base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(time.Now().UnixNano(), 10)))
		resp, err := hc.Post(client+"/v3/kv/put", "application/json", bytes.NewBufferString(`{"key":"`+key+`","value":"`+val+`"}`))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		want := int64((i + 1) * n)
		testutil.Eventually(b, 30*time.Second, 100*time.Microsecond, func() bool { return got.Load() >= want }, "put %d watched by all", i)
		time.Sleep(2 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(lat)
}
