// Package gossip joins medmesh sensors, coordinators and enforcers into one
// hashicorp/memberlist cluster: encrypted (AES-GCM keyring) and labelled
// membership with node metadata, and device sightings ("sensor X saw device
// M last") spread with a TransmitLimitedQueue.
//
// Gossip is a hint only. Nothing in medmesh is enforced, blocked or deleted
// because of gossip state: membership and sightings inform (a sensor fetches
// a roaming device's baseline from the coordinators, the CLI shows the
// mesh), and every decision goes through the Raft-replicated coordinators.
// Callbacks registered here only inform.
package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medmesh/medmesh/node/flow"
)

// DefaultPort is the gossip port (TCP and UDP).
const DefaultPort = 7402

// Config configures a member.
type Config struct {
	// NodeName is unique in the cluster (the sensor, coordinator or enforcer id).
	NodeName string
	// BindAddr and BindPort are where memberlist listens (TCP and UDP).
	// BindPort 0 picks a free port (tests).
	BindAddr string
	BindPort int
	// AdvertiseAddr/AdvertisePort are what others dial; empty/0 use the bound ones.
	AdvertiseAddr string
	AdvertisePort int

	Role    Role
	Floor   string
	Zone    string
	APIAddr string
	Version string

	// Join lists seed addresses (host:port). New joins them in the
	// background, retrying with exponential backoff until one answers.
	Join []string
	// Keys is the AES-GCM keyring (16, 24 or 32 bytes each); Keys[0] is the
	// primary (encrypting) key. Empty disables encryption (development only).
	Keys [][]byte
	// Label is the cluster label; members with another label cannot talk.
	Label string

	// Timers. DefaultConfig holds LAN values; tests shrink them.
	ProbeInterval    time.Duration
	ProbeTimeout     time.Duration
	GossipInterval   time.Duration
	PushPullInterval time.Duration
	TCPTimeout       time.Duration
	SuspicionMult    int
	// GossipToTheDeadTime is how long dead members keep receiving gossip.
	GossipToTheDeadTime time.Duration
	// JoinRetryMin/Max bound the seed-join backoff.
	JoinRetryMin, JoinRetryMax time.Duration
	// ReconnectInterval is how often dead members (and the seeds, while
	// alone) are re-joined, so a healed partition merges again.
	// ReconnectTimeout is how long a dead member is retried.
	ReconnectInterval time.Duration
	ReconnectTimeout  time.Duration
	// LeaveTimeout bounds the graceful leave in Close.
	LeaveTimeout time.Duration

	// SightingRefresh is how often an unchanged sighting of the same device
	// at the same sensor is re-broadcast (a new sensor always broadcasts).
	SightingRefresh time.Duration
	// MaxSightings bounds the sightings kept (oldest dropped first).
	MaxSightings int

	// Dial, when set, opens memberlist's TCP connections (tests use it to
	// dial from inside a network namespace).
	Dial DialFunc
}

// DefaultConfig returns LAN-tuned defaults (memberlist's LAN profile,
// sped up a little for a campus network).
func DefaultConfig() Config {
	return Config{
		BindAddr:            "0.0.0.0",
		BindPort:            DefaultPort,
		Role:                RoleSensor,
		ProbeInterval:       time.Second,
		ProbeTimeout:        500 * time.Millisecond,
		GossipInterval:      200 * time.Millisecond,
		PushPullInterval:    30 * time.Second,
		TCPTimeout:          10 * time.Second,
		SuspicionMult:       4,
		GossipToTheDeadTime: 30 * time.Second,
		JoinRetryMin:        time.Second,
		JoinRetryMax:        30 * time.Second,
		ReconnectInterval:   30 * time.Second,
		ReconnectTimeout:    24 * time.Hour,
		LeaveTimeout:        5 * time.Second,
		SightingRefresh:     time.Minute,
		MaxSightings:        65536,
	}
}

// TestConfig returns DefaultConfig with timers shrunk to tens of
// milliseconds and an ephemeral port on loopback, for in-process clusters.
func TestConfig(name string) Config {
	c := DefaultConfig()
	c.NodeName = name
	c.BindAddr = "127.0.0.1"
	c.BindPort = 0
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 30 * time.Millisecond
	c.PushPullInterval = time.Second
	c.TCPTimeout = time.Second
	c.SuspicionMult = 4
	c.GossipToTheDeadTime = 2 * time.Second
	c.JoinRetryMin = 20 * time.Millisecond
	c.JoinRetryMax = 500 * time.Millisecond
	c.ReconnectInterval = 200 * time.Millisecond
	c.ReconnectTimeout = time.Minute
	c.LeaveTimeout = time.Second
	c.SightingRefresh = time.Second
	return c
}

func (c *Config) validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is required"))
	}
	if len(c.NodeName) > 128 {
		errs = append(errs, errors.New("node name longer than 128 bytes"))
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		errs = append(errs, fmt.Errorf("bind port %d out of range", c.BindPort))
	}
	if _, err := c.meta().encode(); err != nil {
		errs = append(errs, err)
	}
	for i, k := range c.Keys {
		if err := memberlist.ValidateKey(k); err != nil {
			errs = append(errs, fmt.Errorf("key %d: %w", i, err))
		}
	}
	if len(c.Label) > memberlist.LabelMaxSize {
		errs = append(errs, fmt.Errorf("label longer than %d bytes", memberlist.LabelMaxSize))
	}
	for name, d := range map[string]time.Duration{
		"probe interval": c.ProbeInterval, "probe timeout": c.ProbeTimeout,
		"gossip interval": c.GossipInterval, "push/pull interval": c.PushPullInterval,
		"tcp timeout": c.TCPTimeout, "join retry min": c.JoinRetryMin,
		"join retry max": c.JoinRetryMax, "reconnect interval": c.ReconnectInterval,
		"leave timeout": c.LeaveTimeout, "sighting refresh": c.SightingRefresh,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	if c.SuspicionMult < 1 {
		errs = append(errs, errors.New("suspicion multiplier must be at least 1"))
	}
	if c.MaxSightings < 1 {
		errs = append(errs, errors.New("max sightings must be at least 1"))
	}
	return errors.Join(errs...)
}

func (c *Config) meta() Meta {
	return Meta{Role: c.Role, Floor: c.Floor, Zone: c.Zone, APIAddr: c.APIAddr, Version: c.Version}
}

// State is a member's state as this member sees it.
type State string

// Member states. memberlist does not expose its internal "suspect" state
// without a data race, so a suspected member shows as alive until it is
// declared dead.
const (
	StateAlive State = "alive"
	StateDead  State = "dead"
	StateLeft  State = "left"
)

// Member is one member of the mesh.
type Member struct {
	Name string
	Addr string // gossip host:port
	Meta
	State State
	// Since is when this member last changed state, as seen here.
	Since time.Time
}

// Gossip is this process's membership in the mesh.
type Gossip struct {
	cfg     Config
	log     *slog.Logger
	ml      *memberlist.Memberlist
	keyring *memberlist.Keyring
	tr      *countingTransport
	queue   *memberlist.TransmitLimitedQueue
	metrics *metrics

	inbox chan []byte

	mu        sync.Mutex
	members   map[string]*Member
	sightings map[flow.MAC]Sighting
	lastSent  map[flow.MAC]time.Time
	leaving   map[string]time.Time // leave intents heard, by member
	callbacks []func(Sighting)

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed bool
}

// New starts a member: it binds, then joins cfg.Join in the background.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Gossip, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("gossip config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "gossip", "node", cfg.NodeName)
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	g := &Gossip{
		cfg:       cfg,
		log:       logger,
		metrics:   m,
		inbox:     make(chan []byte, 1024),
		members:   make(map[string]*Member),
		sightings: make(map[flow.MAC]Sighting),
		lastSent:  make(map[flow.MAC]time.Time),
		leaving:   make(map[string]time.Time),
	}

	mlLog := log.New(&logWriter{log: logger}, "", 0)
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{cfg.BindAddr},
		BindPort:  cfg.BindPort,
		Logger:    mlLog,
	})
	if err != nil {
		return nil, fmt.Errorf("gossip listen on %s: %w", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	g.tr = newCountingTransport(nt, cfg.Dial)

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = nt.GetAutoBindPort()
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = mc.BindPort
	}
	mc.Transport = g.tr
	mc.Label = cfg.Label
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.GossipInterval = cfg.GossipInterval
	mc.PushPullInterval = cfg.PushPullInterval
	mc.TCPTimeout = cfg.TCPTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.GossipToTheDeadTime = cfg.GossipToTheDeadTime
	mc.DeadNodeReclaimTime = cfg.ProbeInterval // a restarted node may come back with a new address
	mc.Logger = mlLog
	mc.Delegate = (*delegate)(g)
	mc.Events = (*events)(g)
	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
		if err != nil {
			g.tr.Shutdown()
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
		g.keyring = kr
	} else {
		logger.Warn("gossip is not encrypted: no keys configured")
	}
	g.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return g.ml.NumMembers() },
		RetransmitMult: mc.RetransmitMult,
	}

	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	// The inbox worker runs before Create: delegate callbacks may fire as
	// soon as memberlist exists.
	g.wg.Add(1)
	go g.handleInbox(ctx)

	ml, err := memberlist.Create(mc)
	if err != nil {
		cancel()
		g.wg.Wait()
		g.tr.Shutdown()
		return nil, fmt.Errorf("gossip start: %w", err)
	}
	g.ml = ml
	g.wg.Add(1)
	go g.joinAndReconnect(ctx)
	return g, nil
}

// Addr returns the host:port others reach this member on.
func (g *Gossip) Addr() string {
	n := g.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Name returns this member's name.
func (g *Gossip) Name() string { return g.cfg.NodeName }

// Join joins the given members now and returns how many answered.
func (g *Gossip) Join(addrs ...string) (int, error) {
	n, err := g.ml.Join(addrs)
	if err != nil && n == 0 {
		return 0, fmt.Errorf("gossip join %v: %w", addrs, err)
	}
	return n, nil
}

// NumAlive returns the number of alive members, this one included.
func (g *Gossip) NumAlive() int { return g.ml.NumMembers() }

// Members returns every member known, with its state; dead and left
// members stay listed (until they come back) so operators see them.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Member, 0, len(g.members))
	for _, m := range g.members {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Member) int { return cmpString(a.Name, b.Name) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// BytesSent and BytesReceived count every gossip byte (UDP and TCP) this
// member sent and received since it started.
func (g *Gossip) BytesSent() uint64     { return g.tr.sent.Load() }
func (g *Gossip) BytesReceived() uint64 { return g.tr.recv.Load() }

// FailureDetectionBound is memberlist's configured suspicion timeout for
// a cluster of n members: SuspicionMult × max(1, log10(n)) × ProbeInterval.
// A failed member is declared dead about this long after it is first
// suspected (plus up to a probe interval until it is probed).
func (g *Gossip) FailureDetectionBound(n int) time.Duration {
	return SuspicionTimeout(g.cfg.SuspicionMult, n, g.cfg.ProbeInterval)
}

// SuspicionTimeout mirrors memberlist's suspicionTimeout.
func SuspicionTimeout(mult, n int, interval time.Duration) time.Duration {
	nodeScale := max(1, log10(float64(max(n, 1))))
	return time.Duration(float64(mult) * nodeScale * float64(interval))
}

// Key rotation, per member and without a restart. memberlist has no
// cluster-wide key operation: an operator (or the coordinator API) runs
// each step on every member before the next one:
//
//  1. InstallKey(new) on all members (each can now decrypt both keys);
//  2. UseKey(new) on all members (each now encrypts with the new key);
//  3. RemoveKey(old) on all members.
//
// A member that starts with only the new key joins after step 2.

// InstallKey adds a key to the keyring; it is used to decrypt at once.
func (g *Gossip) InstallKey(key []byte) error {
	if g.keyring == nil {
		return errors.New("gossip is not encrypted: no keyring")
	}
	if err := g.keyring.AddKey(key); err != nil {
		return fmt.Errorf("install gossip key: %w", err)
	}
	return nil
}

// UseKey makes an installed key the primary (encrypting) key.
func (g *Gossip) UseKey(key []byte) error {
	if g.keyring == nil {
		return errors.New("gossip is not encrypted: no keyring")
	}
	if err := g.keyring.UseKey(key); err != nil {
		return fmt.Errorf("use gossip key: %w", err)
	}
	return nil
}

// RemoveKey removes a key that is not the primary one.
func (g *Gossip) RemoveKey(key []byte) error {
	if g.keyring == nil {
		return errors.New("gossip is not encrypted: no keyring")
	}
	if err := g.keyring.RemoveKey(key); err != nil {
		return fmt.Errorf("remove gossip key: %w", err)
	}
	return nil
}

// Keys returns the installed keys, the primary first.
func (g *Gossip) Keys() [][]byte {
	if g.keyring == nil {
		return nil
	}
	return g.keyring.GetKeys()
}

// Observe records that this member (a sensor) sees device mac at t, and
// broadcasts the sighting when the device was last seen by another sensor,
// never seen, or not re-broadcast for SightingRefresh. It returns the
// previous sighting known here and whether the device is new to this
// sensor (never seen, or last seen elsewhere): the roaming hook, after
// which a sensor fetches the device's baseline from the coordinators.
func (g *Gossip) Observe(mac flow.MAC, t time.Time) (prev Sighting, arrived bool) {
	s := Sighting{MAC: mac, Sensor: g.cfg.NodeName, Floor: g.cfg.Floor, Time: t.UTC()}
	g.mu.Lock()
	prev, known := g.sightings[mac]
	arrived = !known || prev.Sensor != s.Sensor
	broadcast := arrived || t.Sub(g.lastSent[mac]) >= g.cfg.SightingRefresh
	if !known || s.newer(prev) {
		g.storeLocked(s)
	}
	if broadcast {
		g.lastSent[mac] = t
	}
	g.mu.Unlock()
	if broadcast {
		g.queue.QueueBroadcast(&sightingBroadcast{mac: mac, msg: encodeSightingMsg(s)})
		g.metrics.sightingsSent.Inc()
		// Alone (or far behind), the queue would only grow: keep the newest.
		if g.queue.NumQueued() > maxQueued {
			g.queue.Prune(maxQueued)
		}
	}
	return prev, arrived
}

// Sighting returns the latest sighting of a device known here.
func (g *Gossip) Sighting(mac flow.MAC) (Sighting, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, ok := g.sightings[mac]
	return s, ok
}

// Sightings returns every sighting known here.
func (g *Gossip) Sightings() []Sighting {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Sighting, 0, len(g.sightings))
	for _, s := range g.sightings {
		out = append(out, s)
	}
	return out
}

// OnSighting registers f, called (from one goroutine, in order) with each
// sighting from another member that is newer than what was known here.
// f only informs: it must not enforce anything and should return quickly.
func (g *Gossip) OnSighting(f func(Sighting)) {
	g.mu.Lock()
	g.callbacks = append(g.callbacks, f)
	g.mu.Unlock()
}

// storeLocked keeps s, dropping the oldest sighting when full.
func (g *Gossip) storeLocked(s Sighting) {
	if _, ok := g.sightings[s.MAC]; !ok && len(g.sightings) >= g.cfg.MaxSightings {
		var oldest Sighting
		first := true
		for _, o := range g.sightings {
			if first || o.Time.Before(oldest.Time) {
				oldest, first = o, false
			}
		}
		delete(g.sightings, oldest.MAC)
		delete(g.lastSent, oldest.MAC)
	}
	g.sightings[s.MAC] = s
	g.metrics.sightings.Set(float64(len(g.sightings)))
}

// merge applies a remote sighting and reports whether it was news.
func (g *Gossip) merge(s Sighting) (bool, []func(Sighting)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if old, ok := g.sightings[s.MAC]; ok && !s.newer(old) {
		return false, nil
	}
	g.storeLocked(s)
	return true, slices.Clone(g.callbacks)
}

// handleInbox decodes messages the delegate copied, off memberlist's
// goroutines.
func (g *Gossip) handleInbox(ctx context.Context) {
	defer g.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case b := <-g.inbox:
			g.handleMsg(b)
		}
	}
}

func (g *Gossip) handleMsg(b []byte) {
	if len(b) == 0 {
		return
	}
	var list []Sighting
	rebroadcast := false
	switch b[0] {
	case msgLeave:
		name, _, err := readString(b[1:])
		if err != nil {
			g.metrics.badMessages.Inc()
			return
		}
		if g.noteLeave(name) {
			g.queue.QueueBroadcast(&leaveBroadcast{name: name, msg: bytes.Clone(b)})
		}
		return
	case msgSighting:
		rebroadcast = true
		s, _, err := readSighting(b[1:])
		if err != nil {
			g.metrics.badMessages.Inc()
			g.log.Debug("bad sighting message", "err", err)
			return
		}
		list = append(list, s)
	case msgState:
		rest := b[1:]
		for len(rest) > 0 {
			s, r, err := readSighting(rest)
			if err != nil {
				g.metrics.badMessages.Inc()
				g.log.Debug("bad sighting state", "err", err)
				break
			}
			list = append(list, s)
			rest = r
		}
	default:
		g.metrics.badMessages.Inc()
		return
	}
	for _, s := range list {
		g.metrics.sightingsReceived.Inc()
		news, cbs := g.merge(s)
		if !news {
			continue
		}
		if rebroadcast {
			// Epidemic: a member that learns something passes it on, so a
			// sighting reaches everyone and not just the origin's picks.
			g.queue.QueueBroadcast(&sightingBroadcast{mac: s.MAC, msg: bytes.Clone(b)})
		}
		for _, f := range cbs {
			f(s)
		}
	}
}

// joinAndReconnect joins the seeds with backoff, then keeps re-joining
// dead members (and the seeds while alone), like serf's reconnector: a
// partition longer than GossipToTheDeadTime would otherwise never heal.
func (g *Gossip) joinAndReconnect(ctx context.Context) {
	defer g.wg.Done()
	if len(g.cfg.Join) > 0 {
		backoff := g.cfg.JoinRetryMin
		for {
			n, err := g.ml.Join(g.cfg.Join)
			if n > 0 {
				g.log.Info("joined mesh", "seeds", g.cfg.Join, "answered", n)
				// Anti-entropy after the join: alive messages of members
				// that joined at the same moment are retransmitted only a
				// few times and can miss us; without these push/pulls we
				// would learn of them only at the next push/pull interval.
				for _, d := range []time.Duration{time.Second, 5 * time.Second} {
					if !sleep(ctx, d) {
						return
					}
					g.ml.Join(g.cfg.Join)
				}
				break
			}
			g.log.Debug("join seeds failed, retrying", "seeds", g.cfg.Join, "err", err, "backoff", backoff)
			if !sleep(ctx, jitter(backoff)) {
				return
			}
			backoff = min(2*backoff, g.cfg.JoinRetryMax)
		}
	}
	t := time.NewTicker(g.cfg.ReconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var addrs []string
		g.mu.Lock()
		for _, m := range g.members {
			if m.State == StateDead && time.Since(m.Since) < g.cfg.ReconnectTimeout {
				addrs = append(addrs, m.Addr)
			}
		}
		g.mu.Unlock()
		if g.ml.NumMembers() <= 1 {
			addrs = append(addrs, g.cfg.Join...)
		}
		if len(addrs) == 0 {
			continue
		}
		// One at a time, at random, so a big outage is not a join storm.
		a := addrs[rand.IntN(len(addrs))]
		if n, _ := g.ml.Join([]string{a}); n > 0 {
			g.log.Debug("reconnected", "addr", a)
		}
	}
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Close leaves the cluster gracefully (others see "left", not "dead") and
// stops.
func (g *Gossip) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.mu.Unlock()
	g.cancel()
	var errs []error
	// memberlist tells others "dead" for a graceful leave too (its Node
	// has no usable state field), so announce the intent first and wait
	// (bounded) until it has been sent.
	sent := make(chan struct{})
	msg := append([]byte{msgLeave, byte(len(g.cfg.NodeName))}, g.cfg.NodeName...)
	g.noteLeave(g.cfg.NodeName)
	g.queue.QueueBroadcast(&leaveBroadcast{name: g.cfg.NodeName, msg: msg, sent: sent})
	if g.ml.NumMembers() > 1 {
		t := time.NewTimer(g.cfg.LeaveTimeout / 2)
		select {
		case <-sent:
		case <-t.C:
		}
		t.Stop()
	}
	if err := g.ml.Leave(g.cfg.LeaveTimeout); err != nil {
		errs = append(errs, fmt.Errorf("gossip leave: %w", err))
	}
	if err := g.ml.Shutdown(); err != nil {
		errs = append(errs, fmt.Errorf("gossip shutdown: %w", err))
	}
	g.wg.Wait()
	return errors.Join(errs...)
}

// delegate implements memberlist.Delegate. Its methods never block: they
// copy buffers and hand them to the inbox goroutine.
type delegate Gossip

var _ memberlist.Delegate = (*delegate)(nil)

func (d *delegate) NodeMeta(limit int) []byte {
	b, _ := d.cfg.meta().encode() // validated in New
	if len(b) > limit {
		return nil
	}
	return b
}

func (d *delegate) NotifyMsg(b []byte) {
	if len(b) == 0 {
		return
	}
	select {
	case d.inbox <- bytes.Clone(b):
	default:
		d.metrics.inboxDropped.Inc()
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.queue.GetBroadcasts(overhead, limit)
}

// maxQueued bounds the broadcasts waiting for transmission.
const maxQueued = 4096

// maxStateSightings bounds the sightings sent in a push/pull exchange.
const maxStateSightings = 4096

func (d *delegate) LocalState(join bool) []byte {
	g := (*Gossip)(d)
	g.mu.Lock()
	list := make([]Sighting, 0, min(len(g.sightings), maxStateSightings))
	for _, s := range g.sightings {
		list = append(list, s)
	}
	g.mu.Unlock()
	if len(list) > maxStateSightings {
		slices.SortFunc(list, func(a, b Sighting) int { return b.Time.Compare(a.Time) })
		list = list[:maxStateSightings]
	}
	b := []byte{msgState}
	for _, s := range list {
		b = appendSighting(b, s)
	}
	return b
}

func (d *delegate) MergeRemoteState(b []byte, join bool) { d.NotifyMsg(b) }

// events implements memberlist.EventDelegate.
type events Gossip

var _ memberlist.EventDelegate = (*events)(nil)

func (e *events) NotifyJoin(n *memberlist.Node)   { e.set(n, StateAlive) }
func (e *events) NotifyUpdate(n *memberlist.Node) { e.set(n, StateAlive) }
func (e *events) NotifyLeave(n *memberlist.Node) {
	e.mu.Lock()
	_, left := e.leaving[n.Name]
	e.mu.Unlock()
	if left {
		e.set(n, StateLeft)
	} else {
		e.set(n, StateDead)
	}
}

// noteLeave records a member's leave intent and reports whether it was
// news. A member already declared dead becomes left.
func (g *Gossip) noteLeave(name string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.leaving[name]; ok {
		return false
	}
	g.leaving[name] = time.Now()
	if m, ok := g.members[name]; ok && m.State == StateDead {
		m.State = StateLeft
	}
	return true
}

func (e *events) set(n *memberlist.Node, st State) {
	meta, err := decodeMeta(n.Meta)
	if err != nil && len(n.Meta) > 0 {
		e.log.Debug("member metadata not understood", "member", n.Name, "err", err)
	}
	m := &Member{
		Name:  n.Name,
		Addr:  net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))),
		Meta:  meta,
		State: st,
		Since: time.Now(),
	}
	e.mu.Lock()
	if st == StateAlive {
		delete(e.leaving, n.Name) // back again
	}
	if old, ok := e.members[n.Name]; ok && old.State == st {
		m.Since = old.Since
	}
	e.members[n.Name] = m
	counts := map[State]int{}
	for _, m := range e.members {
		counts[m.State]++
	}
	e.mu.Unlock()
	for _, s := range []State{StateAlive, StateDead, StateLeft} {
		e.metrics.members.WithLabelValues(string(s)).Set(float64(counts[s]))
	}
}
