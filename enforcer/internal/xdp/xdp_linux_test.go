//go:build linux

package xdp

import (
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/medmesh/medmesh/internal/testutil"
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
	if err := d.WriteSlot(3, testRules()); err != nil {
		t.Fatal(err)
	}
	if err := d.SetDevice(devMAC, DeviceEntry{Slot: 3, Mode: ModeEnforce, NRules: 7}); err != nil {
		t.Fatal(err)
	}
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
		{"vlan tagged allowed", pkt{src: devMAC, vlan: true, dst: "10.2.9.9", proto: tcp, sport: 40000, dport: 443}, xdpPass, VerdictPassAllowed, 0},
		{"vlan tagged denied", pkt{src: devMAC, vlan: true, dst: "10.2.9.9", proto: tcp, sport: 40000, dport: 80}, xdpDrop, VerdictDropDenied, -1},
		{"later fragment to allowed peer", pkt{src: devMAC, dst: "10.2.3.4", proto: udp, fragOff: 100}, xdpPass, VerdictPassAllowed, 1},
		{"device without policy", pkt{src: otherMAC, dst: "192.0.2.1", proto: tcp, sport: 1, dport: 22}, xdpPass, VerdictPassNoPolicy, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, err := d.Verdicts()
			if err != nil {
				t.Fatal(err)
			}
			var hitsBefore uint64
			if c.rule >= 0 {
				hitsBefore, _ = d.RuleHits(3, c.rule)
			}
			if got := run(t, d.Program(), c.p.bytes(t)); got != c.want {
				t.Fatalf("verdict %d, want %d", got, c.want)
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
					t.Errorf("counter %s = %d, want %d", v, after[v].Packets, want)
				}
			}
			if c.rule >= 0 {
				hits, err := d.RuleHits(3, c.rule)
				if err != nil {
					t.Fatal(err)
				}
				if hits != hitsBefore+1 {
					t.Errorf("rule %d hits %d, want %d", c.rule, hits, hitsBefore+1)
				}
			}
		})
	}
}

func TestMonitorModeDropsNothing(t *testing.T) {
	d := loadTest(t, 64)
	if err := d.WriteSlot(0, testRules()); err != nil {
		t.Fatal(err)
	}
	if err := d.SetDevice(devMAC, DeviceEntry{Slot: 0, Mode: ModeMonitor}); err != nil {
		t.Fatal(err)
	}
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
	used, err = d.UsedSlots()
	if err != nil {
		t.Fatal(err)
	}
	if len(used) != 0 {
		t.Fatalf("slots still used after clear: %v", used)
	}
	var k enforcerPeerKey
	var v enforcerPeerVal
	if it := d.objs.Peers.Iterate(); it.Next(&k, &v) {
		t.Fatalf("peer entry left after clear: %+v", k)
	}
	var info enforcerSlotInfo
	if err := d.objs.Slots.Lookup(uint32(5), &info); err != nil || info != (enforcerSlotInfo{}) {
		t.Fatalf("slot info left after clear: %+v %v", info, err)
	}
}

func TestWholeFamilyPrefixes(t *testing.T) {
	d := loadTest(t, 16)
	rules := []Rule{
		{Kind: KindAllow, Proto: 6, Dir: DirOutbound, Prefix: pfx("10.2.0.5/32"), PortMin: 443, PortMax: 443},
		{Kind: KindAllow, Proto: 17, Dir: DirOutbound, Prefix: pfx("::/0"), PortMin: 53, PortMax: 53},
		{Kind: KindBlock, Prefix: pfx("0.0.0.0/0")}, // block every IPv4 peer
	}
	if err := d.WriteSlot(2, rules); err != nil {
		t.Fatal(err)
	}
	if err := d.SetDevice(devMAC, DeviceEntry{Slot: 2, Mode: ModeEnforce, NRules: 3}); err != nil {
		t.Fatal(err)
	}
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
