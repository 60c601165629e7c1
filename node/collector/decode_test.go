package collector

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/medmesh/medmesh/node/flow"
)

// msg builds export messages: RFC 7011 IPFIX or RFC 3954 NetFlow v9.
type msg struct {
	version uint16
	domain  uint32
	seq     uint32
	sets    [][]byte
}

func (m msg) bytes() []byte {
	var body []byte
	for _, s := range m.sets {
		body = append(body, s...)
	}
	var h []byte
	if m.version == 10 {
		h = binary.BigEndian.AppendUint16(nil, 10)
		h = binary.BigEndian.AppendUint16(h, uint16(16+len(body)))
		h = binary.BigEndian.AppendUint32(h, 1_700_000_000)
		h = binary.BigEndian.AppendUint32(h, m.seq)
		h = binary.BigEndian.AppendUint32(h, m.domain)
	} else {
		h = binary.BigEndian.AppendUint16(nil, 9)
		h = binary.BigEndian.AppendUint16(h, uint16(len(m.sets))) // a Count exporters fill in differently
		h = binary.BigEndian.AppendUint32(h, 10_000)              // sysUpTime, ms
		h = binary.BigEndian.AppendUint32(h, 1_700_000_000)       // UNIX secs
		h = binary.BigEndian.AppendUint32(h, m.seq)
		h = binary.BigEndian.AppendUint32(h, m.domain)
	}
	return append(h, body...)
}

func set(id uint16, content []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, id)
	b = binary.BigEndian.AppendUint16(b, uint16(4+len(content)))
	return append(b, content...)
}

// tmpl is a template record: id and (type, length) pairs.
func tmpl(id uint16, fields ...uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, id)
	b = binary.BigEndian.AppendUint16(b, uint16(len(fields)/2))
	for _, f := range fields {
		b = binary.BigEndian.AppendUint16(b, f)
	}
	return b
}

// v4Fields: addresses, ports, protocol, flags, counters, start and end.
var v4Fields = []uint16{ieSourceIPv4, 4, ieDestinationIPv4, 4, ieSourcePort, 2, ieDestinationPort, 2,
	ieProtocolIdentifier, 1, ieTCPControlBits, 1, iePacketDeltaCount, 4, ieOctetDeltaCount, 4,
	ieFlowStartMillis, 8, ieFlowEndMillis, 8}

func v4Record(src, dst string, sport, dport uint16, proto, flags uint8, pkts, octets uint32, startMs uint64) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	b = binary.BigEndian.AppendUint16(b, dport)
	b = append(b, proto, flags)
	b = binary.BigEndian.AppendUint32(b, pkts)
	b = binary.BigEndian.AppendUint32(b, octets)
	b = binary.BigEndian.AppendUint64(b, startMs)
	return binary.BigEndian.AppendUint64(b, startMs+250)
}

func testConfig() Config {
	c := DefaultConfig()
	c.Sites = map[netip.Addr]string{netip.MustParseAddr("192.0.2.1"): "home-7"}
	return c
}

var exp = netip.MustParseAddr("192.0.2.1")

func TestDecodeIPFIXTemplatesDataAndSite(t *testing.T) {
	d := newDecoder(testConfig())
	now := time.Unix(1_700_000_000, 0)
	ws, site, err := d.Decode(exp, msg{version: 10, domain: 7, seq: 0, sets: [][]byte{
		set(2, tmpl(256, v4Fields...)),
		set(256, append(v4Record("10.8.0.5", "10.1.0.9", 49152, 2575, 6, 0x1a, 12, 2400, 1_700_000_000_000),
			v4Record("10.1.0.9", "10.8.0.5", 2575, 49152, 6, 0x12|0x08, 10, 900, 1_700_000_000_000)...)),
	}}.bytes(), now)
	if err != nil || site != "home-7" || len(ws) != 2 {
		t.Fatalf("decode: %d records at %q, %v", len(ws), site, err)
	}
	var got []flow.Record
	p := newPairer(time.Second, 16)
	for _, w := range ws {
		p.add(site, w, now, func(r *flow.Record) { got = append(got, *r) })
	}
	if len(got) != 1 {
		t.Fatalf("paired into %d records", len(got))
	}
	r := got[0]
	// The one that sent to the service port is the initiator.
	if r.Src.String() != "10.8.0.5" || r.DstPort != 2575 || r.FwdPackets != 12 || r.FwdBytes != 2400 ||
		r.RevPackets != 10 || r.RevBytes != 900 || r.Site != "home-7" || r.FirstNs != 1_700_000_000_000*1e6 ||
		r.LastNs != (1_700_000_000_000+250)*1e6 || r.FwdTCPFlags != 0x1a || r.EndReason != "idle" {
		t.Fatalf("record: %+v", r)
	}
	// Unnamed exporters are the site of their address.
	if _, site, _ := d.Decode(netip.MustParseAddr("198.51.100.4"), msg{version: 10}.bytes(), now); site != "198.51.100.4" {
		t.Fatalf("site of an unnamed exporter: %q", site)
	}
}

func TestDecodeNetFlowV9ReadsPastCount(t *testing.T) {
	d := newDecoder(testConfig())
	fields := []uint16{ieSourceIPv4, 4, ieDestinationIPv4, 4, ieSourcePort, 2, ieDestinationPort, 2,
		ieProtocolIdentifier, 1, iePacketDeltaCount, 4, ieOctetDeltaCount, 4, ieFlowStartSysUpTime, 4, ieFlowEndSysUpTime, 4}
	rec := func(src string, pkts uint32) []byte {
		s, dst := netip.MustParseAddr(src).As4(), netip.MustParseAddr("10.1.0.1").As4()
		b := append(s[:], dst[:]...)
		b = binary.BigEndian.AppendUint16(b, 5000)
		b = binary.BigEndian.AppendUint16(b, 53)
		b = append(b, 17)
		b = binary.BigEndian.AppendUint32(b, pkts)
		b = binary.BigEndian.AppendUint32(b, pkts*80)
		b = binary.BigEndian.AppendUint32(b, 4_000) // started 6 s before the header's time
		return binary.BigEndian.AppendUint32(b, 9_000)
	}
	// Count says 1 (one data record), the packet holds two sets.
	m := msg{version: 9, seq: 1, sets: [][]byte{set(0, tmpl(300, fields...)), set(300, append(rec("10.8.0.1", 2), rec("10.8.0.2", 3)...))}}
	b := m.bytes()
	binary.BigEndian.PutUint16(b[2:], 1)
	ws, _, err := d.Decode(exp, b, time.Unix(1_700_000_000, 0))
	if err != nil || len(ws) != 2 {
		t.Fatalf("v9: %d records, %v", len(ws), err)
	}
	if want := int64(1_700_000_000_000-10_000+4_000) * 1e6; ws[0].firstNs != want || ws[0].lastNs != want+5_000*1e6 {
		t.Fatalf("v9 times from sysUpTime: %d..%d, want %d", ws[0].firstNs, ws[0].lastNs, want)
	}
	// NetFlow v9 sequence numbers count packets: 2 after 1 is no loss, 5
	// after 2 lost packets 3 and 4.
	d.Decode(exp, msg{version: 9, seq: 2}.bytes(), time.Unix(1_700_000_001, 0))
	d.Decode(exp, msg{version: 9, seq: 5}.bytes(), time.Unix(1_700_000_002, 0))
	if s := d.Stats(); s.Lost != 2 {
		t.Fatalf("lost %d, want 2", s.Lost)
	}
}

func TestTemplateLifecycle(t *testing.T) {
	cfg := testConfig()
	cfg.MaxTemplates = 2
	cfg.TemplateTimeout = time.Minute
	d := newDecoder(cfg)
	t0 := time.Unix(1_700_000_000, 0)
	data := set(256, v4Record("10.8.0.5", "10.1.0.9", 1, 2, 17, 0, 1, 100, 1))
	decode := func(at time.Duration, seq uint32, sets ...[]byte) []oneWay {
		t.Helper()
		ws, _, err := d.Decode(exp, msg{version: 10, seq: seq, sets: sets}.bytes(), t0.Add(at))
		if err != nil {
			t.Logf("decode at %v: %v", at, err)
		}
		return ws
	}
	if ws := decode(0, 0, data); len(ws) != 0 || d.Stats().Unknown != 1 {
		t.Fatalf("data before its template: %d records, stats %+v", len(ws), d.Stats())
	}
	if ws := decode(time.Second, 0, set(2, tmpl(256, v4Fields...)), data); len(ws) != 1 {
		t.Fatalf("template then data: %d records", len(ws))
	}
	// The cache holds two templates per exporter; a third is refused.
	decode(2*time.Second, 1, set(2, append(tmpl(257, v4Fields...), tmpl(258, v4Fields...)...)))
	if s := d.Stats(); s.TemplatesRefused != 1 {
		t.Fatalf("refused %d templates, want 1", s.TemplatesRefused)
	}
	// A template record of no fields withdraws the template (RFC 7011 8.1).
	decode(3*time.Second, 1, set(2, tmpl(257)))
	if s := d.Stats(); s.TemplatesWithdrawn != 1 {
		t.Fatalf("withdrawn %d", s.TemplatesWithdrawn)
	}
	// A template with a field of length 0 is refused: goflow2 would read
	// a data set of only such fields forever.
	decode(4*time.Second, 1, set(2, tmpl(259, ieSourceIPv4, 0)), set(259, []byte{1, 2, 3, 4}))
	if s := d.Stats(); s.TemplatesRefused != 2 {
		t.Fatalf("zero-length template: refused %d, want 2", s.TemplatesRefused)
	}
	// Not resent within the lifetime, a template expires.
	if ws := decode(30*time.Second, 1, data); len(ws) != 1 {
		t.Fatalf("data within the template's lifetime: %d records", len(ws))
	}
	if ws := decode(2*time.Minute, 2, data); len(ws) != 0 {
		t.Fatalf("data after the template expired: %d records", len(ws))
	}
}

func TestIPFIXSequenceLoss(t *testing.T) {
	d := newDecoder(testConfig())
	t0 := time.Unix(1_700_000_000, 0)
	rec := v4Record("10.8.0.5", "10.1.0.9", 1, 2, 17, 0, 1, 100, 1)
	d.Decode(exp, msg{version: 10, seq: 0, sets: [][]byte{set(2, tmpl(256, v4Fields...)), set(256, append(rec, rec...))}}.bytes(), t0)
	d.Decode(exp, msg{version: 10, seq: 2, sets: [][]byte{set(256, rec)}}.bytes(), t0) // 2 records before: none lost
	d.Decode(exp, msg{version: 10, seq: 7, sets: [][]byte{set(256, rec)}}.bytes(), t0) // 3 before: 4 lost
	d.Decode(exp, msg{version: 10, seq: 1, sets: [][]byte{set(256, rec)}}.bytes(), t0) // a restart: not loss
	if s := d.Stats(); s.Lost != 4 || s.Records != 5 {
		t.Fatalf("stats %+v, want 4 lost of 5 records", s)
	}
}

func TestExporterLimit(t *testing.T) {
	cfg := testConfig()
	cfg.MaxExporters = 2
	cfg.TemplateTimeout = time.Minute
	d := newDecoder(cfg)
	t0 := time.Unix(1_700_000_000, 0)
	m := msg{version: 10}.bytes()
	for i, a := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		_, _, err := d.Decode(netip.MustParseAddr(a), m, t0)
		if (err != nil) != (i == 2) {
			t.Fatalf("exporter %d: %v", i, err)
		}
	}
	// An exporter silent past the template lifetime makes room.
	if _, _, err := d.Decode(netip.MustParseAddr("192.0.2.3"), m, t0.Add(2*time.Minute)); err != nil {
		t.Fatalf("after the others went silent: %v", err)
	}
}

func TestPairing(t *testing.T) {
	p := newPairer(time.Second, 2)
	t0 := time.Unix(1_700_000_000, 0)
	var got []flow.Record
	emit := func(r *flow.Record) { got = append(got, *r) }
	a := oneWay{src: netip.MustParseAddr("10.8.0.5"), dst: netip.MustParseAddr("10.1.0.9"), sport: 40000, dport: 443, proto: 6,
		packets: 3, bytes: 180, flags: tcpSYN, firstNs: 5}
	// Alone past the wait, a record goes on unpaired.
	p.add("s", a, t0, emit)
	p.flush(t0.Add(500*time.Millisecond), emit)
	if len(got) != 0 {
		t.Fatal("flushed before its wait")
	}
	p.flush(t0.Add(2*time.Second), emit)
	if len(got) != 1 || got[0].RevPackets != 0 || got[0].Src != a.src {
		t.Fatalf("unpaired: %+v", got)
	}
	// A biflow whose forward side sent nothing is turned around.
	got = nil
	b := oneWay{src: a.dst, dst: a.src, sport: 443, dport: 40000, proto: 6, rev: true, revPackets: 4, revBytes: 240, revFlags: tcpSYN}
	p.add("s", b, t0, emit)
	if len(got) != 1 || got[0].Src != a.src || got[0].FwdPackets != 4 || got[0].RevPackets != 0 {
		t.Fatalf("one-sided biflow: %+v", got)
	}
	// The pending table is bounded: past it, records go on alone.
	got = nil
	for i := range 3 {
		w := a
		w.sport = uint16(50000 + i)
		p.add("s", w, t0, emit)
	}
	if len(got) != 1 {
		t.Fatalf("over the bound: %d emitted, want 1", len(got))
	}
	p.flush(time.Time{}, emit)
	if len(got) != 3 {
		t.Fatalf("final flush: %d", len(got))
	}
}
