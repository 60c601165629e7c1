//go:build linux

package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

const linkPin = "link"

// Datapath is the loaded enforcer program and its maps.
type Datapath struct {
	objs  enforcerObjects
	cfg   Config
	slots uint32
	link  link.Link
	ncpu  int

	// The mmapable arrays, written through their memory mappings.
	devMem   *mmapArray[enforcerDevice]
	peerMem  *mmapArray[enforcerPeer]
	rulesMem *mmapArray[enforcerRule]
	slotsMem *mmapArray[enforcerSlotInfo]
	metaMem  *mmapArray[uint64] // the one metadata entry as two words

	// What each slot holds beyond its info: the peer buckets in use and
	// the rule entries up to the last one in use, read at load and kept
	// since, so WriteSlot empties only those of a previous tenant. A slot
	// is written by one caller at a time, as no device points to it.
	slotBuckets [][2]uint64
	slotRules   []uint8

	devMu   sync.Mutex
	devIdx  map[enforcerMacKey]uint32 // as in the devices hash
	devFree []uint32                  // free device indexes, oldest first

	metaMu  sync.Mutex
	applied uint64 // as written to the meta map
	gen     uint64 // policy generation, as written to the meta map

	// named and dnsNames hold what DNS-named rules were expanded from
	// (named_linux.go); the program never reads them.
	named, dnsNames *ebpf.Map
}

// mmapArray is a BPF array map created with BPF_F_MMAPABLE, written
// through this process's memory mapping of it: a store, no syscall. T is a
// bpf2go type (host layout, the C struct's size), so elements are copied as
// they lie in memory. A copy is not atomic with respect to a program
// reading the same element, so the datapath copies only into elements no
// device points to yet, or no longer; what a program may be reading while
// it changes (a device entry, the generation, the applied index) is one
// aligned 64-bit word, changed with an atomic store.
type mmapArray[T any] struct {
	b []byte
}

// newMmapArray maps m, whose value is elem Ts with no padding between.
func newMmapArray[T any](m *ebpf.Map, elem int) (*mmapArray[T], error) {
	size := int(unsafe.Sizeof(*new(T)))
	// The kernel lays array elements out every round_up(value_size, 8)
	// bytes; T's size must be that stride for put's copy to be exact.
	if uint32(size*elem) != m.ValueSize() || (elem == 1 && size%8 != 0) {
		return nil, fmt.Errorf("map %s: value size %d, not %d x %d-byte elements on an 8-byte stride", m, m.ValueSize(), elem, size)
	}
	page := os.Getpagesize()
	n := (int(m.ValueSize())*int(m.MaxEntries()) + page - 1) / page * page
	b, err := unix.Mmap(m.FD(), 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map %s: memory mapping: %w", m, err)
	}
	return &mmapArray[T]{b: b}, nil
}

func (a *mmapArray[T]) close() error {
	if a == nil || a.b == nil {
		return nil
	}
	err := unix.Munmap(a.b)
	a.b = nil
	return err
}

// bytes returns the memory of n Ts from the i-th on.
func (a *mmapArray[T]) bytes(i uint32, n int) ([]byte, error) {
	size := int(unsafe.Sizeof(*new(T)))
	off := int64(i) * int64(size)
	if off+int64(n*size) > int64(len(a.b)) {
		return nil, fmt.Errorf("elements %d-%d out of range", i, int64(i)+int64(n)-1)
	}
	return a.b[off : off+int64(n*size)], nil
}

// get reads the i-th T.
func (a *mmapArray[T]) get(i uint32) (T, error) {
	var v T
	b, err := a.bytes(i, 1)
	if err != nil {
		return v, err
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&v)), len(b)), b)
	return v, nil
}

// getN reads n consecutive Ts from the i-th on.
func (a *mmapArray[T]) getN(i uint32, n int) ([]T, error) {
	b, err := a.bytes(i, n)
	if err != nil || n == 0 {
		return nil, err
	}
	out := make([]T, n)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), len(b)), b)
	return out, nil
}

// put writes vals to consecutive Ts from the i-th on.
func (a *mmapArray[T]) put(i uint32, vals ...T) error {
	if len(vals) == 0 {
		return nil
	}
	b, err := a.bytes(i, len(vals))
	if err != nil {
		return err
	}
	copy(b, unsafe.Slice((*byte)(unsafe.Pointer(&vals[0])), len(b)))
	return nil
}

// word returns the i-th 64-bit word of the mapping, which is page-aligned.
func (a *mmapArray[T]) word(i uint32) (*uint64, error) {
	if int64(i)*8+8 > int64(len(a.b)) {
		return nil, fmt.Errorf("word %d out of range", i)
	}
	return (*uint64)(unsafe.Pointer(&a.b[int(i)*8])), nil
}

// store replaces the i-th T, which must be one word, with one atomic store:
// a program reading it sees the old or the new value, never a mix, and on
// every architecture (a release store) after everything this process wrote
// before, such as the slot the new value names.
func (a *mmapArray[T]) store(i uint32, v T) error {
	if unsafe.Sizeof(v) != 8 {
		return fmt.Errorf("store of a %d-byte element: not one word", unsafe.Sizeof(v))
	}
	w, err := a.word(i)
	if err != nil {
		return err
	}
	atomic.StoreUint64(w, *(*uint64)(unsafe.Pointer(&v)))
	return nil
}

// load reads the i-th T, which must be one word, with one atomic load.
func (a *mmapArray[T]) load(i uint32) (T, error) {
	var v T
	if unsafe.Sizeof(v) != 8 {
		return v, fmt.Errorf("load of a %d-byte element: not one word", unsafe.Sizeof(v))
	}
	w, err := a.word(i)
	if err != nil {
		return v, err
	}
	*(*uint64)(unsafe.Pointer(&v)) = atomic.LoadUint64(w)
	return v, nil
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
	spec.Maps["device_state"].MaxEntries = uint32(cfg.MaxDevices)
	spec.Maps["peer_tab"].MaxEntries = slots * peerBuckets
	spec.Maps["slots"].MaxEntries = slots
	spec.Maps["rules"].MaxEntries = slots * MaxRules
	spec.Maps["rule_hits"].MaxEntries = slots * MaxRules
	opts := &ebpf.CollectionOptions{}
	if cfg.PinDir != "" {
		if _, err := CheckPinDir(cfg.PinDir); err != nil {
			return nil, err
		}
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
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			// The pinned program keeps enforcing: nothing was replaced.
			return nil, fmt.Errorf("pinned maps in %q do not fit this enforcer: pinned with another max devices (now %d), or by a medmesh version with another map layout; the pinned program keeps enforcing; `medmesh enforcer --uninstall` removes them and stops enforcing: %w", cfg.PinDir, cfg.MaxDevices, err)
		}
		return nil, fmt.Errorf("load enforcer program: %w", err)
	}
	d.ncpu, err = ebpf.PossibleCPU()
	if err != nil {
		d.objs.Close()
		return nil, fmt.Errorf("possible cpus: %w", err)
	}
	// The generation only grows, also across restarts: it lives in the
	// pinned meta map and a new process bumps it once more, so no cached
	// verdict of an earlier process or generation can hit.
	var m enforcerMetadata
	if err := d.objs.Meta.Lookup(uint32(0), &m); err != nil {
		d.objs.Close()
		return nil, fmt.Errorf("lookup meta: %w", err)
	}
	d.applied, d.gen = m.AppliedIndex, m.Generation
	for _, step := range []func() error{d.mapMemory, d.adoptSlots, d.adoptDevices, d.openNamed, d.invalidate} {
		if err := step(); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// adoptSlots reads which peer buckets and rule entries of each slot are in
// use, in fresh maps (none) or pinned ones, so WriteSlot knows what to
// empty. It reads a byte of every bucket and rule in place: ~4 ms for
// 10,000 devices, once.
func (d *Datapath) adoptSlots() error {
	d.slotBuckets, d.slotRules = make([][2]uint64, d.slots), make([]uint8, d.slots)
	peers, err := d.peerMem.bytes(0, int(d.slots)*peerBuckets)
	if err != nil {
		return fmt.Errorf("read peer tables: %w", err)
	}
	rules, err := d.rulesMem.bytes(0, int(d.slots)*MaxRules)
	if err != nil {
		return fmt.Errorf("read rules: %w", err)
	}
	peerSize, used := int(unsafe.Sizeof(enforcerPeer{})), int(unsafe.Offsetof(enforcerPeer{}.Used))
	ruleSize, kind := int(unsafe.Sizeof(enforcerRule{})), int(unsafe.Offsetof(enforcerRule{}.Kind))
	for slot := range int(d.slots) {
		for b := range peerBuckets {
			if peers[(slot*peerBuckets+b)*peerSize+used] != 0 {
				d.slotBuckets[slot][b/64] |= 1 << (b % 64)
			}
		}
		// Up to the last entry that is not empty: a crash may have left
		// a hole.
		for i := range MaxRules {
			if Kind(rules[(slot*MaxRules+i)*ruleSize+kind]) != KindEmpty {
				d.slotRules[slot] = uint8(i + 1)
			}
		}
	}
	return nil
}

// adoptDevices reads the MAC hash (pinned by an earlier enforcer, or
// empty) into the index of device entries; every other index is free.
func (d *Datapath) adoptDevices() error {
	d.devIdx = map[enforcerMacKey]uint32{}
	used := make([]bool, d.cfg.MaxDevices)
	var k enforcerMacKey
	var idx uint32
	it := d.objs.Devices.Iterate()
	for it.Next(&k, &idx) {
		if int(idx) >= len(used) || used[idx] {
			return fmt.Errorf("pinned device %s has index %d, out of range or shared; `medmesh enforcer --uninstall` removes the pinned maps", net.HardwareAddr(k.Addr[:]), idx)
		}
		used[idx] = true
		d.devIdx[k] = idx
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate devices: %w", err)
	}
	d.devFree = d.devFree[:0]
	for i, u := range used {
		if !u {
			d.devFree = append(d.devFree, uint32(i))
		}
	}
	return nil
}

// mapMemory maps the mmapable arrays.
func (d *Datapath) mapMemory() (err error) {
	if d.devMem, err = newMmapArray[enforcerDevice](d.objs.DeviceState, 1); err != nil {
		return err
	}
	if d.peerMem, err = newMmapArray[enforcerPeer](d.objs.PeerTab, 1); err != nil {
		return err
	}
	if d.rulesMem, err = newMmapArray[enforcerRule](d.objs.Rules, 1); err != nil {
		return err
	}
	if d.slotsMem, err = newMmapArray[enforcerSlotInfo](d.objs.Slots, 1); err != nil {
		return err
	}
	// Two words in one element: applied_index at word 0, generation at 1.
	d.metaMem, err = newMmapArray[uint64](d.objs.Meta, 2)
	return err
}

// invalidate bumps the policy generation: every verdict cached so far
// stops hitting. Every method that changes a policy map calls it after the
// change and before returning, so once a change is reported done (and a
// fortiori once a decision is recorded as applied) no packet gets a verdict
// of an older policy.
func (d *Datapath) invalidate() error {
	d.metaMu.Lock()
	defer d.metaMu.Unlock()
	if err := d.metaMem.store(1, d.gen+1); err != nil {
		return fmt.Errorf("bump policy generation: %w", err)
	}
	d.gen++
	return nil
}

// invalidated runs invalidate after a change, even a partial one, and
// joins its error to *err.
func (d *Datapath) invalidated(err *error) {
	if ierr := d.invalidate(); ierr != nil {
		*err = errors.Join(*err, ierr)
	}
}

// Generation returns the current policy generation.
func (d *Datapath) Generation() uint64 {
	d.metaMu.Lock()
	defer d.metaMu.Unlock()
	return d.gen
}

// ensureBPFFS mounts bpffs on /sys/fs/bpf when needed and creates dir.
func ensureBPFFS(dir string) error {
	const root = BPFFS
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
	for _, m := range []interface{ close() error }{d.devMem, d.peerMem, d.rulesMem, d.slotsMem, d.metaMem} {
		errs = append(errs, m.close())
	}
	for _, m := range []*ebpf.Map{d.named, d.dnsNames} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	errs = append(errs, d.objs.Close())
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

// SetDevice creates or atomically replaces a device's entry. Replacing
// one is a single store to the entry's word, no syscall; a new device also
// takes a free index and enters the MAC hash.
func (d *Datapath) SetDevice(mac net.HardwareAddr, e DeviceEntry) (err error) {
	defer d.invalidated(&err)
	k, err := macKey(mac)
	if err != nil {
		return err
	}
	if e.Slot >= d.slots {
		return fmt.Errorf("slot %d out of range", e.Slot)
	}
	return d.putDevice(k, enforcerDevice{Slot: e.Slot, Mode: uint8(e.Mode), Flags: e.Flags, Nrules: e.NRules})
}

// putDevice writes a device entry without bumping the generation.
func (d *Datapath) putDevice(k enforcerMacKey, v enforcerDevice) error {
	d.devMu.Lock()
	defer d.devMu.Unlock()
	mac := net.HardwareAddr(k.Addr[:])
	if idx, ok := d.devIdx[k]; ok {
		if err := d.devMem.store(idx, v); err != nil {
			return fmt.Errorf("store device %s: %w", mac, err)
		}
		return nil
	}
	if len(d.devFree) == 0 {
		return fmt.Errorf("device %s: the datapath holds %d devices already: raise max devices", mac, d.cfg.MaxDevices)
	}
	// The oldest free index: a program that read the MAC hash just before
	// an earlier device left is long done with it.
	idx := d.devFree[0]
	if err := d.devMem.store(idx, v); err != nil {
		return fmt.Errorf("store device %s: %w", mac, err)
	}
	if err := d.objs.Devices.Put(k, idx); err != nil {
		return fmt.Errorf("put device %s: %w", mac, err)
	}
	d.devFree = d.devFree[1:]
	d.devIdx[k] = idx
	return nil
}

// DeleteDevice removes a device's entry; its traffic passes again.
func (d *Datapath) DeleteDevice(mac net.HardwareAddr) (err error) {
	defer d.invalidated(&err)
	k, err := macKey(mac)
	if err != nil {
		return err
	}
	d.devMu.Lock()
	defer d.devMu.Unlock()
	if err := d.objs.Devices.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete device %s: %w", mac, err)
	}
	idx, ok := d.devIdx[k]
	if !ok {
		return nil
	}
	delete(d.devIdx, k)
	if err := d.devMem.store(idx, enforcerDevice{}); err != nil {
		return fmt.Errorf("clear device %s: %w", mac, err)
	}
	d.devFree = append(d.devFree, idx)
	return nil
}

// Devices returns every device entry.
func (d *Datapath) Devices() (map[string]DeviceEntry, error) {
	d.devMu.Lock()
	defer d.devMu.Unlock()
	out := map[string]DeviceEntry{}
	for k, idx := range d.devIdx {
		v, err := d.devMem.load(idx)
		if err != nil {
			return nil, fmt.Errorf("load device %s: %w", net.HardwareAddr(k.Addr[:]), err)
		}
		mac := net.HardwareAddr(slices.Clone(k.Addr[:]))
		out[mac.String()] = DeviceEntry{Slot: v.Slot, Mode: Mode(v.Mode), Flags: v.Flags, NRules: v.Nrules}
	}
	return out, nil
}

// Peer table geometry, as in enforcer.c.
const (
	peerBits    = 7
	peerBuckets = 1 << peerBits // per slot
	peerProbes  = 8             // buckets a lookup tries per prefix length
	peerSeeds   = 1024          // seeds peerTable tries
)

// peerWords returns a mapped, masked prefix's address as the program loads
// it: two words in host byte order.
func peerWords(p netip.Prefix) (w0, w1 uint64) {
	a := p.Addr().As16()
	return binary.NativeEndian.Uint64(a[:8]), binary.NativeEndian.Uint64(a[8:])
}

// peerHome is peer_home in enforcer.c.
func peerHome(w0, w1 uint64, plen uint8, seed uint32) uint32 {
	x := (w0 * 0x9e3779b97f4a7c15) ^ w1 ^ (uint64(plen)<<32 | uint64(seed))
	return uint32((x * 0xc2b2ae3d27d4eb4f) >> (64 - peerBits))
}

// placedPeer is a peer table entry and its bucket in the slot's table.
type placedPeer struct {
	bucket uint32
	e      enforcerPeer
}

// peerTable lays a slot's peer entries out in its table: linear probing
// from each prefix's home bucket, under the first seed that keeps every
// prefix within peerProbes buckets of home, the program's probe limit. A
// slot has at most MaxRules prefixes in 2 x MaxRules buckets, so most
// seeds do. It sorts entries (by address, then length: the layout depends
// on the rules, not their order), appends the entries with their buckets
// to placed (which has room for MaxRules: a caller's array, so that
// nothing is allocated) and returns them with the buckets used, as a
// bitmap.
func peerTable(entries []peerEntry, placed []placedPeer) ([]placedPeer, [2]uint64, uint32, error) {
	var used [2]uint64
	if len(entries) > MaxRules {
		return nil, used, 0, fmt.Errorf("%d peer prefixes: at most %d per slot", len(entries), MaxRules)
	}
	slices.SortFunc(entries, func(a, b peerEntry) int {
		if c := a.prefix.Addr().Compare(b.prefix.Addr()); c != 0 {
			return c
		}
		return a.prefix.Bits() - b.prefix.Bits()
	})
	base := placed[:0]
seeds:
	for seed := range uint32(peerSeeds) {
		placed, used = base, [2]uint64{}
	keys:
		for _, e := range entries {
			w0, w1 := peerWords(e.prefix)
			h := peerHome(w0, w1, uint8(e.prefix.Bits()), seed)
			for j := range uint32(peerProbes) {
				b := (h + j) % peerBuckets
				if used[b/64]&(1<<(b%64)) != 0 {
					continue
				}
				used[b/64] |= 1 << (b % 64)
				pp := placedPeer{bucket: b, e: enforcerPeer{Addr: [2]uint64{w0, w1}, Allow: e.allow, Plen: uint8(e.prefix.Bits()), Used: 1}}
				if e.block {
					pp.e.Block = 1
				}
				placed = append(placed, pp)
				continue keys
			}
			continue seeds
		}
		return placed, used, seed, nil
	}
	return nil, used, 0, fmt.Errorf("no seed of %d places %d peer prefixes within %d buckets of home", peerSeeds, len(entries), peerProbes)
}

// WriteSlot writes rules into a slot that no device uses yet: rule array,
// peer table and slot info, with the slot's rule counter epoch advanced, so
// its counters start from zero without a reset (see count_rule in
// enforcer.c). The slot becomes effective when a device entry points to
// it. Everything is written through the arrays' memory mappings: no
// syscall. It writes the new rules and peer buckets and empties what the
// slot's previous tenant used besides: with many enforcers on a host, the
// cache lines written are what a decision costs.
func (d *Datapath) WriteSlot(slot uint32, rules []Rule) (err error) {
	defer d.invalidated(&err)
	if slot >= d.slots {
		return fmt.Errorf("slot %d out of range", slot)
	}
	var pl plan
	if err := compile(rules, &pl); err != nil {
		return err
	}
	var buf [MaxRules]placedPeer
	placed, used, seed, err := peerTable(pl.peers(), buf[:0])
	if err != nil {
		return err
	}
	prev, err := d.slotsMem.get(slot)
	if err != nil {
		return fmt.Errorf("read slot %d info: %w", slot, err)
	}
	var vals [MaxRules]enforcerRule
	for i, r := range rules {
		vals[i] = toBPFRule(r)
	}
	n := max(len(rules), int(d.slotRules[slot]))
	if err := d.rulesMem.put(slot*MaxRules, vals[:n]...); err != nil {
		return fmt.Errorf("put rules of slot %d: %w", slot, err)
	}
	base := slot * peerBuckets
	for w, stale := range d.slotBuckets[slot] {
		for stale &^= used[w]; stale != 0; stale &= stale - 1 {
			b := uint32(w*64 + bits.TrailingZeros64(stale))
			if err := d.peerMem.put(base+b, enforcerPeer{}); err != nil {
				return fmt.Errorf("clear peer bucket %d of slot %d: %w", b, slot, err)
			}
		}
	}
	for _, p := range placed {
		if err := d.peerMem.put(base+p.bucket, p.e); err != nil {
			return fmt.Errorf("put peers of slot %d: %w", slot, err)
		}
	}
	d.slotBuckets[slot], d.slotRules[slot] = used, uint8(len(rules))
	info := enforcerSlotInfo{AnyAllow: pl.anyAllow, Seed: seed, Nlens4: uint8(pl.n4), Nlens6: uint8(pl.n6), Epoch: prev.Epoch + 1}
	if pl.anyBlock {
		info.AnyBlock = 1
	}
	copy(info.Lens4[:], pl.lengths4())
	copy(info.Lens6[:], pl.lengths6())
	if err := d.slotsMem.put(slot, info); err != nil {
		return fmt.Errorf("put slot %d info: %w", slot, err)
	}
	return nil
}

// ClearSlot empties a slot's info (but for its counter epoch), peer table
// and rules. Call it only after no device entry points to the slot. rules
// are what the slot held; the whole slot is cleared whatever it held, so a
// slot half-written by a crashed enforcer is cleared too.
func (d *Datapath) ClearSlot(slot uint32, rules []Rule) (err error) {
	defer d.invalidated(&err)
	if slot >= d.slots {
		return fmt.Errorf("slot %d out of range", slot)
	}
	prev, err := d.slotsMem.get(slot)
	if err != nil {
		return fmt.Errorf("read slot %d info: %w", slot, err)
	}
	// The epoch stays: the next tenant's counters start after it.
	if err := d.slotsMem.put(slot, enforcerSlotInfo{Epoch: prev.Epoch}); err != nil {
		return fmt.Errorf("clear slot %d info: %w", slot, err)
	}
	if err := d.peerMem.put(slot*peerBuckets, make([]enforcerPeer, peerBuckets)...); err != nil {
		return fmt.Errorf("clear peers of slot %d: %w", slot, err)
	}
	if err := d.rulesMem.put(slot*MaxRules, make([]enforcerRule, MaxRules)...); err != nil {
		return fmt.Errorf("clear rules of slot %d: %w", slot, err)
	}
	d.slotBuckets[slot], d.slotRules[slot] = [2]uint64{}, 0
	return nil
}

// ReadSlot reads a slot's rules back (up to the first empty entry).
func (d *Datapath) ReadSlot(slot uint32) ([]Rule, error) {
	if slot >= d.slots {
		return nil, fmt.Errorf("slot %d out of range", slot)
	}
	vals, err := d.rulesMem.getN(slot*MaxRules, MaxRules)
	if err != nil {
		return nil, fmt.Errorf("read rules of slot %d: %w", slot, err)
	}
	var out []Rule
	for _, r := range vals {
		if Kind(r.Kind) == KindEmpty {
			break
		}
		out = append(out, fromBPFRule(r))
	}
	return out, nil
}

// UsedSlots returns every slot whose first rule entry is not empty, with
// its rules: what a crashed enforcer may have left behind.
func (d *Datapath) UsedSlots() (map[uint32][]Rule, error) {
	out := map[uint32][]Rule{}
	for slot := range d.slots {
		first, err := d.rulesMem.get(slot * MaxRules)
		if err != nil {
			return nil, fmt.Errorf("read rules of slot %d: %w", slot, err)
		}
		if Kind(first.Kind) == KindEmpty {
			continue
		}
		rules, err := d.ReadSlot(slot)
		if err != nil {
			return nil, err
		}
		if len(rules) > 0 {
			out[slot] = rules
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

// SetAppliedIndex persists the applied decision index (and keeps the
// policy generation).
func (d *Datapath) SetAppliedIndex(index uint64) error {
	d.metaMu.Lock()
	defer d.metaMu.Unlock()
	if err := d.metaMem.store(0, index); err != nil {
		return fmt.Errorf("put applied index: %w", err)
	}
	d.applied = index
	return nil
}

// SetInfra replaces the servers a quarantined device may still reach.
// IPv4 and IPv6 broadcast and all-DHCP-servers addresses are always DHCP.
func (d *Datapath) SetInfra(servers map[netip.Addr]uint32) (err error) {
	defer d.invalidated(&err)
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

// hitEpochShift splits a rule_hits cell: epoch << 48 | count.
const hitEpochShift = 48

// RuleHits returns the packets rule i of slot allowed, summed over CPUs:
// the cells of the slot's current counter epoch, those of earlier tenants
// of the slot left out.
func (d *Datapath) RuleHits(slot uint32, i int) (uint64, error) {
	info, err := d.slotsMem.get(slot)
	if err != nil {
		return 0, fmt.Errorf("read slot %d info: %w", slot, err)
	}
	var per []uint64
	if err := d.objs.RuleHits.Lookup(slot*MaxRules+uint32(i), &per); err != nil {
		return 0, fmt.Errorf("lookup rule hits: %w", err)
	}
	var n uint64
	for _, c := range per {
		if uint16(c>>hitEpochShift) == info.Epoch {
			n += c & (1<<hitEpochShift - 1)
		}
	}
	return n, nil
}

// CacheStats returns the verdict cache's hits and misses (cacheable
// packets that found another flow or an older generation in their slot),
// summed over CPUs. The program counts only its slow path, so a hit costs
// no counter of its own: hits are the IP packets counted in the verdicts
// minus those that took the slow path. Exact when no packets arrive during
// the read; under traffic, off by the packets in flight.
func (d *Datapath) CacheStats() (hits, misses uint64, err error) {
	var per []enforcerCacheStats
	if err := d.objs.CacheCounters.Lookup(uint32(0), &per); err != nil {
		return 0, 0, fmt.Errorf("lookup cache counters: %w", err)
	}
	var slow uint64
	for _, c := range per {
		slow += c.Slow
		misses += c.Misses
	}
	v, err := d.Verdicts()
	if err != nil {
		return 0, 0, err
	}
	var ip uint64
	for i, c := range v {
		if Verdict(i) != VerdictPassNonIP {
			ip += c.Packets
		}
	}
	if ip > slow {
		hits = ip - slow
	}
	return hits, misses, nil
}
