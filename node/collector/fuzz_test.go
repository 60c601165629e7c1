package collector

import (
	"net/netip"
	"testing"
	"time"

	"github.com/medmesh/medmesh/node/flow"
)

// FuzzDecode feeds arbitrary datagrams, as exporters (or anyone who can
// reach the collector's port) send them, to one decoder: templates a
// datagram defines stay for the next, as they would. Decoding never
// panics nor hangs, the caches stay within their bounds, and every record
// pairs into a flow record with valid addresses.
func FuzzDecode(f *testing.F) {
	rec := v4Record("10.8.0.5", "10.1.0.9", 49152, 2575, 6, 0x1a, 12, 2400, 1_700_000_000_000)
	f.Add(msg{version: 10, sets: [][]byte{set(2, tmpl(256, v4Fields...)), set(256, rec)}}.bytes())
	f.Add(msg{version: 9, seq: 1, sets: [][]byte{set(0, tmpl(300, v4Fields...)), set(300, rec)}}.bytes())
	f.Add(msg{version: 10, sets: [][]byte{set(2, tmpl(256, ieSourceIPv4, 0xffff, ieDestinationIPv4, 4))}}.bytes())
	f.Add(msg{version: 10, sets: [][]byte{set(3, []byte{1, 0, 0, 2, 0, 1, 0, 143, 0, 4, 0, 160, 0, 8}), set(256, make([]byte, 12))}}.bytes())
	f.Add(msg{version: 10, sets: [][]byte{set(2, tmpl(256, 0x8000|ieOctetDeltaCount, 8, 0, 0))}}.bytes())
	f.Add([]byte{0, 9})
	cfg := DefaultConfig()
	cfg.MaxTemplates = 8
	d := newDecoder(cfg)
	p := newPairer(time.Second, 64)
	exporter := netip.MustParseAddr("192.0.2.1")
	now := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, b []byte) {
		now = now.Add(time.Second)
		ws, site, _ := d.Decode(exporter, b, now)
		for _, e := range d.exporters {
			if len(e.tmpl.m) > cfg.MaxTemplates || len(e.seq) > cfg.MaxTemplates || len(e.initMs) > cfg.MaxTemplates {
				t.Fatalf("caches past their bound: %d templates, %d sequences, %d init times", len(e.tmpl.m), len(e.seq), len(e.initMs))
			}
		}
		for _, w := range ws {
			p.add(site, w, now, func(r *flow.Record) {
				if !r.Src.IsValid() || !r.Dst.IsValid() || r.LastNs < r.FirstNs || r.Site != site {
					t.Fatalf("bad record %+v", r)
				}
			})
		}
		p.flush(now, func(*flow.Record) {})
	})
}
