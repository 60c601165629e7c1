// Package datapath runs a sensor's XDP datapath on one interface: it loads and
// attaches the XDP program, reads its ring buffer into a flow.Handler,
// expires flows into records, exports metrics, and detaches on exit.
package datapath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/export"
	"github.com/medmesh/medmesh/node/internal/xdp"
)

// Modes.
const (
	// ModeTap is for a dedicated mirror port: frames are dropped after
	// accounting, so the kernel stack never pays for the copy.
	ModeTap = "tap"
	// ModePassive passes every frame on to the kernel stack.
	ModePassive = "passive"
)

// Config configures a sensor.
type Config struct {
	Iface string
	Mode  string // ModeTap or ModePassive
	ID    string
	// Debug shows the full verifier log when the program fails to load.
	Debug bool
	// ForceGeneric attaches in generic (skb) mode even when the driver has
	// native XDP.
	ForceGeneric bool
	// FlowEntries is the flow table's size.
	FlowEntries uint32
	// ActiveTimeout, IdleTimeout and TCPEndGrace decide when flows are
	// exported; ScanInterval is how often the table is scanned.
	ActiveTimeout, IdleTimeout, TCPEndGrace, ScanInterval time.Duration
	// LogFlows logs every exported flow record at Info level (until the
	// mesh consumes them).
	LogFlows bool
	// Records, when set, receives every exported record after the
	// handler has seen it. Sends block: the consumer must keep reading
	// until Run returns (the final drain sends every remaining flow).
	Records chan<- flow.Record
	// Ready, when set, is called once the program is attached.
	Ready func(attachMode string)
	// Baselines, when set, is called once the program is loaded with the
	// datapath's in-kernel baseline map; it stays valid until Run returns.
	Baselines func(BaselineMap)
}

// BaselineMap installs per-device baselines into the datapath: each new
// flow of such a device is marked in or out of its baseline.
type BaselineMap interface {
	SetBaseline(mac flow.MAC, rules []xdp.BaselineRule) error
	ClearBaseline(mac flow.MAC) error
}

// DefaultConfig returns a passive sensor with the exporter's defaults.
func DefaultConfig() Config {
	ec := export.DefaultConfig()
	return Config{
		Mode: ModePassive, FlowEntries: xdp.DefaultConfig().FlowEntries,
		ActiveTimeout: ec.ActiveTimeout, IdleTimeout: ec.IdleTimeout, TCPEndGrace: ec.TCPEndGrace,
		ScanInterval: ec.ScanInterval, LogFlows: true,
	}
}

func (c Config) validate() error {
	if c.Iface == "" {
		return errors.New("sensor config: no interface")
	}
	if c.Mode != ModeTap && c.Mode != ModePassive {
		return fmt.Errorf("sensor config: mode %q: want %q or %q", c.Mode, ModeTap, ModePassive)
	}
	return nil
}

func (c Config) exportConfig() export.Config {
	return export.Config{ActiveTimeout: c.ActiveTimeout, IdleTimeout: c.IdleTimeout, TCPEndGrace: c.TCPEndGrace, ScanInterval: c.ScanInterval}
}

// Run runs the sensor until ctx ends, then detaches and drains the flow
// table (every remaining flow is exported with reason "drain"). Handler
// methods (h may be nil) are called from one goroutine: events in ring
// buffer order, and HandleFlow for each record before it is logged or sent.
func Run(ctx context.Context, cfg Config, log *slog.Logger, reg prometheus.Registerer, h flow.Handler) (err error) {
	if err := cfg.validate(); err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	xc := xdp.DefaultConfig()
	xc.FlowEntries = cfg.FlowEntries
	xc.Tap = cfg.Mode == ModeTap
	xc.Debug = cfg.Debug
	d, err := xdp.Load(xc)
	if err != nil {
		return fmt.Errorf("sensor: %w", err)
	}
	defer func() { err = errors.Join(err, d.Close()) }()
	ex, err := export.New(cfg.exportConfig(), d, reg)
	if err != nil {
		return fmt.Errorf("sensor: %w", err)
	}
	m := newMetrics(d)
	if reg != nil {
		defer func() {
			for _, c := range ex.Collectors() {
				reg.Unregister(c)
			}
		}()
		if err := reg.Register(m); err != nil {
			return fmt.Errorf("sensor: register metrics: %w", err)
		}
		defer reg.Unregister(m)
	}
	rd, err := d.NewReader()
	if err != nil {
		return fmt.Errorf("sensor: %w", err)
	}
	defer func() { err = errors.Join(err, rd.Close()) }()
	if bs, ok := h.(flow.BudgetSetter); ok {
		bs.SetSampleBudget(d)
	}
	if cfg.Baselines != nil {
		cfg.Baselines(d)
	}
	mode, err := d.Attach(cfg.Iface, cfg.ForceGeneric)
	if err != nil {
		return fmt.Errorf("sensor: %w", err)
	}
	if mode == xdp.ModeGeneric && !cfg.ForceGeneric {
		log.Warn("driver has no native XDP: attached in generic mode, expect lower throughput", "iface", cfg.Iface)
	}
	log.Info("sensor datapath attached", "iface", cfg.Iface, "attach", string(mode), "mode", cfg.Mode, "id", cfg.ID, "flow_entries", cfg.FlowEntries)
	if on, why := d.FlowCache(); !on {
		log.Warn("per-CPU flow cache off: every packet takes the flow table's hash lookup", "reason", why)
	}
	if cfg.Ready != nil {
		cfg.Ready(string(mode))
	}

	emit := func(r *flow.Record, draining bool) error {
		if h != nil {
			h.HandleFlow(r)
		}
		if cfg.LogFlows {
			log.Info("flow", "src", r.Src, "dst", r.Dst, "sport", r.SrcPort, "dport", r.DstPort, "proto", r.Proto,
				"fwd_packets", r.FwdPackets, "fwd_bytes", r.FwdBytes, "rev_packets", r.RevPackets, "rev_bytes", r.RevBytes,
				"app", r.App, "src_mac", r.SrcMAC, "dst_mac", r.DstMAC, "vlan", r.VLAN, "end", r.EndReason, "baseline", r.Baseline)
		}
		if cfg.Records != nil {
			if draining {
				cfg.Records <- *r
				return nil
			}
			select {
			case cfg.Records <- *r:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}

	var ev xdp.Event
	nextScan := time.Now().Add(cfg.ScanInterval)
	for ctx.Err() == nil {
		deadline := time.Now().Add(100 * time.Millisecond)
		if deadline.After(nextScan) {
			deadline = nextScan
		}
		switch err := rd.Read(deadline, &ev); {
		case err == nil:
			if ev.Kind == xdp.EventFlowStart {
				m.flowStarts.Inc()
			}
			xdp.Dispatch(&ev, h)
		case errors.Is(err, xdp.ErrNoEvent):
		default:
			m.decodeErrors.Inc()
			log.Debug("bad ring buffer record", "err", err)
		}
		if now := time.Now(); !now.Before(nextScan) {
			nextScan = now.Add(cfg.ScanInterval)
			var emitErr error
			if _, err := ex.Expire(d.Now(), func(r *flow.Record) {
				if emitErr == nil {
					emitErr = emit(r, false)
				}
			}); err != nil {
				log.Warn("expire flows", "err", err)
			}
			if emitErr != nil && ctx.Err() == nil {
				return emitErr
			}
		}
	}
	// Stop accounting, then hand every event and flow still in the maps on.
	if err := d.Detach(); err != nil {
		return fmt.Errorf("sensor: %w", err)
	}
	log.Info("sensor datapath detached", "iface", cfg.Iface)
	for rd.Read(time.Unix(1, 0), &ev) == nil {
		xdp.Dispatch(&ev, h)
	}
	return ex.Drain(func(r *flow.Record) { _ = emit(r, true) })
}
