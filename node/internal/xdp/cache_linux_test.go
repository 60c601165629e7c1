package xdp

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/medmesh/medmesh/node/flow"
)

// cacheTraffic is a mix of packets exercising both the fast path (untagged
// IPv4 TCP/UDP after the samples) and the cache hits after the full parser
// (VLAN tags, IPv6), with payloads, TCP flags and both directions.
func cacheTraffic() [][]byte {
	var fr [][]byte
	pl := make([]byte, 300)
	for i := range 12 {
		fr = append(fr,
			v4frame(macA, macB, ipv4("10.0.0.1", "10.0.0.2", 6, tcpSeg(40000, 443, 0x18, pl[:10*i]), v4opts{})),
			v4frame(macB, macA, ipv4("10.0.0.2", "10.0.0.1", 6, tcpSeg(443, 40000, 0x10, nil), v4opts{})),
			v4frame(macA, macB, ipv4("10.0.0.1", "10.0.0.3", 17, udpDgram(5000, 2575, pl[:i]), v4opts{})),
			v4frame(macA, macB, ipv4("10.0.0.1", "10.0.0.4", 6, tcpSeg(40001, 104, 0x18, pl[:i]), v4opts{}), [2]uint16{0x8100, 30}),
			v6frame(macA, macB, ipv6("fd00::1", "fd00::2", 6, tcpSeg(40002, 2575, 0x18, pl[:i]))),
			v6frame(macB, macA, ipv6("fd00::2", "fd00::1", 6, tcpSeg(2575, 40002, 0x10, nil))),
		)
	}
	fr = append(fr, v4frame(macA, macB, ipv4("10.0.0.1", "10.0.0.2", 6, tcpSeg(40000, 443, 0x11, nil), v4opts{})))
	return fr
}

func loadCfg(t *testing.T, noCache bool) *harness {
	t.Helper()
	h := newHarness(t, false)
	if !noCache {
		if on, why := h.d.FlowCache(); !on {
			t.Skipf("flow cache off here: %s", why)
		}
		return h
	}
	// A second datapath with the cache off, driven by the same harness code.
	cfg := DefaultConfig()
	cfg.FlowEntries = 1024
	cfg.RingBytes = 1 << 20
	cfg.NoFlowCache = true
	d, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := d.NewReader()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close(); d.Close() })
	if on, _ := d.FlowCache(); on {
		t.Fatal("NoFlowCache: cache still on")
	}
	h.d, h.rd = d, rd
	return h
}

// The cache changes where packets are counted, never what is counted:
// records, statistics and events equal those of the table alone.
func TestFlowCacheMatchesTable(t *testing.T) {
	cached, plain := loadCfg(t, false), loadCfg(t, true)
	for _, f := range cacheTraffic() {
		cached.run(f)
		plain.run(f)
	}
	got, want := cached.flows(), plain.flows()
	if len(got) != len(want) || len(want) != 4 {
		t.Fatalf("%d flows with the cache, %d without, want 4", len(got), len(want))
	}
	for k, w := range want {
		g := got[k]
		if g != w {
			t.Errorf("flow %s:\n cached %+v\n  table %+v", k, g, w)
		}
	}
	cs, ps := cached.stats(), plain.stats()
	if cs.CacheHits == 0 {
		t.Error("no cache hits: the fast path never ran")
	}
	if ps.CacheHits != 0 {
		t.Errorf("cache off, %d hits", ps.CacheHits)
	}
	if cs.Packets != ps.Packets || cs.Bytes != ps.Bytes || cs.IPPackets != ps.IPPackets || cs.L3Bytes != ps.L3Bytes ||
		cs.FlowsCreated != ps.FlowsCreated || cs.Samples != ps.Samples || cs.RingEvents != ps.RingEvents {
		t.Errorf("stats differ:\n cached %+v\n  table %+v", cs, ps)
	}
	if len(cached.events) != len(plain.events) {
		t.Fatalf("%d events with the cache, %d without", len(cached.events), len(plain.events))
	}
	for i := range plain.events {
		a, b := cached.events[i], plain.events[i]
		if a.Kind != b.Kind || a.Sample.Index != b.Sample.Index || a.Sample.Flow != b.Sample.Flow {
			t.Errorf("event %d: cached %v %v #%d, table %v %v #%d", i, a.Kind, a.Sample.Flow, a.Sample.Index, b.Kind, b.Sample.Flow, b.Sample.Index)
		}
	}
	t.Logf("%d packets, %d counted from the cache", cs.Packets, cs.CacheHits)
}

// onCPU runs fn with the calling thread pinned to cpu.
func onCPU(t *testing.T, cpu int, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var orig, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		t.Fatal(err)
	}
	one.Set(cpu)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatalf("pin to CPU %d: %v", cpu, err)
	}
	defer unix.SchedSetaffinity(0, &orig)
	fn()
}

// One flow counted on several CPUs at once (both directions landing on
// different queues) sums exactly: each CPU has its own slot, and Flush
// empties every CPU's.
func TestFlowCacheAcrossCPUs(t *testing.T) {
	cpus, err := onlineCPUs()
	if err != nil || len(cpus) < 2 {
		t.Skipf("needs two online CPUs (%v, %v)", cpus, err)
	}
	h := loadCfg(t, false)
	fwd := v4frame(macA, macB, ipv4("10.1.0.1", "10.1.0.2", 6, tcpSeg(50000, 2575, 0x10, nil), v4opts{}))
	rev := v4frame(macB, macA, ipv4("10.1.0.2", "10.1.0.1", 6, tcpSeg(2575, 50000, 0x10, nil), v4opts{}))
	h.run(fwd)
	const rounds = 50
	for i := range rounds {
		for j, cpu := range cpus[:2] {
			onCPU(t, cpu, func() {
				f := fwd
				if (i+j)%2 == 1 {
					f = rev
				}
				// Several packets per visit so each CPU's slot fills and
				// hits. One run per call: a Benchmark with repeats is
				// restarted whole when a signal interrupts it.
				for range 7 {
					if _, err := h.d.Program().Run(&ebpf.RunOptions{Data: f}); err != nil {
						t.Fatal(err)
					}
				}
			})
		}
	}
	got := h.flows()
	r, ok := got["6 10.1.0.1:50000>10.1.0.2:2575 v0"]
	if !ok {
		t.Fatalf("flow missing: %v", got)
	}
	// 1 + rounds*2 visits of 7 packets, half of the visits each way.
	wantFwd, wantRev := uint64(1+rounds*7), uint64(rounds*7)
	if r.FwdPackets != wantFwd || r.RevPackets != wantRev || r.FwdBytes != wantFwd*40 || r.RevBytes != wantRev*40 {
		t.Errorf("fwd %d/%d rev %d/%d, want %d/%d %d/%d", r.FwdPackets, r.FwdBytes, r.RevPackets, r.RevBytes,
			wantFwd, wantFwd*40, wantRev, wantRev*40)
	}
	if s := h.stats(); s.Packets != wantFwd+wantRev || s.CacheHits == 0 {
		t.Errorf("stats: %d packets (%d cache hits), want %d", s.Packets, s.CacheHits, wantFwd+wantRev)
	}
}

// A flow taken by the exporter while packets are still counted in a slot
// comes back as a new record holding exactly those packets, with a flow
// start, as it would without the cache.
func TestFlowCacheOrphan(t *testing.T) {
	h := loadCfg(t, false)
	// On one CPU, so the packets after the take find the slot the first
	// ones filled (Flush pins and unpins its own thread).
	cpus, err := onlineCPUs()
	if err != nil {
		t.Fatal(err)
	}
	onCPU(t, cpus[0], func() { orphanOnOneCPU(t, h) })
}

func orphanOnOneCPU(t *testing.T, h *harness) {
	f := v4frame(macA, macB, ipv4("10.2.0.1", "10.2.0.2", 17, udpDgram(6000, 2575, nil), v4opts{}))
	for range 5 {
		h.run(f)
	}
	var key FlowKey
	if err := h.d.ForEachFlow(func(k FlowKey, _ *flow.Record) bool { key = k; return false }); err != nil {
		t.Fatal(err)
	}
	r, ok, err := h.d.TakeFlow(key)
	if err != nil || !ok || r.FwdPackets != 5 {
		t.Fatalf("take: %+v %v %v", r, ok, err)
	}
	h.events = nil
	for range 3 { // the slot still names the flow: counted from the cache
		h.run(f)
	}
	if len(h.events) != 0 {
		t.Fatalf("events before the flush: %v", h.kinds())
	}
	got := h.flows()
	n, ok := got["17 10.2.0.1:6000>10.2.0.2:2575 v0"]
	if !ok || n.FwdPackets != 3 || n.FwdBytes != 3*28 || n.RevPackets != 0 {
		t.Fatalf("re-created flow %+v (present %v), want 3 packets", n, ok)
	}
	if n.SrcMAC != flow.MAC(macA) || n.DstMAC != flow.MAC(macB) || n.FirstNs == 0 || n.LastNs < n.FirstNs {
		t.Errorf("re-created flow %+v", n)
	}
	s := h.stats()
	if s.CacheOrphans != 1 || s.FlowsCreated != 2 {
		t.Errorf("orphans %d flows created %d, want 1 and 2", s.CacheOrphans, s.FlowsCreated)
	}
	var ev Event
	if err := h.rd.Read(time.Unix(1, 0), &ev); err != nil || ev.Kind != EventFlowStart || ev.Start.SrcPort != 6000 {
		t.Errorf("flow start of the re-created flow: %+v %v", ev, err)
	}
}

// slotOf mirrors slot_of in sensor.c.
func slotOf(k *sensorFlowKey) uint32 {
	var b [40]byte
	copy(b[0:], k.AddrA[:])
	copy(b[16:], k.AddrB[:])
	binary.LittleEndian.PutUint16(b[32:], k.PortA)
	binary.LittleEndian.PutUint16(b[34:], k.PortB)
	binary.LittleEndian.PutUint16(b[36:], k.Vlan)
	b[38], b[39] = k.Proto, k.Family
	w := func(i int) uint32 { return binary.LittleEndian.Uint32(b[4*i:]) }
	x := w(4) ^ w(7)
	h := w(0) ^ w(3) ^ (x<<16 | x>>16) ^ w(8) ^ (w(9) << 7)
	return (h * 0x9e3779b1) >> (32 - 12)
}

// Two flows sharing one slot take it from each other; every packet still
// counts once, in its own flow.
func TestFlowCacheCollision(t *testing.T) {
	h := loadCfg(t, false)
	tup := func(sport uint16) flow.Tuple {
		return flow.Tuple{Src: netip.MustParseAddr("10.3.0.1"), Dst: netip.MustParseAddr("10.3.0.2"), SrcPort: sport, DstPort: 443, Proto: 6}
	}
	k0, _ := keyOf(tup(30000))
	other := uint16(0)
	for p := uint16(30001); p < 65000; p++ {
		k, _ := keyOf(tup(p))
		if slotOf(&k) == slotOf(&k0) {
			other = p
			break
		}
	}
	if other == 0 {
		t.Fatal("no colliding port found")
	}
	a := v4frame(macA, macB, ipv4("10.3.0.1", "10.3.0.2", 6, tcpSeg(30000, 443, 0x10, nil), v4opts{}))
	b := v4frame(macA, macB, ipv4("10.3.0.1", "10.3.0.2", 6, tcpSeg(other, 443, 0x10, nil), v4opts{}))
	rng := rand.New(rand.NewPCG(1, 2))
	var na, nb uint64
	for range 400 {
		if rng.IntN(3) == 0 {
			h.run(a)
			na++
		} else {
			h.run(b)
			nb++
		}
	}
	got := h.flows()
	ra, rb := got[tupleString(tup(30000))], got[tupleString(tup(other))]
	if ra.FwdPackets != na || rb.FwdPackets != nb {
		t.Errorf("flows %d and %d packets, want %d and %d", ra.FwdPackets, rb.FwdPackets, na, nb)
	}
	if s := h.stats(); s.CacheHits == 0 || s.Packets != na+nb {
		t.Errorf("stats %+v", s)
	}
}

// The fast path's own key and slot arithmetic must agree with the full
// path's, or it would never find a slot the full path filled; untagged and
// 802.1Q-tagged.
func TestFastPathFindsSlots(t *testing.T) {
	h := loadCfg(t, false)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 64 {
		s := [4]byte{10, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}
		d := [4]byte{172, 16, byte(rng.IntN(256)), byte(rng.IntN(256))}
		sp, dp := uint16(rng.IntN(65535)+1), uint16(rng.IntN(65535)+1)
		ip := ipv4("0.0.0.0", "0.0.0.0", 6, tcpSeg(sp, dp, 0x10, nil), v4opts{})
		copy(ip[12:16], s[:])
		copy(ip[16:20], d[:])
		f := v4frame(macA, macB, ip)
		if rng.IntN(2) == 0 { // a mirrored trunk: one 802.1Q tag
			f = v4frame(macA, macB, ip, [2]uint16{0x8100, uint16(1 + rng.IntN(4094))})
		}
		before := h.stats().CacheHits
		h.run(f) // fills the slot (full path)
		h.run(f) // must be a fast-path hit
		if h.stats().CacheHits != before+1 {
			t.Fatalf("%v:%d > %v:%d: second packet not counted from the cache", s, sp, d, dp)
		}
	}
}

// Turned off at run time (Flush could not reach a CPU), the cache stops
// taking packets; what its slots held is still flushed, and every packet
// is counted once.
func TestFlowCacheTurnedOff(t *testing.T) {
	h := loadCfg(t, false)
	cpus, err := onlineCPUs()
	if err != nil {
		t.Fatal(err)
	}
	f := v4frame(macA, macB, ipv4("10.4.0.1", "10.4.0.2", 6, tcpSeg(7000, 443, 0x10, nil), v4opts{}))
	onCPU(t, cpus[0], func() {
		for range 10 {
			h.run(f)
		}
		if err := h.d.turnCacheOff("test"); err != nil {
			t.Fatal(err)
		}
		for range 10 {
			h.run(f)
		}
	})
	if on, why := h.d.FlowCache(); on || why != "test" {
		t.Errorf("FlowCache() = %v, %q", on, why)
	}
	r := h.flows()[tupleString(flow.Tuple{Src: netip.MustParseAddr("10.4.0.1"), Dst: netip.MustParseAddr("10.4.0.2"), SrcPort: 7000, DstPort: 443, Proto: 6})]
	if r.FwdPackets != 20 {
		t.Errorf("%d packets, want 20", r.FwdPackets)
	}
	if s := h.stats(); s.CacheHits != 9 || s.Packets != 20 {
		t.Errorf("cache hits %d, packets %d: want 9 and 20", s.CacheHits, s.Packets)
	}
}
