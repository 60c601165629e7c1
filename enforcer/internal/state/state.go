// Package state is the enforcer's model of what it enforces: per device a
// policy mode, quarantine flags, allow rules and peer blocks. It applies
// decisions in index order, fenced by the persisted applied index, and
// writes every change to the datapath without a window: a device's new
// rules go to a free slot before its entry switches to that slot, and the
// old slot stays intact until it is taken again, after every slot freed
// before it.
package state

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"

	"github.com/medmesh/medmesh/enforcer/internal/xdp"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Table is the datapath the state writes to.
type Table interface {
	WriteSlot(slot uint32, rules []xdp.Rule) error
	ClearSlot(slot uint32, rules []xdp.Rule) error
	SetDevice(mac net.HardwareAddr, e xdp.DeviceEntry) error
	DeleteDevice(mac net.HardwareAddr) error
	SetAppliedIndex(index uint64) error
}

// Snapshot is what a datapath holds, read back when an enforcer adopts
// pinned maps.
type Snapshot struct {
	Devices      map[string]xdp.DeviceEntry
	Slots        map[uint32][]xdp.Rule
	AppliedIndex uint64
}

// ErrInvalid marks a decision that can never be applied (malformed policy,
// a device identified only by IP). The decision is skipped and its index
// consumed; the previous enforcement stays.
var ErrInvalid = errors.New("invalid decision")

type device struct {
	slot   uint32
	mode   xdp.Mode
	flags  uint8
	allow  []xdp.Rule
	blocks []netip.Prefix
}

func (d *device) clone() *device {
	c := *d
	c.allow = slices.Clone(d.allow)
	c.blocks = slices.Clone(d.blocks)
	return &c
}

func (d *device) rules() []xdp.Rule {
	out := slices.Clone(d.allow)
	for _, b := range d.blocks {
		out = append(out, xdp.Rule{Kind: xdp.KindBlock, Prefix: b})
	}
	return out
}

func (d *device) empty() bool {
	return d.mode == xdp.ModeNone && d.flags == 0 && len(d.blocks) == 0
}

// State is the enforced state. It is safe for concurrent use.
type State struct {
	mu      sync.Mutex
	table   Table
	log     *slog.Logger
	devices map[string]*device
	free    []uint32 // free slots, oldest first: taken from the front
	applied uint64
	// atApplied holds the ids of the entries applied at index applied: one
	// Raft entry can append several decisions (a class policy, one per
	// device), all at its index. Not pinned: after a restart the entries
	// at the pinned index may be applied again, which changes nothing
	// (every action sets state, it never toggles it).
	atApplied map[string]bool
}

// New adopts snap (an empty Snapshot for fresh maps) and reconciles it:
// slots that no device entry points to (released ones, and any left by an
// enforcer that died in the middle of an update) are cleared.
func New(table Table, snap Snapshot, slots uint32, log *slog.Logger) (*State, error) {
	s := &State{table: table, log: log, devices: map[string]*device{}, applied: snap.AppliedIndex, atApplied: map[string]bool{}}
	used := map[uint32]bool{}
	for mac, e := range snap.Devices {
		if e.Slot >= slots || used[e.Slot] {
			return nil, fmt.Errorf("device %s: slot %d invalid or shared", mac, e.Slot)
		}
		used[e.Slot] = true
		d := &device{slot: e.Slot, mode: e.Mode, flags: e.Flags}
		for _, r := range snap.Slots[e.Slot] {
			if r.Kind == xdp.KindBlock {
				d.blocks = append(d.blocks, r.Prefix)
			} else {
				d.allow = append(d.allow, r)
			}
		}
		s.devices[mac] = d
	}
	// Released slots keep their content until taken again, and a crash
	// may leave a half-written one: both are cleared here.
	cleared := 0
	for slot, rules := range snap.Slots {
		if used[slot] {
			continue
		}
		if err := table.ClearSlot(slot, rules); err != nil {
			return nil, fmt.Errorf("clear unused slot %d: %w", slot, err)
		}
		cleared++
	}
	for slot := range slots {
		if !used[slot] {
			s.free = append(s.free, slot)
		}
	}
	if len(snap.Devices) > 0 || cleared > 0 {
		log.Info("adopted pinned enforcement state", "devices", len(snap.Devices), "unused_slots_cleared", cleared, "applied_index", snap.AppliedIndex)
	}
	return s, nil
}

// Applied returns the highest decision index applied.
func (s *State) Applied() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied
}

// Devices returns the number of devices with an entry.
func (s *State) Devices() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.devices)
}

// Apply applies one committed decision log entry. It reports false for an
// entry below the applied index, or at it with an id already applied there
// (a duplicate after a reconnect, or a stale replica): fencing. Several
// entries can share an index (one Raft entry's decisions). An ErrInvalid
// error consumes the entry without changing enforcement; any other error
// leaves it unconsumed so it is retried.
func (s *State) Apply(d *medmeshv1.Decision) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d.GetIndex() < s.applied || (d.GetIndex() == s.applied && s.atApplied[d.GetId()]) {
		return false, nil
	}
	err := s.apply(d)
	if err != nil && !errors.Is(err, ErrInvalid) {
		return false, err
	}
	if d.GetIndex() > s.applied {
		if serr := s.table.SetAppliedIndex(d.GetIndex()); serr != nil {
			return false, errors.Join(err, serr)
		}
		s.applied, s.atApplied = d.GetIndex(), map[string]bool{}
	}
	s.atApplied[d.GetId()] = true
	return true, err
}

func (s *State) apply(d *medmeshv1.Decision) error {
	switch d.GetState() {
	case medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL, medmeshv1.DecisionState_DECISION_STATE_REJECTED:
		return nil
	case medmeshv1.DecisionState_DECISION_STATE_APPROVED:
		if d.GetTargetDecisionId() == "" {
			// The reviewed original, read back after its approval: it takes
			// effect at the approval entry's index, not its own.
			return nil
		}
		// The approval entry is self-contained: the coordinators copy the
		// approved decision's action, device, peer and policy into it.
		if d.GetAction() == medmeshv1.DecisionAction_DECISION_ACTION_UNSPECIFIED {
			return fmt.Errorf("approval %s of %s carries no action: %w", d.GetId(), d.GetTargetDecisionId(), ErrInvalid)
		}
	}
	if d.GetAction() == medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY ||
		d.GetAction() == medmeshv1.DecisionAction_DECISION_ACTION_UNSPECIFIED {
		return nil
	}
	macStr := d.GetDeviceMac()
	if macStr == "" {
		macStr = d.GetPolicy().GetDeviceMac()
	}
	mac, err := net.ParseMAC(macStr)
	if err != nil || len(mac) != 6 {
		return fmt.Errorf("%w: device %q is not a MAC address", ErrInvalid, macStr)
	}
	key := mac.String()
	old := s.devices[key]
	next := &device{}
	if old != nil {
		next = old.clone()
	}
	switch d.GetAction() {
	case medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE:
		next.flags |= xdp.FlagQuarantine
	case medmeshv1.DecisionAction_DECISION_ACTION_RELEASE:
		next.flags &^= xdp.FlagQuarantine
	case medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER, medmeshv1.DecisionAction_DECISION_ACTION_UNBLOCK_PEER:
		p, err := parsePeer(d.GetPeerCidr())
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		next.blocks = slices.DeleteFunc(next.blocks, func(b netip.Prefix) bool { return b == p })
		if d.GetAction() == medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER {
			next.blocks = append(next.blocks, p)
			sort.Slice(next.blocks, func(i, j int) bool { return next.blocks[i].String() < next.blocks[j].String() })
		}
	case medmeshv1.DecisionAction_DECISION_ACTION_ENFORCE_POLICY:
		if next.mode == xdp.ModeNone {
			return fmt.Errorf("%w: enforce: device %s has no policy", ErrInvalid, key)
		}
		next.mode = xdp.ModeEnforce
	case medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY:
		rules, warn, err := Rules(d.GetPolicy())
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		for _, w := range warn {
			s.log.Warn("policy rule not enforceable here", "policy", d.GetPolicy().GetName(), "device", key, "detail", w)
		}
		next.allow = rules
		next.mode = xdp.ModeMonitor
		if d.GetPolicy().GetMode() == medmeshv1.PolicyMode_POLICY_MODE_ENFORCE {
			next.mode = xdp.ModeEnforce
		}
		next.flags &^= xdp.FlagQuarantinePolicy
		if d.GetPolicy().GetQuarantine() {
			next.flags |= xdp.FlagQuarantinePolicy
		}
	case medmeshv1.DecisionAction_DECISION_ACTION_REMOVE_POLICY:
		next.allow = nil
		next.mode = xdp.ModeNone
		next.flags &^= xdp.FlagQuarantinePolicy
	default:
		return fmt.Errorf("%w: unknown action %v", ErrInvalid, d.GetAction())
	}
	if len(next.allow)+len(next.blocks) > xdp.MaxRules {
		return fmt.Errorf("%w: device %s would have %d rules and blocks, at most %d", ErrInvalid, key, len(next.allow)+len(next.blocks), xdp.MaxRules)
	}
	return s.commit(mac, old, next)
}

// commit writes next to the datapath. Rule changes go to a fresh slot that
// the device entry then switches to atomically; mode and flag changes
// replace the entry in place.
func (s *State) commit(mac net.HardwareAddr, old, next *device) error {
	key := mac.String()
	if next.empty() {
		if old == nil {
			return nil
		}
		if err := s.table.DeleteDevice(mac); err != nil {
			return err
		}
		delete(s.devices, key)
		s.release(old)
		return nil
	}
	newRules := next.rules()
	if old != nil && slices.Equal(old.rules(), newRules) {
		next.slot = old.slot
		if err := s.table.SetDevice(mac, entry(next)); err != nil {
			return err
		}
		s.devices[key] = next
		return nil
	}
	if len(s.free) == 0 {
		return errors.New("no free rule slot: raise max devices")
	}
	// The slot freed longest ago: a packet that read the device's entry
	// just before a switch away from a slot is long done with it when the
	// slot is written again.
	next.slot = s.free[0]
	if err := s.table.WriteSlot(next.slot, newRules); err != nil {
		return fmt.Errorf("write slot %d: %w", next.slot, err)
	}
	if err := s.table.SetDevice(mac, entry(next)); err != nil {
		return err
	}
	s.free = s.free[1:]
	s.devices[key] = next
	if old != nil {
		s.release(old)
	}
	return nil
}

// release returns a slot no entry points to any more to the back of the
// free list. Its content stays until the slot is taken again, oldest
// first, and WriteSlot rewrites it whole: a packet that read the device's
// old entry just before the switch still finds the slot it named intact,
// where clearing it at once could show that packet an empty slot (one
// packet of a peer blocked before and after the switch passing, for a
// device without a policy). An enforcer that restarts clears such slots
// as orphans.
func (s *State) release(old *device) {
	s.free = append(s.free, old.slot)
}

func entry(d *device) xdp.DeviceEntry {
	return xdp.DeviceEntry{Slot: d.slot, Mode: d.mode, Flags: d.flags, NRules: uint8(len(d.allow) + len(d.blocks))}
}

func parsePeer(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("peer %q is neither a CIDR nor an address", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Rules translates a policy's rules into datapath allow rules. Rules naming
// a peer by DNS name cannot be matched in the datapath and are left out with
// a warning: in enforce mode their traffic is dropped (fail closed for that
// rule, never open).
func Rules(p *medmeshv1.Policy) (rules []xdp.Rule, warnings []string, err error) {
	if len(p.GetRules()) > xdp.MaxRules {
		return nil, nil, fmt.Errorf("policy %s has %d rules, at most %d", p.GetName(), len(p.GetRules()), xdp.MaxRules)
	}
	for i, r := range p.GetRules() {
		x := xdp.Rule{Kind: xdp.KindAllow, Dir: uint8(r.GetDirection())}
		if r.GetProtocol() > 255 || r.GetPortMax() > 65535 || r.GetPortMin() > r.GetPortMax() {
			return nil, nil, fmt.Errorf("policy %s rule %d: protocol or port range out of range", p.GetName(), i)
		}
		x.Proto = uint8(r.GetProtocol())
		x.PortMin, x.PortMax = uint16(r.GetPortMin()), uint16(r.GetPortMax())
		switch peer := r.GetPeer().(type) {
		case *medmeshv1.Rule_PeerCidr:
			pfx, err := parsePeer(peer.PeerCidr)
			if err != nil {
				return nil, nil, fmt.Errorf("policy %s rule %d: %w", p.GetName(), i, err)
			}
			x.Prefix = pfx
		case *medmeshv1.Rule_PeerDnsName:
			warnings = append(warnings, fmt.Sprintf("rule %d (%s): peer named %q is not resolved to addresses; not installed", i, r.GetName(), peer.PeerDnsName))
			continue
		}
		rules = append(rules, x)
	}
	return rules, warnings, nil
}
