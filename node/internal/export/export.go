// Package export expires flows from the datapath's flow table and turns them
// into flow records: active timeout, idle timeout and TCP FIN/RST, plus a
// final drain. Expired flows are read and deleted in one step.
package export

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/xdp"
)

// Config sets when a flow is exported.
type Config struct {
	// ActiveTimeout exports a flow this long after its first packet.
	ActiveTimeout time.Duration
	// IdleTimeout exports a flow this long after its last packet.
	IdleTimeout time.Duration
	// TCPEndGrace exports a TCP flow that saw FIN or RST once it has been
	// idle this long (so the last ACK still lands in the same record).
	TCPEndGrace time.Duration
	// ScanInterval is how often Run scans the table.
	ScanInterval time.Duration
}

// DefaultConfig returns the IPFIX-like defaults: active 60 s, idle 15 s.
func DefaultConfig() Config {
	return Config{ActiveTimeout: 60 * time.Second, IdleTimeout: 15 * time.Second, TCPEndGrace: 2 * time.Second, ScanInterval: time.Second}
}

func (c Config) validate() error {
	switch {
	case c.ActiveTimeout <= 0 || c.IdleTimeout <= 0 || c.ScanInterval <= 0:
		return fmt.Errorf("export config: timeouts and scan interval must be positive (%+v)", c)
	case c.TCPEndGrace < 0 || c.TCPEndGrace > c.IdleTimeout:
		return fmt.Errorf("export config: tcp end grace %v must be within [0, idle timeout]", c.TCPEndGrace)
	}
	return nil
}

// Source is the flow table: *xdp.Datapath implements it.
type Source interface {
	ForEachFlow(func(xdp.FlowKey, *flow.Record) bool) error
	TakeFlow(xdp.FlowKey) (flow.Record, bool, error)
}

var _ Source = (*xdp.Datapath)(nil)

const (
	tcpFIN = 0x01
	tcpRST = 0x04
)

// Exporter expires flows from a Source.
type Exporter struct {
	cfg     Config
	src     Source
	expired *prometheus.CounterVec
	active  prometheus.Gauge
}

// New returns an exporter over src; its metrics go to reg (nil: none).
func New(cfg Config, src Source, reg prometheus.Registerer) (*Exporter, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	e := &Exporter{
		cfg: cfg,
		src: src,
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "medmesh", Subsystem: "sensor", Name: "flows_expired_total",
			Help: "Flows exported from the flow table, by reason (idle, active, fin, rst, drain).",
		}, []string{"reason"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "medmesh", Subsystem: "sensor", Name: "flows_active",
			Help: "Flows in the flow table at the last scan.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{e.expired, e.active} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register export metrics: %w", err)
			}
		}
	}
	return e, nil
}

// Collectors are the exporter's metrics (registered by New when given a
// registerer), for a caller that must unregister them.
func (e *Exporter) Collectors() []prometheus.Collector {
	return []prometheus.Collector{e.expired, e.active}
}

// Reason says why r is due for export at now (Unix ns), or "" if it is not.
func (c Config) Reason(r *flow.Record, now int64) string {
	idle := time.Duration(now - r.LastNs)
	flags := r.FwdTCPFlags | r.RevTCPFlags
	switch {
	case r.Proto == 6 && flags&tcpRST != 0 && idle >= c.TCPEndGrace:
		return "rst"
	case r.Proto == 6 && flags&tcpFIN != 0 && idle >= c.TCPEndGrace:
		return "fin"
	case idle >= c.IdleTimeout:
		return "idle"
	case time.Duration(now-r.FirstNs) >= c.ActiveTimeout:
		return "active"
	}
	return ""
}

// Expire exports every flow due at now (Unix ns, the datapath's clock),
// calling fn for each, and returns how many flows remain in the table.
func (e *Exporter) Expire(now int64, fn func(*flow.Record)) (remaining int, err error) {
	type due struct {
		key    xdp.FlowKey
		reason string
	}
	var dues []due
	total := 0
	err = e.src.ForEachFlow(func(k xdp.FlowKey, r *flow.Record) bool {
		total++
		if reason := e.cfg.Reason(r, now); reason != "" {
			dues = append(dues, due{k, reason})
		}
		return true
	})
	if err != nil {
		return 0, fmt.Errorf("expire flows: %w", err)
	}
	taken := 0
	var errs []error
	for _, d := range dues {
		r, ok, err := e.src.TakeFlow(d.key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue
		}
		taken++
		r.EndReason = d.reason
		e.expired.WithLabelValues(d.reason).Inc()
		fn(&r)
	}
	remaining = total - taken
	e.active.Set(float64(remaining))
	if err := errors.Join(errs...); err != nil {
		return remaining, fmt.Errorf("expire flows: %w", err)
	}
	return remaining, nil
}

// Drain exports every flow in the table, calling fn for each. A TCP flow
// that saw RST or FIN says so; any other says "drain".
func (e *Exporter) Drain(fn func(*flow.Record)) error {
	var keys []xdp.FlowKey
	if err := e.src.ForEachFlow(func(k xdp.FlowKey, _ *flow.Record) bool {
		keys = append(keys, k)
		return true
	}); err != nil {
		return fmt.Errorf("drain flows: %w", err)
	}
	var errs []error
	for _, k := range keys {
		r, ok, err := e.src.TakeFlow(k)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue
		}
		flags := r.FwdTCPFlags | r.RevTCPFlags
		switch {
		case r.Proto == 6 && flags&tcpRST != 0:
			r.EndReason = "rst"
		case r.Proto == 6 && flags&tcpFIN != 0:
			r.EndReason = "fin"
		default:
			r.EndReason = "drain"
		}
		e.expired.WithLabelValues(r.EndReason).Inc()
		fn(&r)
	}
	e.active.Set(0)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("drain flows: %w", err)
	}
	return nil
}
