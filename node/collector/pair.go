package collector

import (
	"net/netip"
	"time"

	"github.com/medmesh/medmesh/node/flow"
)

// Most exporters (softflowd without -b, routers) report a connection as
// two one-way records. The flow-record contract is bidirectional, so the
// collector pairs a record with its reverse when it arrives within
// PairWait, and otherwise passes it on alone.

type pairKey struct {
	site   string
	a, b   netip.Addr
	pa, pb uint16
	proto  uint8
	vlan   uint16
}

func keyOf(site string, w *oneWay) (k pairKey, forward bool) {
	k = pairKey{site: site, a: w.src, b: w.dst, pa: w.sport, pb: w.dport, proto: w.proto, vlan: w.vlan}
	if c := w.src.Compare(w.dst); c > 0 || c == 0 && w.sport > w.dport {
		k.a, k.b, k.pa, k.pb = w.dst, w.src, w.dport, w.sport
		return k, false
	}
	return k, true
}

type waiting struct {
	w        oneWay
	forward  bool
	deadline time.Time
}

// pairer holds one-way records until their reverse comes.
type pairer struct {
	wait time.Duration
	max  int
	m    map[pairKey]*waiting
}

func newPairer(wait time.Duration, max int) *pairer {
	return &pairer{wait: wait, max: max, m: make(map[pairKey]*waiting)}
}

// add takes one record and calls emit with every record it completes.
func (p *pairer) add(site string, w oneWay, now time.Time, emit func(*flow.Record)) {
	if w.rev {
		// A biflow (RFC 5103). Its forward direction should be the
		// initiator's, but exporters put whichever side they keyed
		// first there (softflowd: the lower address): it is oriented
		// like a pair of one-way records.
		x, y := w, reverse(&w)
		x.rev = false
		switch {
		case y.packets == 0:
			r := toRecord(site, &x, nil)
			emit(&r)
		case x.packets == 0:
			r := toRecord(site, &y, nil)
			emit(&r)
		default:
			a, b := orient(&x, &y)
			r := toRecord(site, a, b)
			emit(&r)
		}
		return
	}
	if p.wait <= 0 {
		r := toRecord(site, &w, nil)
		emit(&r)
		return
	}
	k, fwd := keyOf(site, &w)
	if o := p.m[k]; o != nil {
		delete(p.m, k)
		if o.forward != fwd {
			a, b := orient(&o.w, &w)
			r := toRecord(site, a, b)
			emit(&r)
			return
		}
		// Two records of one direction (an active timeout split it):
		// the earlier one goes on alone.
		r := toRecord(site, &o.w, nil)
		emit(&r)
	}
	if len(p.m) >= p.max {
		r := toRecord(site, &w, nil)
		emit(&r)
		return
	}
	p.m[k] = &waiting{w: w, forward: fwd, deadline: now.Add(p.wait)}
}

// flush passes on alone the records whose reverse did not come in time
// (all of them when now is zero).
func (p *pairer) flush(now time.Time, emit func(*flow.Record)) {
	for k, o := range p.m {
		if now.IsZero() || now.After(o.deadline) {
			delete(p.m, k)
			r := toRecord(k.site, &o.w, nil)
			emit(&r)
		}
	}
}

const (
	tcpSYN = 0x02
	tcpACK = 0x10
)

// orient returns the two directions of a connection as (initiator,
// responder). Flow export does not say who opened a connection; in order:
// the earlier start, a side that sent SYN without ever ACKing, the side
// that sent to the lower (service) port, then the order of arrival.
func orient(x, y *oneWay) (*oneWay, *oneWay) {
	switch {
	case x.firstNs != y.firstNs:
		if y.firstNs < x.firstNs {
			return y, x
		}
		return x, y
	case x.proto == 6 && x.flags&tcpSYN != 0 && x.flags&tcpACK == 0:
		return x, y
	case y.proto == 6 && y.flags&tcpSYN != 0 && y.flags&tcpACK == 0:
		return y, x
	case y.dport < x.dport:
		return y, x
	}
	return x, y
}

// reverse returns the reverse direction of a biflow as a one-way record.
func reverse(w *oneWay) oneWay {
	return oneWay{src: w.dst, dst: w.src, sport: w.dport, dport: w.sport, proto: w.proto,
		packets: w.revPackets, bytes: w.revBytes, flags: w.revFlags,
		firstNs: w.firstNs, lastNs: w.lastNs, vlan: w.vlan, srcMAC: w.dstMAC, dstMAC: w.srcMAC, endReason: w.endReason}
}

// toRecord makes a flow record of one direction, or of a paired
// initiator fwd and responder rev.
func toRecord(site string, fwd, rev *oneWay) flow.Record {
	r := flow.Record{
		Src: fwd.src, Dst: fwd.dst, SrcPort: fwd.sport, DstPort: fwd.dport, Proto: fwd.proto,
		FwdPackets: fwd.packets, FwdBytes: fwd.bytes, FwdTCPFlags: fwd.flags,
		FirstNs: fwd.firstNs, LastNs: fwd.lastNs, VLAN: fwd.vlan,
		SrcMAC: fwd.srcMAC, DstMAC: fwd.dstMAC, EndReason: fwd.endReason, Site: site,
	}
	if rev != nil {
		r.RevPackets, r.RevBytes, r.RevTCPFlags = rev.packets, rev.bytes, rev.flags
		if rev.firstNs != 0 && (r.FirstNs == 0 || rev.firstNs < r.FirstNs) {
			r.FirstNs = rev.firstNs
		}
		r.LastNs = max(r.LastNs, rev.lastNs)
		if r.EndReason == "" {
			r.EndReason = rev.endReason
		}
	}
	if r.EndReason == "" {
		r.EndReason = "idle"
	}
	return r
}
