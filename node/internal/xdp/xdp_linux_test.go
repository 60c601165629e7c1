package xdp

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/flow"
)

const (
	xdpDrop = 1
	xdpPass = 2
)

// harness is a freshly loaded datapath driven with BPF_PROG_TEST_RUN.
type harness struct {
	t      *testing.T
	d      *Datapath
	rd     *Reader
	clock  int64
	events []Event
}

func newHarness(t *testing.T, tap bool) *harness {
	t.Helper()
	testutil.RequireRoot(t)
	cfg := DefaultConfig()
	cfg.FlowEntries = 1024
	cfg.RingBytes = 1 << 20
	cfg.Tap = tap
	d, err := Load(cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	rd, err := d.NewReader()
	if err != nil {
		d.Close()
		t.Fatalf("reader: %v", err)
	}
	t.Cleanup(func() {
		if err := errors.Join(rd.Close(), d.Close()); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return &harness{t: t, d: d, rd: rd, clock: 1_700_000_000_000_000_000}
}

// run feeds one frame at the next clock tick (1 ms apart), returns the
// verdict and collects the events it produced.
func (h *harness) run(frame []byte) uint32 {
	h.t.Helper()
	h.clock += int64(time.Millisecond)
	if err := h.d.SetClock(h.clock); err != nil {
		h.t.Fatal(err)
	}
	ret, err := h.d.Program().Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		h.t.Fatalf("prog.Run: %v", err)
	}
	for {
		var ev Event
		err := h.rd.Read(time.Unix(1, 0), &ev)
		if errors.Is(err, ErrNoEvent) {
			break
		}
		if err != nil {
			h.t.Fatalf("read event: %v", err)
		}
		// Copy aliased payloads before the next read.
		ev.Sample.Payload = bytes.Clone(ev.Sample.Payload)
		ev.Discovery.Data = bytes.Clone(ev.Discovery.Data)
		h.events = append(h.events, ev)
	}
	return ret
}

func (h *harness) flows() map[string]flow.Record {
	h.t.Helper()
	out := make(map[string]flow.Record)
	if err := h.d.ForEachFlow(func(_ FlowKey, r *flow.Record) bool {
		out[tupleString(r.Tuple())] = *r
		return true
	}); err != nil {
		h.t.Fatal(err)
	}
	return out
}

func (h *harness) stats() Stats {
	h.t.Helper()
	s, err := h.d.Stats()
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) kinds() []EventKind {
	var k []EventKind
	for _, e := range h.events {
		k = append(k, e.Kind)
	}
	return k
}

func tupleString(t flow.Tuple) string {
	return fmt.Sprintf("%d %s:%d>%s:%d v%d", t.Proto, t.Src, t.SrcPort, t.Dst, t.DstPort, t.VLAN)
}

// want is one expected flow: packets and L3 bytes per direction.
type want struct {
	tuple                 string
	fp, fb, rp, rb, frags uint64
	fflags, rflags        uint8
}

func checkFlows(t *testing.T, got map[string]flow.Record, wants []want) {
	t.Helper()
	if len(got) != len(wants) {
		keys := make([]string, 0, len(got))
		for k := range got {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		t.Fatalf("got %d flows %q, want %d", len(got), keys, len(wants))
	}
	for _, w := range wants {
		r, ok := got[w.tuple]
		if !ok {
			t.Fatalf("flow %q missing; have %v", w.tuple, got)
		}
		if r.FwdPackets != w.fp || r.FwdBytes != w.fb || r.RevPackets != w.rp || r.RevBytes != w.rb || r.Fragments != w.frags {
			t.Errorf("flow %q: fwd %d/%d rev %d/%d frags %d, want fwd %d/%d rev %d/%d frags %d",
				w.tuple, r.FwdPackets, r.FwdBytes, r.RevPackets, r.RevBytes, r.Fragments, w.fp, w.fb, w.rp, w.rb, w.frags)
		}
		if (w.fflags != 0 || w.rflags != 0) && (r.FwdTCPFlags != w.fflags || r.RevTCPFlags != w.rflags) {
			t.Errorf("flow %q: tcp flags %#x/%#x, want %#x/%#x", w.tuple, r.FwdTCPFlags, r.RevTCPFlags, w.fflags, w.rflags)
		}
		if r.LastNs < r.FirstNs || r.FirstNs == 0 {
			t.Errorf("flow %q: first %d last %d", w.tuple, r.FirstNs, r.LastNs)
		}
	}
}

func TestProgramTable(t *testing.T) {
	payload := []byte("hello")
	dnsResp := append([]byte{0x12, 0x34, 0x81, 0x80}, make([]byte, 8)...)
	dnsQuery := append([]byte{0x12, 0x34, 0x01, 0x00}, make([]byte, 8)...)
	hbh, rt, dst := ext6{typ: 0}, ext6{typ: 43, units: 1}, ext6{typ: 60}
	type tc struct {
		name   string
		frames [][]byte
		flows  []want
		errs   map[string]uint64
		kinds  []EventKind
		nonIP  uint64
		frags  uint64
	}
	s, c := "10.0.0.1", "10.0.0.2"
	s6, c6 := "2001:db8::1", "2001:db8::2"
	cases := []tc{{
		name: "tcp v4 both directions, payload sampled",
		frames: [][]byte{
			pad(v4frame(macA, macB, ipv4(s, c, 6, tcpSeg(40000, 80, 0x02, nil), v4opts{}))),
			pad(v4frame(macB, macA, ipv4(c, s, 6, tcpSeg(80, 40000, 0x12, nil), v4opts{}))),
			pad(v4frame(macA, macB, ipv4(s, c, 6, tcpSeg(40000, 80, 0x18, payload), v4opts{}))),
		},
		flows: []want{{tuple: "6 10.0.0.1:40000>10.0.0.2:80 v0", fp: 2, fb: 40 + 45, rp: 1, rb: 40, fflags: 0x1a, rflags: 0x12}},
		kinds: []EventKind{EventFlowStart, EventSample},
	}, {
		name:   "ipv4 options, udp",
		frames: [][]byte{v4frame(macA, macB, ipv4(s, c, 17, udpDgram(5000, 6000, payload), v4opts{options: []byte{1, 1, 1, 0}}))},
		flows:  []want{{tuple: "17 10.0.0.1:5000>10.0.0.2:6000 v0", fp: 1, fb: 24 + 8 + 5}},
		kinds:  []EventKind{EventFlowStart, EventSample},
	}, {
		name:   "802.1Q",
		frames: [][]byte{pad(v4frame(macA, macB, ipv4(s, c, 6, tcpSeg(1, 2, 0x10, nil), v4opts{}), [2]uint16{0x8100, 0x2064}))},
		flows:  []want{{tuple: "6 10.0.0.1:1>10.0.0.2:2 v100", fp: 1, fb: 40, fflags: 0x10}},
		kinds:  []EventKind{EventFlowStart},
	}, {
		name:   "802.1ad QinQ keys on the inner tag",
		frames: [][]byte{pad(v4frame(macA, macB, ipv4(s, c, 6, tcpSeg(1, 2, 0x10, nil), v4opts{}), [2]uint16{0x88a8, 200}, [2]uint16{0x8100, 100}))},
		flows:  []want{{tuple: "6 10.0.0.1:1>10.0.0.2:2 v100", fp: 1, fb: 40, fflags: 0x10}},
		kinds:  []EventKind{EventFlowStart},
	}, {
		name:   "three tags",
		frames: [][]byte{pad(v4frame(macA, macB, ipv4(s, c, 6, tcpSeg(1, 2, 0x10, nil), v4opts{}), [2]uint16{0x88a8, 1}, [2]uint16{0x8100, 2}, [2]uint16{0x8100, 3}))},
		errs:   map[string]uint64{"vlan_depth": 1},
	}, {
		name:   "truncated vlan",
		frames: [][]byte{append(ether(macA, macB, 0x8100), 0, 1)},
		errs:   map[string]uint64{"truncated_vlan": 1},
	}, {
		name: "ipv6 hop-by-hop, routing, destination options",
		frames: [][]byte{
			v6frame(macA, macB, ipv6(s6, c6, 6, tcpSeg(40000, 443, 0x02, nil), hbh, rt, dst)),
			v6frame(macB, macA, ipv6(c6, s6, 6, tcpSeg(443, 40000, 0x12, nil))),
		},
		flows: []want{{tuple: "6 2001:db8::1:40000>2001:db8::2:443 v0", fp: 1, fb: 40 + 8 + 16 + 8 + 20, rp: 1, rb: 60, fflags: 0x02, rflags: 0x12}},
		kinds: []EventKind{EventFlowStart},
	}, {
		name: "ipv6 fragments without ports",
		frames: [][]byte{
			v6frame(macA, macB, ipv6(s6, c6, 17, udpDgram(5000, 6000, payload), ext6{typ: 44, fragOff: 1})),
			v6frame(macA, macB, ipv6(s6, c6, 17, payload, ext6{typ: 44, fragOff: 185 << 3})),
		},
		flows: []want{{tuple: "17 2001:db8::1:0>2001:db8::2:0 v0", fp: 2, fb: 40 + 8 + 13 + 40 + 8 + 5, frags: 2}},
		kinds: []EventKind{EventFlowStart},
		frags: 2,
	}, {
		name:   "ipv6 atomic fragment keeps ports",
		frames: [][]byte{v6frame(macA, macB, ipv6(s6, c6, 17, udpDgram(5000, 6000, nil), ext6{typ: 44}))},
		flows:  []want{{tuple: "17 2001:db8::1:5000>2001:db8::2:6000 v0", fp: 1, fb: 56}},
		kinds:  []EventKind{EventFlowStart},
	}, {
		name: "ipv4 fragments without ports",
		frames: [][]byte{
			v4frame(macA, macB, ipv4(s, c, 17, udpDgram(5000, 6000, payload), v4opts{flags: 0x2000})),
			pad(v4frame(macA, macB, ipv4(s, c, 17, payload, v4opts{flags: 2}))),
		},
		flows: []want{{tuple: "17 10.0.0.1:0>10.0.0.2:0 v0", fp: 2, fb: 33 + 25, frags: 2}},
		kinds: []EventKind{EventFlowStart},
		frags: 2,
	}, {
		name:   "sctp",
		frames: [][]byte{pad(v4frame(macA, macB, ipv4(s, c, 132, sctpPkt(2905, 2905), v4opts{})))},
		flows:  []want{{tuple: "132 10.0.0.1:2905>10.0.0.2:2905 v0", fp: 1, fb: 36}},
		kinds:  []EventKind{EventFlowStart},
	}, {
		name: "icmp echo both directions",
		frames: [][]byte{
			pad(v4frame(macA, macB, ipv4(s, c, 1, icmpMsg(8, 0), v4opts{}))),
			pad(v4frame(macB, macA, ipv4(c, s, 1, icmpMsg(0, 0), v4opts{}))),
		},
		flows: []want{{tuple: "1 10.0.0.1:0>10.0.0.2:0 v0", fp: 1, fb: 28, rp: 1, rb: 28}},
		kinds: []EventKind{EventFlowStart},
	}, {
		name:   "icmpv6 neighbour solicitation",
		frames: [][]byte{v6frame(macA, macB, ipv6("fe80::1", "ff02::1:ff00:2", 58, icmpMsg(135, 0)))},
		flows:  []want{{tuple: "58 fe80::1:0>ff02::1:ff00:2:0 v0", fp: 1, fb: 48}},
		kinds:  []EventKind{EventFlowStart, EventDiscovery},
	}, {
		name:   "arp",
		frames: [][]byte{pad(append(ether(macA, [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 0x0806), arpPkt()...))},
		kinds:  []EventKind{EventDiscovery},
		nonIP:  1,
	}, {
		name:   "lldp",
		frames: [][]byte{pad(ether(macA, macB, 0x88cc))},
		nonIP:  1,
	}, {
		name:   "dhcp",
		frames: [][]byte{v4frame(macA, macB, ipv4("0.0.0.0", "255.255.255.255", 17, udpDgram(68, 67, make([]byte, 300)), v4opts{}))},
		flows:  []want{{tuple: "17 0.0.0.0:68>255.255.255.255:67 v0", fp: 1, fb: 328}},
		kinds:  []EventKind{EventFlowStart, EventSample, EventDiscovery},
	}, {
		name: "dns query then response",
		frames: [][]byte{
			v4frame(macA, macB, ipv4(s, c, 17, udpDgram(33000, 53, dnsQuery), v4opts{})),
			v4frame(macB, macA, ipv4(c, s, 17, udpDgram(53, 33000, dnsResp), v4opts{})),
		},
		flows: []want{{tuple: "17 10.0.0.1:33000>10.0.0.2:53 v0", fp: 1, fb: 40, rp: 1, rb: 40}},
		kinds: []EventKind{EventFlowStart, EventSample, EventSample, EventDiscovery},
	}, {
		name:   "dhcpv6",
		frames: [][]byte{v6frame(macA, macB, ipv6("fe80::1", "ff02::1:2", 17, udpDgram(546, 547, payload)))},
		flows:  []want{{tuple: "17 fe80::1:546>ff02::1:2:547 v0", fp: 1, fb: 53}},
		kinds:  []EventKind{EventFlowStart, EventSample, EventDiscovery},
	}, {
		name:   "other ip protocol",
		frames: [][]byte{pad(v4frame(macA, macB, ipv4(s, c, 47, []byte{0, 0, 8, 0}, v4opts{})))},
		flows:  []want{{tuple: "47 10.0.0.1:0>10.0.0.2:0 v0", fp: 1, fb: 24}},
		kinds:  []EventKind{EventFlowStart},
	}, {
		name: "malformed and truncated ipv4",
		frames: [][]byte{
			append(ether(macA, macB, 0x0800), 0x45, 0, 0, 40, 0, 0),
			pad(v4frame(macA, macB, append([]byte{0x55}, ipv4(s, c, 6, nil, v4opts{})[1:]...))),
			pad(v4frame(macA, macB, append([]byte{0x44}, ipv4(s, c, 6, nil, v4opts{})[1:]...))),
			pad(v4frame(macA, macB, ipv4(s, c, 6, nil, v4opts{totLen: 19}))),
			v4frame(macA, macB, ipv4(s, c, 6, nil, v4opts{options: []byte{1, 1, 1, 0}}))[:14+22],
		},
		errs: map[string]uint64{"truncated_ipv4": 2, "bad_ipv4": 3},
	}, {
		name: "malformed and truncated l4",
		frames: [][]byte{
			v4frame(macA, macB, ipv4(s, c, 6, tcpSeg(1, 2, 0, nil)[:10], v4opts{})),
			v4frame(macA, macB, ipv4(s, c, 6, append(tcpSeg(1, 2, 0, nil)[:12], 0x40, 0, 0, 0, 0, 0, 0, 0), v4opts{})),
			v4frame(macA, macB, ipv4(s, c, 17, []byte{0, 1, 0, 2, 0, 4, 0, 0}, v4opts{})),
			v4frame(macA, macB, ipv4(s, c, 132, sctpPkt(1, 2)[:8], v4opts{})),
			v4frame(macA, macB, ipv4(s, c, 1, []byte{8, 0}, v4opts{})),
		},
		errs: map[string]uint64{"truncated_l4": 3, "bad_l4": 2},
	}, {
		name: "malformed and truncated ipv6",
		frames: [][]byte{
			v6frame(macA, macB, ipv6(s6, c6, 6, nil))[:14+30],
			v6frame(macA, macB, append([]byte{0x40}, ipv6(s6, c6, 6, nil)[1:]...)),
			v6frame(macA, macB, ipv6(s6, c6, 6, nil, hbh))[:14+40+4],
			v6frame(macA, macB, ipv6(s6, c6, 6, nil, hbh, dst, hbh, dst, hbh, dst, hbh)),
		},
		errs: map[string]uint64{"truncated_ipv6": 1, "bad_ipv6": 1, "ipv6_extension": 2},
	}, {
		name:   "ethernet padding is not counted",
		frames: [][]byte{pad(v4frame(macA, macB, ipv4(s, c, 6, tcpSeg(1, 2, 0x10, []byte{1}), v4opts{})))},
		flows:  []want{{tuple: "6 10.0.0.1:1>10.0.0.2:2 v0", fp: 1, fb: 41, fflags: 0x10}},
		kinds:  []EventKind{EventFlowStart, EventSample},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, false)
			for i, f := range tc.frames {
				if v := h.run(f); v != xdpPass {
					t.Fatalf("frame %d: verdict %d, want XDP_PASS", i, v)
				}
			}
			checkFlows(t, h.flows(), tc.flows)
			st := h.stats()
			if st.Packets != uint64(len(tc.frames)) {
				t.Errorf("packets %d, want %d", st.Packets, len(tc.frames))
			}
			var nerr uint64
			for _, n := range tc.errs {
				nerr += n
			}
			if st.ParseErrors != nerr {
				t.Errorf("parse errors %d (%v), want %d", st.ParseErrors, st.ParseErrorsByReason, nerr)
			}
			for r, n := range tc.errs {
				if st.ParseErrorsByReason[r] != n {
					t.Errorf("parse errors %q: %d, want %d (%v)", r, st.ParseErrorsByReason[r], n, st.ParseErrorsByReason)
				}
			}
			if st.NonIP != tc.nonIP {
				t.Errorf("non-ip %d, want %d", st.NonIP, tc.nonIP)
			}
			if st.Fragments != tc.frags {
				t.Errorf("fragments %d, want %d", st.Fragments, tc.frags)
			}
			if !slices.Equal(h.kinds(), tc.kinds) {
				t.Errorf("events %v, want %v", h.kinds(), tc.kinds)
			}
			if st.RingDrops != 0 {
				t.Errorf("ring drops %d", st.RingDrops)
			}
		})
	}
}

func TestTapDropsAfterAccounting(t *testing.T) {
	h := newHarness(t, true)
	if v := h.run(pad(v4frame(macA, macB, ipv4("10.0.0.1", "10.0.0.2", 6, tcpSeg(1, 2, 0x02, nil), v4opts{})))); v != xdpDrop {
		t.Fatalf("verdict %d, want XDP_DROP", v)
	}
	if v := h.run(pad(ether(macA, macB, 0x88cc))); v != xdpDrop {
		t.Fatalf("non-ip verdict %d, want XDP_DROP", v)
	}
	checkFlows(t, h.flows(), []want{{tuple: "6 10.0.0.1:1>10.0.0.2:2 v0", fp: 1, fb: 40, fflags: 2}})
}

func TestEventContents(t *testing.T) {
	h := newHarness(t, false)
	dnsResp := append([]byte{0x12, 0x34, 0x81, 0x80}, make([]byte, 8)...)
	// TTL 62: forwarded twice on its way here.
	h.run(v4frame(macB, macA, ipv4("10.0.0.2", "10.0.0.1", 17, udpDgram(53, 33000, dnsResp), v4opts{ttl: 62})))
	h.run(pad(append(ether(macA, [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 0x0806), arpPkt()...)))
	if len(h.events) != 4 {
		t.Fatalf("events %v", h.kinds())
	}
	start, sample, disc, arp := h.events[0], h.events[1], h.events[2], h.events[3]
	wantT := flow.Tuple{Src: netip.MustParseAddr("10.0.0.2"), Dst: netip.MustParseAddr("10.0.0.1"), SrcPort: 53, DstPort: 33000, Proto: 17}
	if start.Start != wantT || start.TimeNs != h.clock-int64(time.Millisecond) {
		t.Errorf("flow start %+v at %d", start.Start, start.TimeNs)
	}
	if sample.Sample.Flow != wantT || sample.Sample.Dir != flow.Fwd || sample.Sample.Index != 0 ||
		!bytes.Equal(sample.Sample.Payload, dnsResp) || sample.Sample.WireLen != 12 || sample.Sample.SrcMAC != macB ||
		sample.Sample.TTL != 62 {
		t.Errorf("sample %+v", sample.Sample)
	}
	d := disc.Discovery
	if d.Kind != flow.DiscoveryDNS || d.Src != wantT.Src || d.SrcPort != 53 || !bytes.Equal(d.Data, dnsResp) || d.SrcMAC != macB || d.TTL != 62 {
		t.Errorf("discovery %+v", d)
	}
	a := arp.Discovery
	if a.Kind != flow.DiscoveryARP || !bytes.Equal(a.Data, arpPkt()) || a.SrcMAC != macA || a.TTL != 0 {
		t.Errorf("arp discovery %+v", a)
	}
	nonIP, err := h.d.NonIP()
	if err != nil {
		t.Fatal(err)
	}
	if n := nonIP[macA]; n.Packets != 1 || n.Bytes != 60 || n.LastEtherType != 0x0806 {
		t.Errorf("non-ip of %v: %+v", flow.MAC(macA), n)
	}
}

func TestSampleBudget(t *testing.T) {
	h := newHarness(t, false)
	s, c := "10.0.0.1", "10.0.0.2"
	tup := flow.Tuple{Src: netip.MustParseAddr(s), Dst: netip.MustParseAddr(c), SrcPort: 40000, DstPort: 23, Proto: 6}
	send := func(i int) {
		h.run(v4frame(macA, macB, ipv4(s, c, 6, tcpSeg(40000, 23, 0x18, []byte{byte(i)}), v4opts{})))
	}
	for i := range 5 {
		send(i)
	}
	// A reverse payload packet has its own budget.
	h.run(v4frame(macB, macA, ipv4(c, s, 6, tcpSeg(23, 40000, 0x18, []byte("login:")), v4opts{})))
	if err := h.d.ExtendSamples(tup, 7); err != nil {
		t.Fatal(err)
	}
	for i := 5; i < 9; i++ {
		send(i)
	}
	var fwd []uint8
	var rev int
	for _, e := range h.events {
		if e.Kind != EventSample {
			continue
		}
		if e.Sample.Flow != tup {
			t.Fatalf("sample of %v, want %v", e.Sample.Flow, tup)
		}
		if e.Sample.Dir == flow.Rev {
			rev++
			continue
		}
		if e.Sample.Payload[0] != e.Sample.Index {
			t.Errorf("sample index %d carries packet %d", e.Sample.Index, e.Sample.Payload[0])
		}
		fwd = append(fwd, e.Sample.Index)
	}
	// Packets 0-3 by default; 4 passed before the budget rose; 5 and 6 under it.
	if !slices.Equal(fwd, []uint8{0, 1, 2, 3, 5, 6}) || rev != 1 {
		t.Errorf("fwd samples %v, rev %d", fwd, rev)
	}
}

func TestBaseline(t *testing.T) {
	h := newHarness(t, false)
	dev := flow.MAC(macA)
	rules := []BaselineRule{
		{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Proto: 6, Port: 80},
		{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Proto: 17},
		{Prefix: netip.MustParsePrefix("2001:db8::/32"), Proto: 0, Port: 443},
	}
	if err := h.d.SetBaseline(dev, rules); err != nil {
		t.Fatal(err)
	}
	tcp := func(src, dst string, sp, dp uint16) []byte {
		return pad(v4frame(macA, macB, ipv4(src, dst, 6, tcpSeg(sp, dp, 2, nil), v4opts{})))
	}
	h.run(tcp("10.0.0.1", "10.0.0.2", 1000, 80))                                                           // in
	h.run(tcp("10.0.0.1", "10.0.0.2", 1001, 22))                                                           // port
	h.run(pad(v4frame(macA, macB, ipv4("10.0.0.1", "10.9.0.1", 17, udpDgram(1002, 9999, nil), v4opts{})))) // in via /8
	h.run(tcp("10.0.0.1", "10.9.0.1", 1003, 80))                                                           // protocol
	h.run(tcp("10.0.0.1", "192.168.1.1", 1004, 80))                                                        // peer
	h.run(pad(v4frame(macB, macA, ipv4("10.0.0.9", "10.0.0.1", 6, tcpSeg(1005, 80, 2, nil), v4opts{}))))   // in, device is dst
	h.run(v6frame(macA, macB, ipv6("2001:db8::1", "2001:db8:1::1", 6, tcpSeg(1006, 443, 2, nil))))         // in
	h.run(v6frame(macB, macA, ipv6("2001:db9::1", "2001:db8::1", 6, tcpSeg(1007, 443, 2, nil))))           // peer, device is dst
	got := map[uint16]string{}
	for _, r := range h.flows() {
		got[r.SrcPort] = r.Baseline
	}
	wantVerdict := map[uint16]string{1000: "in", 1001: "out", 1002: "in", 1003: "out", 1004: "out", 1005: "in", 1006: "in", 1007: "out"}
	if fmt.Sprint(got) != fmt.Sprint(wantVerdict) {
		t.Errorf("verdicts %v, want %v", got, wantVerdict)
	}
	misses := map[uint16]string{}
	for _, e := range h.events {
		if e.Kind != EventBaselineMiss {
			continue
		}
		m := e.Miss
		if m.DeviceMAC != dev {
			t.Errorf("miss for %v", m.DeviceMAC)
		}
		if m.DeviceIsSrc != (m.Flow.SrcPort != 1007) {
			t.Errorf("miss %+v: device side", m)
		}
		misses[m.Flow.SrcPort] = m.Reason
	}
	wantMiss := map[uint16]string{1001: "port", 1003: "protocol", 1004: "peer", 1007: "peer"}
	if fmt.Sprint(misses) != fmt.Sprint(wantMiss) {
		t.Errorf("misses %v, want %v", misses, wantMiss)
	}
	if err := h.d.ClearBaseline(dev); err != nil {
		t.Fatal(err)
	}
	h.run(tcp("10.0.0.1", "192.168.1.1", 1010, 80))
	for _, r := range h.flows() {
		if r.SrcPort == 1010 && r.Baseline != "" {
			t.Errorf("after clear: verdict %q", r.Baseline)
		}
	}
	if st := h.stats(); st.BaselineMisses != 4 {
		t.Errorf("baseline misses %d, want 4", st.BaselineMisses)
	}
}

func TestTakeFlow(t *testing.T) {
	h := newHarness(t, false)
	h.run(pad(v4frame(macA, macB, ipv4("10.0.0.1", "10.0.0.2", 6, tcpSeg(1, 2, 0x02, nil), v4opts{}))))
	var keys []FlowKey
	if err := h.d.ForEachFlow(func(k FlowKey, _ *flow.Record) bool { keys = append(keys, k); return true }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 {
		t.Fatalf("%d flows", len(keys))
	}
	r, ok, err := h.d.TakeFlow(keys[0])
	if err != nil || !ok || r.FwdPackets != 1 || r.SrcMAC != macA || r.DstMAC != macB {
		t.Fatalf("take: %+v %v %v", r, ok, err)
	}
	if _, ok, err := h.d.TakeFlow(keys[0]); ok || err != nil {
		t.Fatalf("second take: %v %v", ok, err)
	}
	if len(h.flows()) != 0 {
		t.Fatal("flow still in table")
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
