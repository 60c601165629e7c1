// Package state is the enforcer's model of what it enforces: per device a
// policy mode, quarantine flags, allow rules and peer blocks. It applies
// decisions in index order, fenced by the persisted applied index, and
// writes every change to the datapath without a window: a device's new
// rules go to a free slot before its entry switches to that slot, and the
// old slot stays intact until it is taken again, after every slot freed
// before it. Rules that name a peer by DNS name are installed as one rule
// per address of the name's last answer (SetResolved), kept across
// restarts in the datapath's records of named rules.
package state

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/medmesh/medmesh/enforcer/internal/xdp"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Table is the datapath the state writes to. It must not keep the rules
// slices it is given: the state reuses them.
type Table interface {
	WriteSlot(slot uint32, rules []xdp.Rule) error
	ClearSlot(slot uint32, rules []xdp.Rule) error
	SetDevice(mac net.HardwareAddr, e xdp.DeviceEntry) error
	DeleteDevice(mac net.HardwareAddr) error
	SetAppliedIndex(index uint64) error
	// The records of devices whose policy names peers by DNS name, and
	// the names they refer to (see named.go).
	SetNamed(mac net.HardwareAddr, rec []byte) error
	DeleteNamed(mac net.HardwareAddr) error
	SetDNSName(key xdp.NameKey, name string) error
	DeleteDNSName(key xdp.NameKey) error
}

// Snapshot is what a datapath holds, read back when an enforcer adopts
// pinned maps.
type Snapshot struct {
	Devices      map[string]xdp.DeviceEntry
	Slots        map[uint32][]xdp.Rule
	AppliedIndex uint64
	// Named holds the records of named rules by MAC, DNSNames the names
	// they refer to.
	Named    map[string][]byte
	DNSNames map[xdp.NameKey]string
}

// ErrInvalid marks a decision that can never be applied (malformed policy,
// a device identified only by IP). The decision is skipped and its index
// consumed; the previous enforcement stays.
var ErrInvalid = errors.New("invalid decision")

// device is a device's enforced state. Its slices are never changed in
// place, only replaced (clone shares them), so that a decision that
// changes a device's mode or policy copies no rules.
type device struct {
	slot   uint32
	mode   xdp.Mode
	flags  uint8
	allow  []xdp.Rule
	blocks []netip.Prefix
	// named is set when the device's policy names peers by DNS name: allow
	// is then built from it (expand), and rec is its stored record.
	named *named
	rec   []byte
}

func (d *device) clone() *device {
	c := *d
	return &c
}

// appendRules appends the device's rules, allow rules then blocks, to dst.
func (d *device) appendRules(dst []xdp.Rule) []xdp.Rule {
	dst = append(dst, d.allow...)
	for _, b := range d.blocks {
		dst = append(dst, xdp.Rule{Kind: xdp.KindBlock, Prefix: b})
	}
	return dst
}

// sameRules reports whether a and b have the same rules (allow rules are
// of KindAllow, so equal parts are equal rules).
func sameRules(a, b *device) bool {
	return slices.Equal(a.allow, b.allow) && slices.Equal(a.blocks, b.blocks)
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
	// rules is the slice the rules of a slot are built in for WriteSlot,
	// reused.
	rules []xdp.Rule

	// resolved holds the addresses installed for each DNS name that a
	// device's policy uses; refs counts those devices per name; stored
	// are the names written to the datapath. onNames hears the set of
	// names whenever it changes.
	resolved map[string][]netip.Addr
	refs     map[string]int
	stored   map[string]bool
	onNames  func([]string)
}

// New adopts snap (an empty Snapshot for fresh maps) and reconciles it:
// slots that no device entry points to (released ones, and any left by an
// enforcer that died in the middle of an update) are cleared.
func New(table Table, snap Snapshot, slots uint32, log *slog.Logger) (*State, error) {
	s := &State{table: table, log: log, devices: map[string]*device{}, applied: snap.AppliedIndex, atApplied: map[string]bool{},
		resolved: map[string][]netip.Addr{}, refs: map[string]int{}, stored: map[string]bool{}}
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
	if err := s.adoptNamed(snap); err != nil {
		return nil, err
	}
	if len(snap.Devices) > 0 || cleared > 0 {
		log.Info("adopted pinned enforcement state", "devices", len(snap.Devices), "unused_slots_cleared", cleared, "applied_index", snap.AppliedIndex,
			"dns_names", len(s.refs))
	}
	return s, nil
}

// adoptNamed reads the records of named rules: for each device that has
// one, which of its installed rules came from which name, so the next
// answer for a name replaces exactly those. Addresses installed before the
// restart stay until then (fail static). A record that cannot be read, or
// whose device is gone, is dropped: that device's rules stay as they are
// until its next policy. Names no record uses are removed.
func (s *State) adoptNamed(snap Snapshot) error {
	macs := make([]string, 0, len(snap.Named))
	for mac := range snap.Named {
		macs = append(macs, mac)
	}
	slices.Sort(macs)
	for _, key := range macs {
		mac, err := net.ParseMAC(key)
		if err != nil {
			return fmt.Errorf("named record of %q: %w", key, err)
		}
		rec := snap.Named[key]
		d := s.devices[key]
		var n *named
		var addrs map[string][]netip.Addr
		if d != nil {
			if n, err = decodeRecord(rec, d.allow, snap.DNSNames); err == nil {
				addrs, err = adopt(d.allow, n)
			}
		}
		if d == nil || err != nil {
			if d != nil {
				s.log.Warn("named rules record unreadable; the device's installed rules stay until its next policy", "device", key, "err", err)
			}
			if err := s.table.DeleteNamed(mac); err != nil {
				return err
			}
			continue
		}
		d.named, d.rec = n, rec
		for _, name := range n.names() {
			s.refs[name]++
			s.stored[name] = true
			if _, ok := s.resolved[name]; !ok {
				s.resolved[name] = addrs[name]
			}
		}
	}
	for key, name := range snap.DNSNames {
		if s.refs[name] == 0 || nameKey(name) != key {
			if err := s.table.DeleteDNSName(key); err != nil {
				return err
			}
		}
	}
	return nil
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
		s.applied = d.GetIndex()
		if len(s.atApplied) > maxReusedApplied {
			s.atApplied = map[string]bool{}
		} else {
			clear(s.atApplied)
		}
	}
	s.atApplied[d.GetId()] = true
	return true, err
}

// maxReusedApplied is the size up to which the set of ids applied at an
// index is emptied for the next index rather than made anew: most indexes
// carry one decision, and a class policy's (one per device) can be large.
const maxReusedApplied = 64

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
		// A copy: old shares the slice, and keeps it if this fails.
		next.blocks = slices.DeleteFunc(slices.Clone(next.blocks), func(b netip.Prefix) bool { return b == p })
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
		static, n, err := policyRules(d.GetPolicy())
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		next.allow, next.named = static, n
		next.mode = xdp.ModeMonitor
		if d.GetPolicy().GetMode() == medmeshv1.PolicyMode_POLICY_MODE_ENFORCE {
			next.mode = xdp.ModeEnforce
		}
		next.flags &^= xdp.FlagQuarantinePolicy
		if d.GetPolicy().GetQuarantine() {
			next.flags |= xdp.FlagQuarantinePolicy
		}
	case medmeshv1.DecisionAction_DECISION_ACTION_REMOVE_POLICY:
		next.allow, next.named = nil, nil
		next.mode = xdp.ModeNone
		next.flags &^= xdp.FlagQuarantinePolicy
	default:
		return fmt.Errorf("%w: unknown action %v", ErrInvalid, d.GetAction())
	}
	// The addresses of DNS-named peers yield to the policy's other rules
	// and to blocks: only those must fit.
	fixed := next.allow
	if next.named != nil {
		fixed = next.named.static
	}
	if len(fixed)+len(next.blocks) > xdp.MaxRules {
		return fmt.Errorf("%w: device %s would have %d rules and blocks, at most %d", ErrInvalid, key, len(fixed)+len(next.blocks), xdp.MaxRules)
	}
	if next.named != nil {
		// The addresses of its names take what room the policy's other
		// rules and the device's blocks leave.
		var leftOut int
		next.allow, leftOut = expand(next.named, s.resolved, xdp.MaxRules-len(next.blocks))
		if leftOut > 0 {
			s.log.Warn("addresses of DNS-named peers left out: the device's rules are full", "device", key, "policy", next.named.policy, "left_out", leftOut)
		}
	}
	return s.commit(mac, old, next)
}

// commit writes next to the datapath. Rule changes go to a fresh slot that
// the device entry then switches to atomically; mode and flag changes
// replace the entry in place.
func (s *State) commit(mac net.HardwareAddr, old, next *device) error {
	if err := s.writeNamed(mac, old, next); err != nil {
		return err
	}
	if err := s.install(mac, old, next); err != nil {
		return err
	}
	return s.count(old, next)
}

// install writes next's entry and rules.
func (s *State) install(mac net.HardwareAddr, old, next *device) error {
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
	if old != nil && sameRules(old, next) {
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
	s.rules = next.appendRules(s.rules[:0])
	if err := s.table.WriteSlot(next.slot, s.rules); err != nil {
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

// policyRules translates a policy's rules into datapath allow rules, and
// its rules naming a peer by DNS name into named rules (nil without any),
// which become rules as their names are resolved.
func policyRules(p *medmeshv1.Policy) (static []xdp.Rule, n *named, err error) {
	if len(p.GetRules()) > xdp.MaxRules {
		return nil, nil, fmt.Errorf("policy %s has %d rules, at most %d", p.GetName(), len(p.GetRules()), xdp.MaxRules)
	}
	var nr []namedRule
	static = make([]xdp.Rule, 0, len(p.GetRules()))
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
			name := strings.ToLower(strings.TrimSuffix(peer.PeerDnsName, "."))
			if name == "" || len(name) > xdp.MaxDNSName {
				return nil, nil, fmt.Errorf("policy %s rule %d: peer_dns_name %q is not a DNS name", p.GetName(), i, peer.PeerDnsName)
			}
			nr = append(nr, namedRule{name: name, proto: x.Proto, dir: x.Dir, portMin: x.PortMin, portMax: x.PortMax})
			continue
		}
		static = append(static, x)
	}
	if len(nr) == 0 {
		return static, nil, nil
	}
	return static, &named{policy: p.GetName(), static: static, rules: nr}, nil
}

// writeNamed stores next's record of named rules, and any name it
// introduces, before next's rules are installed, or deletes old's record
// when next has none. A crash in between leaves a record for rules not yet
// installed: the decision that changes them was not recorded as applied
// and is applied again after the restart.
func (s *State) writeNamed(mac net.HardwareAddr, old, next *device) error {
	var oldRec []byte
	if old != nil {
		oldRec = old.rec
	}
	next.rec = nil
	if next.named != nil {
		rec, err := encodeRecord(next.named)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		next.rec = rec
	}
	if bytes.Equal(next.rec, oldRec) {
		return nil
	}
	if next.rec == nil {
		return s.table.DeleteNamed(mac)
	}
	for _, name := range next.named.names() {
		if !s.stored[name] {
			if err := s.table.SetDNSName(nameKey(name), name); err != nil {
				return err
			}
			s.stored[name] = true
		}
	}
	return s.table.SetNamed(mac, next.rec)
}

// count moves the devices' references from old's names to next's, once
// next is installed. A name no device uses any more is forgotten and its
// stored copy removed; onNames hears of every change of the set.
func (s *State) count(old, next *device) error {
	var before, after []string
	if old != nil {
		before = old.named.names()
	}
	if next != nil && !next.empty() {
		after = next.named.names()
	}
	if slices.Equal(before, after) {
		return nil
	}
	changed := false
	for _, name := range after {
		if s.refs[name]++; s.refs[name] == 1 {
			changed = true
		}
	}
	var errs []error
	for _, name := range before {
		if s.refs[name]--; s.refs[name] > 0 {
			continue
		}
		changed = true
		delete(s.refs, name)
		delete(s.resolved, name)
		if s.stored[name] {
			errs = append(errs, s.table.DeleteDNSName(nameKey(name)))
			delete(s.stored, name)
		}
	}
	if changed && s.onNames != nil {
		s.onNames(s.namesLocked())
	}
	return errors.Join(errs...)
}

func (s *State) namesLocked() []string {
	out := make([]string, 0, len(s.refs))
	for name := range s.refs {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// OnNames registers f to hear the DNS names the devices' policies use:
// at once, and again whenever the set changes. f is called with the
// state locked: it must not call back into the state.
func (s *State) OnNames(f func(names []string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onNames = f
	f(s.namesLocked())
}

// Resolved returns the addresses installed for each name: after an
// adoption, those an earlier enforcer installed.
func (s *State) Resolved() map[string][]netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]netip.Addr, len(s.resolved))
	for name, a := range s.resolved {
		out[name] = slices.Clone(a)
	}
	return out
}

// SetResolved installs addrs as the addresses of name: every device whose
// policy names it gets its rules rebuilt, through a fresh slot as for any
// rule change. The resolver calls it with each new answer; when it fails
// it does not call, and the last addresses stay (fail static). A name no
// device uses is ignored. A device whose rules cannot be written keeps its
// old ones, and the error is returned.
func (s *State) SetResolved(name string, addrs []netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs[name] == 0 {
		return nil
	}
	addrs = slices.Clone(addrs)
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	s.resolved[name] = addrs
	keys := make([]string, 0, len(s.devices))
	for key, d := range s.devices {
		if d.named != nil && d.named.uses(name) {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	var errs []error
	for _, key := range keys {
		old := s.devices[key]
		next := old.clone()
		var leftOut int
		next.allow, leftOut = expand(next.named, s.resolved, xdp.MaxRules-len(next.blocks))
		if leftOut > 0 {
			s.log.Warn("addresses of DNS-named peers left out: the device's rules are full", "device", key, "policy", next.named.policy, "left_out", leftOut)
		}
		if slices.Equal(next.allow, old.allow) {
			continue
		}
		mac, err := net.ParseMAC(key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := s.commit(mac, old, next); err != nil {
			errs = append(errs, fmt.Errorf("device %s: %w", key, err))
		}
	}
	return errors.Join(errs...)
}

// NamedPeer is what a policy's DNS-named peer has installed on this
// enforcer.
type NamedPeer struct {
	Policy, Name string
	// Devices is the number of devices the policy applies to here.
	Devices int
	// Addrs are the installed addresses; Resolved is false before any
	// answer (nothing installed).
	Addrs    []netip.Addr
	Resolved bool
}

// NamedPeers returns every (policy, name) pair the devices' policies use,
// sorted.
func (s *State) NamedPeers() []NamedPeer {
	s.mu.Lock()
	defer s.mu.Unlock()
	type pk struct{ policy, name string }
	count := map[pk]int{}
	for _, d := range s.devices {
		for _, name := range d.named.names() {
			count[pk{d.named.policy, name}]++
		}
	}
	out := make([]NamedPeer, 0, len(count))
	for k, n := range count {
		a, ok := s.resolved[k.name]
		out = append(out, NamedPeer{Policy: k.policy, Name: k.name, Devices: n, Addrs: slices.Clone(a), Resolved: ok})
	}
	slices.SortFunc(out, func(a, b NamedPeer) int {
		if c := strings.Compare(a.Policy, b.Policy); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}
