//go:build linux

package xdp

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket/layers"
	"github.com/medmesh/medmesh/internal/testutil"
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
// XDP_PASS.
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
	measure := func(prog *ebpf.Program, data []byte) (uint32, time.Duration) {
		ret, dur, err := prog.Benchmark(data, benchRepeat, nil)
		if err != nil {
			b.Fatal(err)
		}
		return ret, dur
	}
	for _, c := range cases {
		data := c.p.bytes(t)
		b.Run(c.name, func(b *testing.B) {
			var base, enf time.Duration
			for b.Loop() {
				_, base = measure(d.PassProgram(), data)
				var ret uint32
				ret, enf = measure(d.Program(), data)
				if ret != c.want {
					b.Fatalf("verdict %d, want %d", ret, c.want)
				}
			}
			b.ReportMetric(float64(base.Nanoseconds()), "pass-ns/pkt")
			b.ReportMetric(float64(enf.Nanoseconds()), "enforcer-ns/pkt")
			b.ReportMetric(float64(enf)/float64(base), "ratio")
		})
	}
}
