// Package xdp loads, pins and feeds the enforcer's XDP verdict program: per
// device (source MAC) a mode, quarantine flags and up to 64 allow or block
// rules, looked up in the slot's open-addressing table of (prefix length,
// masked peer), behind a per-CPU verdict cache invalidated by a policy
// generation. Every map a decision changes is written through a memory
// mapping.
package xdp

import (
	"fmt"
	"math/bits"
	"net/netip"
)

// MaxRules is the number of rules (allow and block together) per device.
const MaxRules = 64

// Mode is a device's policy mode in the datapath.
type Mode uint8

// Modes. ModeNone passes everything that no block or quarantine drops.
const (
	ModeNone    Mode = 0
	ModeMonitor Mode = 1
	ModeEnforce Mode = 2
)

// Device flags.
const (
	FlagQuarantine       uint8 = 1 // quarantined by a decision
	FlagQuarantinePolicy uint8 = 2 // quarantined by the device's policy
)

// Kind says what a rule does.
type Kind uint8

// Rule kinds.
const (
	KindEmpty Kind = 0
	KindAllow Kind = 1
	KindBlock Kind = 2
)

// Direction values, equal to medmesh.v1.Direction.
const (
	DirAny      uint8 = 0
	DirOutbound uint8 = 1
	DirInbound  uint8 = 2
	DirBoth     uint8 = 3
)

// Infrastructure roles that a quarantined device may still reach.
const (
	RoleDHCP uint32 = 1
	RoleDNS  uint32 = 2
)

// Verdict indexes the per-verdict counters.
type Verdict int

// Verdicts, in the order of the program's counter array.
const (
	VerdictPassNonIP Verdict = iota
	VerdictPassNoPolicy
	VerdictPassAllowed
	VerdictPassMonitor
	VerdictDropDenied
	VerdictPassQuarantineInfra
	VerdictDropQuarantine
	VerdictDropBlocked
	VerdictPassNeighbor
	NumVerdicts
)

var verdictNames = [NumVerdicts]string{
	"pass_non_ip", "pass_no_policy", "pass_allowed", "pass_monitor_would_drop",
	"drop_denied", "pass_quarantine_infra", "drop_quarantine", "drop_blocked", "pass_neighbor",
}

func (v Verdict) String() string {
	if v < 0 || v >= NumVerdicts {
		return fmt.Sprintf("verdict(%d)", int(v))
	}
	return verdictNames[v]
}

// Rule is one datapath rule of a device.
type Rule struct {
	Kind Kind
	// Proto is the IANA protocol; 0 is any.
	Proto uint8
	// Dir is the direction (Dir*); outbound rules match the peer's port
	// (destination), inbound rules the device's own port (source).
	Dir uint8
	// Prefix is the peer; the zero Prefix means any peer.
	Prefix netip.Prefix
	// PortMin-PortMax inclusive; 0-0 is any port.
	PortMin, PortMax uint16
}

// DeviceEntry is a device's entry in the datapath.
type DeviceEntry struct {
	Slot   uint32
	Mode   Mode
	Flags  uint8
	NRules uint8
}

// peerEntry is one peer-hash entry of a slot: a mapped prefix, the allow
// rules that cover it and whether a block does.
type peerEntry struct {
	prefix netip.Prefix
	allow  uint64
	block  bool
}

// maxLens is the number of distinct prefix lengths per family a slot may
// use: each costs the program one hash probe for that family's packets.
const maxLens = 16

// plan is what a slot's rules compile to. It is a value with fixed
// arrays, no maps or slices of its own, so that compiling a device's
// rules, as every enforcer does for every policy decision, allocates
// nothing: with a hundred enforcers on one host the garbage was what
// their decisions cost most after the cache lines written.
type plan struct {
	entries      [MaxRules]peerEntry // distinct mapped prefixes, in rule order
	n            int                 // entries in use
	anyAllow     uint64
	anyBlock     bool
	lens4, lens6 [maxLens]uint8 // mapped prefix lengths, longest first
	n4, n6       int            // lengths in use
}

// peers returns the plan's peer entries.
func (pl *plan) peers() []peerEntry { return pl.entries[:pl.n] }

// has reports whether the plan has an entry for the mapped prefix p.
func (pl *plan) has(p netip.Prefix) bool {
	for _, e := range pl.peers() {
		if e.prefix == p {
			return true
		}
	}
	return false
}

// lengths4 and lengths6 return the plan's prefix lengths per family,
// longest first.
func (pl *plan) lengths4() []uint8 { return pl.lens4[:pl.n4] }
func (pl *plan) lengths6() []uint8 { return pl.lens6[:pl.n6] }

func isV4(mapped netip.Prefix) bool { return mapped.Addr().Is4In6() && mapped.Bits() >= 96 }

// mapped returns the prefix in the IPv4-mapped IPv6 space the trie uses;
// the zero prefix (any peer) becomes ::/0.
func mapped(p netip.Prefix) netip.Prefix {
	if !p.IsValid() {
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	p = p.Masked()
	if p.Addr().Is4() {
		return netip.PrefixFrom(netip.AddrFrom16(p.Addr().As16()), 96+p.Bits())
	}
	return p
}

// unmapped is the inverse of mapped.
func unmapped(p netip.Prefix) netip.Prefix {
	if p.Bits() == 0 {
		return netip.Prefix{}
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

// compile computes a slot's peer entries into pl: for each distinct rule
// prefix, the bitmap of allow rules of the same family whose prefix covers
// it and whether a block covers it. The program probes the slot's prefix
// lengths longest first, so its first hit is the most specific rule prefix
// containing the address, and every rule containing the address contains
// that prefix: one hit yields every candidate rule. Rules for any peer go
// to the slot's any bitmap, which the program adds to every hit.
func compile(rules []Rule, pl *plan) error {
	*pl = plan{}
	if len(rules) > MaxRules {
		return fmt.Errorf("%d rules: at most %d per device", len(rules), MaxRules)
	}
	var prefixes [MaxRules]netip.Prefix
	for i, r := range rules {
		if !r.Prefix.IsValid() {
			switch r.Kind {
			case KindAllow:
				pl.anyAllow |= 1 << uint(i)
			case KindBlock:
				pl.anyBlock = true
			}
			continue
		}
		prefixes[i] = mapped(r.Prefix)
		if !pl.has(prefixes[i]) {
			pl.entries[pl.n] = peerEntry{prefix: prefixes[i]}
			pl.n++
		}
	}
	// Bit l of set4 (set6) is set when an IPv4 (IPv6) entry has mapped
	// length l, 0 to 128.
	var set4, set6 [3]uint64
	for k := range pl.peers() {
		e := &pl.entries[k]
		p := e.prefix
		for i, r := range rules {
			q := prefixes[i]
			if !q.IsValid() || isV4(q) != isV4(p) || q.Bits() > p.Bits() || !q.Contains(p.Addr()) {
				continue
			}
			switch r.Kind {
			case KindAllow:
				e.allow |= 1 << uint(i)
			case KindBlock:
				e.block = true
			}
		}
		set := &set6
		if isV4(p) {
			set = &set4
		}
		set[p.Bits()/64] |= 1 << (p.Bits() % 64)
	}
	n4, n6 := lengthCount(set4), lengthCount(set6)
	if n4 > maxLens || n6 > maxLens {
		return fmt.Errorf("rules use %d IPv4 and %d IPv6 prefix lengths: at most %d each", n4, n6, maxLens)
	}
	pl.n4, pl.n6 = fillLengths(&pl.lens4, set4), fillLengths(&pl.lens6, set6)
	return nil
}

// lengthCount is the number of prefix lengths in a length set.
func lengthCount(set [3]uint64) int {
	return bits.OnesCount64(set[0]) + bits.OnesCount64(set[1]) + bits.OnesCount64(set[2])
}

// fillLengths writes a length set's lengths into dst, longest first, and
// returns how many; the set holds at most len(dst).
func fillLengths(dst *[maxLens]uint8, set [3]uint64) int {
	n := 0
	for w := len(set) - 1; w >= 0; w-- {
		for x := set[w]; x != 0; n++ {
			b := 63 - bits.LeadingZeros64(x)
			dst[n] = uint8(w*64 + b)
			x &^= 1 << b
		}
	}
	return n
}
