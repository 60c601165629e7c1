//go:build linux

package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/medmesh/medmesh/internal/testutil"
	"golang.org/x/sys/unix"
)

const (
	xdpDrop = 1
	xdpPass = 2
)

var (
	devMAC   = net.HardwareAddr{0x00, 0x1b, 0x44, 0x11, 0x3a, 0xb7}
	otherMAC = net.HardwareAddr{0x00, 0x1b, 0x44, 0x11, 0x3a, 0xb8}
	gwMAC    = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
)

type pkt struct {
	src      net.HardwareAddr
	v6       bool
	dst      string
	proto    layers.IPProtocol
	sport    uint16
	dport    uint16
	icmpType uint8
	vlan     bool
	fragOff  uint16 // IPv4 fragment offset in 8-byte units
	moreFrag bool   // IPv4 more-fragments flag
}

func (p pkt) bytes(t *testing.T) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: p.src, DstMAC: gwMAC, EthernetType: layers.EthernetTypeIPv4}
	var ls []gopacket.SerializableLayer
	if p.vlan {
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, eth, &layers.Dot1Q{VLANIdentifier: 42, Type: layers.EthernetTypeIPv4})
	} else {
		ls = append(ls, eth)
	}
	var nl gopacket.NetworkLayer
	if p.v6 {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: p.proto, SrcIP: net.ParseIP("2001:db8:1::10"), DstIP: net.ParseIP(p.dst)}
		if p.vlan {
			ls[1].(*layers.Dot1Q).Type = layers.EthernetTypeIPv6
		} else {
			eth.EthernetType = layers.EthernetTypeIPv6
		}
		ls = append(ls, ip)
		nl = ip
	} else {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: p.proto, SrcIP: net.ParseIP("10.1.0.10").To4(), DstIP: net.ParseIP(p.dst).To4(), FragOffset: p.fragOff}
		if p.moreFrag {
			ip.Flags = layers.IPv4MoreFragments
		}
		ls = append(ls, ip)
		nl = ip
	}
	switch p.proto {
	case layers.IPProtocolTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(p.sport), DstPort: layers.TCPPort(p.dport), SYN: true, Window: 1024}
		tcp.SetNetworkLayerForChecksum(nl)
		ls = append(ls, tcp)
	case layers.IPProtocolUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.sport), DstPort: layers.UDPPort(p.dport)}
		udp.SetNetworkLayerForChecksum(nl)
		ls = append(ls, udp)
	case layers.IPProtocolICMPv6:
		ls = append(ls, gopacket.Payload([]byte{p.icmpType, 0, 0, 0, 0, 0, 0, 0}))
	case layers.IPProtocolICMPv4:
		ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)})
	}
	ls = append(ls, gopacket.Payload(make([]byte, 18)))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return buf.Bytes()
}

func run(t *testing.T, prog *ebpf.Program, data []byte) uint32 {
	t.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{Data: data})
	if err != nil {
		t.Fatalf("prog run: %v", err)
	}
	return ret
}

func loadTest(t *testing.T, maxDevices int) *Datapath {
	t.Helper()
	testutil.RequireRoot(t)
	cfg := DefaultConfig()
	cfg.MaxDevices = maxDevices
	d, err := Load(cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func testRules() []Rule {
	return []Rule{
		{Kind: KindAllow, Proto: 6, Dir: DirOutbound, Prefix: pfx("10.2.0.0/16"), PortMin: 443, PortMax: 443},
		{Kind: KindAllow, Proto: 17, Dir: DirOutbound, Prefix: pfx("10.2.3.0/24"), PortMin: 53, PortMax: 53},
		{Kind: KindAllow, Proto: 6, Dir: DirInbound, Prefix: pfx("10.9.0.0/16"), PortMin: 2575, PortMax: 2575},
		{Kind: KindAllow, Proto: 6, Dir: DirOutbound, Prefix: pfx("2001:db8:2::/48"), PortMin: 104, PortMax: 104},
		{Kind: KindAllow, Proto: 17, Dir: DirOutbound, PortMin: 123, PortMax: 123}, // NTP to any peer
		{Kind: KindAllow, Proto: 1, Prefix: pfx("10.2.0.1/32")},
		{Kind: KindBlock, Prefix: pfx("10.2.66.0/24")},
	}
}

func TestVerdicts(t *testing.T) {
	d := loadTest(t, 64)
	install(t, d, devMAC, DeviceEntry{Slot: 3, Mode: ModeEnforce, NRules: 7}, testRules())
	tcp, udp := layers.IPProtocolTCP, layers.IPProtocolUDP
	cases := []struct {
		name    string
		p       pkt
		want    uint32
		verdict Verdict
		rule    int // rule index expected to count the hit, -1 none
	}{
		{"v4 allowed https", pkt{src: devMAC, dst: "10.2.9.9", proto: tcp, sport: 40000, dport: 443}, xdpPass, VerdictPassAllowed, 0},
		{"v4 allowed https in nested /24", pkt{src: devMAC, dst: "10.2.3.4", proto: tcp, sport: 40000, dport: 443}, xdpPass, VerdictPassAllowed, 0},
		{"v4 dns nested rule", pkt{src: devMAC, dst: "10.2.3.4", proto: udp, sport: 5000, dport: 53}, xdpPass, VerdictPassAllowed, 1},
		{"v4 dns outside /24 denied", pkt{src: devMAC, dst: "10.2.4.4", proto: udp, sport: 5000, dport: 53}, xdpDrop, VerdictDropDenied, -1},
		{"v4 wrong port denied", pkt{src: devMAC, dst: "10.2.9.9", proto: tcp, sport: 40000, dport: 22}, xdpDrop, VerdictDropDenied, -1},
		{"v4 unknown peer denied", pkt{src: devMAC, dst: "192.0.2.1", proto: tcp, sport: 40000, dport: 443}, xdpDrop, VerdictDropDenied, -1},
		{"v4 inbound reply from service port", pkt{src: devMAC, dst: "10.9.1.1", proto: tcp, sport: 2575, dport: 51000}, xdpPass, VerdictPassAllowed, 2},
		{"v4 inbound rule does not open outbound", pkt{src: devMAC, dst: "10.9.1.1", proto: tcp, sport: 51000, dport: 2575}, xdpDrop, VerdictDropDenied, -1},
		{"ntp any peer", pkt{src: devMAC, dst: "198.51.100.7", proto: udp, sport: 123, dport: 123}, xdpPass, VerdictPassAllowed, 4},
		{"ntp any peer v6", pkt{src: devMAC, v6: true, dst: "2001:db8:99::1", proto: udp, sport: 123, dport: 123}, xdpPass, VerdictPassAllowed, 4},
		{"icmp to gateway", pkt{src: devMAC, dst: "10.2.0.1", proto: layers.IPProtocolICMPv4}, xdpPass, VerdictPassAllowed, 5},
		{"blocked peer inside allowed /16", pkt{src: devMAC, dst: "10.2.66.5", proto: tcp, sport: 40000, dport: 443}, xdpDrop, VerdictDropBlocked, -1},
		{"v6 allowed dicom", pkt{src: devMAC, v6: true, dst: "2001:db8:2::5", proto: tcp, sport: 40000, dport: 104}, xdpPass, VerdictPassAllowed, 3},
		{"v6 denied", pkt{src: devMAC, v6: true, dst: "2001:db8:3::5", proto: tcp, sport: 40000, dport: 104}, xdpDrop, VerdictDropDenied, -1},
		{"v6 neighbour solicitation", pkt{src: devMAC, v6: true, dst: "ff02::1:ff00:1", proto: layers.IPProtocolICMPv6, icmpType: 135}, xdpPass, VerdictPassNeighbor, -1},
		{"vlan tagged allowed", pkt{src: devMAC, vlan: true, dst: "10.2.9.9", proto: tcp, sport: 40001, dport: 443}, xdpPass, VerdictPassAllowed, 0},
		{"vlan tagged denied", pkt{src: devMAC, vlan: true, dst: "10.2.9.9", proto: tcp, sport: 40000, dport: 80}, xdpDrop, VerdictDropDenied, -1},
		{"later fragment to allowed peer", pkt{src: devMAC, dst: "10.2.3.4", proto: udp, fragOff: 100}, xdpPass, VerdictPassAllowed, 1},
		{"device without policy", pkt{src: otherMAC, dst: "192.0.2.1", proto: tcp, sport: 1, dport: 22}, xdpPass, VerdictPassNoPolicy, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			oneCPU(t)
			data := c.p.bytes(t)
			// The first packet takes the slow path and fills the verdict
			// cache; the second, for TCP and UDP with ports, is a cache
			// hit and must give the same verdict and counts.
			cacheable := (c.p.proto == tcp || c.p.proto == udp) && c.p.fragOff == 0
			for round := range 2 {
				before, err := d.Verdicts()
				if err != nil {
					t.Fatal(err)
				}
				hits0, _, err := d.CacheStats()
				if err != nil {
					t.Fatal(err)
				}
				var hitsBefore uint64
				if c.rule >= 0 {
					hitsBefore, _ = d.RuleHits(3, c.rule)
				}
				if got := run(t, d.Program(), data); got != c.want {
					t.Fatalf("round %d: verdict %d, want %d", round, got, c.want)
				}
				after, err := d.Verdicts()
				if err != nil {
					t.Fatal(err)
				}
				for v := range NumVerdicts {
					want := before[v].Packets
					if v == c.verdict {
						want++
					}
					if after[v].Packets != want {
						t.Errorf("round %d: counter %s = %d, want %d", round, v, after[v].Packets, want)
					}
				}
				if got, want := after[c.verdict].Bytes-before[c.verdict].Bytes, uint64(len(data)); got != want {
					t.Errorf("round %d: %s bytes +%d, want +%d", round, c.verdict, got, want)
				}
				if c.rule >= 0 {
					hits, err := d.RuleHits(3, c.rule)
					if err != nil {
						t.Fatal(err)
					}
					if hits != hitsBefore+1 {
						t.Errorf("round %d: rule %d hits %d, want %d", round, c.rule, hits, hitsBefore+1)
					}
				}
				hits1, _, err := d.CacheStats()
				if err != nil {
					t.Fatal(err)
				}
				if wantHit := round == 1 && cacheable; (hits1 > hits0) != wantHit {
					t.Errorf("round %d: cache hit %v, want %v", round, hits1 > hits0, wantHit)
				}
			}
		})
	}
}

// oneCPU keeps the calling test on one CPU, so consecutive packets meet
// the same per-CPU verdict cache.
func oneCPU(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	var orig unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get affinity: %v", err)
	}
	cpu := 0
	for !orig.IsSet(cpu) {
		cpu++
	}
	var one unix.CPUSet
	one.Set(cpu)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("set affinity: %v", err)
	}
	t.Cleanup(func() {
		unix.SchedSetaffinity(0, &orig)
		runtime.UnlockOSThread()
	})
}

func TestMonitorModeDropsNothing(t *testing.T) {
	d := loadTest(t, 64)
	install(t, d, devMAC, DeviceEntry{Slot: 0, Mode: ModeMonitor}, testRules())
	denied := pkt{src: devMAC, dst: "192.0.2.1", proto: layers.IPProtocolTCP, sport: 40000, dport: 443}
	denied6 := pkt{src: devMAC, v6: true, dst: "2001:db8:3::5", proto: layers.IPProtocolTCP, sport: 40000, dport: 104}
	allowed := pkt{src: devMAC, dst: "10.2.9.9", proto: layers.IPProtocolTCP, sport: 40000, dport: 443}
	for _, p := range []pkt{denied, denied6, allowed} {
		if got := run(t, d.Program(), p.bytes(t)); got != xdpPass {
			t.Fatalf("monitor mode verdict %d for %s, want pass", got, p.dst)
		}
	}
	c, err := d.Verdicts()
	if err != nil {
		t.Fatal(err)
	}
	if c[VerdictPassMonitor].Packets != 2 || c[VerdictPassAllowed].Packets != 1 || c[VerdictDropDenied].Packets != 0 {
		t.Fatalf("counters: would-drop %d allowed %d dropped %d, want 2 1 0",
			c[VerdictPassMonitor].Packets, c[VerdictPassAllowed].Packets, c[VerdictDropDenied].Packets)
	}
	// A block is an explicit decision: it drops even in monitor mode.
	if got := run(t, d.Program(), pkt{src: devMAC, dst: "10.2.66.1", proto: layers.IPProtocolTCP, sport: 1, dport: 443}.bytes(t)); got != xdpDrop {
		t.Fatalf("blocked peer in monitor mode: verdict %d, want drop", got)
	}
}

func TestQuarantine(t *testing.T) {
	d := loadTest(t, 64)
	if err := d.SetInfra(map[netip.Addr]uint32{
		netip.MustParseAddr("10.0.0.53"):    RoleDNS,
		netip.MustParseAddr("10.0.0.67"):    RoleDHCP,
		netip.MustParseAddr("2001:db8::53"): RoleDNS,
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteSlot(1, testRules()); err != nil {
		t.Fatal(err)
	}
	// Quarantine overrides the policy's allow rules, in any mode.
	if err := d.SetDevice(devMAC, DeviceEntry{Slot: 1, Mode: ModeMonitor, Flags: FlagQuarantine}); err != nil {
		t.Fatal(err)
	}
	udp, tcp := layers.IPProtocolUDP, layers.IPProtocolTCP
	cases := []struct {
		name string
		p    pkt
		want uint32
	}{
		{"dns to configured server", pkt{src: devMAC, dst: "10.0.0.53", proto: udp, sport: 5353, dport: 53}, xdpPass},
		{"dns over tcp", pkt{src: devMAC, dst: "10.0.0.53", proto: tcp, sport: 5353, dport: 53}, xdpPass},
		{"dns v6", pkt{src: devMAC, v6: true, dst: "2001:db8::53", proto: udp, sport: 5353, dport: 53}, xdpPass},
		{"dhcp to server", pkt{src: devMAC, dst: "10.0.0.67", proto: udp, sport: 68, dport: 67}, xdpPass},
		{"dhcp broadcast", pkt{src: devMAC, dst: "255.255.255.255", proto: udp, sport: 68, dport: 67}, xdpPass},
		{"dhcpv6 all servers", pkt{src: devMAC, v6: true, dst: "ff02::1:2", proto: udp, sport: 546, dport: 547}, xdpPass},
		{"dns to other resolver", pkt{src: devMAC, dst: "8.8.8.8", proto: udp, sport: 5353, dport: 53}, xdpDrop},
		{"dhcp server is not a resolver", pkt{src: devMAC, dst: "10.0.0.67", proto: udp, sport: 5353, dport: 53}, xdpDrop},
		{"policy-allowed https isolated", pkt{src: devMAC, dst: "10.2.9.9", proto: tcp, sport: 40000, dport: 443}, xdpDrop},
		{"v6 isolated", pkt{src: devMAC, v6: true, dst: "2001:db8:2::5", proto: tcp, sport: 40000, dport: 104}, xdpDrop},
	}
	var wantPass, wantDrop uint64
	for _, c := range cases {
		if got := run(t, d.Program(), c.p.bytes(t)); got != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
		}
		if c.want == xdpPass {
			wantPass++
		} else {
			wantDrop++
		}
	}
	v, err := d.Verdicts()
	if err != nil {
		t.Fatal(err)
	}
	if v[VerdictPassQuarantineInfra].Packets != wantPass || v[VerdictDropQuarantine].Packets != wantDrop {
		t.Fatalf("quarantine counters pass %d drop %d, want %d %d", v[VerdictPassQuarantineInfra].Packets, v[VerdictDropQuarantine].Packets, wantPass, wantDrop)
	}
}

func TestSlotRoundTrip(t *testing.T) {
	d := loadTest(t, 16)
	rules := testRules()
	if err := d.WriteSlot(5, rules); err != nil {
		t.Fatal(err)
	}
	got, err := d.ReadSlot(5)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(rules) {
		t.Fatalf("read %d rules, want %d", len(got), len(rules))
	}
	for i := range rules {
		if got[i] != rules[i] {
			t.Errorf("rule %d: %+v, want %+v", i, got[i], rules[i])
		}
	}
	used, err := d.UsedSlots()
	if err != nil {
		t.Fatal(err)
	}
	if len(used) != 1 || len(used[5]) != len(rules) {
		t.Fatalf("used slots %v", used)
	}
	if err := d.ClearSlot(5, rules); err != nil {
		t.Fatal(err)
	}
	expectNoSlots(t, d)
	var info enforcerSlotInfo
	if err := d.objs.Slots.Lookup(uint32(5), &info); err != nil || info != (enforcerSlotInfo{Epoch: 1}) {
		t.Fatalf("slot info left after clear: %+v %v, want only the counter epoch (1)", info, err)
	}
}

// TestRuleCountersFreshOnReuse: a slot's next tenant starts its rule
// counters from zero without a reset from user space (the counters carry
// the slot's epoch), on the slow path and on cache hits alike.
func TestRuleCountersFreshOnReuse(t *testing.T) {
	oneCPU(t)
	d := loadTest(t, 16)
	https := pkt{src: devMAC, dst: "10.2.9.9", proto: layers.IPProtocolTCP, sport: 40000, dport: 443}.bytes(t)
	for tenant := 1; tenant <= 3; tenant++ {
		install(t, d, devMAC, DeviceEntry{Slot: 0, Mode: ModeEnforce, NRules: uint8(len(testRules()))}, testRules())
		if hits, err := d.RuleHits(0, 0); err != nil || hits != 0 {
			t.Fatalf("tenant %d: rule hits %d (%v) before any packet, want 0", tenant, hits, err)
		}
		expect(t, d, "first packet", https, xdpPass, true)
		for range tenant {
			expect(t, d, "cached packet", https, xdpPass, false)
		}
		if hits, err := d.RuleHits(0, 0); err != nil || hits != uint64(tenant+1) {
			t.Fatalf("tenant %d: rule hits %d (%v), want %d", tenant, hits, err, tenant+1)
		}
		if err := d.DeleteDevice(devMAC); err != nil {
			t.Fatal(err)
		}
		if err := d.ClearSlot(0, testRules()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWholeFamilyPrefixes(t *testing.T) {
	d := loadTest(t, 16)
	rules := []Rule{
		{Kind: KindAllow, Proto: 6, Dir: DirOutbound, Prefix: pfx("10.2.0.5/32"), PortMin: 443, PortMax: 443},
		{Kind: KindAllow, Proto: 17, Dir: DirOutbound, Prefix: pfx("::/0"), PortMin: 53, PortMax: 53},
		{Kind: KindBlock, Prefix: pfx("0.0.0.0/0")}, // block every IPv4 peer
	}
	install(t, d, devMAC, DeviceEntry{Slot: 2, Mode: ModeEnforce, NRules: 3}, rules)
	tcp, udp := layers.IPProtocolTCP, layers.IPProtocolUDP
	for _, c := range []struct {
		name string
		p    pkt
		want uint32
	}{
		{"v4 /32 allow under a v4 /0 block", pkt{src: devMAC, dst: "10.2.0.5", proto: tcp, sport: 1, dport: 443}, xdpDrop},
		{"v4 elsewhere blocked", pkt{src: devMAC, dst: "192.0.2.1", proto: udp, sport: 1, dport: 53}, xdpDrop},
		{"v6 any-peer dns allowed", pkt{src: devMAC, v6: true, dst: "2001:db8:77::1", proto: udp, sport: 1, dport: 53}, xdpPass},
		{"v6 other port denied", pkt{src: devMAC, v6: true, dst: "2001:db8:77::1", proto: udp, sport: 1, dport: 54}, xdpDrop},
	} {
		if got := run(t, d.Program(), c.p.bytes(t)); got != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
		}
	}
	v, err := d.Verdicts()
	if err != nil {
		t.Fatal(err)
	}
	if v[VerdictDropBlocked].Packets != 2 || v[VerdictPassAllowed].Packets != 1 || v[VerdictDropDenied].Packets != 1 {
		t.Fatalf("counters %+v", v)
	}
}

// slowCount returns how many IP packets took the slow path and how many of
// them were cache misses.
func slowCount(t *testing.T, d *Datapath) (slow, misses uint64) {
	t.Helper()
	var per []enforcerCacheStats
	if err := d.objs.CacheCounters.Lookup(uint32(0), &per); err != nil {
		t.Fatal(err)
	}
	for _, c := range per {
		slow += c.Slow
		misses += c.Misses
	}
	return slow, misses
}

// expect runs p and checks its verdict and that it took the slow path
// (slow) or was a cache hit.
func expect(t *testing.T, d *Datapath, what string, data []byte, want uint32, slow bool) {
	t.Helper()
	s0, _ := slowCount(t, d)
	if got := run(t, d.Program(), data); got != want {
		t.Errorf("%s: verdict %d, want %d", what, got, want)
	}
	s1, _ := slowCount(t, d)
	if (s1 > s0) != slow {
		t.Errorf("%s: slow path %v, want %v", what, s1 > s0, slow)
	}
}

// TestCacheInvalidation checks that every policy change takes effect on
// the very next packet of a cached flow, and that without a generation
// bump the cache does answer (so the bump is what invalidates).
func TestCacheInvalidation(t *testing.T) {
	oneCPU(t)
	d := loadTest(t, 64)
	if err := d.SetInfra(map[netip.Addr]uint32{netip.MustParseAddr("10.0.0.53"): RoleDNS}); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteSlot(1, testRules()); err != nil {
		t.Fatal(err)
	}
	allowed := DeviceEntry{Slot: 1, Mode: ModeEnforce, NRules: 7}
	if err := d.SetDevice(devMAC, allowed); err != nil {
		t.Fatal(err)
	}
	https := pkt{src: devMAC, dst: "10.2.9.9", proto: layers.IPProtocolTCP, sport: 40000, dport: 443}.bytes(t)
	dns := pkt{src: devMAC, dst: "10.0.0.53", proto: layers.IPProtocolUDP, sport: 5353, dport: 53}.bytes(t)
	expect(t, d, "allowed, first packet", https, xdpPass, true)
	expect(t, d, "allowed, cached", https, xdpPass, false)

	// Bypass the Datapath: the map changes but the generation does not, so
	// the cached verdict still answers. Then bump it.
	g := d.Generation()
	if err := d.putDevice(enforcerMacKey{Addr: [6]byte(devMAC)}, enforcerDevice{Slot: 1, Mode: uint8(ModeEnforce), Flags: FlagQuarantine}); err != nil {
		t.Fatal(err)
	}
	expect(t, d, "quarantined behind the datapath's back, stale hit", https, xdpPass, false)
	if err := d.invalidate(); err != nil {
		t.Fatal(err)
	}
	if d.Generation() != g+1 {
		t.Fatalf("generation %d, want %d", d.Generation(), g+1)
	}
	expect(t, d, "quarantined after the bump", https, xdpDrop, true)

	// Through the Datapath every change invalidates at once.
	steps := []struct {
		name   string
		change func() error
		data   []byte
		want   uint32
	}{
		{"released", func() error { return d.SetDevice(devMAC, allowed) }, https, xdpPass},
		{"quarantined", func() error {
			return d.SetDevice(devMAC, DeviceEntry{Slot: 1, Mode: ModeEnforce, Flags: FlagQuarantine})
		}, https, xdpDrop},
		{"quarantined dns to resolver", nil, dns, xdpPass},
		{"resolver removed from infra", func() error { return d.SetInfra(nil) }, dns, xdpDrop},
		{"released again", func() error { return d.SetDevice(devMAC, allowed) }, https, xdpPass},
		{"new slot without https", func() error {
			if err := d.WriteSlot(2, testRules()[1:]); err != nil {
				return err
			}
			return d.SetDevice(devMAC, DeviceEntry{Slot: 2, Mode: ModeEnforce, NRules: 6})
		}, https, xdpDrop},
		{"monitor mode", func() error { return d.SetDevice(devMAC, DeviceEntry{Slot: 2, Mode: ModeMonitor, NRules: 6}) }, https, xdpPass},
		{"back to enforce", func() error { return d.SetDevice(devMAC, DeviceEntry{Slot: 2, Mode: ModeEnforce, NRules: 6}) }, https, xdpDrop},
		{"peer blocked in the slot", func() error {
			if err := d.ClearSlot(1, testRules()); err != nil {
				return err
			}
			if err := d.WriteSlot(1, append(testRules(), Rule{Kind: KindBlock, Prefix: pfx("10.0.0.53/32")})); err != nil {
				return err
			}
			return d.SetDevice(devMAC, DeviceEntry{Slot: 1, Mode: ModeEnforce, NRules: 8})
		}, https, xdpPass},
		{"device removed", func() error { return d.DeleteDevice(devMAC) }, https, xdpPass},
		{"device back, enforce", func() error { return d.SetDevice(devMAC, DeviceEntry{Slot: 2, Mode: ModeEnforce, NRules: 6}) }, https, xdpDrop},
	}
	for _, s := range steps {
		// Warm the cache with the current verdict first.
		run(t, d.Program(), s.data)
		if s.change != nil {
			if err := s.change(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
		}
		expect(t, d, s.name+", next packet", s.data, s.want, s.change != nil)
		expect(t, d, s.name+", cached", s.data, s.want, false)
	}
	v, err := d.Verdicts()
	if err != nil {
		t.Fatal(err)
	}
	if v[VerdictPassNoPolicy].Packets != 3 {
		t.Errorf("no-policy packets %d, want 3", v[VerdictPassNoPolicy].Packets)
	}
}

// cacheIndex mirrors the program's cache_index.
func cacheIndex(mac net.HardwareAddr, peer netip.Addr, proto uint8, sport, dport uint16) uint32 {
	a16 := peer.As16()
	if peer.Is4() {
		a16 = netip.AddrFrom16(a16).As16() // IPv4-mapped
	}
	w0 := binary.LittleEndian.Uint64(a16[0:8])
	w1 := binary.LittleEndian.Uint64(a16[8:16])
	var m [8]byte
	copy(m[:], mac)
	family := uint64(6)
	if peer.Is4() {
		family = 4
	}
	w2 := binary.LittleEndian.Uint64(m[:]) | uint64(proto)<<48 | family<<56
	w3 := uint64(sport) | uint64(dport)<<16
	h := ((w0 ^ w1) * 0x9e3779b97f4a7c15) ^ ((w2 ^ w3<<20) * 0xc2b2ae3d27d4eb4f)
	return uint32(h >> (64 - 13))
}

// TestCacheCollision sends two flows that share a cache slot, one allowed
// and one denied, alternately: every packet misses, replaces the other
// flow's entry, and gets its own verdict and counts.
func TestCacheCollision(t *testing.T) {
	oneCPU(t)
	d := loadTest(t, 64)
	install(t, d, devMAC, DeviceEntry{Slot: 0, Mode: ModeEnforce, NRules: 7}, testRules())
	peer := netip.MustParseAddr("10.2.9.9")
	idx := cacheIndex(devMAC, peer, 6, 40000, 443)
	deniedPort := uint16(0)
	for p := uint16(1); p < 65535; p++ {
		if p != 443 && cacheIndex(devMAC, peer, 6, 40000, p) == idx {
			deniedPort = p
			break
		}
	}
	if deniedPort == 0 {
		t.Fatal("no colliding port found")
	}
	allowed := pkt{src: devMAC, dst: peer.String(), proto: layers.IPProtocolTCP, sport: 40000, dport: 443}.bytes(t)
	denied := pkt{src: devMAC, dst: peer.String(), proto: layers.IPProtocolTCP, sport: 40000, dport: deniedPort}.bytes(t)
	expect(t, d, "allowed", allowed, xdpPass, true)
	// The Go mirror of the hash finds the entry where the program put it.
	var per []enforcerCacheEntry
	if err := d.objs.Cache.Lookup(idx, &per); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range per {
		found = found || (e.Generation == d.Generation() && e.Key.Dport == 443 && e.Key.Sport == 40000 && e.Key.Mac == [6]byte(devMAC))
	}
	if !found {
		t.Fatalf("flow not in cache slot %d: %+v", idx, per)
	}
	const rounds = 50
	for range rounds {
		expect(t, d, "denied, colliding", denied, xdpDrop, true)
		expect(t, d, "allowed, colliding", allowed, xdpPass, true)
	}
	expect(t, d, "allowed again, cached", allowed, xdpPass, false)
	v, err := d.Verdicts()
	if err != nil {
		t.Fatal(err)
	}
	hits, err := d.RuleHits(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if v[VerdictPassAllowed].Packets != rounds+2 || v[VerdictDropDenied].Packets != rounds || hits != rounds+2 {
		t.Fatalf("allowed %d denied %d rule hits %d, want %d %d %d", v[VerdictPassAllowed].Packets, v[VerdictDropDenied].Packets, hits, rounds+2, rounds, rounds+2)
	}
	if _, misses := slowCount(t, d); misses != 2*rounds+1 {
		t.Fatalf("misses %d, want %d", misses, 2*rounds+1)
	}
}

// TestCacheCountersExact sends many packets of many flows, on whatever
// CPUs the scheduler picks, and checks every counter exactly.
func TestCacheCountersExact(t *testing.T) {
	d := loadTest(t, 64)
	install(t, d, devMAC, DeviceEntry{Slot: 0, Mode: ModeEnforce, NRules: 7}, testRules())
	install(t, d, otherMAC, DeviceEntry{Slot: 1, Mode: ModeMonitor, NRules: 7}, testRules())
	tcp, udp := layers.IPProtocolTCP, layers.IPProtocolUDP
	flows := []struct {
		p       pkt
		verdict Verdict
		slot    uint32
		rule    int
	}{
		{pkt{src: devMAC, dst: "10.2.9.9", proto: tcp, sport: 40000, dport: 443}, VerdictPassAllowed, 0, 0},
		{pkt{src: devMAC, dst: "10.2.3.4", proto: udp, sport: 5000, dport: 53}, VerdictPassAllowed, 0, 1},
		{pkt{src: devMAC, v6: true, dst: "2001:db8:2::5", proto: tcp, sport: 40000, dport: 104}, VerdictPassAllowed, 0, 3},
		{pkt{src: devMAC, dst: "192.0.2.1", proto: tcp, sport: 40000, dport: 443}, VerdictDropDenied, 0, -1},
		{pkt{src: devMAC, dst: "10.2.66.5", proto: tcp, sport: 40000, dport: 443}, VerdictDropBlocked, 0, -1},
		{pkt{src: otherMAC, dst: "192.0.2.1", proto: tcp, sport: 40000, dport: 443}, VerdictPassMonitor, 1, -1},
		{pkt{src: otherMAC, dst: "198.51.100.7", proto: udp, sport: 123, dport: 123}, VerdictPassAllowed, 1, 4},
		{pkt{src: gwMAC, dst: "192.0.2.1", proto: tcp, sport: 1, dport: 22}, VerdictPassNoPolicy, 0, -1},
	}
	const per = 500
	var want [NumVerdicts]Counter
	wantHits := map[[2]int]uint64{}
	for i := range per * len(flows) {
		f := flows[i%len(flows)]
		data := f.p.bytes(t)
		run(t, d.Program(), data)
		want[f.verdict].Packets++
		want[f.verdict].Bytes += uint64(len(data))
		if f.rule >= 0 {
			wantHits[[2]int{int(f.slot), f.rule}]++
		}
	}
	got, err := d.Verdicts()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("verdict counters %+v, want %+v", got, want)
	}
	for k, n := range wantHits {
		h, err := d.RuleHits(uint32(k[0]), k[1])
		if err != nil {
			t.Fatal(err)
		}
		if h != n {
			t.Errorf("slot %d rule %d hits %d, want %d", k[0], k[1], h, n)
		}
	}
	hits, _, err := d.CacheStats()
	if err != nil {
		t.Fatal(err)
	}
	if hits < uint64(per*len(flows))/2 {
		t.Errorf("only %d of %d packets were cache hits", hits, per*len(flows))
	}
}

// TestCacheSkipsUncacheable checks that later fragments, malformed packets
// and IPv6 packets with extension headers always take the slow path, and
// that a first fragment (ports present) is cached.
func TestCacheSkipsUncacheable(t *testing.T) {
	oneCPU(t)
	d := loadTest(t, 64)
	install(t, d, devMAC, DeviceEntry{Slot: 0, Mode: ModeEnforce, NRules: 7}, testRules())
	udp, tcp := layers.IPProtocolUDP, layers.IPProtocolTCP
	later := pkt{src: devMAC, dst: "10.2.3.4", proto: udp, fragOff: 100}.bytes(t)
	first := pkt{src: devMAC, dst: "10.2.3.4", proto: udp, sport: 5000, dport: 53, moreFrag: true}.bytes(t)
	full := pkt{src: devMAC, dst: "10.2.9.9", proto: tcp, sport: 40000, dport: 443}.bytes(t)
	truncated := full[:14+20+4] // TCP header cut after the ports
	v6 := pkt{src: devMAC, v6: true, dst: "2001:db8:2::5", proto: tcp, sport: 40000, dport: 104}.bytes(t)
	// Insert an 8-byte hop-by-hop options header (PadN) before TCP.
	ext := append([]byte(nil), v6[:14+40]...)
	ext[14+6] = 0 // next header: hop-by-hop
	binary.BigEndian.PutUint16(ext[14+4:], binary.BigEndian.Uint16(v6[14+4:])+8)
	ext = append(ext, byte(tcp), 0, 1, 4, 0, 0, 0, 0)
	ext = append(ext, v6[14+40:]...)
	for range 3 {
		expect(t, d, "later fragment", later, xdpPass, true)
		expect(t, d, "truncated tcp", truncated, xdpDrop, true)
		expect(t, d, "ipv6 hop-by-hop", ext, xdpPass, true)
	}
	// An IPv6 packet to the IPv4-mapped form of an allowed IPv4 peer has
	// the same address bytes but is checked against the IPv6 prefixes
	// (none covers it): it must not get the IPv4 flow's cached verdict.
	v4 := pkt{src: devMAC, dst: "10.2.9.9", proto: tcp, sport: 40000, dport: 443}.bytes(t)
	mapped := pkt{src: devMAC, v6: true, dst: "::ffff:10.2.9.9", proto: tcp, sport: 40000, dport: 443}.bytes(t)
	expect(t, d, "ipv4 allowed", v4, xdpPass, true)
	expect(t, d, "ipv4 allowed, cached", v4, xdpPass, false)
	expect(t, d, "ipv6 to ipv4-mapped peer", mapped, xdpDrop, true)
	expect(t, d, "ipv6 to ipv4-mapped peer, cached", mapped, xdpDrop, false)
	expect(t, d, "ipv4 allowed, still cached", v4, xdpPass, false)
	expect(t, d, "first fragment", first, xdpPass, true)
	expect(t, d, "first fragment, cached", first, xdpPass, false)
	if _, misses := slowCount(t, d); misses != 3 {
		t.Errorf("cache misses %d, want 3 (ipv4, mapped ipv6, first fragment)", misses)
	}
}

// expectNoSlots fails the test if any slot holds rules or peer entries.
func expectNoSlots(t *testing.T, d *Datapath) {
	t.Helper()
	used, err := d.UsedSlots()
	if err != nil {
		t.Fatal(err)
	}
	if len(used) != 0 {
		t.Fatalf("slots still used after clear: %v", used)
	}
	peers, err := d.peerMem.getN(0, int(d.slots)*peerBuckets)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range peers {
		if p != (enforcerPeer{}) {
			t.Fatalf("slot %d: peer bucket %d left after clear: %+v", i/peerBuckets, i%peerBuckets, p)
		}
	}
}

// install writes rules into slot e.Slot and points mac's entry at it.
func install(t *testing.T, d *Datapath, mac net.HardwareAddr, e DeviceEntry, rules []Rule) {
	t.Helper()
	if err := d.WriteSlot(e.Slot, rules); err != nil {
		t.Fatal(err)
	}
	if err := d.SetDevice(mac, e); err != nil {
		t.Fatal(err)
	}
}

// pinnedConfig is a 16-device config pinned in a fresh bpffs directory,
// unpinned when the test ends.
func pinnedConfig(t *testing.T) Config {
	t.Helper()
	dir := filepath.Join("/sys/fs/bpf", "medmesh-test-"+filepath.Base(t.TempDir()))
	t.Cleanup(func() { Unpin(dir) })
	cfg := DefaultConfig()
	cfg.MaxDevices, cfg.PinDir = 16, dir
	return cfg
}

// TestGenerationAcrossRestart checks that the generation lives in the
// pinned meta map, keeps growing when a new process adopts the maps, and
// that a verdict cached by the previous process does not hit.
func TestGenerationAcrossRestart(t *testing.T) {
	oneCPU(t)
	testutil.RequireRoot(t)
	cfg := pinnedConfig(t)
	d1, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	install(t, d1, devMAC, DeviceEntry{Slot: 0, Mode: ModeEnforce, NRules: 7}, testRules())
	if err := d1.SetAppliedIndex(42); err != nil {
		t.Fatal(err)
	}
	https := pkt{src: devMAC, dst: "10.2.9.9", proto: layers.IPProtocolTCP, sport: 40000, dport: 443}.bytes(t)
	expect(t, d1, "first process", https, xdpPass, true)
	expect(t, d1, "first process, cached", https, xdpPass, false)
	g1 := d1.Generation()
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cfg.PinDir, "cache")); err != nil {
		t.Fatalf("cache not pinned: %v", err)
	}
	d2, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if g2 := d2.Generation(); g2 <= g1 {
		t.Fatalf("generation after restart %d, want > %d", g2, g1)
	}
	if idx, err := d2.AppliedIndex(); err != nil || idx != 42 {
		t.Fatalf("applied index %d (%v), want 42", idx, err)
	}
	var m enforcerMetadata
	if err := d2.objs.Meta.Lookup(uint32(0), &m); err != nil || m.Generation != d2.Generation() {
		t.Fatalf("pinned generation %d (%v), want %d", m.Generation, err, d2.Generation())
	}
	expect(t, d2, "adopted, old entry ignored", https, xdpPass, true)
	expect(t, d2, "adopted, cached", https, xdpPass, false)
}

// TestClearHalfWrittenSlot clears a slot with more rules than were
// written, as reconciliation does after a crash in the middle of WriteSlot.
func TestClearHalfWrittenSlot(t *testing.T) {
	d := loadTest(t, 16)
	rules := testRules()
	if err := d.WriteSlot(4, rules[:3]); err != nil {
		t.Fatal(err)
	}
	if err := d.ClearSlot(4, rules); err != nil {
		t.Fatalf("clear: %v", err)
	}
	expectNoSlots(t, d)
}

// TestIncompatiblePinsRefused: maps pinned with another size (or layout)
// are refused with an error that says so, and are left as they were: the
// pinned state still reads back.
func TestIncompatiblePinsRefused(t *testing.T) {
	testutil.RequireRoot(t)
	cfg := pinnedConfig(t)
	d1, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.SetAppliedIndex(7); err != nil {
		t.Fatal(err)
	}
	d1.Close()
	cfg.MaxDevices = 32
	if _, err := Load(cfg); !errors.Is(err, ebpf.ErrMapIncompatible) || !strings.Contains(err.Error(), "--uninstall") {
		t.Fatalf("load over pins of another size: %v, want ErrMapIncompatible naming --uninstall", err)
	}
	cfg.MaxDevices = 16
	d2, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if got, err := d2.AppliedIndex(); err != nil || got != 7 {
		t.Fatalf("applied index after the refused load: %d, %v; want 7", got, err)
	}
}

// TestFullPeerTable fills a slot with MaxRules distinct prefixes of mixed
// lengths and families, and checks through the program that each one's
// traffic is allowed by its own rule and by none other, while addresses in
// none are denied: every prefix sits where the program probes for it.
func TestFullPeerTable(t *testing.T) {
	d := loadTest(t, 16)
	var rules []Rule
	for i := range MaxRules {
		r := Rule{Kind: KindAllow, Proto: 6, Dir: DirOutbound, PortMin: uint16(1000 + i), PortMax: uint16(1000 + i)}
		switch i % 4 {
		case 0:
			r.Prefix = pfx(fmt.Sprintf("10.%d.%d.%d/32", i, i*7%256, i*13%256))
		case 1:
			r.Prefix = pfx(fmt.Sprintf("172.16.%d.0/24", i))
		case 2:
			r.Prefix = pfx(fmt.Sprintf("2001:db8:%x::%x/128", i, i*3))
		case 3:
			r.Prefix = pfx(fmt.Sprintf("2001:db8:ff:%x::/64", i))
		}
		rules = append(rules, r)
	}
	install(t, d, devMAC, DeviceEntry{Slot: 2, Mode: ModeEnforce, NRules: MaxRules}, rules)
	for i, r := range rules {
		a := r.Prefix.Addr()
		if r.Prefix.Bits() < a.BitLen() {
			a = a.Next() // an address inside, not the prefix's own
		}
		p := pkt{src: devMAC, v6: a.Is6(), dst: a.String(), proto: layers.IPProtocolTCP, sport: 40000, dport: r.PortMin}
		if got := run(t, d.Program(), p.bytes(t)); got != xdpPass {
			t.Fatalf("rule %d (%s port %d): verdict %d, want pass", i, r.Prefix, r.PortMin, got)
		}
		hits, err := d.RuleHits(2, i)
		if err != nil || hits != 1 {
			t.Fatalf("rule %d hits %d (%v), want 1", i, hits, err)
		}
		p.dport = r.PortMin + 1 // the next rule's port, but not its peer
		if got := run(t, d.Program(), p.bytes(t)); got != xdpDrop {
			t.Fatalf("rule %d (%s) with port %d: verdict %d, want drop", i, r.Prefix, p.dport, got)
		}
	}
	for _, dst := range []string{"10.99.0.1", "172.16.200.1", "2001:db8:ffff::1"} {
		p := pkt{src: devMAC, v6: strings.Contains(dst, ":"), dst: dst, proto: layers.IPProtocolTCP, sport: 40000, dport: 1000}
		if got := run(t, d.Program(), p.bytes(t)); got != xdpDrop {
			t.Fatalf("%s, in no rule: verdict %d, want drop", dst, got)
		}
	}
}

// TestPeerTablePlacement: every prefix of a table lies within peerProbes
// buckets of its home, with no empty bucket between (the program stops at
// one), for many random rule sets of the maximum size.
func TestPeerTablePlacement(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var entries []peerEntry
		seen := map[netip.Prefix]bool{}
		for len(entries) < MaxRules {
			var b [16]byte
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			p := netip.PrefixFrom(netip.AddrFrom16(b), 8+rng.IntN(121)).Masked()
			if !seen[p] {
				seen[p] = true
				entries = append(entries, peerEntry{prefix: p, allow: rng.Uint64()})
			}
		}
		var buf [MaxRules]placedPeer
		placed, used, seed, err := peerTable(entries, buf[:0])
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		var tab [peerBuckets]enforcerPeer
		var want [2]uint64
		for _, p := range placed {
			if tab[p.bucket].Used != 0 {
				t.Fatalf("round %d: bucket %d taken twice", round, p.bucket)
			}
			tab[p.bucket] = p.e
			want[p.bucket/64] |= 1 << (p.bucket % 64)
		}
		if used != want {
			t.Fatalf("round %d: used buckets %x, placed in %x", round, used, want)
		}
		found := 0
		for _, e := range entries {
			p := e.prefix
			w0, w1 := peerWords(p)
			h := peerHome(w0, w1, uint8(p.Bits()), seed)
			for j := range uint32(peerProbes) {
				b := tab[(h+j)%peerBuckets]
				if b.Used == 0 {
					t.Fatalf("round %d: %s: empty bucket %d probes from home", round, p, j)
				}
				if b.Plen == uint8(p.Bits()) && b.Addr == [2]uint64{w0, w1} {
					if b.Allow != e.allow {
						t.Fatalf("round %d: %s: allow %x, want %x", round, p, b.Allow, e.allow)
					}
					found++
					break
				}
			}
		}
		if found != MaxRules {
			t.Fatalf("round %d: %d of %d prefixes found", round, found, MaxRules)
		}
		if n := testing.AllocsPerRun(10, func() { peerTable(entries, buf[:0]) }); n != 0 {
			t.Fatalf("round %d: peerTable allocated %v times a run", round, n)
		}
	}
}

// TestDeviceIndexes: a device keeps its index while its entry changes (one
// store), a removed device's index is taken again only after every other
// free one, the table refuses a device beyond its size, and a new process
// adopts the indexes from the pinned hash.
func TestDeviceIndexes(t *testing.T) {
	testutil.RequireRoot(t)
	cfg := pinnedConfig(t)
	cfg.MaxDevices = 3
	d, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	macs := []net.HardwareAddr{{2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2}, {2, 0, 0, 0, 0, 3}, {2, 0, 0, 0, 0, 4}}
	index := func(mac net.HardwareAddr) uint32 {
		t.Helper()
		var idx uint32
		if err := d.objs.Devices.Lookup(enforcerMacKey{Addr: [6]byte(mac)}, &idx); err != nil {
			t.Fatalf("%s: %v", mac, err)
		}
		return idx
	}
	for i, mac := range macs[:2] {
		if err := d.SetDevice(mac, DeviceEntry{Slot: uint32(i), Mode: ModeMonitor}); err != nil {
			t.Fatal(err)
		}
	}
	first := index(macs[0])
	if err := d.SetDevice(macs[0], DeviceEntry{Slot: 5, Mode: ModeEnforce, Flags: FlagQuarantine, NRules: 3}); err != nil {
		t.Fatal(err)
	}
	if index(macs[0]) != first {
		t.Fatal("a changed entry moved to another index")
	}
	if err := d.DeleteDevice(macs[0]); err != nil {
		t.Fatal(err)
	}
	if err := d.SetDevice(macs[2], DeviceEntry{Mode: ModeMonitor}); err != nil {
		t.Fatal(err)
	}
	if index(macs[2]) == first {
		t.Fatal("a freed index was taken while another had been free longer")
	}
	if err := d.SetDevice(macs[3], DeviceEntry{Mode: ModeMonitor}); err != nil {
		t.Fatal(err)
	}
	if index(macs[3]) != first {
		t.Fatalf("the last free index %d not taken, got %d", first, index(macs[3]))
	}
	if err := d.SetDevice(macs[0], DeviceEntry{Mode: ModeMonitor}); err == nil || !strings.Contains(err.Error(), "raise max devices") {
		t.Fatalf("a fourth device in a table of three: %v", err)
	}
	want, err := d.Devices()
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	d, err = Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got, err := d.Devices()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, want) || len(got) != 3 {
		t.Fatalf("adopted devices %v, want %v", got, want)
	}
	if err := d.SetDevice(macs[0], DeviceEntry{Mode: ModeMonitor}); err == nil {
		t.Fatal("adopted table of three took a fourth device")
	}
}

// usedBuckets counts the peer buckets of a slot in use.
func usedBuckets(t *testing.T, d *Datapath, slot uint32) int {
	t.Helper()
	tab, err := d.peerMem.getN(slot*peerBuckets, peerBuckets)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range tab {
		if p.Used != 0 {
			n++
		}
	}
	return n
}

// TestSlotRewrite: a slot written again without a clear (a released slot
// taken again) holds exactly its new rules and peers, also when a previous
// process left it full, and the earlier tenant's peers get no verdict of
// theirs.
func TestSlotRewrite(t *testing.T) {
	testutil.RequireRoot(t)
	cfg := pinnedConfig(t)
	var full []Rule
	for i := range MaxRules {
		full = append(full, Rule{Kind: KindAllow, Proto: 6, Dir: DirOutbound, Prefix: pfx(fmt.Sprintf("10.7.%d.1/32", i)), PortMin: 443, PortMax: 443})
	}
	d1, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.WriteSlot(2, full); err != nil {
		t.Fatal(err)
	}
	d1.Close()
	d, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, rules := range [][]Rule{full[:1], full[10:13], full[5:6]} {
		if err := d.WriteSlot(2, rules); err != nil {
			t.Fatal(err)
		}
		if n := usedBuckets(t, d, 2); n != len(rules) {
			t.Fatalf("%d rules: %d peer buckets used", len(rules), n)
		}
		got, err := d.ReadSlot(2)
		if err != nil || !slices.Equal(got, rules) {
			t.Fatalf("rules read back %v (%v), want %v", got, err, rules)
		}
	}
	if err := d.SetDevice(devMAC, DeviceEntry{Slot: 2, Mode: ModeEnforce, NRules: 1}); err != nil {
		t.Fatal(err)
	}
	for i, r := range full {
		p := pkt{src: devMAC, dst: r.Prefix.Addr().String(), proto: layers.IPProtocolTCP, sport: 40000, dport: 443}
		want := uint32(xdpDrop)
		if i == 5 {
			want = xdpPass
		}
		if got := run(t, d.Program(), p.bytes(t)); got != want {
			t.Fatalf("%s: verdict %d, want %d", r.Prefix, got, want)
		}
	}
}
