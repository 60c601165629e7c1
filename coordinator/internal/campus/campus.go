// Package campus derives who talks to whom on the campus from one
// consistent read of the replicated state (fsm.TrafficView): each device's
// peers (its frozen baseline merged with its recent flow summaries), the
// segments (building, floor, zone) with their devices counted, and the
// traffic that crosses from one segment to another or out of the
// inventory. It stores nothing and invents nothing: a peer with no flow
// summary has zero flows, and an address no single device holds is
// "outside the inventory".
package campus

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/coordinator/internal/policy"
	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Limits of an answer.
const (
	// MaxPeers bounds the peers listed per device of a segment.
	MaxPeers = 50
	// maxServices and maxExamples bound a crossing's lists.
	maxServices = 8
	maxExamples = 3
)

// SegmentOf is where a device is.
func SegmentOf(d *medmeshv1.Device) *medmeshv1.Segment {
	l := d.GetLocation()
	return &medmeshv1.Segment{Campus: l.GetCampus(), Building: l.GetBuilding(), Floor: l.GetFloor(), Zone: l.GetZone()}
}

// outside is the pseudo-segment of peers that are not one inventory device.
func outside() *medmeshv1.Segment { return &medmeshv1.Segment{Outside: true} }

func segKey(s *medmeshv1.Segment) string {
	if s.GetOutside() {
		return "\x01outside"
	}
	return strings.Join([]string{s.GetCampus(), s.GetBuilding(), s.GetFloor(), s.GetZone()}, "\x00")
}

// SameSegment reports whether two segments are the same place.
func SameSegment(a, b *medmeshv1.Segment) bool { return segKey(a) == segKey(b) }

// compareSegments orders segments by campus, building, floor (numbers
// numerically, before names, unknown last), zone; outside last.
func compareSegments(a, b *medmeshv1.Segment) int {
	if a.GetOutside() != b.GetOutside() {
		if a.GetOutside() {
			return 1
		}
		return -1
	}
	return cmp.Or(
		strings.Compare(a.GetCampus(), b.GetCampus()),
		strings.Compare(a.GetBuilding(), b.GetBuilding()),
		compareFloors(a.GetFloor(), b.GetFloor()),
		strings.Compare(a.GetZone(), b.GetZone()))
}

func compareFloors(a, b string) int {
	if (a == "") != (b == "") {
		if a == "" {
			return 1
		}
		return -1
	}
	na, ea := strconv.Atoi(a)
	nb, eb := strconv.Atoi(b)
	switch {
	case ea == nil && eb == nil:
		return cmp.Compare(na, nb)
	case ea == nil:
		return -1
	case eb == nil:
		return 1
	}
	return strings.Compare(a, b)
}

// Service names a protocol and port as the console shows it: "tcp/2575
// hl7".
func Service(protocol, port uint32, app string) string {
	s := names.Protocol(protocol)
	if port != 0 {
		s += "/" + strconv.FormatUint(uint64(port), 10)
	}
	if app != "" {
		s += " " + app
	}
	return s
}

type peerKey struct {
	peer      string
	protocol  uint32
	port      uint32
	direction medmeshv1.Direction
}

// basePeer is a baseline entry's peer: the address of a single-address
// prefix, else the prefix (or name) as written.
func basePeer(e *medmeshv1.BaselineEntry) string {
	if p, err := netip.ParsePrefix(e.GetPeerCidr()); err == nil {
		if p.IsSingleIP() {
			return p.Addr().Unmap().String()
		}
		return p.Masked().String()
	}
	if a, err := netip.ParseAddr(e.GetPeerCidr()); err == nil {
		return a.Unmap().String()
	}
	return e.GetPeerCidr()
}

func canon(ip string) string {
	if a, err := netip.ParseAddr(ip); err == nil {
		return a.Unmap().String()
	}
	return ip
}

// inBaseline reports whether an entry allows a peer address on key's
// protocol, port and direction (a prefix entry covers its addresses).
func inBaseline(entries []*medmeshv1.BaselineEntry, k peerKey) bool {
	a, aerr := netip.ParseAddr(k.peer)
	for _, e := range entries {
		if e.GetProtocol() != k.protocol || e.GetPort() != k.port || e.GetDirection() != k.direction {
			continue
		}
		p := basePeer(e)
		if p == k.peer {
			return true
		}
		if pfx, err := netip.ParsePrefix(p); err == nil && aerr == nil && pfx.Contains(a) {
			return true
		}
	}
	return false
}

// Peers merges a device's baseline entries (baseline may be nil) with its
// recent flow summaries, one Peer per (peer, protocol, port, direction),
// each placed in its segment. generated, when not nil, is a policy whose
// verdict on each flow fills would_drop. Most flows first, then baseline
// order, then address.
func Peers(v *fsm.TrafficView, mac string, baseline *medmeshv1.Baseline, generated *medmeshv1.Policy) []*medmeshv1.Peer {
	d := v.Devices[mac]
	own := SegmentOf(d)
	byKey := map[peerKey]*medmeshv1.Peer{}
	order := map[peerKey]int{}
	var keys []peerKey
	add := func(k peerKey, name, app string) *medmeshv1.Peer {
		p := byKey[k]
		if p == nil {
			p = &medmeshv1.Peer{Peer: k.peer, Protocol: k.protocol, Port: k.port, Direction: k.direction}
			byKey[k] = p
			order[k] = len(keys)
			keys = append(keys, k)
		}
		if p.PeerName == "" {
			p.PeerName = name
		}
		if p.App == "" {
			p.App = app
		}
		return p
	}
	entries := baseline.GetEntries()
	for _, e := range entries {
		add(peerKey{basePeer(e), e.GetProtocol(), e.GetPort(), e.GetDirection()}, e.GetPeerName(), e.GetApp()).InBaseline = true
	}
	for _, fs := range v.Flows[mac] {
		k := peerKey{canon(fs.GetPeerIp()), fs.GetProtocol(), fs.GetPort(), fs.GetDirection()}
		p := add(k, fs.GetPeerName(), fs.GetApp())
		n := max(fs.GetFlows(), 1)
		p.Flows += n
		p.BytesOut += fs.GetBytesOut()
		p.BytesIn += fs.GetBytesIn()
		if end := windowEnd(fs); end != nil && (p.LastSeen == nil || end.AsTime().After(p.LastSeen.AsTime())) {
			p.LastSeen = end
		}
		if generated != nil {
			if _, ok := policy.Match(generated, fs); !ok {
				p.WouldDrop += n
			}
		}
	}
	out := make([]*medmeshv1.Peer, 0, len(keys))
	for _, k := range keys {
		p := byKey[k]
		if !p.InBaseline && len(entries) > 0 {
			p.InBaseline = inBaseline(entries, k)
		}
		if h := v.Holder(k.peer); h != "" && v.Devices[h] != nil {
			p.PeerMac = h
			p.PeerSegment = SegmentOf(v.Devices[h])
			p.Crosses = !SameSegment(own, p.PeerSegment)
		} else {
			p.PeerSegment = outside()
			p.Crosses = true
		}
		out = append(out, p)
	}
	slices.SortStableFunc(out, func(a, b *medmeshv1.Peer) int {
		return cmp.Or(cmp.Compare(b.GetFlows(), a.GetFlows()),
			cmp.Compare(order[keyOf(a)], order[keyOf(b)]))
	})
	return out
}

func keyOf(p *medmeshv1.Peer) peerKey {
	return peerKey{p.GetPeer(), p.GetProtocol(), p.GetPort(), p.GetDirection()}
}
