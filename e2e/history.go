//go:build e2e && linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/deploy/lab"
	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// CatchUpBound is how long after heal every enforcer has to reach the last
// committed decision.
const CatchUpBound = 10 * time.Second

// History is one fault: the workload runs for Before, the nemesis is
// injected for Fault, healed, and the workload runs for After.
type History struct {
	Name    string
	Nemesis Nemesis
	Before  time.Duration
	Fault   time.Duration
	After   time.Duration
	// Failover: measure injection to the next acknowledged write.
	Failover bool
}

// Runner runs histories against a running lab.
type Runner struct {
	Lab      *lab.Lab
	Seed     uint64
	Clients  int
	Keys     int
	Logf     func(format string, args ...any)
	conns    []*grpc.ClientConn
	names    []string
	policies []medmeshv1.PolicyServiceClient
	epoch    time.Time
	n        int
	// restarts are the times (since epoch) each process was restarted.
	restarts map[string][]int64
}

// NewRunner dials the lab's three coordinators.
func NewRunner(l *lab.Lab, seed uint64, logf func(string, ...any)) (*Runner, error) {
	r := &Runner{Lab: l, Seed: seed, Clients: 4, Keys: 3, Logf: logf, epoch: time.Now(), restarts: map[string][]int64{}}
	// Mutual TLS as the lab's approver, through grpcx's transport but
	// without its retry policy: the checker must see every outcome.
	files, err := l.Config().ClientTLS(pki.RoleApprover)
	if err != nil {
		return nil, err
	}
	cc := grpcx.DefaultClientConfig()
	cc.TLS = files
	opts, err := grpcx.DialOptions(cc, nil)
	if err != nil {
		return nil, fmt.Errorf("lab client: %w", err)
	}
	for i := 1; i <= 3; i++ {
		c, err := grpc.NewClient(l.Config().CoordinatorAPI(i), opts...)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("dial c%d: %w", i, err), r.Close())
		}
		r.conns = append(r.conns, c)
		r.names = append(r.names, fmt.Sprintf("c%d", i))
		r.policies = append(r.policies, medmeshv1.NewPolicyServiceClient(c))
	}
	return r, nil
}

// Conn is the connection to coordinator i (0-based).
func (r *Runner) Conn(i int) *grpc.ClientConn { return r.conns[i] }

// Close closes the connections.
func (r *Runner) Close() error {
	var errs []error
	for _, c := range r.conns {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

func (r *Runner) now() int64 { return time.Since(r.epoch).Nanoseconds() }

// status asks the coordinators in turn for the cluster status and returns
// the first answer that names a leader.
func (r *Runner) status(ctx context.Context) (*medmeshv1.GetClusterStatusResponse, error) {
	var errs []error
	for i, c := range r.conns {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := medmeshv1.NewClusterServiceClient(c).GetClusterStatus(cctx, &medmeshv1.GetClusterStatusRequest{})
		cancel()
		if err == nil && st.GetLeader() != "" {
			return st, nil
		}
		if err == nil {
			err = errors.New("no leader")
		}
		errs = append(errs, fmt.Errorf("%s: %w", r.names[i], err))
	}
	return nil, errors.Join(errs...)
}

// LeaderTarget targets the current leader.
func (r *Runner) LeaderTarget() Target {
	return func(ctx context.Context) (string, error) {
		st, err := r.status(ctx)
		if err != nil {
			return "", err
		}
		return st.GetLeader(), nil
	}
}

// FollowerTarget targets a coordinator that does not lead.
func (r *Runner) FollowerTarget() Target {
	return func(ctx context.Context) (string, error) {
		st, err := r.status(ctx)
		if err != nil {
			return "", err
		}
		for _, n := range r.names {
			if n != st.GetLeader() {
				return n, nil
			}
		}
		return "", errors.New("no follower")
	}
}

func (r *Runner) enforcers() []string {
	var out []string
	for n := range r.Lab.Config().Floors {
		out = append(out, fmt.Sprintf("e%d", n+1))
	}
	return out
}

// Healthy waits until every lab process runs, every coordinator answers
// with a leader and every enforcer has reported.
func (r *Runner) Healthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := r.health(ctx)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (r *Runner) health(ctx context.Context) error {
	if err := r.Lab.Check(); err != nil {
		return err
	}
	var errs []error
	for i, c := range r.conns {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := medmeshv1.NewClusterServiceClient(c).GetClusterStatus(cctx, &medmeshv1.GetClusterStatusRequest{})
		cancel()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", r.names[i], err))
		case st.GetLeader() == "":
			errs = append(errs, fmt.Errorf("%s knows no leader", r.names[i]))
		default:
			seen := map[string]bool{}
			for _, m := range st.GetMembers() {
				seen[m.GetId()] = m.GetRole() == "enforcer"
			}
			for _, e := range r.enforcers() {
				if !seen[e] {
					errs = append(errs, fmt.Errorf("%s: enforcer %s not reported", r.names[i], e))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// sampler records the enforcers' applied indexes as the leader last heard
// them, keyed by the report's time (last_seen), so a report read twice or
// from a new leader is not mistaken for a new one.
type sampler struct {
	mu      sync.Mutex
	seen    map[string]bool
	samples []IndexSample
	// scraped are the enforcers' datapath indexes, read from their metrics.
	scraped []IndexSample
}

func (s *sampler) add(epoch time.Time, st *medmeshv1.GetClusterStatusResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range st.GetMembers() {
		if m.GetRole() != "enforcer" || m.GetLastSeen() == nil {
			continue
		}
		at := m.GetLastSeen().AsTime().Sub(epoch).Nanoseconds()
		key := fmt.Sprintf("%s/%d", m.GetId(), at)
		if s.seen[key] {
			continue
		}
		s.seen[key] = true
		s.samples = append(s.samples, IndexSample{At: at, Enforcer: m.GetId(), Index: m.GetAppliedIndex()})
	}
}

// scrapeApplied reads medmesh_enforcer_applied_index, the highest decision
// index the enforcer of floor n applied to its datapath, from its metrics
// inside its namespace.
func (r *Runner) scrapeApplied(n int) (uint64, error) {
	b, err := r.Lab.Config().EnforcerAdmin(n, "/metrics")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "medmesh_enforcer_applied_index "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("applied index %q: %w", v, err)
			}
			return uint64(f), nil
		}
	}
	return 0, errors.New("no medmesh_enforcer_applied_index in the metrics")
}

func (s *sampler) addScraped(at int64, enforcer string, index uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scraped = append(s.scraped, IndexSample{At: at, Enforcer: enforcer, Index: index})
}

func (s *sampler) sorted() []IndexSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]IndexSample(nil), s.samples...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out
}

// Run runs one history and checks it.
func (r *Runner) Run(ctx context.Context, h History) HistoryReport {
	r.n++
	start := time.Now()
	rep := HistoryReport{Name: h.Name, Nemesis: h.Nemesis.Name(), FailoverMs: -1, CatchUpMs: -1, DatapathCatchUpMs: -1, Checks: map[string]string{}}
	event := func(format string, args ...any) {
		e := fmt.Sprintf("%7.3fs ", time.Since(start).Seconds()) + fmt.Sprintf(format, args...)
		rep.Events = append(rep.Events, e)
		if r.Logf != nil {
			r.Logf("%s: %s", h.Name, e)
		}
	}
	check := func(name string, v []string) {
		if len(v) == 0 {
			rep.Checks[name] = "ok"
			return
		}
		rep.Checks[name] = strings.Join(v, "; ")
		rep.Violations = append(rep.Violations, v...)
	}
	defer func() { rep.DurationMs = time.Since(start).Milliseconds() }()

	if err := h.Nemesis.Available(); err != nil {
		check("available", []string{err.Error()})
		return rep
	}
	if err := r.Healthy(ctx, 60*time.Second); err != nil {
		check("health-before", []string{err.Error()})
		return rep
	}
	check("health-before", nil)

	// Sample the enforcers' indexes through the whole history.
	smp := &sampler{seen: map[string]bool{}}
	sctx, stopSampler := context.WithCancel(ctx)
	var swg sync.WaitGroup
	swg.Add(1)
	go func() {
		defer swg.Done()
		for sctx.Err() == nil {
			if st, err := r.status(sctx); err == nil {
				smp.add(r.epoch, st)
			}
			for n := range r.Lab.Config().Floors {
				if v, err := r.scrapeApplied(n + 1); err == nil {
					smp.addScraped(r.now(), fmt.Sprintf("e%d", n+1), v)
				}
			}
			select {
			case <-sctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	defer func() { stopSampler(); swg.Wait() }()

	var keys []string
	for k := 0; k < r.Keys; k++ {
		keys = append(keys, fmt.Sprintf("e2e-%d-%d-%s-k%d", r.Seed, r.n, h.Name, k))
	}
	w := &Workload{Coordinators: r.policies, Names: r.names, NClients: r.Clients, Keys: keys,
		Seed: r.Seed + uint64(r.n), Epoch: r.epoch, OpTimeout: 2 * time.Second}
	wctx, stopWork := context.WithCancel(ctx)
	opsc := make(chan []Op, 1)
	go func() { opsc <- w.Run(wctx) }()
	event("workload started: %d clients, keys %s", r.Clients, strings.Join(keys, ","))

	sleep(ctx, h.Before)
	injected := r.now()
	if err := h.Nemesis.Inject(ctx); err != nil {
		event("inject failed: %v", err)
		check("inject", []string{err.Error()})
	} else {
		// Failover counts from the fault in place (the victim is dead,
		// stopped or cut off), not from the call that started it.
		injected = r.now()
		if v, ok := h.Nemesis.(interface{ Victim() string }); ok {
			rep.Target = v.Victim()
		}
		event("injected %s %s", h.Nemesis.Name(), rep.Target)
	}
	// A decision committed during the fault: every enforcer must reach it
	// within CatchUpBound of heal.
	dctx, stopDecide := context.WithTimeout(ctx, h.Fault)
	decided := make(chan string, 1)
	go func() { decided <- r.decide(dctx, fmt.Sprintf("e2e-%d-%d-%s-decision", r.Seed, r.n, h.Name)) }()
	sleep(ctx, h.Fault)
	stopDecide()
	event("%s", <-decided)
	beforeHeal := r.now()
	if k, ok := h.Nemesis.(*Kill); ok && k.Restart && k.Victim() != "" {
		r.restarts[k.Victim()] = append(r.restarts[k.Victim()], beforeHeal)
	}
	if err := h.Nemesis.Heal(ctx); err != nil {
		event("heal failed: %v", err)
		check("heal", []string{err.Error()})
	} else {
		event("healed")
	}
	healed := r.now()
	healedAt := time.Now()
	sleep(ctx, h.After)
	stopWork()
	ops := <-opsc
	rep.Refused = w.Refused()
	event("workload stopped: %d ops, %d writes refused before Raft", len(ops), len(rep.Refused))

	if err := r.Healthy(ctx, 30*time.Second); err != nil {
		check("health-after", []string{err.Error()})
	} else {
		check("health-after", nil)
	}

	// Final reads: every acknowledged write is there.
	final := map[string]Op{}
	var fv []string
	for _, k := range keys {
		op, err := r.finalRead(ctx, k, r.Clients)
		if err != nil {
			fv = append(fv, err.Error())
			continue
		}
		final[k] = op
		ops = append(ops, op)
	}
	for _, op := range ops {
		rep.Ops++
		switch {
		case op.OK:
			rep.OpsOK++
		case op.Unknown:
			rep.OpsUnknown++
		}
	}
	check("acknowledged-writes", append(fv, CheckAcknowledged(ops, final)...))
	// Retried writes: each request id took effect at most once.
	audited, err := r.auditedPuts(ctx, keys)
	if err != nil {
		check("no-duplicated-effects", []string{err.Error()})
	} else {
		check("no-duplicated-effects", CheckNoDuplicatedEffects(ops, audited, final))
	}
	for _, op := range ops {
		if op.Attempts > 1 {
			rep.WritesRetried++
		}
	}
	if err := CheckLinearizable(ops, 30*time.Second); err != nil {
		check("linearizable", []string{err.Error()})
	} else {
		check("linearizable", nil)
	}
	rep.History = ops
	for _, op := range ops {
		if op.Kind != OpGet && op.OK && op.Call >= injected && op.Return <= beforeHeal {
			rep.WritesDuringFault++
		}
	}
	if h.Failover {
		if d := FailoverTime(ops, injected); d >= 0 {
			rep.FailoverMs = float64(d) / 1e6
			event("failover: first write acknowledged %.0f ms after injection", rep.FailoverMs)
		} else {
			check("failover", []string{"no write acknowledged after the fault"})
		}
	}

	// Enforcers: at the last committed decision within CatchUpBound of heal.
	check("enforcer-caught-up", r.checkCatchUp(ctx, smp, healed, healedAt, &rep))
	stopSampler()
	swg.Wait()
	rep.Samples = r.incarnations(smp.sorted())
	smp.mu.Lock()
	rep.Applied = r.incarnations(smp.scraped)
	smp.mu.Unlock()
	check("enforcer-index-monotonic", append(CheckMonotonic(rep.Samples), CheckMonotonic(rep.Applied)...))
	check("enforcer-adopts-last-policy", CheckAdoptsLastPolicy(rep.Applied))

	check("replicas-equal", r.checkReplicas(ctx))
	check("alerts-exactly-once", r.checkAlerts(ctx))
	check("life-critical-never-dropped", r.checkTraffic(ctx))
	return rep
}

// decide commits a decision while the fault lasts: it stores a
// monitor-mode policy for a device class the lab does not have and
// activates it (an apply-policy decision no lab device is subject to).
func (r *Runner) decide(ctx context.Context, name string) string {
	time.Sleep(500 * time.Millisecond)
	var last error
	stored := false
	// One request id per write: a retry after an unknown outcome never
	// activates the policy twice.
	id := fmt.Sprintf("%x-%d-decide", r.epoch.UnixNano(), r.n)
	putID, activateID := id+"-put", id+"-activate"
	// One class policy per run, for the lab's workstations (non-clinical,
	// so no second approver): each history changes and activates it, and
	// the coordinators fan that out to one decision per workstation, which
	// every enforcer must then reach. Monitor mode drops nothing.
	policy := fmt.Sprintf("e2e-%d-fault-decision", r.Seed)
	for try := 0; ctx.Err() == nil; try++ {
		pc := r.policies[try%len(r.policies)]
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		var err error
		if !stored {
			_, err = pc.PutPolicy(cctx, &medmeshv1.PutPolicyRequest{Policy: faultPolicy(policy, name), Actor: "e2e", RequestId: putID})
			stored = err == nil
		}
		if stored {
			var resp *medmeshv1.ActivatePolicyResponse
			resp, err = pc.ActivatePolicy(cctx, &medmeshv1.ActivatePolicyRequest{Name: policy, Mode: medmeshv1.PolicyMode_POLICY_MODE_MONITOR, Actor: "e2e", Reason: "chaos harness: decision during the fault", RequestId: activateID})
			if err == nil {
				cancel()
				return fmt.Sprintf("decision %s committed during the fault at index %d", resp.GetDecisionId(), resp.GetDecisionIndex())
			}
		}
		cancel()
		last = err
		sleep(ctx, 200*time.Millisecond)
	}
	return fmt.Sprintf("no decision committed during the fault (last error: %v)", last)
}

// faultPolicy is the policy the fault-time decision activates, its
// description naming the history.
func faultPolicy(name, history string) *medmeshv1.Policy {
	p := RegisterPolicy(name, "decision during the fault: "+history)
	p.Subject = &medmeshv1.Policy_DeviceClass{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION}
	return p
}

// auditedPuts reads the policy.put records of the keys' audit trails
// (linearizable reads, retried through the coordinators).
func (r *Runner) auditedPuts(ctx context.Context, keys []string) ([]AuditedWrite, error) {
	var out []AuditedWrite
	for _, k := range keys {
		var last error
		var recs []*medmeshv1.AuditRecord
		for try := 0; try < 20; try++ {
			recs, last = nil, nil
			token := ""
			for {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				resp, err := r.policies[try%len(r.policies)].ListAuditRecords(cctx, &medmeshv1.ListAuditRecordsRequest{
					Resource: "policy/" + k, PageSize: 1000, PageToken: token})
				cancel()
				if err != nil {
					last = err
					break
				}
				recs = append(recs, resp.GetRecords()...)
				if token = resp.GetNextPageToken(); token == "" {
					break
				}
			}
			if last == nil {
				break
			}
			sleep(ctx, 200*time.Millisecond)
		}
		if last != nil {
			return nil, fmt.Errorf("audit trail of %s: %w", k, last)
		}
		for _, rec := range recs {
			if rec.GetAction() == "policy.put" {
				out = append(out, AuditedWrite{Key: k, RequestID: rec.GetRequestId(), Index: rec.GetIndex()})
			}
		}
	}
	return out, nil
}

// incarnations numbers each sample by its enforcer's restarts before it.
func (r *Runner) incarnations(samples []IndexSample) []IndexSample {
	out := append([]IndexSample(nil), samples...)
	for i, s := range out {
		for _, at := range r.restarts[s.Enforcer] {
			if at <= s.At {
				out[i].Incarnation++
			}
		}
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (r *Runner) finalRead(ctx context.Context, key string, client int) (Op, error) {
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for try := 0; time.Now().Before(deadline); try++ {
		i := try % len(r.policies)
		op := Op{Client: client, Kind: OpGet, Key: key, Server: r.names[i], Call: r.now()}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := r.policies[i].GetPolicy(cctx, &medmeshv1.GetPolicyRequest{Name: key})
		cancel()
		op.Return = r.now()
		switch {
		case err == nil:
			op.OK, op.Version, op.Read = true, resp.GetPolicy().GetVersion(), resp.GetPolicy().GetDescription()
			return op, nil
		case status.Code(err) == codes.NotFound:
			return op, nil
		}
		last = err
		sleep(ctx, 100*time.Millisecond)
	}
	return Op{}, fmt.Errorf("final read of %s: %w", key, last)
}

// lastDecision is the highest committed decision (or review) index.
func (r *Runner) lastDecision(ctx context.Context) (uint64, error) {
	var last error
	for try := 0; try < 20; try++ {
		ds, err := listDecisions(ctx, medmeshv1.NewDecisionServiceClient(r.conns[try%3]), medmeshv1.ReadConsistency_READ_CONSISTENCY_LINEARIZABLE)
		if err == nil {
			var max uint64
			for _, d := range ds {
				max = maxU(max, maxU(d.GetIndex(), d.GetReviewIndex()))
			}
			return max, nil
		}
		last = err
		sleep(ctx, 200*time.Millisecond)
	}
	return 0, fmt.Errorf("list decisions: %w", last)
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

func (r *Runner) checkCatchUp(ctx context.Context, smp *sampler, healed int64, healedAt time.Time, rep *HistoryReport) []string {
	want, err := r.lastDecision(ctx)
	if err != nil {
		return []string{err.Error()}
	}
	// Enforcers report every few seconds: poll until each has reported an
	// index at the last decision, or the bound has passed.
	deadline := healedAt.Add(CatchUpBound + 500*time.Millisecond)
	for {
		reached := map[string]int64{}
		for _, s := range smp.sorted() {
			if _, ok := reached[s.Enforcer]; !ok && s.Index >= want {
				reached[s.Enforcer] = s.At
			}
		}
		applied := map[string]uint64{}
		var worst int64
		for _, e := range r.enforcers() {
			if at, ok := reached[e]; ok {
				applied[e] = want
				worst = max(worst, at-healed)
			}
		}
		v := CheckCaughtUp(applied, want, r.enforcers())
		if len(v) == 0 {
			rep.CatchUpMs = float64(max(worst, 0)) / 1e6
			// The datapath index (scraped every 200 ms) tells when the
			// decision was applied, without the report period's lag.
			smp.mu.Lock()
			dp := map[string]int64{}
			for _, s := range smp.scraped {
				if _, ok := dp[s.Enforcer]; !ok && s.Index >= want {
					dp[s.Enforcer] = s.At
				}
			}
			smp.mu.Unlock()
			if len(dp) == len(r.enforcers()) {
				var w int64
				for _, at := range dp {
					w = max(w, at-healed)
				}
				rep.DatapathCatchUpMs = float64(max(w, 0)) / 1e6
			}
			if worst > CatchUpBound.Nanoseconds() {
				return []string{fmt.Sprintf("enforcers reached decision %d %.1fs after heal (bound %s)", want, float64(worst)/1e9, CatchUpBound)}
			}
			return nil
		}
		if time.Now().After(deadline) {
			// Name the index each laggard last reported.
			last := map[string]uint64{}
			for _, s := range smp.sorted() {
				last[s.Enforcer] = s.Index
			}
			return CheckCaughtUp(last, want, r.enforcers())
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

// checkReplicas compares each replica's policies, decisions and incidents, read with
// stale consistency from that replica, until they agree or 10 s pass.
func (r *Runner) checkReplicas(ctx context.Context) []string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		states := map[string][]byte{}
		var errs []string
		for i, c := range r.conns {
			b, err := replicaState(ctx, c)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", r.names[i], err))
				continue
			}
			states[r.names[i]] = b
		}
		v := append(errs, CheckReplicasEqual(states)...)
		if len(v) == 0 || time.Now().After(deadline) {
			return v
		}
		sleep(ctx, 300*time.Millisecond)
	}
}

func replicaState(ctx context.Context, c grpc.ClientConnInterface) ([]byte, error) {
	stale := medmeshv1.ReadConsistency_READ_CONSISTENCY_STALE
	var out []byte
	mo := proto.MarshalOptions{Deterministic: true}
	pc := medmeshv1.NewPolicyServiceClient(c)
	token := ""
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := pc.ListPolicies(cctx, &medmeshv1.ListPoliciesRequest{PageSize: 500, PageToken: token, Consistency: stale})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("list policies: %w", err)
		}
		for _, p := range resp.GetPolicies() {
			b, err := mo.Marshal(p)
			if err != nil {
				return nil, err
			}
			out = append(out, b...)
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	ds, err := listDecisions(ctx, medmeshv1.NewDecisionServiceClient(c), stale)
	if err != nil {
		return nil, err
	}
	for _, d := range ds {
		b, err := mo.Marshal(d)
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	// Incidents are derived inside the FSM from the same log: every
	// replica must hold the same ones.
	ic := medmeshv1.NewIncidentServiceClient(c)
	token = ""
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := ic.ListIncidents(cctx, &medmeshv1.ListIncidentsRequest{PageSize: 500, PageToken: token, Consistency: stale})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("list incidents: %w", err)
		}
		for _, inc := range resp.GetIncidents() {
			b, err := mo.Marshal(inc)
			if err != nil {
				return nil, err
			}
			out = append(out, b...)
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	return out, nil
}

func listDecisions(ctx context.Context, dc medmeshv1.DecisionServiceClient, cons medmeshv1.ReadConsistency) ([]*medmeshv1.Decision, error) {
	var out []*medmeshv1.Decision
	token := ""
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := dc.ListDecisions(cctx, &medmeshv1.ListDecisionsRequest{PageSize: 500, PageToken: token, Consistency: cons})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("list decisions: %w", err)
		}
		out = append(out, resp.GetDecisions()...)
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

// checkAlerts: no alert stored twice, and every alert the sensors logged as
// raised reaches the coordinators (given up to CatchUpBound to drain the
// sensors' spools after heal).
func (r *Runner) checkAlerts(ctx context.Context) []string {
	var last error
	var v []string
	deadline := time.Now().Add(CatchUpBound)
	for try := 0; ; try++ {
		ids, err := r.alertIDs(ctx, r.conns[try%3])
		if err == nil {
			raised, rerr := r.raisedAlerts()
			if rerr != nil {
				return []string{fmt.Sprintf("read sensor logs: %v", rerr)}
			}
			v = append(CheckUniqueIDs("alert", ids), CheckAlertsDelivered(raised, ids)...)
			if len(v) == 0 || time.Now().After(deadline) {
				return v
			}
		} else {
			last = err
			if time.Now().After(deadline) {
				return []string{fmt.Sprintf("list alerts: %v", last)}
			}
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

// raisedAlerts reads the ids of every alert the lab's sensors logged as
// raised ("alert raised" lines with alert_id=...), over all their lives.
func (r *Runner) raisedAlerts() ([]string, error) {
	logs, err := filepath.Glob(filepath.Join(r.Lab.Config().StateDir, "logs", "s*.log"))
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, path := range logs {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(data), "\n") {
			if !strings.Contains(line, `msg="alert raised"`) {
				continue
			}
			if _, rest, ok := strings.Cut(line, " alert_id="); ok {
				id, _, _ := strings.Cut(rest, " ")
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}

func (r *Runner) alertIDs(ctx context.Context, c grpc.ClientConnInterface) ([]string, error) {
	alerts, err := listAlerts(ctx, c)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(alerts))
	for _, a := range alerts {
		ids = append(ids, a.GetId())
	}
	return ids, nil
}

// listAlerts reads every alert the coordinators keep, oldest first.
func listAlerts(ctx context.Context, c grpc.ClientConnInterface) ([]*medmeshv1.Alert, error) {
	ac := medmeshv1.NewAlertServiceClient(c)
	return allPages(ctx, func(ctx context.Context, token string) ([]*medmeshv1.Alert, string, error) {
		resp, err := ac.ListAlerts(ctx, &medmeshv1.ListAlertsRequest{PageSize: 500, PageToken: token})
		return resp.GetAlerts(), resp.GetNextPageToken(), err
	})
}

// listAudit reads the retained audit trail, oldest first.
func listAudit(ctx context.Context, c grpc.ClientConnInterface) ([]*medmeshv1.AuditRecord, error) {
	pc := medmeshv1.NewPolicyServiceClient(c)
	return allPages(ctx, func(ctx context.Context, token string) ([]*medmeshv1.AuditRecord, string, error) {
		resp, err := pc.ListAuditRecords(ctx, &medmeshv1.ListAuditRecordsRequest{PageSize: 500, PageToken: token})
		return resp.GetRecords(), resp.GetNextPageToken(), err
	})
}

// allPages calls page from the first page token to the last, each call
// within 2 seconds, and returns every item.
func allPages[T any](ctx context.Context, page func(ctx context.Context, token string) ([]T, string, error)) ([]T, error) {
	var out []T
	token := ""
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		items, next, err := page(cctx, token)
		cancel()
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if token = next; token == "" {
			return out, nil
		}
	}
}

// checkTraffic reads the enforcers' per-device counters (lab.Traffic):
// life-critical devices' traffic is never dropped, unless a second person
// approved an enforcing decision on the device (the compromised-pump
// scenario does).
func (r *Runner) checkTraffic(ctx context.Context) []string {
	tr, err := r.Lab.Traffic()
	if err != nil {
		return []string{fmt.Sprintf("traffic counters: %v", err)}
	}
	dt := toDeviceTraffic(tr)
	if !slices.ContainsFunc(dt, func(t DeviceTraffic) bool { return t.LifeCritical && t.Dropped > 0 }) {
		return nil
	}
	ds, err := listDecisions(ctx, medmeshv1.NewDecisionServiceClient(r.Conn(0)), medmeshv1.ReadConsistency_READ_CONSISTENCY_LINEARIZABLE)
	if err != nil {
		return []string{fmt.Sprintf("life-critical drops, and no decisions to check them against: %v", err)}
	}
	approved := map[string]bool{}
	for _, d := range ds {
		if d.GetState() == medmeshv1.DecisionState_DECISION_STATE_APPROVED && d.GetTargetDecisionId() != "" &&
			d.GetAction() != medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY {
			approved[strings.ToLower(d.GetDeviceMac())] = true
		}
	}
	for i := range dt {
		if d, ok := r.Lab.Config().Device(dt[i].Device); ok {
			dt[i].Approved = approved[strings.ToLower(d.MAC)]
		}
	}
	return CheckLifeCritical(dt)
}

func toDeviceTraffic(tr []lab.Traffic) []DeviceTraffic {
	out := make([]DeviceTraffic, 0, len(tr))
	for _, t := range tr {
		out = append(out, DeviceTraffic{Device: t.Device, LifeCritical: t.LifeCritical, ToEnforcer: t.ToEnforcer, Dropped: t.Dropped})
	}
	return out
}
