//go:build linux

package xdp

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket/layers"
	"github.com/medmesh/medmesh/internal/testutil"
	"golang.org/x/sys/unix"
)

const (
	benchDevices = 10000
	benchRepeat  = 2_000_000
)

func benchMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x00, 0x00, byte(i >> 16), byte(i >> 8), byte(i)}
}

// benchRules gives device i 64 rules. Typical devices have 64 distinct /32
// peers (one candidate rule per lookup). Worst-case devices have every rule
// under one /8 with a different port, so a packet to the last rule's port
// checks all 64 candidates.
func benchRules(i int, worst bool) []Rule {
	rules := make([]Rule, MaxRules)
	for r := range rules {
		if worst {
			rules[r] = Rule{Kind: KindAllow, Proto: 6, Dir: DirOutbound, Prefix: pfx("10.0.0.0/8"), PortMin: uint16(1000 + r), PortMax: uint16(1000 + r)}
			continue
		}
		a := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), byte(r)})
		if r%4 == 3 {
			a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, byte(i >> 8), byte(i), 0, byte(r)})
		}
		rules[r] = Rule{Kind: KindAllow, Proto: 6, Dir: DirOutbound, Prefix: netip.PrefixFrom(a, a.BitLen()), PortMin: 443, PortMax: 443}
	}
	return rules
}

func loadBench(b *testing.B) *Datapath {
	testutil.RequireRoot(b)
	cfg := DefaultConfig()
	cfg.MaxDevices = benchDevices
	d, err := Load(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	start := time.Now()
	for i := range benchDevices {
		if err := d.WriteSlot(uint32(i), benchRules(i, i == benchDevices-1)); err != nil {
			b.Fatal(err)
		}
		if err := d.SetDevice(benchMAC(i), DeviceEntry{Slot: uint32(i), Mode: ModeEnforce, NRules: MaxRules}); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("loaded %d devices x %d rules in %s", benchDevices, MaxRules, time.Since(start).Round(time.Millisecond))
	return d
}

// BenchmarkProgram compares the enforcer program, with 10,000 devices of
// 64 rules loaded, to a bare XDP_PASS program on the same packets, with
// BPF_PROG_TEST_RUN. Each sub-benchmark reports ns/pkt and its ratio to
// XDP_PASS. BPF_PROG_TEST_RUN repeats one packet, so after the first
// repetition every cacheable packet is a verdict-cache hit; the miss-*
// metrics run the same packet through enforce_miss, the same program with
// every cache lookup forced to miss (slow path plus cache fill). The
// miss-stream row runs a stream of distinct flows, four times as many as
// the cache has slots, one packet per BPF_PROG_TEST_RUN.
func BenchmarkProgram(b *testing.B) {
	d := loadBench(b)
	mid := benchDevices / 2
	tcp := layers.IPProtocolTCP
	t := &testing.T{}
	cases := []struct {
		name string
		p    pkt
		want uint32
	}{
		{"allowed-v4", pkt{src: benchMAC(mid), dst: fmt.Sprintf("10.%d.%d.40", mid>>8&0xff, mid&0xff), proto: tcp, sport: 40000, dport: 443}, xdpPass},
		{"allowed-v6", pkt{src: benchMAC(mid), v6: true, dst: fmt.Sprintf("2001:db8::%x:%x", mid>>8&0xff<<8|mid&0xff, 39), proto: tcp, sport: 40000, dport: 443}, xdpPass},
		{"denied-v4", pkt{src: benchMAC(mid), dst: "192.0.2.1", proto: tcp, sport: 40000, dport: 443}, xdpDrop},
		{"no-policy-device", pkt{src: net.HardwareAddr{0x02, 0xff, 0, 0, 0, 1}, dst: "192.0.2.1", proto: tcp, sport: 40000, dport: 443}, xdpPass},
		{"worst-64-candidates", pkt{src: benchMAC(benchDevices - 1), dst: "10.9.9.9", proto: tcp, sport: 40000, dport: 1063}, xdpPass},
	}
	// measure returns the kernel's time per run, which it reports in
	// whole nanoseconds (a 4.9 ns program reads 4), and the time per run
	// from this process's clock around the one BPF_PROG_TEST_RUN call, in
	// fractions of a nanosecond (the call's own cost, a few microseconds,
	// is ~0.002 ns per run; preemption by other work can only add).
	measure := func(prog *ebpf.Program, data []byte) (uint32, time.Duration, float64) {
		start := time.Now()
		ret, dur, err := prog.Benchmark(data, benchRepeat, nil)
		wall := float64(time.Since(start).Nanoseconds()) / benchRepeat
		if err != nil {
			b.Fatal(err)
		}
		return ret, dur, wall
	}
	for _, c := range cases {
		data := c.p.bytes(t)
		b.Run(c.name, func(b *testing.B) {
			// Interleaved, so both programs see the same machine load;
			// the median of the iterations is reported.
			var bases, enfs, misses []time.Duration
			var wallRatios []float64
			for b.Loop() {
				_, base, baseWall := measure(d.PassProgram(), data)
				ret, enf, enfWall := measure(d.Program(), data)
				if ret != c.want {
					b.Fatalf("verdict %d, want %d", ret, c.want)
				}
				ret, miss, _ := measure(d.MissProgram(), data)
				if ret != c.want {
					b.Fatalf("miss verdict %d, want %d", ret, c.want)
				}
				bases, enfs, misses = append(bases, base), append(enfs, enf), append(misses, miss)
				wallRatios = append(wallRatios, enfWall/baseWall)
			}
			base, enf, miss := median(bases), median(enfs), median(misses)
			b.ReportMetric(float64(base.Nanoseconds()), "pass-ns/pkt")
			b.ReportMetric(float64(enf.Nanoseconds()), "enforcer-ns/pkt")
			b.ReportMetric(float64(enf)/float64(base), "ratio")
			slices.Sort(wallRatios)
			b.ReportMetric(wallRatios[len(wallRatios)/2], "wall-ratio")
			b.ReportMetric(float64(miss.Nanoseconds()), "miss-ns/pkt")
			b.ReportMetric(float64(miss)/float64(base), "miss-ratio")
		})
	}
	b.Run("miss-stream", func(b *testing.B) { benchMissStream(b, d) })
}

// benchMissStream sends 4 x (cache slots) distinct allowed flows (device i
// mod 10,000 to one of its peers, a distinct source port each), twice in a
// row, one packet per BPF_PROG_TEST_RUN on one CPU, and reports the second
// round: nearly every packet misses the direct-mapped per-CPU cache. One
// repetition per run includes the kernel's timer overhead in both the
// enforcer's and XDP_PASS's figures; enforcer-minus-pass-ns is the
// enforcer's own cost. always-slow-ns runs the same stream through
// enforce_miss: every packet on the slow path, as without a cache.
func benchMissStream(b *testing.B, d *Datapath) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set unix.CPUSet
	set.Set(0)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		b.Fatalf("pin to cpu 0: %v", err)
	}
	flows := 4 * int(d.objs.Cache.MaxEntries())
	t := &testing.T{}
	pkts := make([][]byte, flows)
	for i := range pkts {
		dev := i % benchDevices
		if dev == benchDevices-1 {
			dev = 0 // the worst-case device has other rules
		}
		r := (i / benchDevices) % MaxRules
		if r%4 == 3 {
			r-- // IPv4 peers only
		}
		pkts[i] = pkt{src: benchMAC(dev), dst: fmt.Sprintf("10.%d.%d.%d", dev>>8&0xff, dev&0xff, r),
			proto: layers.IPProtocolTCP, sport: uint16(10000 + i/8), dport: 443}.bytes(t)
	}
	round := func(prog *ebpf.Program) time.Duration {
		var sum time.Duration
		for _, p := range pkts {
			ret, dur, err := prog.Benchmark(p, 1, nil)
			if err != nil {
				b.Fatal(err)
			}
			if ret != xdpPass {
				b.Fatalf("verdict %d, want pass", ret)
			}
			sum += dur
		}
		return sum / time.Duration(flows)
	}
	var bases, enfs, slows []time.Duration
	var hits, misses uint64
	for b.Loop() {
		bases = append(bases, round(d.PassProgram()))
		slows = append(slows, round(d.MissProgram()))
		round(d.Program())
		h0, m0, err := d.CacheStats()
		if err != nil {
			b.Fatal(err)
		}
		enfs = append(enfs, round(d.Program()))
		h1, m1, err := d.CacheStats()
		if err != nil {
			b.Fatal(err)
		}
		hits, misses = h1-h0, m1-m0
	}
	base, enf, slow := median(bases), median(enfs), median(slows)
	b.ReportMetric(float64(base.Nanoseconds()), "pass-ns/pkt")
	b.ReportMetric(float64(enf.Nanoseconds()), "enforcer-ns/pkt")
	b.ReportMetric(float64(enf)/float64(base), "ratio")
	b.ReportMetric(float64((enf - base).Nanoseconds()), "enforcer-minus-pass-ns")
	b.ReportMetric(float64(slow.Nanoseconds()), "always-slow-ns/pkt")
	b.ReportMetric(100*float64(hits)/float64(hits+misses), "hit-%")
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
