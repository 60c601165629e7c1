//go:build linux

package enforcer_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/medmesh/medmesh/coordinator"
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
// measured in the same run: a single-member etcd (etcd1) and, like
// medmesh-raft3, a 3-member cluster (etcd3) with the watchers spread over
// the members. Run it with -benchtime=1x.
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
				report(b, raftPropagation(b, n, 0))
			}
		})
		// The same with the coordinators' Raft CommitTimeout at 1 ms (the
		// default is 10 ms): followers, and the enforcers watching them,
		// learn a commit at most 2 CommitTimeouts after the leader.
		b.Run(fmt.Sprintf("medmesh-raft3-commit1ms/watchers=%d", n), func(b *testing.B) {
			for b.Loop() {
				report(b, raftPropagation(b, n, time.Millisecond))
			}
		})
		for _, members := range []int{1, 3} {
			b.Run(fmt.Sprintf("etcd%d/watchers=%d", members, n), func(b *testing.B) {
				if _, err := exec.LookPath("etcd"); err != nil {
					b.Skip("skipped: etcd binary not installed")
				}
				for b.Loop() {
					report(b, etcdPropagation(b, members, n))
				}
			})
		}
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
// replicas. A commitTimeout > 0 replaces the coordinators' Raft
// CommitTimeout. The coordinators run in a separate process, as etcd does
// and as they do in production: in the benchmark's own process they would
// share one Go scheduler with the 100 enforcers.
func raftPropagation(b *testing.B, n int, commitTimeout time.Duration) []time.Duration {
	apis := hostCoordinators(b, commitTimeout)
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
	onLeader := make([]bool, n) // watcher i watches replica i mod 3, the leader first
	var (
		mu        sync.Mutex
		lat       []time.Duration
		delivered []time.Duration
		byReplica = map[bool][]time.Duration{} // commit -> applied, by whether the watcher watches the leader
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
		states = append(states, st)
		cfg := watch.DefaultConfig()
		cfg.ID = fmt.Sprintf("bench-%d", i)
		cfg.Coordinators = append(slices.Clone(apis[i%3:]), apis[:i%3]...)
		onLeader[i] = i%3 == 0
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
			byReplica[onLeader[i]] = append(byReplica[onLeader[i]], l)
			mu.Unlock()
			applied.Add(1)
		})
		wg.Add(1)
		go func() { defer wg.Done(); w.Run(ctx) }()
	}
	testutil.Eventually(b, 30*time.Second, time.Millisecond, func() bool { return applied.Load() >= int64(n) }, "watchers caught up")
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	lat, delivered = lat[:0], delivered[:0]
	clear(byReplica)
	mu.Unlock()
	applied.Store(0)
	var writes []time.Duration
	for i := range propagationSamples {
		t0 := time.Now()
		write(i+1, false)
		writes = append(writes, time.Since(t0))
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
	slices.Sort(writes)
	b.ReportMetric(float64(writes[len(writes)/2].Microseconds())/1000, "write-p50-ms")
	slices.Sort(delivered)
	b.ReportMetric(float64(delivered[len(delivered)/2].Microseconds())/1000, "delivered-p50-ms")
	b.ReportMetric(float64(delivered[min(len(delivered)-1, len(delivered)*99/100)].Microseconds())/1000, "delivered-p99-ms")
	for leader, name := range map[bool]string{true: "leader", false: "follower"} {
		if l := byReplica[leader]; len(l) > 0 {
			slices.Sort(l)
			b.ReportMetric(float64(l[len(l)/2].Microseconds())/1000, name+"-watchers-p50-ms")
		}
	}
	return slices.Clone(lat)
}

// coordHostEnv makes the test binary a coordinator host (see
// TestCoordinatorHost); its value is the Raft CommitTimeout, "0s" for the
// default.
const coordHostEnv = "MEDMESH_BENCH_COORD_HOST"

// TestCoordinatorHost is not a test but the coordinators' process of
// BenchmarkPropagation: with coordHostEnv set, it starts three
// coordinators (production timers), prints their API addresses, the
// leader's first, and serves until its stdin closes.
func TestCoordinatorHost(t *testing.T) {
	ct, ok := os.LookupEnv(coordHostEnv)
	if !ok {
		t.Skip("skipped: only the coordinator process of BenchmarkPropagation")
	}
	commitTimeout, err := time.ParseDuration(ct)
	if err != nil {
		t.Fatal(err)
	}
	nodes, apis := startCoordinatorsWith(t, 3, false, func(c *coordinator.Config) {
		// Production timers: startCoordinators shortens the watch
		// heartbeat for tests, which with 100 streams adds 1,000
		// messages a second that production does not send.
		c.API.WatchHeartbeat = coordinator.DefaultConfig().API.WatchHeartbeat
		if commitTimeout > 0 {
			c.CommitTimeout = commitTimeout
		}
	})
	// The leader first: watcher i watches replica i mod 3, as in the etcd
	// runs, so one watcher watches the leader and 100 spread 34/33/33.
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() bool {
		for i, n := range nodes {
			if n.c.IsLeader() {
				apis = append(apis[i:i+1:i+1], append(apis[:i:i], apis[i+1:]...)...)
				return true
			}
		}
		return false
	}, "a coordinator leads")
	fmt.Printf("COORDINATORS %s\n", strings.Join(apis, ","))
	io.Copy(io.Discard, os.Stdin)
}

// hostCoordinators starts the coordinator process and returns the API
// addresses, the leader's first.
func hostCoordinators(b *testing.B, commitTimeout time.Duration) []string {
	cmd := exec.Command(os.Args[0], "-test.run=^TestCoordinatorHost$", "-test.count=1")
	cmd.Env = append(os.Environ(), coordHostEnv+"="+commitTimeout.String())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if addrs, ok := strings.CutPrefix(sc.Text(), "COORDINATORS "); ok {
			go io.Copy(io.Discard, stdout)
			return strings.Split(addrs, ",")
		}
	}
	b.Fatalf("coordinator process ended before it served: %v", sc.Err())
	return nil
}

// etcdCluster is an n-member etcd on loopback, fsync on as shipped.
type etcdCluster struct {
	endpoints []string
	cmds      []*exec.Cmd
}

func startEtcd(b *testing.B, members int) *etcdCluster {
	dir := b.TempDir()
	ec := &etcdCluster{}
	var peers, initial []string
	for i := range members {
		peers = append(peers, fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(b)))
		ec.endpoints = append(ec.endpoints, fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(b)))
		initial = append(initial, fmt.Sprintf("e%d=%s", i, peers[i]))
	}
	b.Cleanup(func() {
		for _, c := range ec.cmds {
			c.Process.Kill()
			c.Wait()
		}
	})
	for i := range members {
		cmd := exec.Command("etcd", "--name", fmt.Sprintf("e%d", i), "--data-dir", fmt.Sprintf("%s/e%d", dir, i),
			"--listen-client-urls", ec.endpoints[i], "--advertise-client-urls", ec.endpoints[i],
			"--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--logger", "zap", "--log-level", "error")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		ec.cmds = append(ec.cmds, cmd)
	}
	return ec
}

func etcdClient(b *testing.B, endpoint string) *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// leader returns a client connected to the member that leads, once every
// member knows the leader.
func (ec *etcdCluster) leader(b *testing.B) *clientv3.Client {
	var leader string
	testutil.Eventually(b, 30*time.Second, 50*time.Millisecond, func() bool {
		c := etcdClient(b, ec.endpoints[0])
		defer c.Close()
		leader = ""
		for _, ep := range ec.endpoints {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := c.Status(ctx, ep)
			cancel()
			if err != nil || st.Leader == 0 {
				return false
			}
			if st.Header.GetMemberId() == st.Leader {
				leader = ep
			}
		}
		return leader != ""
	}, "etcd cluster has a leader")
	// The leader first: watcher i watches member i mod n, as in the
	// medmesh runs.
	i := slices.Index(ec.endpoints, leader)
	ec.endpoints = append([]string{leader}, slices.Delete(slices.Clone(ec.endpoints), i, i+1)...)
	return etcdClient(b, leader)
}

// etcdPropagation starts an etcd of the given size on loopback (fsync on,
// as shipped) and measures put->watch latency with n watchers on the key,
// spread over the members, each with its own client connection (as each
// enforcer has its own), the puts going to the leader.
func etcdPropagation(b *testing.B, members, n int) []time.Duration {
	ec := startEtcd(b, members)
	writer := ec.leader(b)
	defer writer.Close()
	const key = "/medmesh/bench/decision"
	var (
		mu      sync.Mutex
		lat     []time.Duration
		got     atomic.Int64
		started atomic.Int64
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i := range n {
		c := etcdClient(b, ec.endpoints[i%members])
		defer c.Close()
		wch := c.Watch(clientv3.WithRequireLeader(ctx), key, clientv3.WithCreatedNotify())
		wg.Add(1)
		go func() {
			defer wg.Done()
			for resp := range wch {
				if resp.Created {
					started.Add(1)
				}
				for _, ev := range resp.Events {
					now := time.Now()
					ns, _ := strconv.ParseInt(string(ev.Kv.Value), 10, 64)
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
		pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := writer.Put(pctx, key, strconv.FormatInt(time.Now().UnixNano(), 10))
		pcancel()
		if err != nil {
			b.Fatal(err)
		}
		want := int64((i + 1) * n)
		testutil.Eventually(b, 30*time.Second, 100*time.Microsecond, func() bool { return got.Load() >= want }, "put %d watched by all", i)
		time.Sleep(2 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(lat)
}

// BenchmarkApply is one enforcer's cost of applying a decision to its
// datapath (the cycle of BenchmarkPropagation: a new 8-rule policy,
// quarantine, release), without the stream: with a hundred enforcers on
// one host, this is most of what a decision costs them.
func BenchmarkApply(b *testing.B) {
	testutil.RequireRoot(b)
	dp, err := xdp.Load(xdp.Config{MaxDevices: 16})
	if err != nil {
		b.Fatal(err)
	}
	defer dp.Close()
	st, err := state.New(dp, state.Snapshot{}, dp.Slots(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	decisions := make([]*medmeshv1.Decision, 3*250)
	for i := range decisions {
		decisions[i] = benchDecision(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d := decisions[i%len(decisions)]
		i++
		d.Index = uint64(i)
		if ok, err := st.Apply(d); !ok || err != nil {
			b.Fatalf("apply %d: %v %v", i, ok, err)
		}
	}
}
