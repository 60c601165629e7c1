// Package watch follows the coordinators' decision log: it streams
// DecisionService.WatchDecisions from the applied index on any replica,
// rotating through the replicas on failure, hands each entry to the applier
// in index order, reports the applied index (and what was installed for
// DNS-named policy peers) through ClusterService.ReportMemberStatus, and
// raises an alarm when no coordinator has answered for a while. It never opens anything: without a control
// plane the last applied state stays enforced (fail-static).
package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Applier applies decision log entries. The enforcer's state implements it.
type Applier interface {
	// Applied returns the highest index applied.
	Applied() uint64
	// Apply applies one entry; false means it was fenced: below Applied,
	// or at it and applied before (entries of one Raft entry share its
	// index).
	// Every entry is self-contained (an approval carries the approved
	// action), so nothing is looked up.
	Apply(d *medmeshv1.Decision) (bool, error)
}

// Config configures a Watcher.
type Config struct {
	// ID is the enforcer's member id.
	ID string
	// Coordinators are API addresses of coordinator replicas.
	Coordinators []string
	// AlarmAfter is how long without any coordinator answering before the
	// control-plane alarm is raised.
	AlarmAfter time.Duration
	// ReportInterval is the member status heartbeat period.
	ReportInterval time.Duration
	// IdleTimeout restarts a stream that delivered nothing (not even a
	// heartbeat) for this long.
	IdleTimeout time.Duration
	// RetryMin and RetryMax bound the backoff between connection attempts.
	RetryMin, RetryMax time.Duration
	// Version is reported in member status.
	Version string
	// APIAddr is reported in member status (the admin address).
	APIAddr string
	// IsInvalid reports whether an Apply error consumed its index (the entry
	// can never apply). Nil: no error does.
	IsInvalid func(error) bool
	// TLS is the enforcer's identity (an enforcer certificate of the campus
	// CA): every coordinator connection is mutual TLS with it. Empty means
	// plaintext, which the daemon allows only on loopback or with --dev.
	TLS grpcx.TLSFiles
	// ResolvedPeers, if set, gives what each member status report says was
	// installed for DNS-named policy peers.
	ResolvedPeers func() []*medmeshv1.ResolvedPeer
}

// DefaultConfig returns production defaults.
func DefaultConfig() Config {
	return Config{
		AlarmAfter:     30 * time.Second,
		ReportInterval: 5 * time.Second,
		IdleTimeout:    20 * time.Second,
		RetryMin:       100 * time.Millisecond,
		RetryMax:       2 * time.Second,
	}
}

func (c Config) validate() error {
	switch {
	case c.ID == "":
		return errors.New("watch: id is required")
	case len(c.Coordinators) == 0:
		return errors.New("watch: at least one coordinator address is required")
	case c.AlarmAfter <= 0 || c.ReportInterval <= 0 || c.IdleTimeout <= 0:
		return errors.New("watch: alarm, report and idle durations must be positive")
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return errors.New("watch: retry bounds must be positive and ordered")
	}
	return nil
}

type metrics struct {
	alarm      prometheus.Gauge
	applied    prometheus.Gauge
	decisions  *prometheus.CounterVec
	reconnects prometheus.Counter
	lag        prometheus.Histogram
	// The decisions counter per outcome, looked up once: a decision
	// costs an increment, not a label lookup.
	outApplied, outFenced, outInvalid prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		alarm: prometheus.NewGauge(prometheus.GaugeOpts{Name: "medmesh_enforcer_control_plane_alarm",
			Help: "1 while no coordinator has answered for longer than the alarm threshold."}),
		applied: prometheus.NewGauge(prometheus.GaugeOpts{Name: "medmesh_enforcer_applied_index",
			Help: "Highest decision log index applied to the datapath."}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "medmesh_enforcer_decisions_total",
			Help: "Decision log entries received, by outcome (applied, fenced, invalid)."}, []string{"outcome"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "medmesh_enforcer_watch_reconnects_total",
			Help: "Decision streams that ended and were restarted."}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "medmesh_enforcer_decision_apply_lag_seconds",
			Help: "Time from a decision's commit (create_time) to its application in the datapath.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
	}
	m.outApplied, m.outFenced, m.outInvalid = m.decisions.WithLabelValues("applied"), m.decisions.WithLabelValues("fenced"), m.decisions.WithLabelValues("invalid")
	for _, c := range []prometheus.Collector{m.alarm, m.applied, m.decisions, m.reconnects, m.lag} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register enforcer metric: %w", err)
		}
	}
	return m, nil
}

// Watcher follows the decision log.
type Watcher struct {
	cfg     Config
	applier Applier
	log     *slog.Logger
	m       *metrics
	conns   []*grpc.ClientConn

	mu          sync.Mutex
	current     int
	lastContact time.Time
	alarmed     bool
	applyErr    string
	caughtUp    uint64 // highest heartbeat applied_index seen
	heartbeat   bool   // a heartbeat arrived since this process started
	onApplied   func(d *medmeshv1.Decision, received time.Time)
	recent      []applied // the last recentApplied applied decisions, a ring
	next        int       // the ring slot the next one takes once full
}

// applied is an Applied as remembered: its action spelled when read.
type applied struct {
	Applied
	action medmeshv1.DecisionAction
}

// Applied is a decision this enforcer put into its datapath, and when: the
// moment from which its packets meet it (GET /applied on the admin port).
type Applied struct {
	Index     uint64    `json:"index"`
	ID        string    `json:"id"`
	DeviceMAC string    `json:"device_mac"`
	Action    string    `json:"action"`
	Committed time.Time `json:"committed"` // the decision's leader-stamped commit time
	Applied   time.Time `json:"applied"`   // this enforcer's clock
}

// recentApplied bounds the decisions RecentApplied remembers.
const recentApplied = 64

// streamWindow is the flow-control window of the decision stream: far
// above a backlog of decisions a catching-up enforcer is sent at once.
const streamWindow = 1 << 20

// New creates a Watcher. It does not connect until Run.
func New(cfg Config, applier Applier, log *slog.Logger, reg prometheus.Registerer) (*Watcher, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	w := &Watcher{cfg: cfg, applier: applier, log: log, m: m, lastContact: time.Now()}
	// Fixed flow-control windows turn off gRPC's BDP estimator, which
	// otherwise answers nearly every decision with a PING round trip (one
	// decision at a time never fills a window): with a hundred enforcers
	// on one host those pings cost more CPU than the decisions' data.
	cc := grpcx.DefaultClientConfig()
	cc.TLS = cfg.TLS
	opts, err := grpcx.DialOptions(cc, log, cfg.Coordinators...)
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	opts = append(opts, grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(streamWindow))
	for _, addr := range cfg.Coordinators {
		cc, err := grpc.NewClient(addr, opts...)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("coordinator client %s: %w", addr, err)
		}
		w.conns = append(w.conns, cc)
	}
	m.applied.Set(float64(applier.Applied()))
	return w, nil
}

// OnApplied registers f to be called after each applied decision, with the
// time its stream message arrived (for benchmarks and tests). Call before
// Run.
func (w *Watcher) OnApplied(f func(d *medmeshv1.Decision, received time.Time)) { w.onApplied = f }

// Close closes the client connections.
func (w *Watcher) Close() error {
	var errs []error
	for _, cc := range w.conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}

// Health returns "ok" or the alarm text.
func (w *Watcher) Health() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.healthLocked(time.Now())
}

func (w *Watcher) healthLocked(now time.Time) string {
	var h string
	if w.alarmed {
		h = fmt.Sprintf("control plane unreachable %s; enforcing last committed policy (index %d)",
			now.Sub(w.lastContact).Truncate(time.Second), w.applier.Applied())
	}
	if w.applyErr != "" {
		if h != "" {
			h += "; "
		}
		h += "apply failing: " + w.applyErr
	}
	if h == "" {
		return "ok"
	}
	return h
}

func (w *Watcher) contact() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastContact = time.Now()
	if w.alarmed {
		w.alarmed = false
		w.m.alarm.Set(0)
		w.log.Info("control plane reachable again; alarm cleared", "applied_index", w.applier.Applied())
	}
}

func (w *Watcher) checkAlarm(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.alarmed && now.Sub(w.lastContact) > w.cfg.AlarmAfter {
		w.alarmed = true
		w.m.alarm.Set(1)
		w.log.Error("control plane unreachable: keeping the last committed policy (fail-static)",
			"since", w.lastContact, "applied_index", w.applier.Applied(), "coordinators", w.cfg.Coordinators)
	}
}

// Run follows the decision log until ctx ends. It returns nil on ctx end.
func (w *Watcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.reportLoop(ctx) }()
	go func() { defer wg.Done(); w.alarmLoop(ctx) }()
	defer wg.Wait()

	backoff := w.cfg.RetryMin
	for ctx.Err() == nil {
		w.mu.Lock()
		i := w.current
		w.mu.Unlock()
		progressed, err := w.stream(ctx, i)
		if ctx.Err() != nil {
			break
		}
		w.m.reconnects.Inc()
		w.log.Warn("decision stream ended; rotating coordinator", "coordinator", w.cfg.Coordinators[i], "err", err, "applied_index", w.applier.Applied())
		w.mu.Lock()
		w.current = (i + 1) % len(w.conns)
		w.mu.Unlock()
		if progressed {
			backoff = w.cfg.RetryMin
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, w.cfg.RetryMax)
	}
	return nil
}

// stream runs one WatchDecisions stream on coordinator i.
func (w *Watcher) stream(ctx context.Context, i int) (progressed bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	client := medmeshv1.NewDecisionServiceClient(w.conns[i])
	// Resume one index back: one Raft entry can hold several decisions (a
	// class policy's, one per device), and a stream that broke inside one
	// has to see the rest. The applier fences those it applied.
	from := w.applier.Applied()
	if from > 0 {
		from--
	}
	st, err := client.WatchDecisions(sctx, &medmeshv1.WatchDecisionsRequest{FromIndex: from, WatcherId: w.cfg.ID})
	if err != nil {
		return false, fmt.Errorf("watch decisions: %w", err)
	}
	idle := time.AfterFunc(w.cfg.IdleTimeout, cancel)
	defer idle.Stop()
	for {
		resp, err := st.Recv()
		received := time.Now()
		if err != nil {
			if sctx.Err() != nil && ctx.Err() == nil {
				return progressed, fmt.Errorf("stream idle for %s: %w", w.cfg.IdleTimeout, err)
			}
			return progressed, fmt.Errorf("receive decision: %w", err)
		}
		idle.Reset(w.cfg.IdleTimeout)
		w.contact()
		progressed = true
		if d := resp.GetDecision(); d != nil {
			if err := w.handle(d, received); err != nil {
				return progressed, err
			}
			continue
		}
		// A heartbeat: the replica says every entry up to applied_index has
		// been sent. It is only reported, never used for fencing or resuming:
		// an entry that arrives later with a lower index is still applied.
		w.mu.Lock()
		w.caughtUp = max(w.caughtUp, resp.GetAppliedIndex())
		w.heartbeat = true
		w.mu.Unlock()
	}
}

func (w *Watcher) handle(d *medmeshv1.Decision, received time.Time) error {
	if d.GetIndex() < w.applier.Applied() {
		w.m.outFenced.Inc()
		return nil
	}
	ok, err := w.applier.Apply(d)
	if err != nil && (w.cfg.IsInvalid == nil || !w.cfg.IsInvalid(err)) {
		w.mu.Lock()
		w.applyErr = err.Error()
		w.mu.Unlock()
		return fmt.Errorf("apply decision %d: %w", d.GetIndex(), err)
	}
	w.mu.Lock()
	w.applyErr = ""
	w.mu.Unlock()
	switch {
	case err != nil:
		w.m.outInvalid.Inc()
		w.log.Warn("decision cannot be applied; skipped, previous enforcement stays", "index", d.GetIndex(), "id", d.GetId(), "err", err)
	case !ok:
		w.m.outFenced.Inc()
		return nil
	default:
		w.m.outApplied.Inc()
		if ct := d.GetCreateTime(); ct != nil {
			w.m.lag.Observe(time.Since(ct.AsTime()).Seconds())
		}
		if w.log.Enabled(context.Background(), slog.LevelDebug) {
			w.log.Debug("decision applied", "index", d.GetIndex(), "action", d.GetAction(), "device", d.GetDeviceMac())
		}
		w.remember(d)
	}
	w.m.applied.Set(float64(d.GetIndex()))
	if w.onApplied != nil {
		w.onApplied(d, received)
	}
	return nil
}

// remember records d as applied now.
func (w *Watcher) remember(d *medmeshv1.Decision) {
	a := applied{Applied: Applied{Index: d.GetIndex(), ID: d.GetId(), DeviceMAC: d.GetDeviceMac(), Applied: time.Now()}, action: d.GetAction()}
	if ct := d.GetCreateTime(); ct != nil {
		a.Committed = ct.AsTime()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.recent) < recentApplied {
		w.recent = append(w.recent, a)
		return
	}
	w.recent[w.next] = a
	w.next = (w.next + 1) % recentApplied
}

// RecentApplied returns the last decisions this process applied, oldest
// first, each with the time it took effect.
func (w *Watcher) RecentApplied() []Applied {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]Applied, 0, len(w.recent))
	for i := range w.recent {
		a := w.recent[(w.next+i)%len(w.recent)]
		a.Action = names.Enum(a.action)
		out = append(out, a.Applied)
	}
	return out
}

func (w *Watcher) alarmLoop(ctx context.Context) {
	tick := time.NewTicker(min(time.Second, w.cfg.AlarmAfter/4))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			w.checkAlarm(now)
		}
	}
}

func (w *Watcher) reportLoop(ctx context.Context) {
	tick := time.NewTicker(w.cfg.ReportInterval)
	defer tick.Stop()
	for {
		w.report(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// reportedIndex is the applied decision index, or the index the stream's
// heartbeats say was fully delivered when higher (entries in between were
// not decisions).
func (w *Watcher) reportedIndex() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return max(w.applier.Applied(), w.caughtUp)
}

func (w *Watcher) report(ctx context.Context) {
	w.mu.Lock()
	i := w.current
	health := w.healthLocked(time.Now())
	started := w.heartbeat
	w.mu.Unlock()
	if !started {
		// Not caught up with any replica since this process started: the
		// heartbeat watermark is not known yet, and reporting the decision
		// index alone would show the applied index going backwards.
		return
	}
	rctx, cancel := context.WithTimeout(ctx, w.cfg.ReportInterval)
	defer cancel()
	req := &medmeshv1.ReportMemberStatusRequest{
		Member: &medmeshv1.Member{
			Id: w.cfg.ID, Role: "enforcer", ApiAddr: w.cfg.APIAddr, State: "alive", Version: w.cfg.Version,
			AppliedIndex: w.reportedIndex(), LastSeen: timestamppb.Now(), Health: health,
		},
	}
	if w.cfg.ResolvedPeers != nil {
		req.ResolvedPeers = w.cfg.ResolvedPeers()
	}
	_, err := medmeshv1.NewClusterServiceClient(w.conns[i]).ReportMemberStatus(rctx, req)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Debug("report member status", "coordinator", w.cfg.Coordinators[i], "err", err)
		}
		return
	}
	w.contact()
}
