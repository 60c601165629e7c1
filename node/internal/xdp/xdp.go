// Package xdp loads and attaches the sensor's XDP program (sensor.c), and
// gives user space a tiny typed API over its maps: flows, statistics,
// per-device baselines, payload-sample budgets, and the ring buffer of
// flow starts, payload samples, discovery packets and baseline misses.
package xdp

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/medmesh/medmesh/node/flow"
)

// Config tunes a loaded datapath.
type Config struct {
	// FlowEntries is the flow table's size (BPF LRU hash).
	FlowEntries uint32
	// Tap drops every frame after accounting (dedicated mirror port);
	// otherwise frames pass to the kernel stack (passive).
	Tap bool
	// RingBytes is the ring buffer's size, a power of two multiple of the
	// page size.
	RingBytes uint32
	// Debug keeps the full verifier log in load errors.
	Debug bool
	// NoFlowCache turns the per-CPU flow cache off: every packet then
	// takes the flow table's hash lookup and atomic adds. The cache is
	// also off when this process may not run on every online CPU, since
	// Flush must run on each CPU whose slots it empties.
	NoFlowCache bool
}

// DefaultConfig returns a passive datapath with 65536 flows and a 4 MiB ring.
func DefaultConfig() Config {
	return Config{FlowEntries: 65536, RingBytes: 4 << 20}
}

func (c Config) validate() error {
	if c.FlowEntries < 16 {
		return fmt.Errorf("flow entries %d: want at least 16", c.FlowEntries)
	}
	if c.RingBytes < 4096 || c.RingBytes&(c.RingBytes-1) != 0 {
		return fmt.Errorf("ring bytes %d: want a power of two of at least 4096", c.RingBytes)
	}
	return nil
}

// BaselineRule allows a device flows with peers in Prefix over Proto (0:
// any protocol) to service port Port (0: any port). The service port is the
// destination port of the flow's first packet.
type BaselineRule struct {
	Prefix netip.Prefix
	Proto  uint8
	Port   uint16
}

// maxRules is MAX_RULES in sensor.c: entries per (device, prefix).
const maxRules = 16

// ErrTooManyRules is returned when a prefix of a baseline carries more
// (protocol, port) entries, its covering prefixes' included, than the map
// value holds.
var ErrTooManyRules = errors.New("too many baseline entries for one prefix")

type foldedEntry struct {
	addr [16]byte
	bits int // of the 128-bit (v4-mapped) address
	val  sensorBlVal
}

// foldRules turns rules into LPM entries: each distinct prefix carries its
// own (proto, port) entries and those of every covering prefix, so the
// longest match alone decides.
func foldRules(rules []BaselineRule) ([]foldedEntry, error) {
	type pfx struct {
		addr [16]byte
		bits int
	}
	norm := func(p netip.Prefix) (pfx, error) {
		if !p.IsValid() {
			return pfx{}, fmt.Errorf("invalid prefix %v", p)
		}
		p = p.Masked()
		if p.Addr().Is4() {
			return pfx{netip.AddrFrom16(p.Addr().As16()).As16(), 96 + p.Bits()}, nil
		}
		return pfx{p.Addr().As16(), p.Bits()}, nil
	}
	ps := make([]pfx, len(rules))
	for i, r := range rules {
		p, err := norm(r.Prefix)
		if err != nil {
			return nil, err
		}
		ps[i] = p
	}
	covers := func(outer, inner pfx) bool {
		if outer.bits > inner.bits {
			return false
		}
		return netip.PrefixFrom(netip.AddrFrom16(inner.addr), outer.bits).Masked().Addr() == netip.AddrFrom16(outer.addr)
	}
	var out []foldedEntry
	seen := make(map[pfx]bool)
	for _, p := range ps {
		if seen[p] {
			continue
		}
		seen[p] = true
		e := foldedEntry{addr: p.addr, bits: p.bits}
		var list []sensorBlRule
		for j, q := range ps {
			if !covers(q, p) {
				continue
			}
			r := sensorBlRule{Proto: rules[j].Proto, Port: rules[j].Port}
			if !slices.Contains(list, r) {
				list = append(list, r)
			}
		}
		if len(list) > maxRules {
			return nil, fmt.Errorf("prefix %v: %d entries: %w (at most %d)", netip.PrefixFrom(netip.AddrFrom16(p.addr).Unmap(), p.bits), len(list), ErrTooManyRules, maxRules)
		}
		e.val.N = uint32(len(list))
		copy(e.val.R[:], list)
		out = append(out, e)
	}
	return out, nil
}

// Parse error reasons, indexed as enum parse_err in sensor.c.
var parseErrorNames = [...]string{
	"truncated_ethernet", "truncated_vlan", "vlan_depth", "truncated_ipv4", "bad_ipv4",
	"truncated_ipv6", "bad_ipv6", "ipv6_extension", "truncated_l4", "bad_l4",
}

// ParseErrorReasons lists every parse error reason the program counts.
func ParseErrorReasons() []string { return append([]string(nil), parseErrorNames[:]...) }

// Stats are the program's counters, summed over CPUs.
type Stats struct {
	Packets, Bytes        uint64 // every frame, frame bytes
	IPPackets, L3Bytes    uint64
	NonIP                 uint64
	Fragments             uint64
	FlowsCreated          uint64
	FlowUpdateFailures    uint64
	RingEvents, RingDrops uint64
	Samples, Discovery    uint64
	BaselineMisses        uint64
	CacheHits             uint64 // packets counted on the per-CPU fast path
	CacheOrphans          uint64 // flows re-created from cached counts after their entry went
	ParseErrors           uint64
	ParseErrorsByReason   map[string]uint64
}

// Stat indexes, as enum stat in sensor.c.
const (
	statPackets = iota
	statBytes
	statIPPackets
	statL3Bytes
	statNonIP
	statFragments
	statFlowsCreated
	statFlowUpdateFail
	statRBEvents
	statRBDrops
	statSamples
	statDiscovery
	statBaselineMiss
	statParseErrors
	statCacheHits
	statCacheOrphans
	statErrBase = 16
	// Cache hits are not in statPackets/statIPPackets, nor their bytes
	// in statBytes/statL3Bytes: statsFrom adds them.
	statCacheBytes   = 26
	statCacheL3Bytes = 27
	statCacheParsed  = 28
)

func statsFrom(c *[32]uint64) Stats {
	s := Stats{
		Packets: c[statPackets] + c[statCacheHits], Bytes: c[statBytes] + c[statCacheBytes],
		IPPackets: c[statIPPackets] + c[statCacheHits], L3Bytes: c[statL3Bytes] + c[statCacheL3Bytes], NonIP: c[statNonIP], Fragments: c[statFragments],
		FlowsCreated: c[statFlowsCreated], FlowUpdateFailures: c[statFlowUpdateFail],
		RingEvents: c[statRBEvents], RingDrops: c[statRBDrops], Samples: c[statSamples],
		Discovery: c[statDiscovery], BaselineMisses: c[statBaselineMiss],
		CacheHits: c[statCacheHits] + c[statCacheParsed], CacheOrphans: c[statCacheOrphans],
		ParseErrors: c[statParseErrors], ParseErrorsByReason: make(map[string]uint64, len(parseErrorNames)),
	}
	for i, n := range parseErrorNames {
		s.ParseErrorsByReason[n] = c[statErrBase+i]
	}
	return s
}

// NonIPCount is what the program counted for one source MAC of non-IP
// frames (ARP, LLDP, ...).
type NonIPCount struct {
	Packets, Bytes uint64
	LastEtherType  uint16
}

// AttachMode is how the program is attached to an interface.
type AttachMode string

// Attach modes.
const (
	ModeNative  AttachMode = "native"
	ModeGeneric AttachMode = "generic"
)

// ErrNoEvent is returned by Read when no event arrived before the deadline.
var ErrNoEvent = errors.New("no event before deadline")

// FlowKey identifies one entry of the flow table.
type FlowKey struct{ k sensorFlowKey }

// keyOf builds the program's canonical key for a tuple.
func keyOf(t flow.Tuple) (sensorFlowKey, error) {
	var k sensorFlowKey
	if !t.Src.IsValid() || !t.Dst.IsValid() || t.Src.Is4() != t.Dst.Is4() {
		return k, fmt.Errorf("flow key: bad addresses %v, %v", t.Src, t.Dst)
	}
	var src, dst [16]byte
	if t.Src.Is4() {
		k.Family = 4
		a, b := t.Src.As4(), t.Dst.As4()
		copy(src[:], a[:])
		copy(dst[:], b[:])
	} else {
		k.Family = 6
		src, dst = t.Src.As16(), t.Dst.As16()
	}
	if sideLess(&src, t.SrcPort, &dst, t.DstPort) {
		k.AddrA, k.AddrB, k.PortA, k.PortB = src, dst, t.SrcPort, t.DstPort
	} else {
		k.AddrA, k.AddrB, k.PortA, k.PortB = dst, src, t.DstPort, t.SrcPort
	}
	k.Proto, k.Vlan = t.Proto, t.VLAN
	return k, nil
}

// sideLess mirrors side_lt in sensor.c: two native (little-endian) 64-bit
// words, then the port.
func sideLess(a *[16]byte, pa uint16, b *[16]byte, pb uint16) bool {
	for i := 0; i < 16; i += 8 {
		x, y := le64(a[i:]), le64(b[i:])
		if x != y {
			return x < y
		}
	}
	return pa < pb
}

func le64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// recordOf turns a flow-table entry into a flow record (times through wall).
func recordOf(k *sensorFlowKey, v *sensorFlowVal, wall func(uint64) int64) flow.Record {
	a, b := addrOf(k.Family, &k.AddrA), addrOf(k.Family, &k.AddrB)
	r := flow.Record{
		Src: a, Dst: b, SrcPort: k.PortA, DstPort: k.PortB, Proto: k.Proto, VLAN: k.Vlan,
		FwdPackets: v.Dir[0].Packets, FwdBytes: v.Dir[0].Bytes,
		RevPackets: v.Dir[1].Packets, RevBytes: v.Dir[1].Bytes,
		FirstNs: wall(v.FirstNs), LastNs: wall(v.LastNs),
		SrcMAC: v.MacInit, DstMAC: v.MacResp,
		FwdTCPFlags: uint8(v.Dir[0].TcpFlags), RevTCPFlags: uint8(v.Dir[1].TcpFlags),
		Fragments: v.Fragments,
	}
	if v.InitIsA == 0 {
		r.Src, r.Dst, r.SrcPort, r.DstPort = b, a, k.PortB, k.PortA
	}
	switch v.Baseline {
	case 1:
		r.Baseline = "in"
	case 2:
		r.Baseline = "out"
	}
	return r
}
