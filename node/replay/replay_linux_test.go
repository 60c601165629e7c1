package replay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/flow"
)

func captures(t *testing.T) []string {
	t.Helper()
	if _, err := os.Stat(pcapDir); err != nil {
		t.Skipf("skipped: no third-party captures at %s (%v)", pcapDir, err)
	}
	var files []string
	err := filepath.WalkDir(pcapDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".pcap") || strings.HasSuffix(p, ".pcapng")) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Skipf("skipped: no captures under %s", pcapDir)
	}
	return files
}

// dirCount is one direction's packets and L3 bytes.
type dirCount struct{ packets, bytes uint64 }

// refFlow is a flow derived from tshark alone.
type refFlow struct {
	src, dst    string // initiator end "addr|port", responder end
	fwd, rev    dirCount
	proto, vlan string
}

// portProtos are the protocols whose flows carry ports.
var portProtos = map[string]bool{"6": true, "17": true, "132": true}

var l4Names = map[string]string{"tcp": "6", "udp": "17", "sctp": "132", "icmp": "1", "icmpv6": "58", "igmp": "2", "gre": "47", "esp": "50", "ah": "51", "ospf": "89", "pim": "103", "vrrp": "112"}

// tsharkFlows derives per-flow, per-direction packet and L3 byte counts from
// tshark's dissection, using the outermost IP header of every frame.
func tsharkFlows(t *testing.T, path string) (map[string]*refFlow, int) {
	t.Helper()
	fields := []string{"frame.protocols", "ip.src", "ip.dst", "ip.len", "ip.proto", "ip.flags.mf", "ip.frag_offset",
		"ipv6.src", "ipv6.dst", "ipv6.plen", "ipv6.fraghdr.offset", "ipv6.fraghdr.more",
		"tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport", "sctp.srcport", "sctp.dstport", "vlan.id"}
	args := []string{"-r", path, "-n", "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
		"-T", "fields", "-E", "occurrence=a", "-E", "aggregator=/", "-E", "separator=\t"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.Command("tshark", args...).Output()
	if err != nil {
		t.Fatalf("tshark %s: %v", path, err)
	}
	flows := map[string]*refFlow{}
	frames := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		frames++
		col := strings.Split(sc.Text(), "\t")
		for len(col) < len(fields) {
			col = append(col, "")
		}
		f := map[string]string{}
		all := map[string][]string{}
		for i, name := range fields {
			all[name] = strings.Split(col[i], "/")
			f[name] = all[name][0] // outermost occurrence
		}
		protos := strings.Split(f["frame.protocols"], ":")
		// Only frames whose first network header is IP, reached through
		// Ethernet, VLAN tags or a capture's own link header, are flows.
		ipAt := -1
		for i, p := range protos {
			if p == "ip" || p == "ipv6" {
				ipAt = i
				break
			}
			if !map[string]bool{"eth": true, "ethertype": true, "vlan": true, "null": true, "loop": true, "sll": true, "raw": true}[p] {
				break
			}
		}
		if ipAt < 0 {
			continue
		}
		var src, dst, proto string
		var l3 uint64
		frag := false
		if protos[ipAt] == "ip" {
			src, dst, proto = f["ip.src"], f["ip.dst"], f["ip.proto"]
			n, _ := strconv.ParseUint(f["ip.len"], 10, 32)
			l3 = n
			frag = f["ip.flags.mf"] == "1" || f["ip.flags.mf"] == "True" || (f["ip.frag_offset"] != "" && f["ip.frag_offset"] != "0")
		} else {
			src, dst = f["ipv6.src"], f["ipv6.dst"]
			n, _ := strconv.ParseUint(f["ipv6.plen"], 10, 32)
			l3 = n + 40
			frag = (f["ipv6.fraghdr.offset"] != "" && f["ipv6.fraghdr.offset"] != "0") || f["ipv6.fraghdr.more"] == "1" || f["ipv6.fraghdr.more"] == "True"
			if ipAt+1 < len(protos) {
				proto = l4Names[protos[ipAt+1]]
			}
			if proto == "" {
				t.Fatalf("%s frame %d: cannot tell the IPv6 payload protocol from %q", path, frames, f["frame.protocols"])
			}
		}
		var sport, dport string
		if portProtos[proto] && !frag {
			sport, dport = f[map[string]string{"6": "tcp", "17": "udp", "132": "sctp"}[proto]+".srcport"], f[map[string]string{"6": "tcp", "17": "udp", "132": "sctp"}[proto]+".dstport"]
			if sport == "" || dport == "" {
				continue // L4 header truncated: counted as a parse error, not a flow
			}
		} else {
			sport, dport = "0", "0"
		}
		vlan := "0"
		if v := all["vlan.id"]; v[0] != "" {
			vlan = v[len(v)-1] // innermost tag
		}
		a, b := src+"|"+sport, dst+"|"+dport
		lo, hi := a, b
		if hi < lo {
			lo, hi = hi, lo
		}
		key := proto + " " + vlan + " " + lo + " " + hi
		r := flows[key]
		if r == nil {
			r = &refFlow{src: a, dst: b, proto: proto, vlan: vlan}
			flows[key] = r
		}
		if a == r.src {
			r.fwd.packets++
			r.fwd.bytes += l3
		} else {
			r.rev.packets++
			r.rev.bytes += l3
		}
	}
	return flows, frames
}

func recordKey(r *flow.Record) (key, src string) {
	a := fmt.Sprintf("%s|%d", r.Src, r.SrcPort)
	b := fmt.Sprintf("%s|%d", r.Dst, r.DstPort)
	lo, hi := a, b
	if hi < lo {
		lo, hi = hi, lo
	}
	return fmt.Sprintf("%d %d %s %s", r.Proto, r.VLAN, lo, hi), a
}

// TestReplayMatchesTshark: every capture's flows, direction by direction,
// match packet and L3 byte counts tshark derives independently.
func TestReplayMatchesTshark(t *testing.T) {
	testutil.RequireRoot(t)
	files := captures(t)
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("skipped: tshark not installed (needed for the reference counts)")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			t.Parallel()
			ref, frames := tsharkFlows(t, path)
			recs, st, err := RunStats(context.Background(), path, DefaultOptions(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if st.Packets != uint64(frames) {
				t.Errorf("replay read %d packets, tshark %d", st.Packets, frames)
			}
			mismatches := 0
			seen := map[string]bool{}
			for i := range recs {
				r := &recs[i]
				key, src := recordKey(r)
				seen[key] = true
				w, ok := ref[key]
				if !ok {
					t.Errorf("flow %s: not in tshark's view", key)
					mismatches++
					continue
				}
				if w.src != src || r.FwdPackets != w.fwd.packets || r.FwdBytes != w.fwd.bytes ||
					r.RevPackets != w.rev.packets || r.RevBytes != w.rev.bytes {
					t.Errorf("flow %s: initiator %s fwd %d/%d rev %d/%d; tshark: initiator %s fwd %d/%d rev %d/%d",
						key, src, r.FwdPackets, r.FwdBytes, r.RevPackets, r.RevBytes,
						w.src, w.fwd.packets, w.fwd.bytes, w.rev.packets, w.rev.bytes)
					mismatches++
				}
				if i > 0 && recs[i-1].FirstNs > r.FirstNs {
					t.Errorf("records not sorted by first_ns at %d", i)
				}
				if r.FirstNs < 315532800e9 || r.FirstNs > time.Now().Add(-time.Hour).UnixNano() || r.LastNs < r.FirstNs {
					t.Errorf("flow %s: times %d..%d are not the capture's", key, r.FirstNs, r.LastNs)
				}
			}
			for key := range ref {
				if !seen[key] {
					t.Errorf("flow %s: tshark sees it, replay does not", key)
					mismatches++
				}
			}
			if mismatches != 0 {
				t.Errorf("%d mismatching flows", mismatches)
			}
			t.Logf("%d packets, %d flows, link %v, non-ip %d, parse errors %v", st.Packets, len(recs), st.LinkTypes, st.NonIP, nonZero(st.ParseErrors))
		})
	}
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// writeCapture writes frames (Ethernet) as a pcap of link type lt,
// converting each frame's link header.
func writeCapture(t *testing.T, path string, lt int, frames [][]byte, cis []gopacket.CaptureInfo) {
	t.Helper()
	var f bytes.Buffer
	defer func() {
		b := f.Bytes()
		binary.LittleEndian.PutUint32(b[20:], uint32(lt)) // gopacket's LinkType is 8 bits
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}()
	w := pcapgo.NewWriterNanos(&f)
	if err := w.WriteFileHeader(65536, layers.LinkType(lt)); err != nil {
		t.Fatal(err)
	}
	for i, fr := range frames {
		ip := fr[14:]
		etype := fr[12:14]
		var data []byte
		switch lt {
		case linkEthernet:
			data = fr
		case linkRaw:
			data = ip
		case linkNull:
			af := []byte{2, 0, 0, 0}
			if etype[0] == 0x86 {
				af = []byte{30, 0, 0, 0}
			}
			data = append(af, ip...)
		case linkSLL:
			h := []byte{0, 0, 0, 1, 0, 6}
			h = append(h, fr[6:12]...)
			h = append(h, 0, 0)
			data = append(append(h, etype...), ip...)
		case linkSLL2:
			h := append([]byte{}, etype...)
			h = append(h, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6)
			h = append(h, fr[6:12]...)
			h = append(h, 0, 0)
			data = append(h, ip...)
		}
		ci := cis[i]
		ci.CaptureLength, ci.Length = len(data), len(data)
		if err := w.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLinkTypes: the same packets captured as Ethernet, raw IP, BSD null,
// Linux SLL and SLL2 give the same flows.
func TestLinkTypes(t *testing.T) {
	testutil.RequireRoot(t)
	files := captures(t)
	var src string
	for _, f := range files {
		if strings.HasSuffix(f, "http_ipv6.pcap") {
			src = f
		}
	}
	if src == "" {
		t.Skip("skipped: http_ipv6.pcap not among the captures")
	}
	fh, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	r, err := pcapgo.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	var frames [][]byte
	var cis []gopacket.CaptureInfo
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		if len(data) > 14 && (data[12] == 0x08 && data[13] == 0 || data[12] == 0x86 && data[13] == 0xdd) {
			frames = append(frames, data)
			cis = append(cis, ci)
		}
	}
	dir := t.TempDir()
	summary := func(recs []flow.Record, macs bool) string {
		var b strings.Builder
		for _, r := range recs {
			fmt.Fprintf(&b, "%s:%d>%s:%d/%d %d/%d %d/%d %d..%d", r.Src, r.SrcPort, r.Dst, r.DstPort, r.Proto, r.FwdPackets, r.FwdBytes, r.RevPackets, r.RevBytes, r.FirstNs, r.LastNs)
			if macs {
				fmt.Fprintf(&b, " %s", r.SrcMAC)
			}
			b.WriteString("\n")
		}
		return b.String()
	}
	var want, wantMAC string
	for _, lt := range []int{linkEthernet, linkRaw, linkNull, linkSLL, linkSLL2} {
		p := filepath.Join(dir, fmt.Sprintf("lt%d.pcap", lt))
		writeCapture(t, p, lt, frames, cis)
		recs, st, err := RunStats(context.Background(), p, DefaultOptions(), nil)
		if err != nil {
			t.Fatalf("link type %d: %v", lt, err)
		}
		if st.Skipped != 0 || len(recs) == 0 {
			t.Fatalf("link type %d: skipped %d, %d flows", lt, st.Skipped, len(recs))
		}
		got := summary(recs, false)
		switch lt {
		case linkEthernet:
			want, wantMAC = got, summary(recs, true)
		case linkSLL, linkSLL2:
			if g := summary(recs, true); g != wantMAC {
				t.Errorf("link type %d (sender MAC kept): flows differ:\n%s\nwant\n%s", lt, g, wantMAC)
			}
		default:
			if got != want {
				t.Errorf("link type %d: flows differ:\n%s\nwant\n%s", lt, got, want)
			}
		}
	}
}

// TestBadFiles: a missing, empty, non-capture or truncated file gives one
// clear error.
func TestBadFiles(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A valid one-packet capture, then cut short.
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 60)
	if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(1e9, 0), CaptureLength: 60, Length: 60}, frame); err != nil {
		t.Fatal(err)
	}
	full := buf.Bytes()
	cases := []struct{ path, want string }{
		{filepath.Join(dir, "missing.pcap"), "replay: open " + filepath.Join(dir, "missing.pcap") + ": no such file or directory"},
		{write("empty.pcap", nil), "empty file"},
		{write("notes.txt", []byte("hello, this is text\n")), "notes.txt: not a pcap or pcapng file"},
		{write("tiny.pcap", []byte{1, 2}), "not a pcap or pcapng file"},
		{write("header.pcap", full[:10]), "truncated capture header"},
		{write("cut.pcap", full[:len(full)-7]), "truncated after 0 packets"},
		{write("nopackets.pcap", full[:24]), "capture holds no packets"},
	}
	for _, c := range cases {
		_, err := Run(context.Background(), c.path, DefaultOptions(), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Count(err.Error(), "\n") != 0 {
			t.Errorf("%s: error %v, want one line containing %q", filepath.Base(c.path), err, c.want)
		}
	}
	// The uncut capture replays.
	recs, err := Run(context.Background(), write("ok.pcap", full), DefaultOptions(), nil)
	if err != nil || len(recs) != 0 {
		t.Errorf("one zero frame: %v, %d flows", err, len(recs))
	}
}

// recorder is a flow.Handler that keeps what it is given and raises the
// sample budget of telnet flows, as the detectors do.
type recorder struct {
	budget   flow.SampleBudget
	samples  map[flow.Tuple]int
	flows    int
	discover map[flow.DiscoveryKind]int
}

func (r *recorder) SetSampleBudget(b flow.SampleBudget) { r.budget = b }
func (r *recorder) HandleFlow(rec *flow.Record) {
	r.flows++
	if rec.App == "" && rec.DstPort == 23 {
		rec.App = "telnet"
	}
}
func (r *recorder) HandleSample(s *flow.Sample) {
	r.samples[s.Flow]++
	if s.Flow.DstPort == 23 && s.Index == flow.DefaultSamples-1 {
		if err := r.budget.ExtendSamples(s.Flow, 16); err != nil {
			panic(err)
		}
	}
}
func (r *recorder) HandleDiscovery(d *flow.Discovery)     { r.discover[d.Kind]++ }
func (r *recorder) HandleBaselineMiss(*flow.BaselineMiss) {}

func TestHandlerAndBudget(t *testing.T) {
	testutil.RequireRoot(t)
	files := captures(t)
	var telnet, dns string
	for _, f := range files {
		switch filepath.Base(f) {
		case "telnet.pcap":
			telnet = f
		case "dns.pcap":
			dns = f
		}
	}
	if telnet == "" || dns == "" {
		t.Skip("skipped: telnet.pcap or dns.pcap missing")
	}
	h := &recorder{samples: map[flow.Tuple]int{}, discover: map[flow.DiscoveryKind]int{}}
	recs, err := Run(context.Background(), telnet, DefaultOptions(), h)
	if err != nil {
		t.Fatal(err)
	}
	if h.flows != len(recs) || h.budget == nil {
		t.Fatalf("handler saw %d of %d flows, budget %v", h.flows, len(recs), h.budget)
	}
	var extended bool
	for tup, n := range h.samples {
		if n > 2*flow.DefaultSamples {
			extended = true
			if tup.DstPort != 23 {
				t.Errorf("flow %v got %d samples without a raised budget", tup, n)
			}
		}
		if n > 2*16 {
			t.Errorf("flow %v got %d samples, budget 16 per direction", tup, n)
		}
	}
	if !extended {
		t.Errorf("no telnet flow got more than %d samples: %v", 2*flow.DefaultSamples, h.samples)
	}
	for _, r := range recs {
		if r.DstPort == 23 && r.App != "telnet" {
			t.Errorf("HandleFlow did not run before the record was returned: %+v", r)
		}
	}
	if _, err := Run(context.Background(), dns, DefaultOptions(), h); err != nil {
		t.Fatal(err)
	}
	if h.discover[flow.DiscoveryDNS] == 0 {
		t.Errorf("no DNS response discovered in dns.pcap: %v", h.discover)
	}
}
