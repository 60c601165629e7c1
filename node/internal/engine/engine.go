// Package engine is the sensor's brain behind the datapath: it implements
// flow.Handler, runs the protocol detectors over payload samples, keeps the
// device inventory, learns and freezes baselines and scores every flow and
// event, raising alerts. The same engine serves live capture and replay;
// all time comes from the packets and records it is given.
package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/medmesh/medmesh/internal/names"
	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/baseline"
	"github.com/medmesh/medmesh/node/internal/creds"
	"github.com/medmesh/medmesh/node/internal/detect"
	"github.com/medmesh/medmesh/node/internal/identity"
	"github.com/medmesh/medmesh/node/internal/infra"
	"github.com/medmesh/medmesh/node/internal/oui"
	"github.com/medmesh/medmesh/node/internal/scan"
	"github.com/medmesh/medmesh/node/internal/score"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Mode says whether devices without a baseline learn one.
type Mode uint8

const (
	// Learn: a device without a baseline learns one during its window,
	// then is scored against it.
	Learn Mode = iota
	// Score: no learning; devices are scored against their own baseline,
	// else their class's.
	Score
)

func (m Mode) String() string {
	if m == Score {
		return "score"
	}
	return "learn"
}

// Config configures an engine.
type Config struct {
	// SensorID prefixes alert ids ("SENSOR/SEQ").
	SensorID string
	Mode     Mode
	// Floor and Zone are where the sensor is; devices get them as location.
	Floor, Zone string
	Identity    identity.Config
	// Infra learns and holds the campus's infrastructure servers; flows
	// to them for the service they provide are not anomalies.
	Infra    infra.Config
	Baseline baseline.Config
	Score    score.Config
	// Scan is scan detection: its window also bounds how long the
	// deviation alerts of a device are held and folded (burst.go).
	Scan scan.Config
	// Defaults are the factory-default credentials cleartext logins are
	// compared with; nil: the list medmesh ships (node/internal/creds).
	Defaults detect.Defaults
	// FailedLogins refused logins from one source to one service within
	// FailedLoginWindow raise one failed_login_burst alert.
	FailedLogins      int
	FailedLoginWindow time.Duration
	// MaxFlows bounds the per-flow detection states held at once.
	MaxFlows int
	// MaxAlerts and MaxDetections bound what Alerts and Detections keep.
	MaxAlerts     int
	MaxDetections int
	// Installer, when set, receives every frozen device baseline for the
	// datapath's in-kernel map.
	Installer baseline.Installer
	// AlertSeqBase is added to every alert's sequence number (ids are
	// "SENSOR/SEQ"). A restarted sensor must not reuse the ids of its earlier
	// life, which the coordinators would take for retries and drop: the node
	// passes its spool's last sequence number, which only ever grows.
	AlertSeqBase uint64
	// OnAlert, when set, is called with each new alert, with the engine's
	// lock held: it must not block nor call the engine (send on a buffered
	// channel, or hand off to a goroutine).
	OnAlert func(*medmeshv1.Alert)
}

// DefaultConfig returns a learning engine with the packages' defaults.
func DefaultConfig() Config {
	ic := identity.DefaultConfig()
	ic.Vendor = oui.Lookup
	return Config{
		SensorID:          "sensor",
		Mode:              Learn,
		Identity:          ic,
		Infra:             infra.DefaultConfig(),
		Baseline:          baseline.DefaultConfig(),
		Score:             score.DefaultConfig(),
		Scan:              scan.DefaultConfig(),
		FailedLogins:      5,
		FailedLoginWindow: time.Minute,
		MaxFlows:          1 << 18,
		MaxAlerts:         1 << 16,
		MaxDetections:     1 << 16,
	}
}

func (c Config) validate() error {
	var errs []error
	if c.SensorID == "" || strings.Contains(c.SensorID, "/") {
		errs = append(errs, fmt.Errorf("sensor id %q must be non-empty and without '/'", c.SensorID))
	}
	if c.Mode != Learn && c.Mode != Score {
		errs = append(errs, fmt.Errorf("mode %d unknown", c.Mode))
	}
	if c.MaxFlows <= 0 || c.MaxAlerts <= 0 || c.MaxDetections <= 0 {
		errs = append(errs, errors.New("max flows, alerts and detections must be positive"))
	}
	if err := c.Baseline.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Scan.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.FailedLogins < 2 || c.FailedLoginWindow <= 0 {
		errs = append(errs, fmt.Errorf("failed logins %d must be 2 or more within a positive window (%v)", c.FailedLogins, c.FailedLoginWindow))
	}
	return errors.Join(errs...)
}

// devState is the engine's per-device state.
type devState struct {
	learner  *baseline.Learner
	base     *baseline.Baseline
	version  uint64
	tracker  *score.Tracker
	maxRisk  *medmeshv1.RiskScore
	imported bool
	// site is the exporter's site for a device seen through flow export
	// (flow.Record.Site); empty for captured devices.
	site string
}

type alertKey struct {
	dev    *identity.Device
	factor score.Factor
	peer   netip.Addr
	proto  uint8
	port   uint16
}

type detKey struct {
	flow        flow.Tuple
	name, value string
}

// Engine implements flow.Handler. Its methods are safe for concurrent use.
type Engine struct {
	cfg      Config
	log      *slog.Logger
	metrics  *metrics
	scorer   *score.Scorer
	defaults detect.Defaults

	mu         sync.Mutex
	mode       Mode
	clock      int64 // latest record or packet time seen, ns
	inv        *identity.Inventory
	infra      *infra.Map
	flows      map[flow.Tuple]*detect.State
	classBase  map[medmeshv1.DeviceClass]*baseline.Baseline
	classDirty bool
	classVer   uint64
	res        score.Result
	seq        uint64
	alerts     []*medmeshv1.Alert
	alerted    map[alertKey]struct{}
	bursts     map[netip.Addr]*burst // by the device address they fold alerts about
	nextFlush  int64                 // no burst window ends before, ns
	scans      *scan.Detector
	failures   map[failKey]*failures
	dets       []Detection
	detSeen    map[detKey]struct{}
	detCounts  map[string]uint64
	dropped    uint64
	budget     flow.SampleBudget
}

var (
	_ flow.Handler      = (*Engine)(nil)
	_ flow.BudgetSetter = (*Engine)(nil)
)

// SetSampleBudget lets the engine raise a flow's sample budget while its
// detector wants more samples (Telnet and FTP logins typed over many
// packets). The datapath calls it once, before any event.
func (e *Engine) SetSampleBudget(b flow.SampleBudget) {
	e.mu.Lock()
	e.budget = b
	e.mu.Unlock()
}

// New returns an engine. reg may be nil.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Engine, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("engine config: %w", err)
	}
	inv, err := identity.New(cfg.Identity)
	if err != nil {
		return nil, err
	}
	im, err := infra.New(cfg.Infra)
	if err != nil {
		return nil, err
	}
	sc, err := score.New(cfg.Score)
	if err != nil {
		return nil, err
	}
	sd, err := scan.New(cfg.Scan)
	if err != nil {
		return nil, err
	}
	def := cfg.Defaults
	if def == nil {
		l, err := creds.Builtin()
		if err != nil {
			return nil, fmt.Errorf("default credentials: %w", err)
		}
		def = l
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Engine{
		cfg: cfg, log: log, metrics: m, scorer: sc, defaults: def, scans: sd,
		failures:  make(map[failKey]*failures),
		mode:      cfg.Mode,
		inv:       inv,
		infra:     im,
		flows:     make(map[flow.Tuple]*detect.State),
		classBase: make(map[medmeshv1.DeviceClass]*baseline.Baseline),
		alerted:   make(map[alertKey]struct{}),
		bursts:    make(map[netip.Addr]*burst),
		detSeen:   make(map[detKey]struct{}),
		detCounts: make(map[string]uint64),
	}, nil
}

// SetMode switches between learning and scoring. Switching to Score does
// not freeze devices still learning; call FreezeAll for that.
func (e *Engine) SetMode(m Mode) {
	e.mu.Lock()
	e.mode = m
	e.mu.Unlock()
}

func (e *Engine) tick(ns int64) {
	if ns > e.clock {
		e.clock = ns
		e.flushDue()
	}
}

func (e *Engine) state(d *identity.Device) *devState {
	if ds, ok := d.Attached.(*devState); ok {
		return ds
	}
	ds := &devState{tracker: score.NewTracker()}
	d.Attached = ds
	e.metrics.devices.Set(float64(e.inv.Len()))
	return ds
}

// attached is a device's engine state, or nil.
func attached(d *identity.Device) *devState {
	ds, _ := d.Attached.(*devState)
	return ds
}

// HandleFlow sets rec.App from the flow's detection state, updates the
// devices at both ends, feeds their learners and scores the flow for each.
// A flow that carried no payload is evidence for scan detection about its
// initiator, and says nothing about the device it reached.
func (e *Engine) HandleFlow(rec *flow.Record) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tick(rec.LastNs)
	t := rec.Tuple()
	var st *detect.State // the flow's state, when the flow ended
	payload := false     // a flow state exists once a payload sample was seen
	if len(e.flows) > 0 {
		if fs := e.flows[t]; fs != nil {
			payload = true
			if a := fs.App(); a != "" {
				rec.App = a
			}
			if rec.EndReason != "" && rec.EndReason != "active" {
				delete(e.flows, t)
				st = fs
			}
		}
	}
	src := e.inv.Resolve(rec.SrcMAC, rec.Src, rec.FirstNs)
	dst := e.inv.Resolve(rec.DstMAC, rec.Dst, rec.FirstNs)
	bytes := rec.FwdBytes + rec.RevBytes
	port := rec.DstPort
	if rec.Proto != 6 && rec.Proto != 17 && rec.Proto != 132 {
		port = 0
	}
	answered := accepted(rec)
	if svc := infra.Classify(rec.Proto, port, rec.App); svc != infra.None && (answered || svc == infra.Syslog) {
		e.infra.Served(rec.Dst, rec.Src, svc, rec.Proto, port)
	}
	var p scan.Probe
	if o, method, ok := scan.Classify(rec, payload); ok {
		p = scan.Probe{Src: rec.Src, Dst: rec.Dst, Proto: rec.Proto, Port: port, Outcome: o, Method: method, TimeNs: rec.FirstNs}
	}
	if rec.Site != "" {
		// Collected from flow export: the devices are at the exporter's
		// site, beyond any inline enforcer.
		for _, d := range []*identity.Device{src, dst} {
			if d != nil {
				e.state(d).site = rec.Site
			}
		}
	}
	if src != nil {
		e.side(src, rec.Dst, rec.Proto, port, rec.App, true, answered, bytes, rec.LastNs, rec, &p)
	}
	if dst != nil && dst != src {
		e.side(dst, rec.Src, rec.Proto, port, rec.App, false, answered, bytes, rec.LastNs, rec, &p)
	}
	if st != nil {
		if l, ok := st.End(); ok { // the flow ended before the server answered
			e.record(rec.LastNs, t, &detect.Detection{App: st.App(), Logins: []detect.Login{l}})
			e.login(&l, t, src, dst, rec.LastNs)
		}
	}
	e.metrics.records.Inc()
}

// side scores the flow for one of its devices. p is what scan detection
// makes of the flow (zero Outcome: nothing).
func (e *Engine) side(d *identity.Device, peer netip.Addr, proto uint8, port uint16, app string,
	outbound, answered bool, bytes uint64, timeNs int64, rec *flow.Record, p *scan.Probe) {
	tr := identity.Traffic{Peer: peer, Proto: proto, Port: port, App: app, Outbound: outbound, Answered: answered}
	d.ObserveTraffic(&tr)
	ds := e.state(d)
	if ds.learner == nil && ds.base == nil && e.mode == Learn {
		l, err := baseline.NewLearner(e.cfg.Baseline, timeNs)
		if err == nil { // config validated in New
			ds.learner = l
		}
	}
	if ds.learner != nil {
		dir := baseline.Inbound
		if outbound {
			dir = baseline.Outbound
		}
		ds.learner.Observe(baseline.Key{Peer: peer, Proto: proto, Port: port, Dir: dir}, app, d, bytes, timeNs)
		if ds.learner.Due(timeNs) {
			e.freeze(d, ds, timeNs)
		}
	}
	class, _ := d.Class()
	f := score.Flow{
		Peer: peer, Names: d, Proto: proto, Port: port, App: app, Outbound: outbound,
		Bytes: bytes, TimeNs: timeNs, Class: class, CountVolume: true, Answered: answered,
		Infra: outbound && (infra.LinkControl(proto, peer) || e.infra.Serves(peer, infra.Classify(proto, port, app), proto, port)),
	}
	if ds.learner == nil {
		f.Baseline = ds.base
		if f.Baseline == nil {
			f.Baseline, f.ClassBaseline = e.classBaseline(class), true
		}
	}
	if p.Outcome != 0 {
		switch {
		case !outbound && p.Outcome != scan.Session:
			// A connection that carried nothing: refused, unanswered or
			// opened and closed by the peer. The device did nothing; the
			// peer is the one to judge.
			e.metrics.probesIgnored.Inc()
			return
		case outbound && isICMP(proto) && e.scans.Suspect(peer, timeNs):
			// An error the device's stack sent back to a scanner (port
			// unreachable): its answer, not its behaviour.
			e.metrics.probesIgnored.Inc()
			return
		case outbound && (p.Outcome != scan.Session || e.scans.Following(p.Src, p.TimeNs)) && !inBaseline(&f):
			e.probe(d, ds, &f, *p, rec.Src, rec.Dst, rec.SrcPort, rec.DstPort)
		}
	}
	e.scorer.ScoreFlow(ds.tracker, &f, &e.res)
	if e.res.Score >= e.scorer.Threshold() {
		e.raise(d, ds, &f, rec.Src, rec.Dst, rec.SrcPort, rec.DstPort, rec.Proto, nil)
	}
}

func isICMP(proto uint8) bool { return proto == 1 || proto == 58 }

// inBaseline reports whether f matches its baseline exactly.
func inBaseline(f *score.Flow) bool {
	if f.Baseline == nil {
		return false
	}
	dir := baseline.Inbound
	if f.Outbound {
		dir = baseline.Outbound
	}
	return f.Baseline.Lookup(baseline.Key{Peer: f.Peer, Proto: f.Proto, Port: f.Port, Dir: dir}) == baseline.Exact
}

// HandleBaselineMiss scores a flow the datapath found outside a device's
// installed baseline, as soon as it starts. For the device that opened it,
// the start counts towards scan detection before its outcome is known.
func (e *Engine) HandleBaselineMiss(m *flow.BaselineMiss) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tick(m.TimeNs)
	ip, peer := m.Flow.Dst, m.Flow.Src
	if m.DeviceIsSrc {
		ip, peer = m.Flow.Src, m.Flow.Dst
	}
	d := e.inv.Resolve(m.DeviceMAC, ip, m.TimeNs)
	if d == nil {
		return
	}
	ds := e.state(d)
	class, _ := d.Class()
	port := m.Flow.DstPort
	if m.Flow.Proto != 6 && m.Flow.Proto != 17 && m.Flow.Proto != 132 {
		port = 0
	}
	var app string
	if st := e.flows[m.Flow]; st != nil {
		app = st.App()
	}
	f := score.Flow{
		Peer: peer, Names: d, Proto: m.Flow.Proto, Port: port, App: app,
		Outbound: m.DeviceIsSrc, TimeNs: m.TimeNs, Class: class,
		// A flow's first packet: an inbound one was not answered yet.
		Infra: m.DeviceIsSrc && (infra.LinkControl(m.Flow.Proto, peer) ||
			e.infra.Serves(peer, infra.Classify(m.Flow.Proto, port, app), m.Flow.Proto, port)),
	}
	if ds.learner != nil {
		return // still learning: the datapath's baseline is stale
	}
	if !m.DeviceIsSrc && e.scans.Probing(peer, m.TimeNs) || m.DeviceIsSrc && isICMP(m.Flow.Proto) && e.scans.Suspect(peer, m.TimeNs) {
		// A victim of an active scan, or its stack's error back to the
		// scanner.
		e.metrics.probesIgnored.Inc()
		return
	}
	f.Baseline = ds.base
	if f.Baseline == nil {
		f.Baseline, f.ClassBaseline = e.classBaseline(class), true
	}
	t := m.Flow
	if m.DeviceIsSrc {
		e.probe(d, ds, &f, scan.Probe{Src: t.Src, Dst: t.Dst, Proto: t.Proto, Port: port, Outcome: scan.Pending, TimeNs: m.TimeNs},
			t.Src, t.Dst, t.SrcPort, t.DstPort)
	}
	e.metrics.misses.Inc()
	e.scorer.ScoreFlow(ds.tracker, &f, &e.res)
	if e.res.Score >= e.scorer.Threshold() {
		e.raise(d, ds, &f, t.Src, t.Dst, t.SrcPort, t.DstPort, t.Proto, nil)
	}
}

// HandleSample runs the detectors over a payload sample, records the named
// fields on the devices they describe, scores logins and checks a flow
// that turns out to carry HL7 or DICOM against the baseline.
func (e *Engine) HandleSample(s *flow.Sample) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tick(s.TimeNs)
	st := e.flows[s.Flow]
	if st == nil {
		if len(e.flows) >= e.cfg.MaxFlows {
			e.metrics.flowsDropped.Inc()
			return
		}
		st = new(detect.State)
		e.flows[s.Flow] = st
	}
	known := st.App() != ""
	det := detect.Inspect(st, s, e.defaults)
	if !known && st.App() != "" {
		e.countApp(st.App())
	}
	if e.budget != nil && st.WantMore() && s.Index+1 >= flow.DefaultSamples {
		// Best effort: a flow the datapath already expired has no budget.
		_ = e.budget.ExtendSamples(s.Flow, flow.MaxSamples)
	}
	if s.Dir == flow.Rev {
		e.inv.ObserveTTL(s.SrcMAC, s.Flow.Dst, s.Flow.Src, s.TTL, s.TimeNs)
	} else {
		e.inv.ObserveTTL(s.SrcMAC, s.Flow.Src, s.Flow.Dst, s.TTL, s.TimeNs)
	}
	if det.App == "" && len(det.Fields) == 0 && len(det.Logins) == 0 {
		return
	}
	t := s.Flow
	initMAC, respMAC := s.SrcMAC, s.DstMAC
	if s.Dir == flow.Rev {
		initMAC, respMAC = s.DstMAC, s.SrcMAC
	}
	initiator := e.inv.Resolve(initMAC, t.Src, s.TimeNs)
	responder := e.inv.Resolve(respMAC, t.Dst, s.TimeNs)
	sender, peer := initiator, t.Dst
	if s.Dir == flow.Rev {
		sender, peer = responder, t.Src
	}
	if sender != nil {
		sender.ApplyDetection(&det, identity.Subject, peer)
	}
	if det.App == detect.AppDICOM {
		if initiator != nil {
			initiator.ApplyDetection(&det, identity.Initiator, t.Dst)
		}
		if responder != nil {
			responder.ApplyDetection(&det, identity.Responder, t.Src)
		}
	}
	e.record(s.TimeNs, t, &det)
	if !known && (det.App == detect.AppHL7 || det.App == detect.AppDICOM) {
		e.phi(t, det.App, initiator, responder, s.TimeNs)
	}
	for i := range det.Logins {
		e.login(&det.Logins[i], t, initiator, responder, s.TimeNs)
	}
}

// HandleDiscovery decodes DHCP, DNS, ARP and ND packets into device
// identity: addresses, host names, fingerprints and peer names. ARP
// requests and replies count towards sweep detection.
func (e *Engine) HandleDiscovery(disc *flow.Discovery) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tick(disc.TimeNs)
	switch disc.Kind {
	case flow.DiscoveryARP:
		if a, ok := detect.ParseARP(disc.Data); ok {
			e.inv.ObserveARP(a, disc.TimeNs)
			// ARP counts towards sweep detection for a device the
			// inventory already holds; ARP alone makes no device.
			if d := e.inv.Lookup(identity.Key{MAC: a.SenderMAC}); d != nil {
				e.arp(d, &a, disc.TimeNs)
			}
		}
		return
	case flow.DiscoveryND:
		if n, ok := detect.ParseND(disc.Data); ok {
			e.inv.ObserveND(disc.SrcMAC, disc.Src, n, disc.TimeNs)
		}
		return
	}
	e.inv.ObserveTTL(disc.SrcMAC, disc.Src, disc.Dst, disc.TTL, disc.TimeNs)
	src := e.inv.Resolve(disc.SrcMAC, disc.Src, disc.TimeNs)
	det := detect.Discover(disc)
	if det.App == "" && len(det.Fields) == 0 && len(det.Answers) == 0 {
		return
	}
	e.learnInfra(disc, &det)
	var subject *identity.Device
	peer := disc.Dst
	switch disc.Kind {
	case flow.DiscoveryDHCP, flow.DiscoveryDHCPv6:
		// Requests describe the client; replies describe the server's
		// offer, not the server.
		if disc.DstPort == 67 || disc.DstPort == 547 {
			subject = src
		}
	case flow.DiscoveryDNS:
		subject, peer = e.inv.Resolve(disc.DstMAC, disc.Dst, disc.TimeNs), disc.Src
	default:
		subject = src
	}
	if subject != nil {
		subject.ApplyDetection(&det, identity.Subject, peer)
	}
	t := flow.Tuple{Src: disc.Src, Dst: disc.Dst, SrcPort: disc.SrcPort, DstPort: disc.DstPort, VLAN: disc.VLAN}
	if disc.Kind == flow.DiscoveryDHCP || disc.Kind == flow.DiscoveryDHCPv6 || disc.Kind == flow.DiscoveryDNS {
		t.Proto = 17
	}
	if det.App != "" && e.firstSeen(detKey{flow: t}) {
		e.countApp(det.App)
	}
	e.record(disc.TimeNs, t, &det)
}

// learnInfra takes what a discovery packet says about the campus's
// infrastructure: a DHCP server's reply names itself, the routers, the DNS
// and NTP servers; a DNS response comes from a DNS server.
func (e *Engine) learnInfra(disc *flow.Discovery, det *detect.Detection) {
	switch {
	case disc.Kind == flow.DiscoveryDHCP && disc.SrcPort == 67:
		for _, f := range det.Fields {
			var svc infra.Service
			switch f.Name {
			case detect.FieldDHCPServerID:
				svc = infra.DHCP
			case detect.FieldDHCPDNSServers:
				svc = infra.DNS
			case detect.FieldDHCPNTPServers:
				svc = infra.NTP
			case detect.FieldDHCPRouter:
			default:
				continue
			}
			for _, v := range strings.Split(f.Value, ",") {
				a, err := netip.ParseAddr(v)
				if err != nil {
					continue
				}
				if f.Name == detect.FieldDHCPRouter {
					e.inv.AdvertisedRouter(a, disc.TimeNs)
				} else {
					e.infra.Advertised(a, svc)
				}
			}
		}
	case disc.Kind == flow.DiscoveryDNS && disc.SrcPort == 53 && len(det.Answers) > 0:
		e.infra.Served(disc.Src, disc.Dst, infra.DNS, 17, 53)
	}
}

// accepted reports whether the responder of a flow took it up: a TCP
// SYN-ACK (a reset is a refusal), or any reply for other protocols.
func accepted(rec *flow.Record) bool {
	if rec.RevPackets == 0 {
		return false
	}
	return rec.Proto != 6 || rec.RevTCPFlags&0x12 == 0x12
}

// freeze turns a device's learner into its baseline and installs it.
func (e *Engine) freeze(d *identity.Device, ds *devState, nowNs int64) {
	class, _ := d.Class()
	ds.version++
	ds.base = ds.learner.Freeze(d.Name(), class, ds.version, nowNs)
	ds.learner = nil
	e.classDirty = true
	e.metrics.frozen.Inc()
	e.log.Debug("baseline frozen", "device", d.Name(), "class", class.String(), "entries", ds.base.Len(), "version", ds.version)
	if e.cfg.Installer == nil || d.Key().IP.IsValid() || d.Router() {
		return // a router's MAC carries the flows it forwards: no in-kernel check
	}
	if err := e.cfg.Installer.SetBaseline(d.Key().MAC, ds.base.Rules()); err != nil {
		e.metrics.installErrors.Inc()
		e.log.Warn("install baseline into datapath", "device", d.Name(), "err", err)
	}
}

// FreezeAll freezes every device still learning, at the latest time seen,
// and rebuilds the class baselines.
func (e *Engine) FreezeAll() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, d := range e.inv.Devices() {
		if ds := attached(d); ds != nil && ds.learner != nil {
			e.freeze(d, ds, e.clock)
		}
	}
	e.rebuildClassBaselines()
}

// FreezeDue freezes the devices whose learning window has elapsed at the
// latest time seen, including devices that fell silent; a live sensor
// calls it periodically. It returns how many froze.
func (e *Engine) FreezeDue() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, d := range e.inv.Devices() {
		if ds := attached(d); ds != nil && ds.learner != nil && ds.learner.Due(e.clock) {
			e.freeze(d, ds, e.clock)
			n++
		}
	}
	if n > 0 {
		e.rebuildClassBaselines()
	}
	return n
}

func (e *Engine) classBaseline(c medmeshv1.DeviceClass) *baseline.Baseline {
	if e.classDirty {
		e.rebuildClassBaselines()
	}
	return e.classBase[c]
}

func (e *Engine) rebuildClassBaselines() {
	e.classDirty = false
	e.classVer++
	groups := map[medmeshv1.DeviceClass][]*baseline.Baseline{}
	for _, d := range e.inv.Devices() {
		ds := attached(d)
		if ds == nil || ds.base == nil {
			continue
		}
		c := ds.base.Class
		if c == medmeshv1.DeviceClass_DEVICE_CLASS_UNKNOWN || c == medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED {
			continue
		}
		groups[c] = append(groups[c], ds.base)
	}
	clear(e.classBase)
	for c, parts := range groups {
		e.classBase[c] = baseline.Merge(c, e.classVer, parts)
	}
}

// ImportBaseline installs a baseline learned elsewhere (from the
// coordinator, for a device roaming to this sensor). A class baseline
// (empty device_mac) is not accepted: class baselines are rebuilt here.
func (e *Engine) ImportBaseline(pb *medmeshv1.Baseline) error {
	var mac flow.MAC
	if err := mac.UnmarshalText([]byte(pb.GetDeviceMac())); err != nil {
		return fmt.Errorf("import baseline: %w", err)
	}
	b, err := baseline.FromProto(pb, e.cfg.Baseline.Slot)
	if err != nil {
		return fmt.Errorf("import baseline: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	d := e.inv.Resolve(mac, netip.Addr{}, b.FreezeTime)
	if d == nil {
		return fmt.Errorf("import baseline %s: device not trackable", pb.GetDeviceMac())
	}
	ds := e.state(d)
	ds.learner, ds.base, ds.version, ds.imported = nil, b, b.Version, true
	e.classDirty = true
	return nil
}

// evidence is what an alert carries besides its score.
type evidence struct {
	scan    *medmeshv1.ScanEvidence
	finding *scan.Finding // the scan behind scan, listed in the alert
	login   *medmeshv1.LoginEvidence
	// once: the caller decides the alert is new (a detector that reports
	// once per window); the per-device, kind and peer suppression does
	// not apply.
	once bool
	// noPeer: the finding is about the device, whatever peer showed it.
	noPeer bool
}

func (e *Engine) raise(d *identity.Device, ds *devState, f *score.Flow, src, dst netip.Addr, sport, dport uint16, proto uint8, ev *evidence) {
	top, ok := e.res.Top()
	if !ok {
		return
	}
	if ev == nil {
		ev = &evidence{}
	}
	if !ev.once {
		k := alertKey{dev: d, factor: top.Factor}
		if top.Factor != score.VolumeAnomaly && !ev.noPeer {
			k.peer, k.proto, k.port = f.Peer, f.Proto, f.Port
		}
		if _, dup := e.alerted[k]; dup {
			e.metrics.suppressed.Inc()
			return
		}
		if len(e.alerted) < 4*e.cfg.MaxAlerts {
			e.alerted[k] = struct{}{}
		}
	}
	self := src
	if !f.Outbound {
		self = dst
	}
	var hold *burst
	if deviation(top.Factor) {
		b, folded := e.foldDeviation(ds, self, f)
		if folded && b == nil {
			e.metrics.suppressed.Inc()
			return
		}
		hold = b
	}
	class, _ := d.Class()
	risk := e.res.RiskScore()
	dir := medmeshv1.Direction_DIRECTION_INBOUND
	if f.Outbound {
		dir = medmeshv1.Direction_DIRECTION_OUTBOUND
	}
	a := &medmeshv1.Alert{
		Direction:   dir,
		SensorId:    e.cfg.SensorID,
		DeviceMac:   d.Name(),
		Kind:        top.Factor.String(),
		Risk:        risk,
		Summary:     fmt.Sprintf("%s %s scored %d: %s", names.Enum(class), d.Name(), e.res.Score, top.Detail),
		Flow:        &medmeshv1.FlowRef{Src: addrString(src), Dst: addrString(dst), Sport: uint32(sport), Dport: uint32(dport), Proto: uint32(proto), App: f.App},
		PeerName:    f.PeerName(),
		DeviceClass: class,
		Tier:        d.Tier(),
		DetectTime:  timestamppb.New(time.Unix(0, f.TimeNs).UTC()),
		State:       medmeshv1.AlertState_ALERT_STATE_OPEN,
		Scan:        ev.scan,
		Login:       ev.login,
		Site:        ds.site,
	}
	if ev.finding != nil {
		listScan(a, ev.finding)
	}
	if ds.maxRisk == nil || risk.GetScore() > ds.maxRisk.GetScore() {
		ds.maxRisk = risk
	}
	if hold != nil {
		hold.held = a
		return
	}
	if top.Factor == score.Scan {
		e.scanStarts(ds, self, f, a)
	}
	e.emit(a)
}

// addrString is "" for an address not set.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// emit numbers alert a and hands it on.
func (e *Engine) emit(a *medmeshv1.Alert) {
	if e.seq < e.cfg.AlertSeqBase {
		e.seq = e.cfg.AlertSeqBase
	}
	e.seq++
	a.Id, a.SensorSeq = fmt.Sprintf("%s/%d", e.cfg.SensorID, e.seq), e.seq
	if len(e.alerts) < e.cfg.MaxAlerts {
		e.alerts = append(e.alerts, a)
	} else {
		e.dropped++
	}
	e.metrics.alerts.WithLabelValues(a.Kind).Inc()
	e.log.Debug("alert", "id", a.Id, "device", a.DeviceMac, "kind", a.Kind, "score", a.GetRisk().GetScore())
	if e.cfg.OnAlert != nil {
		e.cfg.OnAlert(a)
	}
}

// Devices returns the inventory as protobuf, ordered by identifier.
func (e *Engine) Devices() []*medmeshv1.Device {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*medmeshv1.Device
	for _, d := range e.inv.Devices() {
		pb := d.Proto()
		pb.LastSensorId = e.cfg.SensorID
		ds := attached(d)
		switch {
		case ds != nil && ds.site != "":
			// Not on this sensor's floor: at the exporter's site.
			pb.Site, pb.Advisory = ds.site, true
			pb.AbsentEvidence = absentFromFlows(d.Key().MAC.IsZero())
		case e.cfg.Floor != "" || e.cfg.Zone != "":
			pb.Location = &medmeshv1.Location{Floor: e.cfg.Floor, Zone: e.cfg.Zone}
		}
		if ds != nil && ds.maxRisk != nil {
			pb.Risk = ds.maxRisk
		}
		out = append(out, pb)
	}
	return out
}

// SetTier sets an operator's tier override for a device ("aa:bb:..." or
// "ip:ADDR"); TIER_UNSPECIFIED removes it.
func (e *Engine) SetTier(device string, t medmeshv1.Tier) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, d := range e.inv.Devices() {
		if d.Name() == device {
			d.SetTier(t)
			return nil
		}
	}
	return fmt.Errorf("set tier: device %s not found", device)
}

// Alerts returns the alerts raised so far, in order.
func (e *Engine) Alerts() []*medmeshv1.Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.alerts)
}

// Baselines returns the frozen device baselines ordered by device, then
// the class baselines ordered by class.
func (e *Engine) Baselines() []*medmeshv1.Baseline {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.classDirty {
		e.rebuildClassBaselines()
	}
	var out []*medmeshv1.Baseline
	for _, d := range e.inv.Devices() {
		if ds := attached(d); ds != nil && ds.base != nil {
			out = append(out, ds.base.Proto(e.cfg.SensorID))
		}
	}
	classes := make([]medmeshv1.DeviceClass, 0, len(e.classBase))
	for c := range e.classBase {
		classes = append(classes, c)
	}
	slices.Sort(classes)
	for _, c := range classes {
		out = append(out, e.classBase[c].Proto(e.cfg.SensorID))
	}
	return out
}

// WantMore reports whether further payload samples of a flow would help its
// detector (a Telnet or FTP login spread over many packets); the datapath
// may raise the flow's sample budget while it is true.
func (e *Engine) WantMore(t flow.Tuple) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.flows[t]
	return st != nil && st.WantMore()
}

// absentFromFlows is the evidence flow export cannot carry: no payload
// (so no detector fields, no logins), no DHCP or DNS exchange, no TTL of
// the device's own packets, and unless the exporter sends them, no MAC
// address and so no vendor from the OUI.
func absentFromFlows(noMAC bool) []string {
	out := []string{"dhcp", "dns", "payload", "hl7", "dicom", "credentials", "ttl"}
	if noMAC {
		out = append([]string{"mac", "oui"}, out...)
	}
	return out
}
