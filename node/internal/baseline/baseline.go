// Package baseline learns how a device normally behaves — the peers,
// protocols, ports, application protocols and directions of its flows, and
// its traffic volume per hour of the day — and freezes that into a
// versioned baseline the scorer compares new traffic with.
//
// Time is never read from the wall clock: every method takes the time of
// the packet or record it is about, so replaying a capture twice gives the
// same baselines.
package baseline

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/medmesh/medmesh/node/flow"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Slots is the number of volume slots: one per hour of the day.
const Slots = 24

// Config controls learning.
type Config struct {
	// Window is how long a device is watched before its baseline freezes,
	// measured in record time.
	Window time.Duration
	// Slot is the volume-statistics granularity. Each slot of the day
	// (time / Slot mod 24) keeps its own running mean and variance. One hour
	// in production; tests use a second.
	Slot time.Duration
	// MaxEntries bounds the behaviours remembered per device; a device that
	// exceeds it (a scanner, a router) stops adding entries.
	MaxEntries int
}

// DefaultConfig returns a seven-day window with hourly volume statistics.
func DefaultConfig() Config {
	return Config{Window: 7 * 24 * time.Hour, Slot: time.Hour, MaxEntries: 4096}
}

func (c Config) validate() error {
	var errs []error
	if c.Window <= 0 {
		errs = append(errs, fmt.Errorf("window %v must be positive", c.Window))
	}
	if c.Slot <= 0 {
		errs = append(errs, fmt.Errorf("slot %v must be positive", c.Slot))
	}
	if c.MaxEntries <= 0 {
		errs = append(errs, fmt.Errorf("max entries %d must be positive", c.MaxEntries))
	}
	return errors.Join(errs...)
}

// Validate reports whether c is usable.
func (c Config) Validate() error { return c.validate() }

// Direction of a flow relative to the device. Values match
// medmeshv1.Direction.
type Direction uint8

const (
	// Outbound flows are initiated by the device.
	Outbound = Direction(medmeshv1.Direction_DIRECTION_OUTBOUND)
	// Inbound flows are accepted by the device.
	Inbound = Direction(medmeshv1.Direction_DIRECTION_INBOUND)
)

func (d Direction) String() string {
	if d == Inbound {
		return "inbound"
	}
	return "outbound"
}

// Key is one behaviour: a peer, protocol and port in a direction. Port is
// the peer's port for outbound flows and the device's own port for inbound
// flows, so ephemeral ports never enter a baseline.
type Key struct {
	Peer  netip.Addr
	Proto uint8
	Port  uint16
	Dir   Direction
}

// Entry is a learned behaviour with what is known about it.
type Entry struct {
	Key
	PeerName string
	App      string
}

type service struct {
	Proto uint8
	Port  uint16
	Dir   Direction
}

// Welford is a running mean and variance (Welford's algorithm).
type Welford struct {
	N    uint64
	Mean float64
	M2   float64
}

// Add adds one observation.
func (w *Welford) Add(x float64) {
	w.N++
	d := x - w.Mean
	w.Mean += d / float64(w.N)
	w.M2 += d * (x - w.Mean)
}

// Var is the sample variance, 0 with fewer than two observations.
func (w Welford) Var() float64 {
	if w.N < 2 {
		return 0
	}
	return w.M2 / float64(w.N-1)
}

// Merge combines two running statistics (Chan et al.).
func (w *Welford) Merge(o Welford) {
	if o.N == 0 {
		return
	}
	if w.N == 0 {
		*w = o
		return
	}
	n := w.N + o.N
	d := o.Mean - w.Mean
	w.M2 += o.M2 + d*d*float64(w.N)*float64(o.N)/float64(n)
	w.Mean += d * float64(o.N) / float64(n)
	w.N = n
}

// Volume is one slot's statistics of bytes and flows per slot.
type Volume struct {
	Bytes Welford
	Flows Welford
}

// Z returns how many standard deviations x lies above mean. The deviation
// is floored at a tenth of the mean and at floor, so that a perfectly
// regular device does not alert on a tiny change. Returns 0 with fewer than
// two samples.
func Z(w Welford, x, floor float64) float64 {
	if w.N < 2 {
		return 0
	}
	sd := math.Sqrt(w.Var())
	sd = max(sd, w.Mean/10, floor)
	return (x - w.Mean) / sd
}

// Baseline is a frozen behaviour set. It is read-only once frozen and safe
// for concurrent readers.
type Baseline struct {
	// Device is the device key ("aa:bb:..." or "ip:10.0.0.1"); empty for a
	// class baseline.
	Device     string
	Class      medmeshv1.DeviceClass
	Version    uint64
	LearnStart int64 // ns
	FreezeTime int64 // ns
	// Slot is the volume slot length the statistics were learned with.
	Slot   time.Duration
	Volume [Slots]Volume

	entries  map[Key]Entry
	peers    map[netip.Addr]struct{}
	services map[service]struct{}
}

// Match is the result of comparing one behaviour with a baseline.
type Match uint8

const (
	// Exact: the behaviour is in the baseline.
	Exact Match = iota
	// NewPeer: the peer was never seen.
	NewPeer
	// NewService: the peer is known, but not the protocol, port and direction.
	NewService
	// NewPeerService: neither the peer nor the service was ever seen.
	NewPeerService
	// NewCombination: peer and service are both known, never together.
	NewCombination
)

// Lookup compares k with the baseline. It does not allocate.
func (b *Baseline) Lookup(k Key) Match {
	if _, ok := b.entries[k]; ok {
		return Exact
	}
	_, peer := b.peers[k.Peer]
	_, svc := b.services[service{k.Proto, k.Port, k.Dir}]
	switch {
	case !peer && !svc:
		return NewPeerService
	case !peer:
		return NewPeer
	case !svc:
		return NewService
	}
	return NewCombination
}

// Len is the number of entries.
func (b *Baseline) Len() int { return len(b.entries) }

// Entries returns the entries in a stable order.
func (b *Baseline) Entries() []Entry {
	out := make([]Entry, 0, len(b.entries))
	for _, e := range b.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, compareEntry)
	return out
}

func compareEntry(a, b Entry) int {
	if c := a.Peer.Compare(b.Peer); c != 0 {
		return c
	}
	if a.Proto != b.Proto {
		return int(a.Proto) - int(b.Proto)
	}
	if a.Port != b.Port {
		return int(a.Port) - int(b.Port)
	}
	return int(a.Dir) - int(b.Dir)
}

// SlotOf returns the volume slot of a time.
func (b *Baseline) SlotOf(timeNs int64) int { return slotOf(timeNs, b.Slot) }

func slotOf(timeNs int64, slot time.Duration) int {
	s := (timeNs / int64(slot)) % Slots
	if s < 0 {
		s += Slots
	}
	return int(s)
}

// Rule is one allowed (peer prefix, protocol, port) for the datapath's
// in-kernel baseline map. Port is the peer's port for outbound behaviour
// and the device's own port for inbound behaviour.
type Rule struct {
	Prefix netip.Prefix
	Proto  uint8
	Port   uint16
}

// Rules returns the baseline as datapath rules, deduplicated and sorted.
func (b *Baseline) Rules() []Rule {
	seen := make(map[Rule]struct{}, len(b.entries))
	out := make([]Rule, 0, len(b.entries))
	for _, e := range b.Entries() {
		r := Rule{Prefix: netip.PrefixFrom(e.Peer, e.Peer.BitLen()), Proto: e.Proto, Port: e.Port}
		if _, ok := seen[r]; ok {
			continue
		}
		seen[r] = struct{}{}
		out = append(out, r)
	}
	return out
}

// Installer puts a frozen baseline into the datapath's in-kernel baseline
// map, so that flows outside it are reported as baseline misses.
type Installer interface {
	SetBaseline(mac flow.MAC, rules []Rule) error
}

// Proto returns the baseline as protobuf, deterministically ordered.
func (b *Baseline) Proto(sensorID string) *medmeshv1.Baseline {
	pb := &medmeshv1.Baseline{
		DeviceMac:   b.Device,
		DeviceClass: b.Class,
		Version:     b.Version,
		LearnStart:  timestamppb.New(time.Unix(0, b.LearnStart).UTC()),
		FreezeTime:  timestamppb.New(time.Unix(0, b.FreezeTime).UTC()),
		SensorId:    sensorID,
	}
	for _, e := range b.Entries() {
		pb.Entries = append(pb.Entries, &medmeshv1.BaselineEntry{
			PeerCidr:  netip.PrefixFrom(e.Peer, e.Peer.BitLen()).String(),
			PeerName:  e.PeerName,
			Protocol:  uint32(e.Proto),
			Port:      uint32(e.Port),
			App:       e.App,
			Direction: medmeshv1.Direction(e.Dir),
		})
	}
	for i, v := range b.Volume {
		if v.Bytes.N == 0 {
			continue
		}
		pb.Hourly = append(pb.Hourly, &medmeshv1.HourlyStats{
			Hour: uint32(i), Samples: v.Bytes.N,
			MeanBytes: v.Bytes.Mean, M2Bytes: v.Bytes.M2,
			MeanFlows: v.Flows.Mean, M2Flows: v.Flows.M2,
		})
	}
	return pb
}

// FromProto rebuilds a baseline from protobuf, for a device that roams to
// this sensor. slot is the volume slot length in use here.
func FromProto(pb *medmeshv1.Baseline, slot time.Duration) (*Baseline, error) {
	b := newBaseline(pb.GetDeviceMac(), pb.GetDeviceClass(), slot)
	b.Version = pb.GetVersion()
	b.LearnStart = pb.GetLearnStart().AsTime().UnixNano()
	b.FreezeTime = pb.GetFreezeTime().AsTime().UnixNano()
	for _, e := range pb.GetEntries() {
		p, err := netip.ParsePrefix(e.GetPeerCidr())
		if err != nil {
			return nil, fmt.Errorf("baseline %s entry: %w", pb.GetDeviceMac(), err)
		}
		if e.GetProtocol() > 255 || e.GetPort() > 65535 {
			return nil, fmt.Errorf("baseline %s entry: protocol %d port %d out of range", pb.GetDeviceMac(), e.GetProtocol(), e.GetPort())
		}
		d := Direction(e.GetDirection())
		if d != Inbound && d != Outbound {
			return nil, fmt.Errorf("baseline %s entry: direction %v not inbound or outbound", pb.GetDeviceMac(), e.GetDirection())
		}
		b.add(Entry{Key: Key{Peer: p.Addr(), Proto: uint8(e.GetProtocol()), Port: uint16(e.GetPort()), Dir: d},
			PeerName: e.GetPeerName(), App: e.GetApp()})
	}
	for _, h := range pb.GetHourly() {
		if h.GetHour() >= Slots {
			return nil, fmt.Errorf("baseline %s: hour %d out of range", pb.GetDeviceMac(), h.GetHour())
		}
		b.Volume[h.GetHour()] = Volume{
			Bytes: Welford{N: h.GetSamples(), Mean: h.GetMeanBytes(), M2: h.GetM2Bytes()},
			Flows: Welford{N: h.GetSamples(), Mean: h.GetMeanFlows(), M2: h.GetM2Flows()},
		}
	}
	return b, nil
}

func newBaseline(device string, class medmeshv1.DeviceClass, slot time.Duration) *Baseline {
	return &Baseline{
		Device: device, Class: class, Slot: slot,
		entries:  make(map[Key]Entry),
		peers:    make(map[netip.Addr]struct{}),
		services: make(map[service]struct{}),
	}
}

func (b *Baseline) add(e Entry) {
	if old, ok := b.entries[e.Key]; ok {
		if e.PeerName == "" {
			e.PeerName = old.PeerName
		}
		if e.App == "" {
			e.App = old.App
		}
	}
	b.entries[e.Key] = e
	b.peers[e.Peer] = struct{}{}
	b.services[service{e.Proto, e.Port, e.Dir}] = struct{}{}
}

// Merge builds the peer-group baseline of a class from its devices'
// baselines: the union of their behaviours and the merged volume
// statistics. Devices are merged in the given order; pass them sorted for a
// deterministic result.
func Merge(class medmeshv1.DeviceClass, version uint64, parts []*Baseline) *Baseline {
	var slot time.Duration
	if len(parts) > 0 {
		slot = parts[0].Slot
	}
	b := newBaseline("", class, slot)
	b.Version = version
	for i, p := range parts {
		if i == 0 || p.LearnStart < b.LearnStart {
			b.LearnStart = p.LearnStart
		}
		b.FreezeTime = max(b.FreezeTime, p.FreezeTime)
		for _, e := range p.Entries() {
			b.add(e)
		}
		for s := range b.Volume {
			b.Volume[s].Bytes.Merge(p.Volume[s].Bytes)
			b.Volume[s].Flows.Merge(p.Volume[s].Flows)
		}
	}
	return b
}

// Learner collects one device's behaviour during its learning window.
// Not safe for concurrent use.
type Learner struct {
	cfg     Config
	start   int64
	entries map[Key]Entry
	volume  [Slots]Volume
	// The slot being accumulated: its absolute index and totals.
	cur        int64
	curBytes   float64
	curFlows   float64
	haveCur    bool
	overflowed bool
}

// NewLearner starts learning at startNs.
func NewLearner(cfg Config, startNs int64) (*Learner, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("baseline config: %w", err)
	}
	return &Learner{cfg: cfg, start: startNs, entries: make(map[Key]Entry)}, nil
}

// Start is when learning began.
func (l *Learner) Start() int64 { return l.start }

// Due reports whether the learning window has elapsed at nowNs.
func (l *Learner) Due(nowNs int64) bool { return nowNs-l.start >= int64(l.cfg.Window) }

// Namer resolves a peer address to the DNS or TLS name the device used
// for it, or "".
type Namer interface {
	PeerName(peer netip.Addr) string
}

func peerName(n Namer, peer netip.Addr) string {
	if n == nil {
		return ""
	}
	return n.PeerName(peer)
}

// Observe records one flow of the device; names (may be nil) gives the
// peer's name. It allocates only when the behaviour is new.
func (l *Learner) Observe(k Key, app string, names Namer, bytes uint64, timeNs int64) {
	if e, ok := l.entries[k]; ok {
		if e.App == "" && app != "" {
			e.App = app
			l.entries[k] = e
		}
		if e.PeerName == "" {
			if n := peerName(names, k.Peer); n != "" {
				e.PeerName = n
				l.entries[k] = e
			}
		}
	} else if len(l.entries) < l.cfg.MaxEntries {
		l.entries[k] = Entry{Key: k, App: app, PeerName: peerName(names, k.Peer)}
	} else {
		l.overflowed = true
	}
	l.account(float64(bytes), timeNs)
}

// account adds volume to the slot of timeNs, closing the slots before it.
// Slots without traffic between two records count as zero-volume samples.
func (l *Learner) account(bytes float64, timeNs int64) {
	idx := timeNs / int64(l.cfg.Slot)
	switch {
	case !l.haveCur:
		l.cur, l.haveCur = idx, true
	case idx > l.cur:
		l.close()
		// Empty slots in between, at most one day's worth of each.
		gap := idx - l.cur - 1
		for i := int64(1); i <= min(gap, Slots); i++ {
			l.volume[slotOf((l.cur+i)*int64(l.cfg.Slot), l.cfg.Slot)].Bytes.Add(0)
			l.volume[slotOf((l.cur+i)*int64(l.cfg.Slot), l.cfg.Slot)].Flows.Add(0)
		}
		l.cur = idx
	case idx < l.cur:
		// A late record: count it in the current slot.
	}
	l.curBytes += bytes
	l.curFlows++
}

func (l *Learner) close() {
	s := slotOf(l.cur*int64(l.cfg.Slot), l.cfg.Slot)
	l.volume[s].Bytes.Add(l.curBytes)
	l.volume[s].Flows.Add(l.curFlows)
	l.curBytes, l.curFlows = 0, 0
}

// Overflowed reports whether the device exceeded MaxEntries.
func (l *Learner) Overflowed() bool { return l.overflowed }

// Freeze turns what was learned into a baseline. The slot in progress is
// included. The learner must not be used afterwards.
func (l *Learner) Freeze(device string, class medmeshv1.DeviceClass, version uint64, nowNs int64) *Baseline {
	if l.haveCur {
		l.close()
		l.haveCur = false
	}
	b := newBaseline(device, class, l.cfg.Slot)
	b.Version = version
	b.LearnStart = l.start
	b.FreezeTime = nowNs
	b.Volume = l.volume
	for _, e := range l.entries {
		b.add(e)
	}
	return b
}
