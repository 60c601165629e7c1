package collector

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medmesh/medmesh/internal/names"
	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/engine"
	"github.com/medmesh/medmesh/node/replay"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// recorder is a Sink that keeps the records and hands them on.
type recorder struct {
	mu   sync.Mutex
	recs []flow.Record
	next Sink
}

func (r *recorder) HandleFlow(rec *flow.Record) {
	r.mu.Lock()
	r.recs = append(r.recs, *rec)
	r.mu.Unlock()
	if r.next != nil {
		r.next.HandleFlow(rec)
	}
}

// end is one end of a flow: address and port.
type end struct {
	addr netip.Addr
	port uint16
}

// directed is one direction of a 5-tuple.
type directed struct {
	from, to end
	proto    uint8
}

type counts struct{ packets, bytes uint64 }

// byDirection sums records per direction of their 5-tuple: flow export
// and the sensor split a connection into records at different times
// (timeouts, FIN, active expiry), so they are compared summed.
func byDirection(recs []flow.Record) map[directed]counts {
	out := map[directed]counts{}
	add := func(from, to end, proto uint8, p, b uint64) {
		if p == 0 {
			return
		}
		k := directed{from, to, proto}
		c := out[k]
		c.packets += p
		c.bytes += b
		out[k] = c
	}
	for _, r := range recs {
		a, b := end{r.Src, r.SrcPort}, end{r.Dst, r.DstPort}
		add(a, b, r.Proto, r.FwdPackets, r.FwdBytes)
		add(b, a, r.Proto, r.RevPackets, r.RevBytes)
	}
	return out
}

var exportedRE = regexp.MustCompile(`Flows exported: \d+ \((\d+) records\)`)

// softflowd replays capture through Debian's softflowd, which exports
// NetFlow version v to a collector on loopback, and returns what the
// collector handed on.
func softflowd(t *testing.T, capture string, v int, biflow bool, next Sink) ([]flow.Record, Stats) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Sites = map[netip.Addr]string{netip.MustParseAddr("127.0.0.1"): "home-test"}
	c, err := Listen(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{next: next}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx, rec) }()
	port := c.Addr().(*net.UDPAddr).Port
	// -a: flow times from the capture's timestamps, not the clock.
	args := []string{"-a", "-r", capture, "-n", "127.0.0.1:" + strconv.Itoa(port), "-v", strconv.Itoa(v)}
	if biflow {
		args = append(args, "-b") // RFC 5103 biflows: one record per connection
	}
	out, err := exec.CommandContext(t.Context(), "softflowd", args...).CombinedOutput()
	if err != nil {
		cancel()
		<-done
		t.Fatalf("softflowd -v %d %s: %v\n%s", v, capture, err, out)
	}
	m := exportedRE.FindSubmatch(out)
	if m == nil {
		cancel()
		<-done
		t.Fatalf("softflowd said nothing of its exports:\n%s", out)
	}
	want, _ := strconv.ParseUint(string(m[1]), 10, 64)
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, func() bool { return c.Stats().Records >= want },
		"collector decoded %d of the %d records softflowd exported", c.Stats().Records, want)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.recs, c.Stats()
}

// TestSoftflowdMatchesReplay: what softflowd exports from a capture, as
// the collector decodes and pairs it, carries the same flows as the
// sensor's own datapath reports for that capture (medmesh replay): per
// direction of every 5-tuple, the same packets and L3 bytes.
func TestSoftflowdMatchesReplay(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("softflowd"); err != nil {
		t.Skipf("skipped: softflowd not installed (deploy/deps.txt): %v", err)
	}
	dir := testutil.Captures(t, "ndpi")
	for _, name := range []string{"emotet.pcap", "modbus.pcap", "snmp.pcap", "ftp.pcap", "http_auth.pcap", "hl7.pcap", "bacnet.pcap", "http_ipv6.pcap"} {
		capture := filepath.Join(dir, name)
		want, err := replay.Run(t.Context(), capture, replay.DefaultOptions(), nil)
		if err != nil {
			t.Fatalf("replay %s: %v", name, err)
		}
		wantDir := byDirection(want)
		pad := trailer(t, capture)
		for _, mode := range []struct {
			name   string
			v      int
			biflow bool
		}{{"v9", 9, false}, {"ipfix", 10, false}, {"ipfix-biflow", 10, true}} {
			t.Run(name+"/"+mode.name, func(t *testing.T) {
				v := mode.name
				got, st := softflowd(t, capture, mode.v, mode.biflow, nil)
				if st.Malformed != 0 || st.Lost != 0 || st.Unknown != 0 {
					t.Errorf("decoder stats: %+v", st)
				}
				gotDir := byDirection(got)
				var missing, extra, differ []string
				for k, w := range wantDir {
					g, ok := gotDir[k]
					w.bytes += pad[k]
					switch {
					case !ok:
						missing = append(missing, fmt.Sprintf("%v %v", k, w))
					case g != w:
						differ = append(differ, fmt.Sprintf("%v: replay %v, export %v", k, w, g))
					}
				}
				for k, g := range gotDir {
					if _, ok := wantDir[k]; !ok {
						extra = append(extra, fmt.Sprintf("%v %v", k, g))
					}
				}
				sort.Strings(missing)
				sort.Strings(extra)
				sort.Strings(differ)
				t.Logf("%s %s: replay %d records, %d directions; export %d records, %d directions; %d missing, %d extra, %d differ; %d of %d records with the replay's initiator",
					name, v, len(want), len(wantDir), len(got), len(gotDir), len(missing), len(extra), len(differ), sameInitiator(want, got), len(got))
				for _, s := range missing {
					t.Errorf("missing from export: %s", s)
				}
				for _, s := range extra {
					t.Errorf("only in export: %s", s)
				}
				for _, s := range differ {
					t.Errorf("%s", s)
				}
				// Times: softflowd dates records in sysUpTime ms, which
				// NetFlow v9 anchors to a header in whole seconds (RFC
				// 3954 UNIX Secs) and IPFIX to systemInitTimeMilliseconds:
				// two truncations to the ms. sysUpTime is 32 bits of ms:
				// it wraps every 49.7 days, so a capture that spans more
				// (emotet, snmp: merged captures of months) cannot be
				// dated by it.
				tol := 2 * time.Millisecond
				if mode.v == 9 {
					tol = time.Second
				}
				if span := captureSpan(want); span >= time.Duration(1<<32)*time.Millisecond {
					t.Logf("%s %s: flow times not compared: the capture spans %v, beyond sysUpTime's 49.7 days", name, v, span)
				} else if d := timeSkew(want, got); d > tol {
					t.Errorf("flow times differ from the replay's by up to %v (tolerance %v)", d, tol)
				} else {
					t.Logf("%s %s: flow times within %v of the replay's", name, v, d)
				}
				if n := sameInitiator(want, got); n != len(got) {
					t.Errorf("%d of %d records name the initiator the sensor's datapath does", n, len(got))
				}
				for _, r := range got {
					if r.Site != "home-test" {
						t.Fatalf("record without its exporter's site: %+v", r)
					}
				}
			})
		}
	}
}

// timeSkew is the largest difference between the first and last times of
// a 5-tuple's records in want and in got.
func timeSkew(want, got []flow.Record) time.Duration {
	type span struct{ first, last int64 }
	spans := func(recs []flow.Record) map[directed]span {
		out := map[directed]span{}
		for _, r := range recs {
			a, b := end{r.Src, r.SrcPort}, end{r.Dst, r.DstPort}
			if a.addr.Compare(b.addr) > 0 || a.addr == b.addr && a.port > b.port {
				a, b = b, a
			}
			k := directed{a, b, r.Proto}
			s, ok := out[k]
			if !ok || r.FirstNs < s.first {
				s.first = r.FirstNs
			}
			s.last = max(s.last, r.LastNs)
			out[k] = s
		}
		return out
	}
	g := spans(got)
	var worst time.Duration
	for k, w := range spans(want) {
		s, ok := g[k]
		if !ok {
			continue
		}
		worst = max(worst, time.Duration(abs(s.first-w.first)), time.Duration(abs(s.last-w.last)))
	}
	return worst
}

// captureSpan is the time from the first flow's start to the last's end.
func captureSpan(recs []flow.Record) time.Duration {
	if len(recs) == 0 {
		return 0
	}
	first, last := recs[0].FirstNs, recs[0].LastNs
	for _, r := range recs {
		first, last = min(first, r.FirstNs), max(last, r.LastNs)
	}
	return time.Duration(last - first)
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// sameInitiator counts the exported records whose initiator end is the
// one a replay record of the same 5-tuple has.
func sameInitiator(want, got []flow.Record) int {
	init := map[directed]bool{}
	for _, r := range want {
		init[directed{end{r.Src, r.SrcPort}, end{r.Dst, r.DstPort}, r.Proto}] = true
	}
	n := 0
	for _, r := range got {
		if init[directed{end{r.Src, r.SrcPort}, end{r.Dst, r.DstPort}, r.Proto}] {
			n++
		}
	}
	return n
}

// trailer sums, per direction of each 5-tuple, the bytes Ethernet frames
// carry after their IP packet (the padding of frames shorter than 60
// bytes): softflowd counts a packet's octets as the frame's length less
// its link header, where the flow-record contract (and IPFIX
// octetDeltaCount) counts the IP packet's own length.
func trailer(t *testing.T, capture string) map[directed]uint64 {
	t.Helper()
	f, err := os.Open(capture)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r interface {
		ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
		LinkType() layers.LinkType
	}
	if r, err = pcapgo.NewReader(f); err != nil {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if r, err = pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions); err != nil {
			t.Fatal(err)
		}
	}
	out := map[directed]uint64{}
	if r.LinkType() != layers.LinkTypeEthernet {
		return out
	}
	for {
		data, ci, err := r.ReadPacketData()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.NoCopy)
		var k directed
		var l3, ipLen int
		if ip, ok := p.NetworkLayer().(*layers.IPv4); ok {
			k.from.addr, _ = netip.AddrFromSlice(ip.SrcIP.To4())
			k.to.addr, _ = netip.AddrFromSlice(ip.DstIP.To4())
			k.proto, ipLen = uint8(ip.Protocol), int(ip.Length)
			l3 = ci.Length - linkLen(p)
		} else if ip, ok := p.NetworkLayer().(*layers.IPv6); ok {
			k.from.addr, _ = netip.AddrFromSlice(ip.SrcIP)
			k.to.addr, _ = netip.AddrFromSlice(ip.DstIP)
			k.proto, ipLen = uint8(ip.NextHeader), int(ip.Length)+40
			l3 = ci.Length - linkLen(p)
		} else {
			continue
		}
		switch tl := p.TransportLayer().(type) {
		case *layers.TCP:
			k.from.port, k.to.port = uint16(tl.SrcPort), uint16(tl.DstPort)
		case *layers.UDP:
			k.from.port, k.to.port = uint16(tl.SrcPort), uint16(tl.DstPort)
		}
		if l3 > ipLen {
			out[k] += uint64(l3 - ipLen)
		}
	}
}

// linkLen is the length of a frame's Ethernet and VLAN headers.
func linkLen(p gopacket.Packet) int {
	n := 0
	for _, l := range p.Layers() {
		switch l.LayerType() {
		case layers.LayerTypeEthernet, layers.LayerTypeDot1Q:
			n += len(l.LayerContents())
		}
	}
	return n
}

// TestCollectedDevicesIdentifiedAndScored: the flows softflowd exports go
// through the sensor's engine (identity, baselines, scoring) as captured
// ones do: like `medmesh replay --learn A --score B`, the engine learns
// from the flows exported from capture A, freezes, and scores those of B.
// The devices it finds are those the replay of B finds at private
// addresses (flows alone cannot tell a remote device with a public
// address from an internet peer), at the exporter's site, advisory, with
// the evidence flow export cannot carry marked absent. Every record is
// scored; where B shows a device doing what A did not (mqtt.pcap's MQTT
// client 192.168.0.1 answering telnet in telnet.pcap), the deviation is
// scored from the flows alone and raised (at a threshold of 1 point: the
// default needs more than one new peer and port).
func TestCollectedDevicesIdentifiedAndScored(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("softflowd"); err != nil {
		t.Skipf("skipped: softflowd not installed (deploy/deps.txt): %v", err)
	}
	dir := testutil.Captures(t, "ndpi")
	for _, tc := range []struct {
		learn, score string
		deviant      string // a device whose deviation must be raised
	}{
		{"dns.pcap", "emotet.pcap", ""}, {"dns.pcap", "modbus.pcap", ""}, {"dns.pcap", "snmp.pcap", ""},
		{"dns.pcap", "ftp.pcap", ""}, {"dns.pcap", "hl7.pcap", ""}, {"dns.pcap", "bacnet.pcap", ""},
		{"dns.pcap", "http_ipv6.pcap", ""}, {"mqtt.pcap", "telnet.pcap", "ip:192.168.0.1"},
	} {
		t.Run(tc.score, func(t *testing.T) {
			learn, score := filepath.Join(dir, tc.learn), filepath.Join(dir, tc.score)
			a, err := replay.Analyze(t.Context(), score, replay.AnalyzeOptions{Replay: replay.DefaultOptions(), Learn: learn}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			cfg := engine.DefaultConfig()
			cfg.SensorID = "collector"
			if tc.deviant != "" {
				cfg.Score.AlertThreshold = 1
			}
			reg := prometheus.NewRegistry()
			eng, err := engine.New(cfg, slog.New(slog.DiscardHandler), reg)
			if err != nil {
				t.Fatal(err)
			}
			learned, _ := softflowd(t, learn, 10, false, eng)
			eng.FreezeAll()
			eng.SetMode(engine.Score)
			scored, _ := softflowd(t, score, 10, false, eng)
			eng.FlushAlerts()
			if n := counter(t, reg, "medmesh_sensor_records_scored_total"); n != float64(len(learned)+len(scored)) {
				t.Errorf("engine scored %v records of %d", n, len(learned)+len(scored))
			}
			got := map[string]*medmeshv1.Device{}
			for _, d := range eng.Devices() {
				for _, ip := range d.GetIpAddresses() {
					got[ip] = d
				}
			}
			found := 0
			for _, w := range a.DeviceRecords() {
				for _, ip := range w.GetIpAddresses() {
					if !netip.MustParseAddr(ip).IsPrivate() {
						continue
					}
					d := got[ip]
					if d == nil {
						t.Errorf("device %s (%s) of the replay not found in the exported flows", w.GetMac(), ip)
						continue
					}
					found++
					t.Logf("%s: replay %s %s (%s) | export %s %s services %v", ip, w.GetMac(), names.Enum(w.GetDeviceClass()), w.GetVendor(),
						d.GetMac(), names.Enum(d.GetDeviceClass()), d.GetServices())
					if d.GetSite() != "home-test" || !d.GetAdvisory() || !slices.Contains(d.GetAbsentEvidence(), "payload") || !slices.Contains(d.GetAbsentEvidence(), "oui") {
						t.Errorf("device %s: site %q advisory %v absent %v", d.GetMac(), d.GetSite(), d.GetAdvisory(), d.GetAbsentEvidence())
					}
				}
			}
			if found == 0 {
				t.Fatal("no device of the replay at a private address: nothing compared")
			}
			raised := false
			for _, al := range eng.Alerts() {
				t.Logf("export alert %s %s: %s", al.GetKind(), al.GetDeviceMac(), al.GetSummary())
				if al.GetSite() != "home-test" {
					t.Errorf("alert %s without its site", al.GetId())
				}
				raised = raised || al.GetDeviceMac() == tc.deviant && (al.GetKind() == "new_peer" || al.GetKind() == "new_port")
			}
			if tc.deviant != "" && !raised {
				t.Errorf("the deviation of %s was not raised from its flows", tc.deviant)
			}
			t.Logf("alerts: replay %d (payload-borne ones included), export %d", a.Alerts(), len(eng.Alerts()))
		})
	}
}

// counter is the value of a counter in reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			v := 0.0
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
			return v
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
