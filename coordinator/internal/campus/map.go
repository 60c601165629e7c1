package campus

import (
	"cmp"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func windowEnd(fs *medmeshv1.FlowSummary) *timestamppb.Timestamp {
	if fs.GetWindowStart() == nil {
		return nil
	}
	return timestamppb.New(fs.GetWindowStart().AsTime().Add(time.Duration(fs.GetWindowSeconds()) * time.Second))
}

// sortedMACs are the view's devices by MAC.
func sortedMACs(v *fsm.TrafficView) []string {
	macs := make([]string, 0, len(v.Devices))
	for mac := range v.Devices {
		macs = append(macs, mac)
	}
	sort.Strings(macs)
	return macs
}

// end is one side of a crossing: a device, or an address no single device
// holds.
type end struct {
	id  string // MAC or address
	seg *medmeshv1.Segment
}

type flowKey struct {
	from, to       string
	protocol, port uint32
}

type crossing struct {
	c        *medmeshv1.Crossing
	pairs    map[[2]string]bool
	services map[string]bool
}

// Map is the campus map: every segment with its devices counted by tier,
// and the crossings (at most maxCrossings, most flows first; truncated
// counts the rest). A crossing is seen from the device's own baseline and
// ring; when both ends report the same traffic, it counts once (the larger
// flow count of the two sides).
func Map(v *fsm.TrafficView, maxCrossings int) (segments []*medmeshv1.SegmentSummary, crossings []*medmeshv1.Crossing, truncated int) {
	segs := map[string]*medmeshv1.SegmentSummary{}
	flows := map[flowKey]uint64{}
	flowSvc := map[flowKey]string{}
	flowEnds := map[flowKey][2]end{}
	macs := sortedMACs(v)
	for _, mac := range macs {
		d := v.Devices[mac]
		seg := SegmentOf(d)
		s := segs[segKey(seg)]
		if s == nil {
			s = &medmeshv1.SegmentSummary{Segment: seg}
			segs[segKey(seg)] = s
		}
		s.Devices++
		switch d.GetTier() {
		case medmeshv1.Tier_TIER_LIFE_CRITICAL:
			s.LifeCritical++
		case medmeshv1.Tier_TIER_CLINICAL:
			s.Clinical++
		case medmeshv1.Tier_TIER_NON_CLINICAL:
			s.NonClinical++
		default:
			s.UnknownTier++
		}
		if v.Baselines[mac] == nil && len(v.Flows[mac]) == 0 {
			continue // nothing of its own to cross with (its peers' views count it)
		}
		for _, p := range Peers(v, mac, v.Baselines[mac], nil) {
			if !p.GetCrosses() {
				continue
			}
			me := end{mac, seg}
			them := end{p.GetPeer(), p.GetPeerSegment()}
			if p.GetPeerMac() != "" {
				them.id = p.GetPeerMac()
			}
			from, to := me, them
			if p.GetDirection() == medmeshv1.Direction_DIRECTION_INBOUND {
				from, to = them, me
			}
			k := flowKey{from.id, to.id, p.GetProtocol(), p.GetPort()}
			if _, ok := flows[k]; !ok {
				flowEnds[k] = [2]end{from, to}
			}
			flows[k] = max(flows[k], p.GetFlows())
			if flowSvc[k] == "" || p.GetApp() != "" {
				flowSvc[k] = Service(p.GetProtocol(), p.GetPort(), p.GetApp())
			}
		}
	}
	byPair := map[[2]string]*crossing{}
	keys := make([]flowKey, 0, len(flows))
	for k := range flows {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b flowKey) int {
		return cmp.Or(cmp.Compare(a.from, b.from), cmp.Compare(a.to, b.to), cmp.Compare(a.protocol, b.protocol), cmp.Compare(a.port, b.port))
	})
	for _, k := range keys {
		ends := flowEnds[k]
		pk := [2]string{segKey(ends[0].seg), segKey(ends[1].seg)}
		c := byPair[pk]
		if c == nil {
			c = &crossing{c: &medmeshv1.Crossing{From: ends[0].seg, To: ends[1].seg}, pairs: map[[2]string]bool{}, services: map[string]bool{}}
			byPair[pk] = c
		}
		c.c.Flows += flows[k]
		pair := [2]string{k.from, k.to}
		if !c.pairs[pair] {
			c.pairs[pair] = true
			if len(c.c.Examples) < maxExamples {
				c.c.Examples = append(c.c.Examples, k.from+" -> "+k.to)
			}
		}
		c.services[flowSvc[k]] = true
	}
	for _, c := range byPair {
		c.c.DevicePairs = uint32(len(c.pairs))
		for s := range c.services {
			c.c.Services = append(c.c.Services, s)
		}
		slices.Sort(c.c.Services)
		if len(c.c.Services) > maxServices {
			c.c.Services = c.c.Services[:maxServices]
		}
		crossings = append(crossings, c.c)
		for _, s := range []*medmeshv1.Segment{c.c.From, c.c.To} {
			if ss := segs[segKey(s)]; ss != nil {
				ss.Crossings++
			}
		}
	}
	slices.SortFunc(crossings, func(a, b *medmeshv1.Crossing) int {
		return cmp.Or(cmp.Compare(b.GetFlows(), a.GetFlows()), cmp.Compare(b.GetDevicePairs(), a.GetDevicePairs()),
			compareSegments(a.GetFrom(), b.GetFrom()), compareSegments(a.GetTo(), b.GetTo()))
	})
	if len(crossings) > maxCrossings {
		truncated = len(crossings) - maxCrossings
		crossings = crossings[:maxCrossings]
	}
	for _, s := range segs {
		segments = append(segments, s)
	}
	slices.SortFunc(segments, func(a, b *medmeshv1.SegmentSummary) int { return compareSegments(a.GetSegment(), b.GetSegment()) })
	return segments, crossings, truncated
}

// SegmentDevices pages through the devices of one segment (MAC after
// after, at most limit), each with its peers from its own baseline and
// ring (at most MaxPeers), and counts the segment's devices.
func SegmentDevices(v *fsm.TrafficView, seg *medmeshv1.Segment, after string, limit int) (page []*medmeshv1.SegmentDevice, more bool, total int) {
	want := segKey(&medmeshv1.Segment{Campus: seg.GetCampus(), Building: seg.GetBuilding(), Floor: seg.GetFloor(), Zone: seg.GetZone()})
	macs := sortedMACs(v)
	for _, mac := range macs {
		d := v.Devices[mac]
		if segKey(SegmentOf(d)) != want {
			continue
		}
		total++
		if mac <= after {
			continue
		}
		if len(page) == limit {
			more = true
			continue
		}
		sd := &medmeshv1.SegmentDevice{Mac: mac, Hostname: d.GetHostname(), DeviceClass: d.GetDeviceClass(), Tier: d.GetTier(),
			Vendor: d.GetVendor(), Model: d.GetModel(), IpAddresses: d.GetIpAddresses()}
		page = append(page, sd)
	}
	reverse := reversePeers(v, macs, page)
	for _, sd := range page {
		peers := Peers(v, sd.GetMac(), v.Baselines[sd.GetMac()], nil)
		have := map[peerKey]*medmeshv1.Peer{}
		for _, p := range peers {
			have[keyOf(p)] = p
		}
		for _, p := range reverse[sd.GetMac()] {
			own := have[keyOf(p)]
			switch {
			case own == nil:
				peers = append(peers, p)
			case own.GetFlows() == 0:
				// Its own sensor summarised no flow of it: the peer's count.
				own.Flows, own.BytesOut, own.BytesIn, own.LastSeen = p.GetFlows(), p.GetBytesOut(), p.GetBytesIn(), p.GetLastSeen()
			}
		}
		slices.SortStableFunc(peers, func(a, b *medmeshv1.Peer) int { return cmp.Compare(b.GetFlows(), a.GetFlows()) })
		if len(peers) > MaxPeers {
			sd.TruncatedPeers = uint32(len(peers) - MaxPeers)
			peers = peers[:MaxPeers]
		}
		sd.Peers = peers
	}
	return page, more, total
}

// reversePeers finds, for the devices of page, the peers whose own
// baseline or flow summaries name them: one pass over every baseline
// entry and ring of the campus (macs, sorted), so that a device that
// learned nothing itself (a server, an interface engine) still shows who
// talks to it.
func reversePeers(v *fsm.TrafficView, macs []string, page []*medmeshv1.SegmentDevice) map[string][]*medmeshv1.Peer {
	target := map[string]string{} // address -> MAC of a page device
	for _, sd := range page {
		for _, ip := range sd.GetIpAddresses() {
			if v.Holder(ip) == sd.GetMac() {
				target[canon(ip)] = sd.GetMac()
			}
		}
	}
	out := map[string][]*medmeshv1.Peer{}
	if len(target) == 0 {
		return out
	}
	byKey := map[string]map[peerKey]*medmeshv1.Peer{}
	flip := func(d medmeshv1.Direction) medmeshv1.Direction {
		switch d {
		case medmeshv1.Direction_DIRECTION_INBOUND:
			return medmeshv1.Direction_DIRECTION_OUTBOUND
		case medmeshv1.Direction_DIRECTION_OUTBOUND:
			return medmeshv1.Direction_DIRECTION_INBOUND
		}
		return d
	}
	add := func(to, from, fromIP string, protocol, port uint32, app string, dir medmeshv1.Direction) *medmeshv1.Peer {
		k := peerKey{fromIP, protocol, port, flip(dir)}
		m := byKey[to]
		if m == nil {
			m = map[peerKey]*medmeshv1.Peer{}
			byKey[to] = m
		}
		p := m[k]
		if p == nil {
			seg := SegmentOf(v.Devices[from])
			p = &medmeshv1.Peer{Peer: fromIP, Protocol: protocol, Port: port, App: app, Direction: k.direction, PeerMac: from,
				PeerSegment: seg, Crosses: !SameSegment(seg, SegmentOf(v.Devices[to])), ReportedByPeer: true}
			m[k] = p
			out[to] = append(out[to], p)
		}
		if p.App == "" {
			p.App = app
		}
		return p
	}
	for _, from := range macs {
		d := v.Devices[from]
		fromIP := ""
		for _, ip := range d.GetIpAddresses() {
			if v.Holder(ip) == from {
				fromIP = canon(ip)
				break
			}
		}
		for _, e := range v.Baselines[from].GetEntries() {
			if to := target[basePeer(e)]; to != "" && to != from && fromIP != "" {
				add(to, from, fromIP, e.GetProtocol(), e.GetPort(), e.GetApp(), e.GetDirection())
			}
		}
		for _, fs := range v.Flows[from] {
			ip := cmp.Or(canon(fs.GetDeviceIp()), fromIP)
			if to := target[canon(fs.GetPeerIp())]; to != "" && to != from && ip != "" {
				p := add(to, from, ip, fs.GetProtocol(), fs.GetPort(), fs.GetApp(), fs.GetDirection())
				p.Flows += max(fs.GetFlows(), 1)
				p.BytesOut += fs.GetBytesIn()
				p.BytesIn += fs.GetBytesOut()
				if end := windowEnd(fs); end != nil && (p.LastSeen == nil || end.AsTime().After(p.LastSeen.AsTime())) {
					p.LastSeen = end
				}
			}
		}
	}
	return out
}
