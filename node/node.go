// Package node runs a whole sensor node: the XDP datapath, the engine
// (detectors, identity, baselines, scoring), gossip with the other sensors,
// and reliable reporting to the coordinators. It only wires the parts the
// node's other packages build.
//
// Gossip is a hint only: a sighting of a device at another sensor makes this
// one fetch the device's baseline from the coordinators, nothing more.
// Nothing is enforced or deleted because of gossip state.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/node/collector"
	"github.com/medmesh/medmesh/node/datapath"
	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/gossip"
	"github.com/medmesh/medmesh/node/internal/baseline"
	"github.com/medmesh/medmesh/node/internal/engine"
	"github.com/medmesh/medmesh/node/internal/infra"
	"github.com/medmesh/medmesh/node/internal/reporter"
	"github.com/medmesh/medmesh/node/internal/spool"
	"github.com/medmesh/medmesh/node/internal/xdp"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Config configures a sensor node.
type Config struct {
	Sensor datapath.Config
	// Collect, when Collect.Addr is set, also receives IPFIX and NetFlow
	// v9 from exporters (routers, VPN concentrators, gateways) that see
	// devices no capture of this sensor does; their flows go through the
	// same engine. With no Sensor.Iface, the node only collects.
	Collect collector.Config
	// Floor and Zone are where the sensor is; its devices get them.
	Floor, Zone string
	// Coordinators lists the coordinators' API addresses. Empty runs the
	// sensor alone: findings are logged, not reported.
	Coordinators []string
	// TLS is the sensor's identity (a sensor certificate of the campus CA):
	// every coordinator connection is mutual TLS with it. Empty means
	// plaintext, which `medmesh node` allows only on loopback or with --dev.
	TLS grpcx.TLSFiles
	// SpoolDir holds the on-disk spool that keeps records while no
	// coordinator is reachable.
	SpoolDir string
	// LearnWindow is how long a new device is watched before its baseline
	// freezes.
	LearnWindow time.Duration
	// Infra declares campus infrastructure servers beyond those the sensor
	// learns, each "SERVICE=ADDRESS" or "SERVICE=PREFIX" (dhcp, dns, ntp,
	// syslog, directory, hl7, dicom).
	Infra []string
	// Gossip, when Gossip.NodeName is set, joins the sensor mesh.
	Gossip gossip.Config
	// SyncInterval is how often device and baseline changes are reported,
	// due baselines frozen and status reported.
	SyncInterval time.Duration
	Version      string
	// Attached, when set, is called once the datapath program is loaded
	// and attached (the node's readiness).
	Attached func()
}

// DefaultConfig returns a passive sensor learning for seven days.
func DefaultConfig() Config {
	return Config{
		Sensor:       datapath.DefaultConfig(),
		Collect:      collector.DefaultConfig(),
		LearnWindow:  baseline.DefaultConfig().Window,
		SyncInterval: 5 * time.Second,
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Sensor.ID == "" {
		errs = append(errs, errors.New("sensor id is required"))
	}
	if c.Sensor.Iface == "" && c.Collect.Addr == "" {
		errs = append(errs, errors.New("an interface to capture on or an address to collect flow export on is required"))
	}
	if len(c.Coordinators) > 0 && c.SpoolDir == "" {
		errs = append(errs, errors.New("a spool directory is required with coordinators"))
	}
	if c.LearnWindow <= 0 || c.SyncInterval <= 0 {
		errs = append(errs, errors.New("learn window and sync interval must be positive"))
	}
	return errors.Join(errs...)
}

// node is one running sensor node.
type node struct {
	cfg Config
	log *slog.Logger
	eng *engine.Engine
	rep *reporter.Reporter // nil when standalone
	gsp *gossip.Gossip     // nil without gossip
	cs  medmeshv1.ClusterServiceClient

	alerts chan *medmeshv1.Alert

	mu        sync.Mutex
	bmap      datapath.BaselineMap
	sentDev   map[string]*medmeshv1.Device
	sentBase  map[string]uint64
	seenHere  map[string]bool
	lostAlert uint64
}

// Run runs the node until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger, reg prometheus.Registerer) (err error) {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("node config: %w", err)
	}
	n := &node{cfg: cfg, log: log, alerts: make(chan *medmeshv1.Alert, 1<<16),
		sentDev: map[string]*medmeshv1.Device{}, sentBase: map[string]uint64{}, seenHere: map[string]bool{}}

	ec := engine.DefaultConfig()
	ec.SensorID, ec.Floor, ec.Zone = cfg.Sensor.ID, cfg.Floor, cfg.Zone
	ec.Baseline.Window = cfg.LearnWindow
	for _, v := range cfg.Infra {
		d, err := infra.ParseDeclared(v)
		if err != nil {
			return fmt.Errorf("node config: %w", err)
		}
		ec.Infra.Declared = append(ec.Infra.Declared, d)
	}
	ec.Installer = n
	ec.OnAlert = n.onAlert

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()

	var sp *spool.Spool
	if len(cfg.Coordinators) > 0 {
		if err := os.MkdirAll(cfg.SpoolDir, 0o750); err != nil {
			return fmt.Errorf("spool dir: %w", err)
		}
		sc := spool.DefaultConfig()
		sc.Dir = filepath.Clean(cfg.SpoolDir)
		if sp, err = spool.Open(sc, log.With("component", "spool"), reg); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, sp.Close()) }()
		// Alert ids of this life start past every sequence number the spool
		// ever gave: a restart never reuses an id of an earlier life.
		ec.AlertSeqBase = sp.Stats().LastSeq
	}
	if n.eng, err = engine.New(ec, log.With("component", "engine"), reg); err != nil {
		return err
	}
	if sp != nil {
		rc := reporter.DefaultConfig()
		rc.SensorID, rc.Coordinators, rc.TLS = cfg.Sensor.ID, cfg.Coordinators, cfg.TLS
		if n.rep, err = reporter.New(rc, sp, log.With("component", "reporter"), reg); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, n.rep.Close()) }()
		cc := grpcx.DefaultClientConfig()
		cc.TLS = cfg.TLS
		conn, err := grpcx.Dial(strings.Join(cfg.Coordinators, ","), cc, log)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, conn.Close()) }()
		n.cs = medmeshv1.NewClusterServiceClient(conn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.rep.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("reporter stopped", "err", err)
			}
		}()
	}
	if cfg.Gossip.NodeName != "" {
		gc := cfg.Gossip
		gc.Role, gc.Floor, gc.Zone, gc.Version = gossip.RoleSensor, cfg.Floor, cfg.Zone, cfg.Version
		if n.gsp, err = gossip.New(gc, log.With("component", "gossip"), reg); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, n.gsp.Close()) }()
	}

	records := make(chan flow.Record, 4096)
	wg.Add(2)
	go func() { defer wg.Done(); n.consume(records) }()
	go func() { defer wg.Done(); n.sync(ctx) }()

	collectErr := make(chan error, 1)
	if cfg.Collect.Addr != "" {
		c, err := collector.Listen(cfg.Collect, log.With("component", "collector"), reg)
		if err != nil {
			close(records)
			return err
		}
		log.Info("collecting flow export", "addr", c.Addr().String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Collected flows enter the engine where captured ones do.
			err := c.Serve(ctx, n.eng)
			if err != nil {
				log.Error("collector stopped", "err", err)
			}
			collectErr <- err
		}()
	}
	if cfg.Sensor.Iface == "" {
		// A collector-only node: ready once its socket is bound.
		if cfg.Attached != nil {
			cfg.Attached()
		}
		select {
		case <-ctx.Done():
		case err = <-collectErr:
		}
		close(records)
		cancel()
		wg.Wait()
		return err
	}

	sc := cfg.Sensor
	sc.LogFlows = len(cfg.Coordinators) == 0 && sc.LogFlows
	sc.Records = records
	sc.Baselines = func(m datapath.BaselineMap) {
		n.mu.Lock()
		n.bmap = m
		n.mu.Unlock()
		if cfg.Attached != nil {
			cfg.Attached()
		}
	}
	err = datapath.Run(ctx, sc, log, reg, n.eng)
	close(records)
	cancel()
	wg.Wait() // before the deferred closes of reporter and spool
	return err
}

// SetBaseline implements baseline.Installer for the engine: a frozen
// baseline goes into the datapath's in-kernel map.
func (n *node) SetBaseline(mac flow.MAC, rules []baseline.Rule) error {
	n.mu.Lock()
	m := n.bmap
	n.mu.Unlock()
	if m == nil {
		return errors.New("datapath not loaded yet")
	}
	out := make([]xdp.BaselineRule, len(rules))
	for i, r := range rules {
		out[i] = xdp.BaselineRule{Prefix: r.Prefix, Proto: r.Proto, Port: r.Port}
	}
	return m.SetBaseline(mac, out)
}

// onAlert is called by the engine with its lock held: never block.
func (n *node) onAlert(a *medmeshv1.Alert) {
	select {
	case n.alerts <- a:
	default:
		n.mu.Lock()
		n.lostAlert++
		n.mu.Unlock()
	}
}

// consume folds exported flows into per-minute summaries for both ends.
func (n *node) consume(records <-chan flow.Record) {
	for r := range records {
		if n.rep == nil {
			continue
		}
		if !r.SrcMAC.IsZero() {
			n.rep.AddFlow(&r, true)
		}
		if !r.DstMAC.IsZero() {
			n.rep.AddFlow(&r, false)
		}
	}
}

// sync reports alerts as they come, and device and baseline changes, frozen
// baselines and roaming devices every SyncInterval.
func (n *node) sync(ctx context.Context) {
	t := time.NewTicker(n.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-n.alerts:
			// Named fields only: the summary never holds payload.
			n.log.Warn("alert raised", "alert_id", a.GetId(), "device", a.GetDeviceMac(), "kind", a.GetKind(),
				"score", a.GetRisk().GetScore(), "summary", a.GetSummary())
			if n.rep == nil {
				continue
			}
			if err := n.rep.Enqueue(ctx, &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_Alert{Alert: a}}); err != nil {
				n.log.Error("alert not spooled", "alert", a.GetId(), "err", err)
			}
		case <-t.C:
			n.eng.FreezeDue()
			n.syncDevices(ctx)
			n.syncBaselines(ctx)
			n.reportStatus(ctx)
		}
	}
}

// reportStatus tells the coordinators this sensor is alive, for cluster
// status. Best effort: a missed heartbeat only ages the entry.
func (n *node) reportStatus(ctx context.Context) {
	if n.cs == nil {
		return
	}
	m := &medmeshv1.Member{Id: n.cfg.Sensor.ID, Role: "sensor", State: "alive", Floor: n.cfg.Floor, Zone: n.cfg.Zone,
		Version: n.cfg.Version, Health: "ok"}
	if n.gsp != nil {
		m.GossipAddr = n.gsp.Addr()
	}
	n.mu.Lock()
	if n.lostAlert > 0 {
		m.Health = fmt.Sprintf("%d alerts lost: engine alert queue full", n.lostAlert)
	}
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := n.cs.ReportMemberStatus(ctx, &medmeshv1.ReportMemberStatusRequest{Member: m}); err != nil {
		n.log.Debug("status report failed", "err", err)
	}
}

func (n *node) syncDevices(ctx context.Context) {
	for _, d := range n.eng.Devices() {
		mac := d.GetMac()
		if !n.seenHere[mac] {
			n.seenHere[mac] = true
			n.arrived(ctx, d)
		}
		cmp := proto.CloneOf(d)
		cmp.LastSeen = nil
		if prev := n.sentDev[mac]; prev != nil && proto.Equal(prev, cmp) {
			continue
		}
		n.sentDev[mac] = cmp
		if n.rep == nil {
			continue
		}
		if err := n.rep.Enqueue(ctx, &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: d}}}); err != nil {
			n.log.Error("device not spooled", "device", mac, "err", err)
		}
	}
}

func (n *node) syncBaselines(ctx context.Context) {
	for _, b := range n.eng.Baselines() {
		key := b.GetDeviceMac()
		if key == "" || n.sentBase[key] >= b.GetVersion() {
			continue
		}
		n.sentBase[key] = b.GetVersion()
		if n.rep == nil {
			continue
		}
		if err := n.rep.Enqueue(ctx, &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_Baseline{Baseline: b}}); err != nil {
			n.log.Error("baseline not spooled", "device", key, "err", err)
		}
	}
}

// arrived handles a device this sensor sees for the first time: it tells
// the mesh, and when the device was seen at another sensor (or gossip is
// off) fetches its replicated baseline, so a roaming device keeps being
// scored against what it learned elsewhere.
func (n *node) arrived(ctx context.Context, d *medmeshv1.Device) {
	var mac flow.MAC
	if err := mac.UnmarshalText([]byte(d.GetMac())); err != nil {
		return // keyed by IP (a capture without link layer): not a roaming candidate
	}
	fetch := n.gsp == nil
	if n.gsp != nil {
		prev, _ := n.gsp.Observe(mac, time.Now())
		fetch = prev.Sensor != "" && prev.Sensor != n.cfg.Sensor.ID
	}
	if !fetch || n.rep == nil {
		return
	}
	resp, err := n.rep.GetBaseline(ctx, d.GetMac(), medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED)
	if err != nil || resp.GetBaseline() == nil || resp.GetClassBaseline() {
		return // no baseline of its own yet: it learns here
	}
	if err := n.eng.ImportBaseline(resp.GetBaseline()); err != nil {
		n.log.Warn("roaming device baseline not imported", "device", d.GetMac(), "err", err)
		return
	}
	n.sentBase[d.GetMac()] = resp.GetBaseline().GetVersion()
	n.log.Info("roaming device: scoring with its replicated baseline", "device", d.GetMac(), "version", resp.GetBaseline().GetVersion())
}
