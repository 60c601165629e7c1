package resolve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config bounds how often names are resolved and what an answer installs.
type Config struct {
	// MinTTL and MaxTTL clamp an answer's TTL: a name is asked again
	// after its answer's TTL, at least MinTTL and at most MaxTTL later.
	// The floor bounds the queries a short TTL causes (and how long an
	// address that moved away stays allowed); the ceiling bounds how long
	// an answer is trusted.
	MinTTL, MaxTTL time.Duration
	// RetryMin is how soon a failed resolution is tried again; the wait
	// doubles with each failure, up to MinTTL.
	RetryMin time.Duration
	// MaxAddrs bounds the addresses one answer installs (the lowest ones
	// in address order; the rest are left out, closed).
	MaxAddrs int
	// Parallel bounds the names resolved at once.
	Parallel int
}

// DefaultConfig returns the defaults: TTLs held between 30 s and 1 h.
func DefaultConfig() Config {
	return Config{MinTTL: 30 * time.Second, MaxTTL: time.Hour, RetryMin: time.Second, MaxAddrs: 16, Parallel: 4}
}

func (c Config) validate() error {
	switch {
	case c.MinTTL <= 0 || c.MaxTTL < c.MinTTL:
		return fmt.Errorf("resolve: TTL floor %s and ceiling %s: want 0 < floor <= ceiling", c.MinTTL, c.MaxTTL)
	case c.RetryMin <= 0:
		return errors.New("resolve: retry delay must be positive")
	case c.MaxAddrs < 1 || c.Parallel < 1:
		return errors.New("resolve: max addresses and parallel lookups must be positive")
	}
	return nil
}

// LookupFunc resolves one name; Client.Lookup is one.
type LookupFunc func(ctx context.Context, name string) (Answer, error)

// Status is where a name's resolution stands.
type Status struct {
	Name string
	// Addrs are the addresses of the last good answer (installed);
	// Resolved is false before the first one.
	Addrs    []netip.Addr
	Resolved bool
	// TTL is the last good answer's TTL as the server gave it; Time is
	// when it arrived (zero for addresses adopted from before a restart).
	TTL  time.Duration
	Time time.Time
	// Next is when the name is asked again.
	Next time.Time
	// Err is the last resolution's error when it failed: Addrs are then
	// an earlier answer's, kept.
	Err string
	// LeftOut counts the addresses of the last answer beyond MaxAddrs.
	LeftOut int
}

type entry struct {
	st       Status
	failures int
	inflight bool
	// reinstall: the last install failed, so the next answer is
	// installed even if it is the same.
	reinstall bool
}

type result struct {
	name string
	ans  Answer
	err  error
	at   time.Time
}

// Resolver keeps the names it is told to want resolved. It calls install
// (from Run's goroutine, one call at a time) when a name's addresses
// change; a failed resolution changes nothing. When install fails, the
// name is asked again soon and its answer installed again even if it did
// not change.
type Resolver struct {
	cfg     Config
	lookup  LookupFunc
	install func(name string, addrs []netip.Addr) error
	log     *slog.Logger
	m       *metrics

	mu    sync.Mutex
	names map[string]*entry
	wake  chan struct{}
}

type metrics struct {
	lookups *prometheus.CounterVec
	names   prometheus.Gauge
}

// New returns a Resolver. Call Want to say which names, and Run.
func New(cfg Config, lookup LookupFunc, install func(name string, addrs []netip.Addr) error, log *slog.Logger, reg prometheus.Registerer) (*Resolver, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := &metrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "medmesh_enforcer_dns_lookups_total",
			Help: "Resolutions of DNS-named policy peers, by outcome (same, changed, failed)."}, []string{"outcome"}),
		names: prometheus.NewGauge(prometheus.GaugeOpts{Name: "medmesh_enforcer_dns_names",
			Help: "DNS names the enforced policies use as peers."}),
	}
	for _, c := range []prometheus.Collector{m.lookups, m.names} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register resolver metric: %w", err)
		}
	}
	return &Resolver{cfg: cfg, lookup: lookup, install: install, log: log, m: m, names: map[string]*entry{}, wake: make(chan struct{}, 1)}, nil
}

// Seed records addrs as name's installed addresses from before a restart,
// of unknown age: the name is asked at once, and they stay if that fails.
func (r *Resolver) Seed(name string, addrs []netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entry(name)
	e.st.Addrs, e.st.Resolved = slices.Clone(addrs), true
}

func (r *Resolver) entry(name string) *entry {
	e, ok := r.names[name]
	if !ok {
		e = &entry{st: Status{Name: name}}
		r.names[name] = e
	}
	return e
}

// Want sets the names to keep resolved: new ones are asked at once,
// names no longer wanted are forgotten. It never blocks.
func (r *Resolver) Want(names []string) {
	r.mu.Lock()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
		r.entry(n)
	}
	for n := range r.names {
		if !want[n] {
			delete(r.names, n)
		}
	}
	r.m.names.Set(float64(len(r.names)))
	r.mu.Unlock()
	r.poke()
}

func (r *Resolver) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Status returns every wanted name's status, by name.
func (r *Resolver) Status() []Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Status, 0, len(r.names))
	for _, e := range r.names {
		st := e.st
		st.Addrs = slices.Clone(st.Addrs)
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b Status) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// Run resolves the wanted names as their answers expire, until ctx ends.
func (r *Resolver) Run(ctx context.Context) {
	results := make(chan result)
	sem := make(chan struct{}, r.cfg.Parallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		next := now.Add(time.Hour)
		r.mu.Lock()
		var due []string
		for name, e := range r.names {
			switch {
			case e.inflight:
			case !e.st.Next.After(now):
				due = append(due, name)
			case e.st.Next.Before(next):
				next = e.st.Next
			}
		}
		slices.Sort(due)
		r.mu.Unlock()
		for _, name := range due {
			select {
			case sem <- struct{}{}:
			default:
				// All lookups busy: look again when one finishes.
				continue
			}
			r.mu.Lock()
			if e, ok := r.names[name]; ok {
				e.inflight = true
			}
			r.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				ans, err := r.lookup(ctx, name)
				select {
				case results <- result{name: name, ans: ans, err: err, at: time.Now()}:
				case <-ctx.Done():
				}
			}()
		}
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case res := <-results:
			r.record(res)
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// record takes a lookup's result: a good answer replaces the addresses and
// schedules the next lookup by its TTL; a failure keeps them and retries
// sooner.
func (r *Resolver) record(res result) {
	r.mu.Lock()
	e, ok := r.names[res.name]
	if !ok {
		r.mu.Unlock()
		return
	}
	e.inflight = false
	if res.err != nil {
		e.failures++
		retry := min(r.cfg.RetryMin<<min(e.failures-1, 20), r.cfg.MinTTL)
		e.st.Err, e.st.Next = res.err.Error(), res.at.Add(retry)
		kept := len(e.st.Addrs)
		r.mu.Unlock()
		r.m.lookups.WithLabelValues("failed").Inc()
		r.log.Warn("dns name not resolved; keeping its last addresses", "name", res.name, "kept", kept, "retry_in", retry, "err", res.err)
		return
	}
	addrs, leftOut := res.ans.Addrs, 0
	if len(addrs) > r.cfg.MaxAddrs {
		addrs, leftOut = addrs[:r.cfg.MaxAddrs], len(addrs)-r.cfg.MaxAddrs
	}
	changed := !e.st.Resolved || !slices.Equal(addrs, e.st.Addrs) || e.reinstall
	e.failures = 0
	e.st = Status{Name: res.name, Addrs: slices.Clone(addrs), Resolved: true, TTL: res.ans.TTL, Time: res.at,
		Next: res.at.Add(min(max(res.ans.TTL, r.cfg.MinTTL), r.cfg.MaxTTL)), LeftOut: leftOut}
	r.mu.Unlock()
	if !changed {
		r.m.lookups.WithLabelValues("same").Inc()
		return
	}
	r.m.lookups.WithLabelValues("changed").Inc()
	r.log.Info("dns name resolved", "name", res.name, "addresses", addrs, "ttl", res.ans.TTL, "left_out", leftOut)
	err := r.install(res.name, addrs)
	if err != nil {
		r.log.Error("addresses of a dns name not installed for every device; retrying", "name", res.name, "err", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.names[res.name]; ok {
		e.reinstall = err != nil
		if err != nil {
			e.st.Err, e.st.Next = "install: "+err.Error(), time.Now().Add(r.cfg.RetryMin)
		}
	}
}
