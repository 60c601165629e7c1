package xdp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	xipv4 "golang.org/x/net/ipv4"
	xipv6 "golang.org/x/net/ipv6"

	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/flow"
)

// lab is two network namespaces joined by a veth pair: A (10.99.0.1,
// fd99::1 on va) and B (10.99.0.2, fd99::2 on vb), with static neighbours
// so no ND or ARP traffic mixes in, and nftables counters in B that count
// every A<->B packet and its L3 bytes independently of XDP.
type lab struct {
	t    *testing.T
	a, b string
	macA string
	macB string
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newLab(t *testing.T) *lab {
	t.Helper()
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("skipped: nft not installed (reference counters)")
	}
	id := fmt.Sprintf("%d%d", os.Getpid()%10000, time.Now().UnixNano()%1000)
	l := &lab{t: t, a: "mmdpa" + id, b: "mmdpb" + id}
	sh(t, "ip", "netns", "add", l.a)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", l.a).Run() })
	sh(t, "ip", "netns", "add", l.b)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", l.b).Run() })
	sh(t, "ip", "-n", l.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", l.b)
	for _, s := range []struct{ ns, dev, v4, v6 string }{{l.a, "va", "10.99.0.1/24", "fd99::1/64"}, {l.b, "vb", "10.99.0.2/24", "fd99::2/64"}} {
		sh(t, "ip", "-n", s.ns, "addr", "add", s.v4, "dev", s.dev)
		sh(t, "ip", "-n", s.ns, "addr", "add", s.v6, "dev", s.dev, "nodad")
		sh(t, "ip", "-n", s.ns, "link", "set", s.dev, "up")
		sh(t, "ip", "-n", s.ns, "link", "set", "lo", "up")
	}
	l.macA = macOf(t, l.a, "va")
	l.macB = macOf(t, l.b, "vb")
	for _, n := range []struct{ ns, dev, ip, mac string }{
		{l.a, "va", "10.99.0.2", l.macB}, {l.a, "va", "fd99::2", l.macB},
		{l.b, "vb", "10.99.0.1", l.macA}, {l.b, "vb", "fd99::1", l.macA},
	} {
		sh(t, "ip", "-n", n.ns, "neigh", "replace", n.ip, "lladdr", n.mac, "dev", n.dev, "nud", "permanent")
	}
	var rules strings.Builder
	rules.WriteString("table inet mm {\n")
	for _, p := range []string{"tcp", "udp", "icmp", "icmpv6"} {
		for _, d := range []string{"fwd", "rev"} {
			fmt.Fprintf(&rules, "counter %s_4_%s {}\ncounter %s_6_%s {}\n", p, d, p, d)
		}
	}
	rules.WriteString("chain pre { type filter hook prerouting priority -300; policy accept;\n")
	for _, p := range []string{"tcp", "udp", "icmp"} {
		fmt.Fprintf(&rules, "ip saddr 10.99.0.1 ip daddr 10.99.0.2 meta l4proto %s counter name %s_4_fwd\n", p, p)
	}
	for _, p := range []string{"tcp", "udp", "icmpv6"} {
		fmt.Fprintf(&rules, "ip6 saddr fd99::1 ip6 daddr fd99::2 meta l4proto %s counter name %s_6_fwd\n", p, p)
	}
	rules.WriteString("}\nchain post { type filter hook postrouting priority 300; policy accept;\n")
	for _, p := range []string{"tcp", "udp", "icmp"} {
		fmt.Fprintf(&rules, "ip saddr 10.99.0.2 ip daddr 10.99.0.1 meta l4proto %s counter name %s_4_rev\n", p, p)
	}
	for _, p := range []string{"tcp", "udp", "icmpv6"} {
		fmt.Fprintf(&rules, "ip6 saddr fd99::2 ip6 daddr fd99::1 meta l4proto %s counter name %s_6_rev\n", p, p)
	}
	rules.WriteString("}\n}\n")
	f := t.TempDir() + "/rules.nft"
	if err := os.WriteFile(f, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, "ip", "netns", "exec", l.b, "nft", "-f", f)
	return l
}

func macOf(t *testing.T, ns, dev string) string {
	out := sh(t, "ip", "-n", ns, "-j", "link", "show", dev)
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("link %s: %v %s", dev, err, out)
	}
	return links[0].Address
}

// in runs fn on a thread switched into namespace ns; sockets fn creates
// stay in ns.
func in(t *testing.T, ns string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // the thread must not go back to the pool in ns
		}
	}()
	fn()
}

// lazy formats as its result at print time.
type lazy func() string

func (f lazy) String() string { return f() }

type nftCount struct{ packets, bytes uint64 }

func (l *lab) counters() map[string]nftCount {
	l.t.Helper()
	out := sh(l.t, "ip", "netns", "exec", l.b, "nft", "-j", "list", "counters", "table", "inet", "mm")
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Name    string `json:"name"`
				Packets uint64 `json:"packets"`
				Bytes   uint64 `json:"bytes"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		l.t.Fatalf("nft counters: %v", err)
	}
	m := map[string]nftCount{}
	for _, o := range doc.Nftables {
		if o.Counter != nil {
			m[o.Counter.Name] = nftCount{o.Counter.Packets, o.Counter.Bytes}
		}
	}
	return m
}

// traffic runs TCP and UDP request/response exchanges and ICMP echoes from
// A to B over IPv4 and IPv6, small enough that every write is one segment.
func (l *lab) traffic(t *testing.T) {
	t.Helper()
	for _, fam := range []struct{ net, a, b string }{{"4", "10.99.0.1", "10.99.0.2"}, {"6", "fd99::1", "fd99::2"}} {
		var ln net.Listener
		var uc net.PacketConn
		in(t, l.b, func() {
			var err error
			if ln, err = net.Listen("tcp"+fam.net, net.JoinHostPort(fam.b, "0")); err != nil {
				t.Fatal(err)
			}
			if uc, err = net.ListenPacket("udp"+fam.net, net.JoinHostPort(fam.b, "0")); err != nil {
				t.Fatal(err)
			}
		})
		done := make(chan error, 2)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				done <- err
				return
			}
			defer c.Close()
			_, err = io.Copy(c, c)
			done <- err
		}()
		go func() {
			buf := make([]byte, 2048)
			for range 5 {
				n, from, err := uc.ReadFrom(buf)
				if err != nil {
					done <- err
					return
				}
				if _, err := uc.WriteTo(buf[:n], from); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		var tc net.Conn
		var ucl net.Conn
		var ic *icmp.PacketConn
		in(t, l.a, func() {
			var err error
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(fam.a)}}
			if tc, err = d.Dial("tcp"+fam.net, ln.Addr().String()); err != nil {
				t.Fatal(err)
			}
			if ucl, err = net.Dial("udp"+fam.net, uc.LocalAddr().String()); err != nil {
				t.Fatal(err)
			}
			proto := "ip4:icmp"
			if fam.net == "6" {
				proto = "ip6:ipv6-icmp"
			}
			if ic, err = icmp.ListenPacket(proto, fam.a); err != nil {
				t.Fatal(err)
			}
		})
		msg := make([]byte, 100)
		for i := range 5 {
			msg[0] = byte(i)
			if _, err := tc.Write(msg); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(tc, msg); err != nil {
				t.Fatal(err)
			}
			if _, err := ucl.Write(msg[:50+i]); err != nil {
				t.Fatal(err)
			}
			ucl.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := ucl.Read(msg); err != nil {
				t.Fatal(err)
			}
		}
		tc.Close()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		for seq := 1; seq <= 3; seq++ {
			var typ icmp.Type = xipv4.ICMPTypeEcho
			if fam.net == "6" {
				typ = xipv6.ICMPTypeEchoRequest
			}
			m := icmp.Message{Type: typ, Body: &icmp.Echo{ID: 7, Seq: seq, Data: make([]byte, 20+seq)}}
			b, err := m.Marshal(nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ic.WriteTo(b, &net.IPAddr{IP: net.ParseIP(fam.b)}); err != nil {
				t.Fatal(err)
			}
			ic.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				n, _, err := ic.ReadFrom(b[:cap(b)])
				if err != nil {
					t.Fatal(err)
				}
				p := 1
				if fam.net == "6" {
					p = 58
				}
				r, err := icmp.ParseMessage(p, b[:n])
				if err == nil && (r.Type == xipv4.ICMPTypeEchoReply || r.Type == xipv6.ICMPTypeEchoReply) {
					break
				}
			}
		}
		ic.Close()
		ucl.Close()
		ln.Close()
		uc.Close()
	}
}

// TestAttachNetns: real TCP, UDP and ICMP over IPv4 and IPv6 through a veth
// pair with the program attached natively on both ends; every flow's
// packets and L3 bytes, per direction, equal nftables' counts.
func TestAttachNetns(t *testing.T) {
	l := newLab(t)
	cfg := DefaultConfig()
	cfg.FlowEntries = 1024
	d, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, at := range []struct{ ns, dev string }{{l.a, "va"}, {l.b, "vb"}} {
		in(t, at.ns, func() {
			mode, err := d.Attach(at.dev, false)
			if err != nil {
				t.Fatal(err)
			}
			if mode != ModeNative {
				t.Fatalf("%s attached %s, want native", at.dev, mode)
			}
		})
	}
	l.traffic(t)

	type key struct {
		proto uint8
		fam   string
	}
	protoName := map[uint8]string{6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}
	var last string
	testutil.Eventually(t, 5*time.Second, 50*time.Millisecond, func() bool {
		nft := l.counters()
		got := map[key]flow.Record{}
		if err := d.ForEachFlow(func(_ FlowKey, r *flow.Record) bool {
			if a := r.Src.String(); strings.HasPrefix(a, "10.99.") || strings.HasPrefix(a, "fd99:") {
				fam := "4"
				if r.Src.Is6() {
					fam = "6"
				}
				k := key{r.Proto, fam}
				g := got[k]
				// Sum the flows of one protocol and family (TCP and UDP
				// are one flow each here; ICMP is one flow).
				if r.Src.String() != map[string]string{"4": "10.99.0.1", "6": "fd99::1"}[fam] {
					g.FwdPackets += r.RevPackets
					g.FwdBytes += r.RevBytes
					g.RevPackets += r.FwdPackets
					g.RevBytes += r.FwdBytes
				} else {
					g.FwdPackets += r.FwdPackets
					g.FwdBytes += r.FwdBytes
					g.RevPackets += r.RevPackets
					g.RevBytes += r.RevBytes
				}
				got[k] = g
			}
			return true
		}); err != nil {
			t.Fatal(err)
		}
		var diff []string
		for _, k := range []key{{6, "4"}, {17, "4"}, {1, "4"}, {6, "6"}, {17, "6"}, {58, "6"}} {
			g := got[k]
			f, r := nft[protoName[k.proto]+"_"+k.fam+"_fwd"], nft[protoName[k.proto]+"_"+k.fam+"_rev"]
			if f.packets == 0 || r.packets == 0 || g.FwdPackets != f.packets || g.FwdBytes != f.bytes || g.RevPackets != r.packets || g.RevBytes != r.bytes {
				diff = append(diff, fmt.Sprintf("%s/v%s xdp fwd %d/%d rev %d/%d, nft fwd %d/%d rev %d/%d", protoName[k.proto], k.fam,
					g.FwdPackets, g.FwdBytes, g.RevPackets, g.RevBytes, f.packets, f.bytes, r.packets, r.bytes))
			}
		}
		last = strings.Join(diff, "; ")
		return len(diff) == 0
	}, "flow counts never matched nftables: %s", lazy(func() string { return last }))
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.ParseErrors != 0 || st.RingDrops != 0 {
		t.Errorf("parse errors %d, ring drops %d", st.ParseErrors, st.RingDrops)
	}
	t.Logf("stats: %d packets, %d flows created, %d samples", st.Packets, st.FlowsCreated, st.Samples)
}

// TestTapAndPassive: in tap mode the receiver never sees a datagram the
// program accounted; in passive mode it does.
func TestTapAndPassive(t *testing.T) {
	for _, tap := range []bool{true, false} {
		t.Run(fmt.Sprintf("tap=%v", tap), func(t *testing.T) {
			l := newLab(t)
			cfg := DefaultConfig()
			cfg.FlowEntries = 1024
			cfg.Tap = tap
			d, err := Load(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			in(t, l.b, func() {
				if mode, err := d.Attach("vb", false); err != nil || mode != ModeNative {
					t.Fatalf("attach: %v %v", mode, err)
				}
			})
			var rx net.PacketConn
			in(t, l.b, func() {
				var err error
				if rx, err = net.ListenPacket("udp4", "10.99.0.2:9999"); err != nil {
					t.Fatal(err)
				}
			})
			defer rx.Close()
			var tx net.Conn
			in(t, l.a, func() {
				var err error
				if tx, err = net.Dial("udp4", "10.99.0.2:9999"); err != nil {
					t.Fatal(err)
				}
			})
			defer tx.Close()
			for range 3 {
				if _, err := tx.Write(make([]byte, 72)); err != nil {
					t.Fatal(err)
				}
			}
			var rec flow.Record
			testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, func() bool {
				_ = d.ForEachFlow(func(_ FlowKey, r *flow.Record) bool {
					if r.DstPort == 9999 {
						rec = *r
					}
					return true
				})
				return rec.FwdPackets == 3
			}, "program did not account 3 datagrams")
			if rec.FwdBytes != 3*(20+8+72) {
				t.Errorf("accounted %d bytes, want %d", rec.FwdBytes, 3*100)
			}
			rx.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			got := 0
			buf := make([]byte, 200)
			for {
				if _, _, err := rx.ReadFrom(buf); err != nil {
					if !errors.Is(err, os.ErrDeadlineExceeded) {
						t.Fatal(err)
					}
					break
				}
				got++
			}
			want := 3
			if tap {
				want = 0
			}
			if got != want {
				t.Errorf("receiver got %d datagrams, want %d", got, want)
			}
			if n := l.counters()["udp_4_fwd"].packets; n != uint64(want) {
				t.Errorf("kernel stack saw %d datagrams, want %d", n, want)
			}
		})
	}
}
