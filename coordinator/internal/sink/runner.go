package sink

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/internal/sinkcfg"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Source is the committed state the sinks read (the FSM).
type Source interface {
	// AlertsFrom returns alerts at positions after pos, the position of the
	// first one returned (past what retention evicted).
	AlertsFrom(pos uint64, limit int) (page []*medmeshv1.Alert, first uint64, applied uint64)
	// ListAudit returns audit records after sequence number after, and the
	// sequence number of the last one.
	ListAudit(after uint64, limit int, resource string) (page []*medmeshv1.AuditRecord, last uint64, more bool, index uint64)
	// PosturesChanged returns the device postures committed after
	// (afterIndex, afterMAC), in (index, MAC) order.
	PosturesChanged(afterIndex uint64, afterMAC string) ([]*medmeshv1.DevicePosture, uint64)
	// Device is a device of the inventory, or nil.
	Device(mac string) *medmeshv1.Device
	Sinks() ([]*medmeshv1.Sink, uint64)
	// Ends are the position after the last alert and the audit head's
	// sequence number.
	Ends() (alertEnd, auditHead uint64)
	Changed() <-chan struct{}
}

// Options configure a Runner.
type Options struct {
	// Host names this coordinator in events; Version is medmesh's.
	Host, Version string
	// CommitInterval is how often delivered positions are committed, in
	// one Raft entry for every sink that moved.
	CommitInterval time.Duration
	// StuckAfter is how long a sink fails before it counts as stuck and a
	// sink_stuck alert is raised.
	StuckAfter time.Duration
	// Retries back off from BackoffMin, doubling, to BackoffMax.
	BackoffMin, BackoffMax time.Duration
	// Commit commits delivered positions through Raft (leader only).
	Commit func(ctx context.Context, ps []*fsmpb.SinkPosition) error
	// Raise commits a sink_stuck alert through Raft (leader only).
	Raise func(ctx context.Context, a *medmeshv1.Alert) error
	Log   *slog.Logger
}

// DefaultOptions are the production timings.
func DefaultOptions() Options {
	return Options{CommitInterval: 500 * time.Millisecond, StuckAfter: 5 * time.Minute, BackoffMin: 250 * time.Millisecond, BackoffMax: 30 * time.Second}
}

// Runner runs the sinks while this coordinator leads: Run for a term,
// cancelled when leadership is lost. Status and counters outlive terms.
type Runner struct {
	src  Source
	opts Options

	mu      sync.Mutex
	workers map[string]*worker
	running bool
}

// NewRunner returns a runner over src.
func NewRunner(src Source, opts Options) *Runner {
	d := DefaultOptions()
	if opts.CommitInterval <= 0 {
		opts.CommitInterval = d.CommitInterval
	}
	if opts.StuckAfter <= 0 {
		opts.StuckAfter = d.StuckAfter
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = d.BackoffMin
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = max(d.BackoffMax, opts.BackoffMin)
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Runner{src: src, opts: opts, workers: map[string]*worker{}}
}

// worker delivers one sink's events, one at a time, in order.
type worker struct {
	name   string
	cfgCh  chan *medmeshv1.Sink // newer configurations
	cancel context.CancelFunc
	done   chan struct{}

	mu                 sync.Mutex
	cfg                *medmeshv1.Sink
	alertPos, auditSeq uint64 // delivered, not necessarily committed
	postureIdx         uint64 // with postureMAC: the last posture delivered
	postureMAC         string
	delivered          uint64
	failures           uint64
	lastErr            string
	lastDelivery       time.Time
	failingSince       time.Time
	stuck              bool
}

// Run delivers until ctx ends (leadership lost, shutdown), committing
// positions every CommitInterval. Delivery never runs on the apply path:
// a slow sink delays only its own worker.
func (r *Runner) Run(ctx context.Context) {
	r.mu.Lock()
	r.running = true
	r.mu.Unlock()
	tick := time.NewTicker(r.opts.CommitInterval)
	defer tick.Stop()
	defer func() {
		r.mu.Lock()
		ws := r.workers
		r.workers, r.running = map[string]*worker{}, false
		r.mu.Unlock()
		for _, w := range ws {
			w.cancel()
			<-w.done
		}
	}()
	for {
		changed := r.src.Changed()
		r.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
			r.commit(ctx)
		}
	}
}

// reconcile starts a worker for every new sink (at its committed
// positions), hands changed configurations to running workers and stops
// the workers of deleted sinks.
func (r *Runner) reconcile(ctx context.Context) {
	sinks, _ := r.src.Sinks()
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, s := range sinks {
		seen[s.GetName()] = true
		w := r.workers[s.GetName()]
		if w == nil {
			wctx, cancel := context.WithCancel(ctx)
			w = &worker{name: s.GetName(), cfg: s, cfgCh: make(chan *medmeshv1.Sink, 1), cancel: cancel, done: make(chan struct{}),
				alertPos: s.GetAlertPosition(), auditSeq: s.GetAuditSeq(), postureIdx: s.GetPostureIndex(), postureMAC: s.GetPostureMac()}
			r.workers[s.GetName()] = w
			go r.deliver(wctx, w)
			continue
		}
		w.mu.Lock()
		old := w.cfg
		if s.GetVersion() != old.GetVersion() {
			w.cfg = s
			select {
			case <-w.cfgCh:
			default:
			}
			w.cfgCh <- s
		} else {
			w.cfg = s // newer committed positions
		}
		w.mu.Unlock()
	}
	for name, w := range r.workers {
		if !seen[name] {
			w.cancel()
			delete(r.workers, name)
		}
	}
}

// commit commits, in one entry, the positions of every sink that delivered
// past its committed positions.
func (r *Runner) commit(ctx context.Context) {
	r.mu.Lock()
	var ps []*fsmpb.SinkPosition
	for _, name := range sortedNames(r.workers) {
		w := r.workers[name]
		w.mu.Lock()
		if w.alertPos > w.cfg.GetAlertPosition() || w.auditSeq > w.cfg.GetAuditSeq() ||
			postureAfter(w.postureIdx, w.postureMAC, w.cfg.GetPostureIndex(), w.cfg.GetPostureMac()) {
			ps = append(ps, &fsmpb.SinkPosition{Name: name, AlertPosition: w.alertPos, AuditSeq: w.auditSeq,
				PostureIndex: w.postureIdx, PostureMac: w.postureMAC})
		}
		w.mu.Unlock()
	}
	r.mu.Unlock()
	if len(ps) == 0 || r.opts.Commit == nil {
		return
	}
	if err := r.opts.Commit(ctx, ps); err != nil && ctx.Err() == nil {
		r.opts.Log.Warn("commit sink positions", "err", err)
	}
}

func sortedNames(m map[string]*worker) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

const batch = 256

// postureAfter reports whether posture position (i, mac) comes after (j,
// jmac) in (index, MAC) order.
func postureAfter(i uint64, mac string, j uint64, jmac string) bool {
	return i > j || (i == j && mac > jmac)
}

// next reads the events after the worker's positions, merged in commit
// order. An event whose position retention evicted is gone: the worker
// skips to the oldest kept. Postures are read only for a sink that takes
// findings (the others' posture position stays where it is); a posture
// replaced before it was delivered is read as its latest version.
func (r *Runner) next(cfg *medmeshv1.Sink, alertPos, auditSeq, postureIdx uint64, postureMAC string) []Event {
	var evs []Event
	as, first, _ := r.src.AlertsFrom(alertPos, batch)
	for i, a := range as {
		evs = append(evs, AlertEvent(a, first+uint64(i)+1))
	}
	recs, last, _, _ := r.src.ListAudit(auditSeq, batch, "")
	for i, rec := range recs {
		evs = append(evs, AuditEvent(rec, last-uint64(len(recs))+uint64(i)+1))
	}
	if sinkcfg.Wants(cfg, sinkcfg.EventFinding) {
		ps, _ := r.src.PosturesChanged(postureIdx, postureMAC)
		for _, p := range ps[:min(len(ps), batch)] {
			evs = append(evs, PostureEvents(p, r.src.Device(p.GetDeviceMac()).GetIpAddresses())...)
		}
	}
	slices.SortStableFunc(evs, func(a, b Event) int {
		switch {
		case a.Index() < b.Index():
			return -1
		case a.Index() > b.Index():
			return 1
		}
		return 0
	})
	return evs
}

func (r *Runner) deliver(ctx context.Context, w *worker) {
	defer close(w.done)
	var snd sender
	defer func() {
		if snd != nil {
			snd.Close()
		}
	}()
	w.mu.Lock()
	cfg := w.cfg
	w.mu.Unlock()
	backoff := r.opts.BackoffMin
	for ctx.Err() == nil {
		changed := r.src.Changed()
		w.mu.Lock()
		evs := r.next(cfg, w.alertPos, w.auditSeq, w.postureIdx, w.postureMAC)
		w.mu.Unlock()
		if len(evs) == 0 {
			select {
			case <-ctx.Done():
			case <-changed:
			case c := <-w.cfgCh:
				cfg = c
				if snd != nil {
					snd.Close()
					snd = nil
				}
			}
			continue
		}
		for _, e := range evs {
			if !sinkcfg.Wants(cfg, e.Kind()) || (e.Posture != nil && e.Finding == nil) {
				w.advance(e, false)
				continue
			}
			for ctx.Err() == nil {
				var err error
				if snd == nil {
					snd, err = newSender(cfg, r.opts.Host, r.opts.Version)
				}
				if err == nil {
					err = snd.Send(ctx, e)
				}
				if err == nil {
					w.advance(e, true)
					backoff = r.opts.BackoffMin
					break
				}
				r.failed(ctx, w, err)
				select {
				case <-ctx.Done():
				case <-time.After(backoff):
				case c := <-w.cfgCh: // a fixed configuration is tried at once
					cfg = c
					if snd != nil {
						snd.Close()
					}
					snd = nil
				}
				backoff = min(2*backoff, r.opts.BackoffMax)
			}
			if ctx.Err() != nil {
				return
			}
		}
	}
}

func (w *worker) advance(e Event, sent bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case e.Alert != nil:
		w.alertPos = max(w.alertPos, e.Pos)
	case e.Posture != nil:
		// A posture is delivered when its last finding is.
		if p := e.Posture; e.last && postureAfter(p.GetIndex(), p.GetDeviceMac(), w.postureIdx, w.postureMAC) {
			w.postureIdx, w.postureMAC = p.GetIndex(), p.GetDeviceMac()
		}
	default:
		w.auditSeq = max(w.auditSeq, e.Seq)
	}
	if sent {
		w.delivered++
		w.lastDelivery = time.Now()
		w.failingSince, w.stuck, w.lastErr = time.Time{}, false, ""
	}
}

// failed records a failed attempt; a sink failing for StuckAfter is stuck
// and raises one sink_stuck alert per position it is stuck at (whichever
// coordinator leads).
func (r *Runner) failed(ctx context.Context, w *worker, err error) {
	w.mu.Lock()
	w.failures++
	w.lastErr = err.Error()
	now := time.Now()
	if w.failingSince.IsZero() {
		w.failingSince = now
		r.opts.Log.Warn("sink delivery failing", "sink", w.name, "err", err)
	}
	raise := !w.stuck && now.Sub(w.failingSince) >= r.opts.StuckAfter
	if raise {
		w.stuck = true
	}
	since, where := w.failingSince, fmt.Sprintf("%d-%d", w.alertPos, w.auditSeq)
	if sinkcfg.Wants(w.cfg, sinkcfg.EventFinding) {
		where += fmt.Sprintf("-%d", w.postureIdx) // stuck on a posture
	}
	w.mu.Unlock()
	if !raise || r.opts.Raise == nil {
		return
	}
	a := &medmeshv1.Alert{
		// Named by where the sink is stuck, so a new leader stuck at the
		// same place raises the same alert (committed once).
		Id:       fmt.Sprintf("sink-stuck/%s/%s", w.name, where),
		SensorId: "coordinator/" + r.opts.Host,
		Kind:     sinkcfg.KindStuck,
		Risk:     &medmeshv1.RiskScore{Score: 60},
		Summary: fmt.Sprintf("sink %s has failed to deliver since %s: %s", w.name,
			since.UTC().Format(time.RFC3339), err.Error()),
		DetectTime: timestamppb.New(since),
	}
	if err := r.opts.Raise(ctx, a); err != nil && ctx.Err() == nil {
		r.opts.Log.Warn("raise sink_stuck alert", "sink", w.name, "err", err)
		w.mu.Lock()
		w.stuck = false // try again at the next failure
		w.mu.Unlock()
	}
}

// Status reports every running sink's delivery state; nil when this
// coordinator is not running them (not the leader).
func (r *Runner) Status() []*medmeshv1.SinkStatus {
	alertEnd, auditHead := r.src.Ends()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []*medmeshv1.SinkStatus{}
	if !r.running {
		return nil
	}
	for _, name := range sortedNames(r.workers) {
		w := r.workers[name]
		w.mu.Lock()
		st := &medmeshv1.SinkStatus{
			Name: name, AlertPosition: w.cfg.GetAlertPosition(), AuditSeq: w.cfg.GetAuditSeq(),
			PostureIndex: w.cfg.GetPostureIndex(), PostureMac: w.cfg.GetPostureMac(),
			Backlog:        sub(alertEnd, w.alertPos) + sub(auditHead, w.auditSeq),
			DeliveredTotal: w.delivered, FailuresTotal: w.failures, LastError: w.lastErr, Stuck: w.stuck,
		}
		if sinkcfg.Wants(w.cfg, sinkcfg.EventFinding) {
			ps, _ := r.src.PosturesChanged(w.postureIdx, w.postureMAC)
			st.Backlog += uint64(len(ps))
		}
		if !w.lastDelivery.IsZero() {
			st.LastDeliveryTime = timestamppb.New(w.lastDelivery)
		}
		if !w.failingSince.IsZero() {
			st.FailingSince = timestamppb.New(w.failingSince)
		}
		w.mu.Unlock()
		out = append(out, st)
	}
	return out
}

func sub(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return 0
}

// Test sends one test event to s (outside its positions): an audit-shaped
// record "sink.test" with id test/NANOS.
func (r *Runner) Test(ctx context.Context, s *medmeshv1.Sink, actor string) (string, error) {
	now := time.Now()
	e := Event{ID: fmt.Sprintf("test/%d", now.UnixNano()), Audit: &medmeshv1.AuditRecord{
		Time: timestamppb.New(now), Actor: actor, Action: "sink.test", Resource: "sink/" + s.GetName(), Reason: "medmesh sinks test",
	}}
	snd, err := newSender(s, r.opts.Host, r.opts.Version)
	if err != nil {
		return e.ID, err
	}
	defer snd.Close()
	return e.ID, snd.Send(ctx, e)
}
