package xdp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/medmesh/medmesh/node/flow"
)

// Datapath is a loaded sensor program with its maps. Methods are safe for
// concurrent use.
type Datapath struct {
	cfg   Config
	objs  sensorObjects
	links []link.Link

	cacheOff string     // why the flow cache is off from load; "" when on
	flushMu  sync.Mutex // one Flush at a time: it pins its thread
	flushIn  []byte

	mu          sync.Mutex
	cacheBroken string // why the cache was turned off after load
	monoToWall  int64  // wall - monotonic, ns; 0 under a capture clock
	devices     map[flow.MAC]*device
	nextDevice  uint32
}

type device struct {
	id   uint32
	keys []sensorBlKey
}

// Probe checks the kernel features the program needs and says which is
// missing.
func Probe() error {
	for _, mt := range []ebpf.MapType{ebpf.RingBuf, ebpf.LRUHash, ebpf.LPMTrie, ebpf.PerCPUArray} {
		if err := features.HaveMapType(mt); err != nil {
			return fmt.Errorf("kernel feature %v: %w", mt, err)
		}
	}
	if err := features.HaveProgramType(ebpf.XDP); err != nil {
		return fmt.Errorf("kernel feature xdp programs: %w", err)
	}
	for _, h := range []struct {
		fn   asm.BuiltinFunc
		name string
	}{{asm.FnXdpLoadBytes, "bpf_xdp_load_bytes"}, {asm.FnRingbufQuery, "bpf_ringbuf_query"}} {
		if err := features.HaveProgramHelper(ebpf.XDP, h.fn); err != nil {
			return fmt.Errorf("kernel feature helper %s: %w", h.name, err)
		}
	}
	return nil
}

// Load loads the program and a fresh set of maps into the kernel.
func Load(cfg Config) (*Datapath, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("load sensor: %w", err)
	}
	if err := Probe(); err != nil {
		return nil, fmt.Errorf("load sensor: %w", err)
	}
	spec, err := loadSensor()
	if err != nil {
		return nil, fmt.Errorf("load sensor spec: %w", err)
	}
	spec.Maps[sensorMapFlows].MaxEntries = cfg.FlowEntries
	spec.Maps[sensorMapEvents].MaxEntries = cfg.RingBytes
	if err := spec.Variables[sensorVarTapMode].Set(boolByte(cfg.Tap)); err != nil {
		return nil, fmt.Errorf("load sensor: set tap mode: %w", err)
	}
	d := &Datapath{cfg: cfg, devices: make(map[flow.MAC]*device), nextDevice: 1, flushIn: make([]byte, 64)}
	d.cacheOff = flowCacheOff(cfg)
	if d.cacheOff != "" {
		if err := spec.Variables[sensorVarCacheGen].Set(uint32(0)); err != nil {
			return nil, fmt.Errorf("load sensor: turn the flow cache off: %w", err)
		}
	}
	var opts ebpf.CollectionOptions
	if err := spec.LoadAndAssign(&d.objs, &opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			if cfg.Debug {
				return nil, fmt.Errorf("load sensor: %+v", ve)
			}
			return nil, fmt.Errorf("load sensor (run with --debug for the verifier log): %v", ve)
		}
		return nil, fmt.Errorf("load sensor: %w", err)
	}
	d.monoToWall = time.Now().UnixNano() - monotonicNs()
	return d, nil
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func monotonicNs() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// flowCacheOff says why the per-CPU flow cache cannot be used, or "".
func flowCacheOff(cfg Config) string {
	if cfg.NoFlowCache {
		return "turned off by configuration"
	}
	online, err := onlineCPUs()
	if err != nil {
		return fmt.Sprintf("online CPUs unknown (%v)", err)
	}
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return fmt.Sprintf("CPU affinity unknown (%v)", err)
	}
	for _, cpu := range online {
		if !allowed.IsSet(cpu) {
			return fmt.Sprintf("this process may not run on CPU %d, so it could not flush that CPU's slots", cpu)
		}
	}
	return ""
}

// onlineCPUs parses /sys/devices/system/cpu/online ("0-3,8").
func onlineCPUs() ([]int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return nil, err
	}
	var cpus []int
	for part := range strings.SplitSeq(strings.TrimSpace(string(b)), ",") {
		lo, hi, found := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("parse online CPUs %q: %w", b, err)
		}
		z := a
		if found {
			if z, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("parse online CPUs %q: %w", b, err)
			}
		}
		for c := a; c <= z; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

// FlowCache reports whether the per-CPU flow cache is on, and if not, why.
func (d *Datapath) FlowCache() (on bool, why string) {
	if d.cacheOff != "" {
		return false, d.cacheOff
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cacheBroken == "", d.cacheBroken
}

// Flush moves the counts pending in every CPU's flow-cache slots into the
// flow table, so that the table alone is exact. It runs the flush_cache
// program once on each online CPU, pinning the calling thread in turn
// (BPF_PROG_TEST_RUN runs a program on the caller's CPU, with bottom halves
// disabled, so it cannot interleave with the XDP program on that CPU).
// ForEachFlow calls it first.
func (d *Datapath) Flush() error {
	if d.cacheOff != "" {
		return nil // off from the start: no slot was ever filled
	}
	cpus, err := onlineCPUs()
	if err != nil {
		return fmt.Errorf("flush flow cache: %w", err)
	}
	d.flushMu.Lock()
	defer d.flushMu.Unlock()
	runtime.LockOSThread()
	var orig unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("flush flow cache: %w", err)
	}
	var errs []error
	for _, cpu := range cpus {
		var one unix.CPUSet
		one.Set(cpu)
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			// The process may no longer run there (its affinity changed):
			// that CPU's slots cannot be emptied. Stop filling slots
			// anywhere; its pending counts stay until it is reachable.
			errs = append(errs, fmt.Errorf("flush flow cache: pin to CPU %d: %w", cpu, err),
				d.turnCacheOff(fmt.Sprintf("cannot run on CPU %d to flush its slots", cpu)))
			continue
		}
		if _, err := d.objs.FlushCache.Run(&ebpf.RunOptions{Data: d.flushIn}); err != nil {
			errs = append(errs, fmt.Errorf("flush flow cache on CPU %d: %w", cpu, err))
		}
	}
	if err := unix.SchedSetaffinity(0, &orig); err != nil {
		// Leave the thread locked: the runtime must not reuse a thread
		// pinned to one CPU.
		return errors.Join(append(errs, fmt.Errorf("flush flow cache: restore affinity: %w", err))...)
	}
	runtime.UnlockOSThread()
	return errors.Join(errs...)
}

// turnCacheOff stops the program from filling or using cache slots; what
// they hold is still flushed by Flush.
func (d *Datapath) turnCacheOff(why string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cacheBroken != "" {
		return nil
	}
	d.cacheBroken = why
	if err := d.objs.CacheGen.Set(uint32(0)); err != nil {
		return fmt.Errorf("turn flow cache off: %w", err)
	}
	return nil
}

// bumpCacheGen makes every flow-cache slot stale: the next packet of each
// cached flow takes the slow path once and re-reads its sample budget.
func (d *Datapath) bumpCacheGen() error {
	if d.cacheOff != "" {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cacheBroken != "" {
		return nil
	}
	var g uint32
	if err := d.objs.CacheGen.Get(&g); err != nil {
		return fmt.Errorf("bump flow cache generation: %w", err)
	}
	g++
	if g == 0 {
		g = 1
	}
	if err := d.objs.CacheGen.Set(g); err != nil {
		return fmt.Errorf("bump flow cache generation: %w", err)
	}
	return nil
}

// Program is the loaded XDP program (for BPF_PROG_TEST_RUN).
func (d *Datapath) Program() *ebpf.Program { return d.objs.Sensor }

// Tap reports whether the program drops frames after accounting.
func (d *Datapath) Tap() bool { return d.cfg.Tap }

// FlowCapacity is the flow table's size.
func (d *Datapath) FlowCapacity() uint32 { return d.cfg.FlowEntries }

// Attach attaches the program to iface (in the calling thread's network
// namespace) in native mode, or in generic mode when the driver has no
// native XDP or forceGeneric is set. It returns the mode in use. One
// datapath may be attached to several interfaces; they share its maps.
func (d *Datapath) Attach(iface string, forceGeneric bool) (AttachMode, error) {
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return "", fmt.Errorf("attach xdp to %s: %w", iface, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var nativeErr error
	if !forceGeneric {
		l, err := link.AttachXDP(link.XDPOptions{Program: d.objs.Sensor, Interface: ifc.Index, Flags: link.XDPDriverMode})
		if err == nil {
			d.links = append(d.links, l)
			return ModeNative, nil
		}
		nativeErr = err
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: d.objs.Sensor, Interface: ifc.Index, Flags: link.XDPGenericMode})
	if err != nil {
		return "", fmt.Errorf("attach xdp to %s: %w", iface, errors.Join(nativeErr, err))
	}
	d.links = append(d.links, l)
	return ModeGeneric, nil
}

// Detach removes the program from every interface it is attached to.
func (d *Datapath) Detach() error {
	d.mu.Lock()
	links := d.links
	d.links = nil
	d.mu.Unlock()
	var errs []error
	for _, l := range links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach xdp: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Close detaches the program and releases the program and its maps.
func (d *Datapath) Close() error {
	return errors.Join(d.Detach(), d.objs.Close())
}

// SetClock makes the program use ns (Unix ns, e.g. a capture timestamp) as
// its clock instead of the kernel's monotonic clock; records then carry
// those times unchanged. ns must not be 0.
func (d *Datapath) SetClock(ns int64) error {
	if ns <= 0 {
		return fmt.Errorf("set clock: %d is not a positive time", ns)
	}
	d.mu.Lock()
	d.monoToWall = 0
	d.mu.Unlock()
	if err := d.objs.ClockOverrideNs.Set(uint64(ns)); err != nil {
		return fmt.Errorf("set clock: %w", err)
	}
	return nil
}

// Wall converts a program time to Unix ns.
func (d *Datapath) Wall(ns uint64) int64 {
	d.mu.Lock()
	off := d.monoToWall
	d.mu.Unlock()
	return int64(ns) + off
}

// Now is the program's clock now, in Unix ns (the capture clock when set).
func (d *Datapath) Now() int64 {
	var c uint64
	if err := d.objs.ClockOverrideNs.Get(&c); err == nil && c != 0 {
		return int64(c)
	}
	return time.Now().UnixNano()
}

// Stats flushes the flow cache (whose slots hold the fast path's counts)
// and reads the program's counters, summed over CPUs.
func (d *Datapath) Stats() (Stats, error) {
	if err := d.Flush(); err != nil {
		return Stats{}, err
	}
	var per []sensorCounters
	if err := d.objs.Stats.Lookup(uint32(0), &per); err != nil {
		return Stats{}, fmt.Errorf("read stats: %w", err)
	}
	var sum [32]uint64
	for i := range per {
		for j, v := range per[i].C {
			sum[j] += v
		}
	}
	return statsFrom(&sum), nil
}

// NonIP reads the per-source-MAC counts of non-IP frames.
func (d *Datapath) NonIP() (map[flow.MAC]NonIPCount, error) {
	out := make(map[flow.MAC]NonIPCount)
	var k sensorMacKey
	var v sensorNonipVal
	it := d.objs.Nonip.Iterate()
	for it.Next(&k, &v) {
		out[flow.MAC(k.Mac)] = NonIPCount{Packets: v.Packets, Bytes: v.Bytes, LastEtherType: uint16(v.LastEthertype)}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read non-ip counts: %w", err)
	}
	return out, nil
}

// ForEachFlow flushes the flow cache, then calls fn with every flow in the
// table (a snapshot per entry, without removing it) until fn returns false.
func (d *Datapath) ForEachFlow(fn func(FlowKey, *flow.Record) bool) error {
	if err := d.Flush(); err != nil {
		return err
	}
	var k sensorFlowKey
	var v sensorFlowVal
	it := d.objs.Flows.Iterate()
	for it.Next(&k, &v) {
		r := recordOf(&k, &v, d.Wall)
		if !fn(FlowKey{k}, &r) {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate flows: %w", err)
	}
	return nil
}

// TakeFlow reads and deletes one flow in one step (a packet arriving after
// it starts a new flow), and forgets the flow's sample budget. ok is false
// when the flow is gone.
func (d *Datapath) TakeFlow(key FlowKey) (rec flow.Record, ok bool, err error) {
	var v sensorFlowVal
	if err := d.objs.Flows.LookupAndDelete(&key.k, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return flow.Record{}, false, nil
		}
		return flow.Record{}, false, fmt.Errorf("take flow: %w", err)
	}
	if err := d.objs.SampleExt.Delete(&key.k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return flow.Record{}, false, fmt.Errorf("take flow: forget sample budget: %w", err)
	}
	return recordOf(&key.k, &v, d.Wall), true, nil
}

// ExtendSamples raises the per-direction payload-sample limit of flow t
// (initiator-oriented) to perDir, at most flow.MaxSamples.
func (d *Datapath) ExtendSamples(t flow.Tuple, perDir uint8) error {
	k, err := keyOf(t)
	if err != nil {
		return fmt.Errorf("extend samples: %w", err)
	}
	n := uint32(min(perDir, flow.MaxSamples))
	if err := d.objs.SampleExt.Put(&k, n); err != nil {
		return fmt.Errorf("extend samples: %w", err)
	}
	// A cached flow would not look at its new budget until its slot is
	// refilled.
	return d.bumpCacheGen()
}

var _ flow.SampleBudget = (*Datapath)(nil)

// SetBaseline installs (or replaces) the baseline of the device with MAC
// mac: its new flows are marked in or out of baseline, and out-of-baseline
// flows raise a BaselineMiss event. An empty rule set allows nothing.
func (d *Datapath) SetBaseline(mac flow.MAC, rules []BaselineRule) error {
	entries, err := foldRules(rules)
	if err != nil {
		return fmt.Errorf("set baseline of %s: %w", mac, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	dev := d.devices[mac]
	if dev == nil {
		dev = &device{id: d.nextDevice}
		d.nextDevice++
	}
	keys := make([]sensorBlKey, 0, len(entries))
	for _, e := range entries {
		k := sensorBlKey{Prefixlen: 32 + uint32(e.bits), Device: dev.id, Addr: e.addr}
		if err := d.objs.BaselineRules.Put(&k, &e.val); err != nil {
			return fmt.Errorf("set baseline of %s: %w", mac, err)
		}
		keys = append(keys, k)
	}
	for _, old := range dev.keys {
		if !slices.Contains(keys, old) {
			if err := d.objs.BaselineRules.Delete(&old); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("set baseline of %s: %w", mac, err)
			}
		}
	}
	dev.keys = keys
	if err := d.objs.BaselineDevs.Put(&sensorMacKey{Mac: mac}, dev.id); err != nil {
		return fmt.Errorf("set baseline of %s: %w", mac, err)
	}
	d.devices[mac] = dev
	return d.setDeviceCount()
}

// ClearBaseline removes the baseline of the device with MAC mac.
func (d *Datapath) ClearBaseline(mac flow.MAC) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	dev := d.devices[mac]
	if dev == nil {
		return nil
	}
	if err := d.objs.BaselineDevs.Delete(&sensorMacKey{Mac: mac}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("clear baseline of %s: %w", mac, err)
	}
	delete(d.devices, mac)
	var errs []error
	for _, k := range dev.keys {
		if err := d.objs.BaselineRules.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, d.setDeviceCount())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clear baseline of %s: %w", mac, err)
	}
	return nil
}

func (d *Datapath) setDeviceCount() error {
	if err := d.objs.BaselineDevices.Set(uint32(len(d.devices))); err != nil {
		return fmt.Errorf("set baseline device count: %w", err)
	}
	return nil
}

// Reader reads events from the ring buffer.
type Reader struct {
	d   *Datapath
	rd  *ringbuf.Reader
	rec ringbuf.Record
}

// NewReader opens a reader on the program's ring buffer.
func (d *Datapath) NewReader() (*Reader, error) {
	rd, err := ringbuf.NewReader(d.objs.Events)
	if err != nil {
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	return &Reader{d: d, rd: rd}, nil
}

// Read waits until deadline (zero: forever; past: only what is buffered)
// for the next event and decodes it into ev. The program wakes readers in
// batches, so a reader should use a deadline to pick up stragglers.
// Payload slices in ev are valid until the next Read.
func (r *Reader) Read(deadline time.Time, ev *Event) error {
	r.rd.SetDeadline(deadline)
	if err := r.rd.ReadInto(&r.rec); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return ErrNoEvent
		}
		return fmt.Errorf("read ring buffer: %w", err)
	}
	return DecodeEvent(r.rec.RawSample, r.d.Wall, ev)
}

// Close closes the reader; a blocked Read returns an error.
func (r *Reader) Close() error { return r.rd.Close() }
