// Package enforcer is medmesh's inline enforcer: an XDP verdict program on
// the device-facing interface of a routing node, fed by the coordinators'
// decision log. Its maps and XDP link are pinned in bpffs, so a crashed or
// killed enforcer keeps enforcing and a restarted one adopts the pinned
// state, reconciles it and resumes the log from the pinned applied index.
// Policy rules that name a peer by DNS name are installed as the addresses
// the enforcer resolves for the name, kept up to date as answers expire.
package enforcer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/enforcer/internal/resolve"
	"github.com/medmesh/medmesh/enforcer/internal/state"
	"github.com/medmesh/medmesh/enforcer/internal/watch"
	"github.com/medmesh/medmesh/enforcer/internal/xdp"
	"github.com/medmesh/medmesh/internal/grpcx"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Config configures an enforcer.
type Config struct {
	// ID is the enforcer's member id ("e1").
	ID string
	// Interface is the device-facing interface.
	Interface string
	// Coordinators are coordinator API addresses; any replica serves.
	Coordinators []string
	// PinDir holds the pinned maps and link; default /sys/fs/bpf/medmesh/ID.
	PinDir string
	// MaxDevices sizes the maps. Changing it requires unpinning first.
	MaxDevices int
	// DNSServers and DHCPServers are what a quarantined device may reach.
	DNSServers, DHCPServers []netip.Addr
	// Resolvers are the DNS servers (address, optionally with a port) the
	// enforcer asks for the addresses of policies' DNS-named peers; empty:
	// the nameservers of /etc/resolv.conf.
	Resolvers []string
	// DNS bounds how often those names are asked again (the answers' TTLs
	// held between a floor and a ceiling).
	DNS resolve.Config
	// AlarmAfter raises the control-plane alarm after this long without
	// any coordinator answering.
	AlarmAfter time.Duration
	// ReportInterval is the member status period.
	ReportInterval time.Duration
	// IdleTimeout restarts a silent decision stream.
	IdleTimeout time.Duration
	// TLS is the enforcer's identity (an enforcer certificate of the campus
	// CA) for its coordinator connections; empty means plaintext, which
	// `medmesh enforcer` allows only on loopback or with --dev.
	TLS grpcx.TLSFiles
	// AdminAddr is reported in member status.
	AdminAddr string
	// Version is reported in member status.
	Version string
}

// DefaultConfig returns the defaults; ID, Interface and Coordinators must
// still be set.
func DefaultConfig() Config {
	w := watch.DefaultConfig()
	return Config{
		MaxDevices:     xdp.DefaultConfig().MaxDevices,
		DNS:            resolve.DefaultConfig(),
		AlarmAfter:     w.AlarmAfter,
		ReportInterval: w.ReportInterval,
		IdleTimeout:    w.IdleTimeout,
	}
}

func (c *Config) validate() error {
	switch {
	case c.ID == "":
		return errors.New("enforcer: id is required")
	case c.Interface == "":
		return errors.New("enforcer: interface is required")
	case len(c.Coordinators) == 0:
		return errors.New("enforcer: at least one coordinator is required")
	case c.AlarmAfter <= 0:
		return errors.New("enforcer: alarm delay must be positive")
	}
	if err := CheckID(c.ID); err != nil {
		return fmt.Errorf("enforcer: %w", err)
	}
	if c.PinDir == "" {
		c.PinDir = PinDir(c.ID)
	}
	if err := CheckPinDir(c.PinDir); err != nil {
		return fmt.Errorf("enforcer: %w", err)
	}
	return nil
}

// PinDir is the default pin directory of enforcer id.
func PinDir(id string) string { return filepath.Join(xdp.BPFFS, "medmesh", id) }

// idRE is what an enforcer id may be: it names the pin directory.
var idRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// CheckID reports whether id is a valid enforcer id: 1-64 characters of
// [A-Za-z0-9._-], and not a path step (".", ".." or anything with "..").
func CheckID(id string) error {
	if !idRE.MatchString(id) || id == "." || strings.Contains(id, "..") {
		return fmt.Errorf("id %q: want 1-64 characters of [A-Za-z0-9._-] without \"..\"", id)
	}
	return nil
}

// CheckPinDir reports whether dir may be a pin directory: an absolute
// path strictly under the bpffs mount (/sys/fs/bpf) and, when it exists, a
// directory on a bpffs.
func CheckPinDir(dir string) error {
	_, err := xdp.CheckPinDir(dir)
	return err
}

// Enforcer is a running enforcer.
type Enforcer struct {
	cfg      Config
	log      *slog.Logger
	dp       *xdp.Datapath
	state    *state.State
	watcher  *watch.Watcher
	resolver *resolve.Resolver
}

// New loads (or adopts) the datapath, reconciles it, attaches it to the
// interface and prepares the decision watcher.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Enforcer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ifc, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", cfg.Interface, err)
	}
	dp, err := xdp.Load(xdp.Config{PinDir: cfg.PinDir, MaxDevices: cfg.MaxDevices})
	if err != nil {
		return nil, err
	}
	e := &Enforcer{cfg: cfg, log: log, dp: dp}
	if err := e.init(ifc.Index, reg); err != nil {
		return nil, errors.Join(err, dp.Close())
	}
	return e, nil
}

func (e *Enforcer) init(ifindex int, reg prometheus.Registerer) error {
	snap, err := e.snapshot()
	if err != nil {
		return err
	}
	e.state, err = state.New(e.dp, snap, e.dp.Slots(), e.log)
	if err != nil {
		return err
	}
	infra := map[netip.Addr]uint32{}
	for _, a := range e.cfg.DNSServers {
		infra[a] |= xdp.RoleDNS
	}
	for _, a := range e.cfg.DHCPServers {
		infra[a] |= xdp.RoleDHCP
	}
	if err := e.dp.SetInfra(infra); err != nil {
		return err
	}
	if err := e.startResolver(reg); err != nil {
		return err
	}
	adopted, err := e.dp.Attach(ifindex)
	if err != nil {
		return err
	}
	e.log.Info("enforcer attached", "iface", e.cfg.Interface, "pin_dir", e.cfg.PinDir, "adopted", adopted,
		"devices", e.state.Devices(), "applied_index", e.state.Applied())
	wc := watch.DefaultConfig()
	wc.ID, wc.Coordinators, wc.AlarmAfter = e.cfg.ID, e.cfg.Coordinators, e.cfg.AlarmAfter
	wc.ReportInterval, wc.IdleTimeout = e.cfg.ReportInterval, e.cfg.IdleTimeout
	wc.Version, wc.APIAddr, wc.TLS = e.cfg.Version, e.cfg.AdminAddr, e.cfg.TLS
	wc.IsInvalid = func(err error) bool { return errors.Is(err, state.ErrInvalid) }
	wc.ResolvedPeers = e.resolvedPeers
	e.watcher, err = watch.New(wc, e.state, e.log, reg)
	if err != nil {
		return err
	}
	if err := reg.Register(&verdictCollector{dp: e.dp}); err != nil {
		e.watcher.Close()
		return fmt.Errorf("register verdict collector: %w", err)
	}
	return nil
}

// startResolver wires the resolver between the state and DNS: the state
// says which names its devices' policies use, the resolver installs each
// new answer through the state. Addresses an earlier enforcer installed
// are its starting point; they stay until an answer replaces them.
func (e *Enforcer) startResolver(reg prometheus.Registerer) error {
	client, err := resolve.NewClient(e.cfg.Resolvers, resolve.DefaultTimeout)
	if err != nil {
		return err
	}
	e.resolver, err = resolve.New(e.cfg.DNS, client.Lookup, e.state.SetResolved, e.log, reg)
	if err != nil {
		return err
	}
	for name, addrs := range e.state.Resolved() {
		e.resolver.Seed(name, addrs)
	}
	e.state.OnNames(e.resolver.Want)
	return nil
}

// resolvedPeers is what the member status reports for DNS-named peers: per
// policy and name, the installed addresses (the state's) and where their
// resolution stands (the resolver's).
func (e *Enforcer) resolvedPeers() []*medmeshv1.ResolvedPeer {
	status := map[string]resolve.Status{}
	for _, st := range e.resolver.Status() {
		status[st.Name] = st
	}
	var out []*medmeshv1.ResolvedPeer
	for _, np := range e.state.NamedPeers() {
		rp := &medmeshv1.ResolvedPeer{Policy: np.Policy, DnsName: np.Name, Devices: uint32(np.Devices)}
		for _, a := range np.Addrs {
			rp.Addresses = append(rp.Addresses, a.String())
		}
		if st, ok := status[np.Name]; ok {
			if !st.Time.IsZero() {
				rp.ResolveTime, rp.TtlSeconds = timestamppb.New(st.Time), uint32(st.TTL/time.Second)
			}
			if !st.Next.IsZero() {
				rp.RefreshTime = timestamppb.New(st.Next)
			}
			rp.Error, rp.AddressesLeftOut = st.Err, uint32(st.LeftOut)
		}
		out = append(out, rp)
	}
	return out
}

func (e *Enforcer) snapshot() (state.Snapshot, error) {
	var snap state.Snapshot
	var err error
	if snap.Devices, err = e.dp.Devices(); err != nil {
		return snap, err
	}
	if snap.Slots, err = e.dp.UsedSlots(); err != nil {
		return snap, err
	}
	if snap.AppliedIndex, err = e.dp.AppliedIndex(); err != nil {
		return snap, err
	}
	if snap.Named, err = e.dp.NamedRecords(); err != nil {
		return snap, err
	}
	if snap.DNSNames, err = e.dp.DNSNames(); err != nil {
		return snap, err
	}
	return snap, nil
}

// Run follows the decision log, and keeps the DNS-named peers of the
// policies it enforces resolved, until ctx ends.
func (e *Enforcer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); e.resolver.Run(ctx) }()
	defer wg.Wait()
	return e.watcher.Run(ctx)
}

// Health is "ok" or what is wrong.
func (e *Enforcer) Health() string { return e.watcher.Health() }

// Applied is the applied decision index.
func (e *Enforcer) Applied() uint64 { return e.state.Applied() }

// RecentApplied returns the last decisions this process put into the
// datapath, oldest first, each with the time it took effect.
func (e *Enforcer) RecentApplied() []watch.Applied { return e.watcher.RecentApplied() }

// Devices returns the number of devices the datapath holds an entry for.
func (e *Enforcer) Devices() int { return e.state.Devices() }

// Close releases the process's handles. The pinned program and maps keep
// enforcing.
func (e *Enforcer) Close() error {
	return errors.Join(e.watcher.Close(), e.dp.Close())
}

// Uninstall removes an enforcer's pinned link and maps, by name: its
// program detaches and its devices' traffic is no longer filtered. Files
// medmesh did not create stay, listed in kept. pinDir must pass
// CheckPinDir.
func Uninstall(pinDir string) (kept []string, err error) { return xdp.Unpin(pinDir) }

// verdictCollector exports the per-verdict counters at scrape time.
type verdictCollector struct{ dp *xdp.Datapath }

var (
	packetsDesc = prometheus.NewDesc("medmesh_enforcer_packets_total", "Packets by enforcer verdict.", []string{"verdict"}, nil)
	bytesDesc   = prometheus.NewDesc("medmesh_enforcer_bytes_total", "Bytes by enforcer verdict.", []string{"verdict"}, nil)
	cacheDesc   = prometheus.NewDesc("medmesh_enforcer_verdict_cache_total", "IP packets answered by the per-CPU verdict cache (hit) or that missed it (miss; uncacheable packets are in neither).", []string{"result"}, nil)
)

func (c *verdictCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- packetsDesc
	ch <- bytesDesc
	ch <- cacheDesc
}

func (c *verdictCollector) Collect(ch chan<- prometheus.Metric) {
	v, err := c.dp.Verdicts()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(packetsDesc, err)
		return
	}
	for i, cnt := range v {
		name := xdp.Verdict(i).String()
		ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(cnt.Packets), name)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(cnt.Bytes), name)
	}
	hits, misses, err := c.dp.CacheStats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(cacheDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(cacheDesc, prometheus.CounterValue, float64(hits), "hit")
	ch <- prometheus.MustNewConstMetric(cacheDesc, prometheus.CounterValue, float64(misses), "miss")
}
