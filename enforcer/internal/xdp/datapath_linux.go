//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Config sizes and places the datapath.
type Config struct {
	// PinDir is the bpffs directory for the maps and the XDP link, e.g.
	// /sys/fs/bpf/medmesh/e1. Empty: nothing is pinned (tests, benchmarks).
	PinDir string
	// MaxDevices is the number of devices the maps hold.
	MaxDevices int
}

// DefaultConfig sizes the datapath for 10,000 devices.
func DefaultConfig() Config { return Config{MaxDevices: 10000} }

func (c Config) validate() error {
	if c.MaxDevices < 1 || c.MaxDevices > 1<<20 {
		return fmt.Errorf("max devices %d: want 1..%d", c.MaxDevices, 1<<20)
	}
	return nil
}

// Slots returns the number of rule slots: one per device plus spares, so a
// device's new rules are written to a free slot before its entry switches.
func (c Config) Slots() uint32 { return uint32(c.MaxDevices + c.MaxDevices/4 + 16) }

const linkPin = "link"

// Datapath is the loaded enforcer program and its maps.
type Datapath struct {
	objs   enforcerObjects
	cfg    Config
	slots  uint32
	link   link.Link
	ncpu   int
	zeroes []uint64
}

// Load loads the program and its maps. With a PinDir, maps pinned there by a
// previous enforcer are adopted with their contents; new maps are pinned.
func Load(cfg Config) (*Datapath, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	spec, err := loadEnforcer()
	if err != nil {
		return nil, fmt.Errorf("load enforcer spec: %w", err)
	}
	slots := cfg.Slots()
	spec.Maps["devices"].MaxEntries = uint32(cfg.MaxDevices)
	spec.Maps["peers"].MaxEntries = slots * MaxRules
	spec.Maps["slots"].MaxEntries = slots
	spec.Maps["rules"].MaxEntries = slots * MaxRules
	spec.Maps["rule_hits"].MaxEntries = slots * MaxRules
	opts := &ebpf.CollectionOptions{}
	if cfg.PinDir != "" {
		if err := ensureBPFFS(cfg.PinDir); err != nil {
			return nil, err
		}
		for _, m := range spec.Maps {
			m.Pinning = ebpf.PinByName
		}
		opts.Maps.PinPath = cfg.PinDir
	}
	d := &Datapath{cfg: cfg, slots: slots}
	if err := spec.LoadAndAssign(&d.objs, opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) && os.Getenv("MEDMESH_BPF_DEBUG") != "" {
			return nil, fmt.Errorf("load enforcer program: %+v", ve)
		}
		return nil, fmt.Errorf("load enforcer program (pinned maps in %q must match max devices %d): %w", cfg.PinDir, cfg.MaxDevices, err)
	}
	d.ncpu, err = ebpf.PossibleCPU()
	if err != nil {
		d.objs.Close()
		return nil, fmt.Errorf("possible cpus: %w", err)
	}
	d.zeroes = make([]uint64, d.ncpu)
	return d, nil
}

// ensureBPFFS mounts bpffs on /sys/fs/bpf when needed and creates dir.
func ensureBPFFS(dir string) error {
	const root = "/sys/fs/bpf"
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", root, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		if err := unix.Mount("bpf", root, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs on %s: %w", root, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin dir: %w", err)
	}
	return nil
}

// Program is the verdict program.
func (d *Datapath) Program() *ebpf.Program { return d.objs.Enforce }

// PassProgram is a bare XDP_PASS program, the benchmark baseline.
func (d *Datapath) PassProgram() *ebpf.Program { return d.objs.Pass }

// Slots is the number of rule slots.
func (d *Datapath) Slots() uint32 { return d.slots }

// Attach attaches the program to the interface. With a PinDir, a link pinned
// there by a previous enforcer is adopted and atomically switched to this
// program (no moment without a program); otherwise a new link is created
// and pinned, so the program outlives this process. It reports whether an
// existing link was adopted.
func (d *Datapath) Attach(ifindex int) (adopted bool, err error) {
	if d.link != nil {
		return false, errors.New("already attached")
	}
	if d.cfg.PinDir != "" {
		path := filepath.Join(d.cfg.PinDir, linkPin)
		l, err := link.LoadPinnedLink(path, nil)
		switch {
		case err == nil:
			info, err := l.Info()
			if err != nil {
				l.Close()
				return false, fmt.Errorf("pinned link info: %w", err)
			}
			if xi := info.XDP(); xi == nil || int(xi.Ifindex) != ifindex {
				l.Close()
				return false, fmt.Errorf("pinned link %s is attached to another interface; unpin it first", path)
			}
			if err := l.Update(d.objs.Enforce); err != nil {
				l.Close()
				return false, fmt.Errorf("update pinned link: %w", err)
			}
			d.link = l
			return true, nil
		case !errors.Is(err, os.ErrNotExist):
			return false, fmt.Errorf("load pinned link: %w", err)
		}
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: d.objs.Enforce, Interface: ifindex})
	if err != nil {
		return false, fmt.Errorf("attach xdp to ifindex %d: %w", ifindex, err)
	}
	if d.cfg.PinDir != "" {
		if err := l.Pin(filepath.Join(d.cfg.PinDir, linkPin)); err != nil {
			l.Close()
			return false, fmt.Errorf("pin xdp link: %w", err)
		}
	}
	d.link = l
	return false, nil
}

// Close releases this process's handles. Pinned maps and the pinned link
// stay: the program keeps enforcing after the process exits.
func (d *Datapath) Close() error {
	var errs []error
	if d.link != nil {
		errs = append(errs, d.link.Close())
	}
	errs = append(errs, d.objs.Close())
	return errors.Join(errs...)
}

// Unpin removes the pinned link and maps in dir: the program detaches once
// no process holds it. This is the only way to stop enforcing.
func Unpin(dir string) error {
	var errs []error
	if l, err := link.LoadPinnedLink(filepath.Join(dir, linkPin), nil); err == nil {
		errs = append(errs, l.Unpin(), l.Close())
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func macKey(mac net.HardwareAddr) (enforcerMacKey, error) {
	var k enforcerMacKey
	if len(mac) != 6 {
		return k, fmt.Errorf("mac %q: want 6 bytes", mac)
	}
	copy(k.Addr[:], mac)
	return k, nil
}

// SetDevice creates or atomically replaces a device's entry.
func (d *Datapath) SetDevice(mac net.HardwareAddr, e DeviceEntry) error {
	k, err := macKey(mac)
	if err != nil {
		return err
	}
	if e.Slot >= d.slots {
		return fmt.Errorf("slot %d out of range", e.Slot)
	}
	v := enforcerDevice{Slot: e.Slot, Mode: uint8(e.Mode), Flags: e.Flags, Nrules: e.NRules}
	if err := d.objs.Devices.Put(k, v); err != nil {
		return fmt.Errorf("put device %s: %w", mac, err)
	}
	return nil
}

// DeleteDevice removes a device's entry; its traffic passes again.
func (d *Datapath) DeleteDevice(mac net.HardwareAddr) error {
	k, err := macKey(mac)
	if err != nil {
		return err
	}
	if err := d.objs.Devices.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete device %s: %w", mac, err)
	}
	return nil
}

// Devices returns every device entry.
func (d *Datapath) Devices() (map[string]DeviceEntry, error) {
	out := map[string]DeviceEntry{}
	var k enforcerMacKey
	var v enforcerDevice
	it := d.objs.Devices.Iterate()
	for it.Next(&k, &v) {
		mac := net.HardwareAddr(append([]byte(nil), k.Addr[:]...))
		out[mac.String()] = DeviceEntry{Slot: v.Slot, Mode: Mode(v.Mode), Flags: v.Flags, NRules: v.Nrules}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate devices: %w", err)
	}
	return out, nil
}

func peerKey(slot uint32, p netip.Prefix) enforcerPeerKey {
	return enforcerPeerKey{Slot: slot, Plen: uint8(p.Bits()), Addr: p.Masked().Addr().As16()}
}

// WriteSlot writes rules into a slot that no device uses yet: rule array,
// peer entries and slot info, counters reset. The slot becomes effective
// when a device entry points to it.
func (d *Datapath) WriteSlot(slot uint32, rules []Rule) error {
	if slot >= d.slots {
		return fmt.Errorf("slot %d out of range", slot)
	}
	pl, err := compile(rules)
	if err != nil {
		return err
	}
	// A free slot's rule entries are empty (ClearSlot empties them), so
	// only the rules themselves are written.
	base := slot * MaxRules
	for i, r := range rules {
		idx := base + uint32(i)
		if err := d.objs.Rules.Put(idx, toBPFRule(r)); err != nil {
			return fmt.Errorf("put rule %d of slot %d: %w", i, slot, err)
		}
		if err := d.objs.RuleHits.Put(idx, d.zeroes); err != nil {
			return fmt.Errorf("reset rule counter: %w", err)
		}
	}
	for p, e := range pl.entries {
		v := enforcerPeerVal{Allow: e.allow}
		if e.block {
			v.Block = 1
		}
		if err := d.objs.Peers.Put(peerKey(slot, p), v); err != nil {
			return fmt.Errorf("put peer %s of slot %d: %w", p, slot, err)
		}
	}
	info := enforcerSlotInfo{AnyAllow: pl.anyAllow, Nlens4: uint8(len(pl.lens4)), Nlens6: uint8(len(pl.lens6))}
	if pl.anyBlock {
		info.AnyBlock = 1
	}
	copy(info.Lens4[:], pl.lens4)
	copy(info.Lens6[:], pl.lens6)
	if err := d.objs.Slots.Put(slot, info); err != nil {
		return fmt.Errorf("put slot %d info: %w", slot, err)
	}
	return nil
}

// ClearSlot removes a slot's info and peer entries, then its rules. Call
// it only after no device entry points to the slot.
func (d *Datapath) ClearSlot(slot uint32, rules []Rule) error {
	if slot >= d.slots {
		return fmt.Errorf("slot %d out of range", slot)
	}
	pl, err := compile(rules)
	if err != nil {
		return err
	}
	if err := d.objs.Slots.Put(slot, enforcerSlotInfo{}); err != nil {
		return fmt.Errorf("clear slot %d info: %w", slot, err)
	}
	for p := range pl.entries {
		if err := d.objs.Peers.Delete(peerKey(slot, p)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete peer %s of slot %d: %w", p, slot, err)
		}
	}
	base := slot * MaxRules
	for i := range rules {
		if err := d.objs.Rules.Put(base+uint32(i), enforcerRule{}); err != nil {
			return fmt.Errorf("clear rule %d of slot %d: %w", i, slot, err)
		}
	}
	return nil
}

// ReadSlot reads a slot's rules back (up to the first empty entry).
func (d *Datapath) ReadSlot(slot uint32) ([]Rule, error) {
	var out []Rule
	base := slot * MaxRules
	for i := range MaxRules {
		var r enforcerRule
		if err := d.objs.Rules.Lookup(base+uint32(i), &r); err != nil {
			return nil, fmt.Errorf("lookup rule %d of slot %d: %w", i, slot, err)
		}
		if Kind(r.Kind) == KindEmpty {
			break
		}
		out = append(out, fromBPFRule(r))
	}
	return out, nil
}

// UsedSlots returns every slot whose first rule entry is not empty, with
// its rules: what a crashed enforcer may have left behind. It reads the rule
// array in batches (one syscall per 4096 entries, not two per entry).
func (d *Datapath) UsedSlots() (map[uint32][]Rule, error) {
	out := map[uint32][]Rule{}
	const batch = 4096
	keys := make([]uint32, batch)
	vals := make([]enforcerRule, batch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.Rules.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			if Kind(vals[i].Kind) == KindEmpty {
				continue
			}
			slot := keys[i] / MaxRules
			out[slot] = append(out[slot], fromBPFRule(vals[i]))
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read rules: %w", err)
		}
	}
	return out, nil
}

func toBPFRule(r Rule) enforcerRule {
	p := mapped(r.Prefix)
	return enforcerRule{
		Kind: uint8(r.Kind), Proto: r.Proto, Dir: r.Dir, Prefixlen: uint8(p.Bits()),
		PortMin: r.PortMin, PortMax: r.PortMax, Addr: p.Addr().As16(),
	}
}

func fromBPFRule(r enforcerRule) Rule {
	p := netip.PrefixFrom(netip.AddrFrom16(r.Addr), int(r.Prefixlen))
	return Rule{Kind: Kind(r.Kind), Proto: r.Proto, Dir: r.Dir, Prefix: unmapped(p), PortMin: r.PortMin, PortMax: r.PortMax}
}

// AppliedIndex returns the decision index persisted in the pinned meta map.
func (d *Datapath) AppliedIndex() (uint64, error) {
	var m enforcerMetadata
	if err := d.objs.Meta.Lookup(uint32(0), &m); err != nil {
		return 0, fmt.Errorf("lookup applied index: %w", err)
	}
	return m.AppliedIndex, nil
}

// SetAppliedIndex persists the applied decision index.
func (d *Datapath) SetAppliedIndex(index uint64) error {
	if err := d.objs.Meta.Put(uint32(0), enforcerMetadata{AppliedIndex: index}); err != nil {
		return fmt.Errorf("put applied index: %w", err)
	}
	return nil
}

// SetInfra replaces the servers a quarantined device may still reach.
// IPv4 and IPv6 broadcast and all-DHCP-servers addresses are always DHCP.
func (d *Datapath) SetInfra(servers map[netip.Addr]uint32) error {
	want := map[[16]byte]uint32{
		netip.MustParseAddr("::ffff:255.255.255.255").As16(): RoleDHCP,
		netip.MustParseAddr("ff02::1:2").As16():              RoleDHCP,
	}
	for a, role := range servers {
		want[a.As16()] |= role
	}
	var k [16]byte
	var v uint32
	var stale [][16]byte
	it := d.objs.Infra.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate infra: %w", err)
	}
	for k, v := range want {
		if err := d.objs.Infra.Put(k, v); err != nil {
			return fmt.Errorf("put infra server: %w", err)
		}
	}
	for _, k := range stale {
		if err := d.objs.Infra.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete infra server: %w", err)
		}
	}
	return nil
}

// Counter is a packet and byte count.
type Counter struct{ Packets, Bytes uint64 }

// Verdicts returns the per-verdict counters summed over CPUs.
func (d *Datapath) Verdicts() ([NumVerdicts]Counter, error) {
	var out [NumVerdicts]Counter
	for v := range NumVerdicts {
		var per []enforcerCounter
		if err := d.objs.Verdicts.Lookup(uint32(v), &per); err != nil {
			return out, fmt.Errorf("lookup verdict %s: %w", v, err)
		}
		for _, c := range per {
			out[v].Packets += c.Packets
			out[v].Bytes += c.Bytes
		}
	}
	return out, nil
}

// RuleHits returns the packets rule i of slot allowed, summed over CPUs.
func (d *Datapath) RuleHits(slot uint32, i int) (uint64, error) {
	var per []uint64
	if err := d.objs.RuleHits.Lookup(slot*MaxRules+uint32(i), &per); err != nil {
		return 0, fmt.Errorf("lookup rule hits: %w", err)
	}
	var n uint64
	for _, c := range per {
		n += c
	}
	return n, nil
}
