package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/medmesh/medmesh/node/flow"
)

// EventKind says what a ring-buffer event carries.
type EventKind uint8

// Event kinds, as the program writes them (enum ev_type in sensor.c).
const (
	EventFlowStart    EventKind = 1
	EventSample       EventKind = 2
	EventDiscovery    EventKind = 3
	EventBaselineMiss EventKind = 4
)

// evHdrLen is sizeof(struct ev_hdr) in sensor.c.
const evHdrLen = 72

// Miss reasons (enum miss_reason in sensor.c), as flow.BaselineMiss names them.
var missReasons = [...]string{1: "peer", 2: "protocol", 3: "port"}

// Event is one decoded ring-buffer record. Only the field matching Kind is
// set. Sample.Payload and Discovery.Data alias the record's buffer: they are
// valid until the next read.
type Event struct {
	Kind      EventKind
	Start     flow.Tuple // EventFlowStart: the new flow, initiator first
	TimeNs    int64      // datapath clock (see Datapath.WallNs)
	Sample    flow.Sample
	Discovery flow.Discovery
	Miss      flow.BaselineMiss
}

var errShortEvent = errors.New("decode event: short record")

// hdr is the decoded struct ev_hdr.
type hdr struct {
	typ, dir, index, family, proto, kind uint8
	vlan, sport, dport, capLen, wireLen  uint16
	ts                                   uint64
	src, dst                             [16]byte
	smac, dmac                           flow.MAC
	ttl                                  uint8
}

func decodeHdr(b []byte) (hdr, error) {
	var h hdr
	if len(b) < evHdrLen {
		return h, errShortEvent
	}
	h.typ, h.dir, h.index, h.family, h.proto, h.kind = b[0], b[1], b[2], b[3], b[4], b[5]
	le := binary.LittleEndian
	h.vlan = le.Uint16(b[6:])
	h.sport = le.Uint16(b[8:])
	h.dport = le.Uint16(b[10:])
	h.capLen = le.Uint16(b[12:])
	h.wireLen = le.Uint16(b[14:])
	h.ts = le.Uint64(b[16:])
	copy(h.src[:], b[24:40])
	copy(h.dst[:], b[40:56])
	copy(h.smac[:], b[56:62])
	copy(h.dmac[:], b[62:68])
	h.ttl = b[68]
	return h, nil
}

// addrOf turns a program address (IPv4 in the first 4 bytes) into netip.
func addrOf(family uint8, b *[16]byte) netip.Addr {
	switch family {
	case 4:
		return netip.AddrFrom4([4]byte(b[:4]))
	case 6:
		return netip.AddrFrom16(*b)
	}
	return netip.Addr{}
}

// DecodeEvent decodes one ring-buffer record into ev. wall converts the
// datapath clock to the records' clock (nil: identity). It never panics on
// malformed input; it returns an error instead.
func DecodeEvent(b []byte, wall func(uint64) int64, ev *Event) error {
	h, err := decodeHdr(b)
	if err != nil {
		return err
	}
	if wall == nil {
		wall = func(ns uint64) int64 { return int64(ns) }
	}
	data := b[evHdrLen:]
	if int(h.capLen) > len(data) {
		return fmt.Errorf("decode event: data length %d exceeds record (%d bytes)", h.capLen, len(data))
	}
	data = data[:h.capLen]
	src, dst := addrOf(h.family, &h.src), addrOf(h.family, &h.dst)
	pkt := flow.Tuple{Src: src, Dst: dst, SrcPort: h.sport, DstPort: h.dport, Proto: h.proto, VLAN: h.vlan}
	*ev = Event{Kind: EventKind(h.typ), TimeNs: wall(h.ts)}
	switch ev.Kind {
	case EventFlowStart:
		ev.Start = pkt
	case EventSample:
		t := pkt
		if flow.Dir(h.dir) == flow.Rev {
			t = reverse(pkt)
		} else if h.dir != 0 {
			return fmt.Errorf("decode event: bad direction %d", h.dir)
		}
		ev.Sample = flow.Sample{
			Flow: t, Dir: flow.Dir(h.dir), Index: h.index, SrcMAC: h.smac, DstMAC: h.dmac,
			TimeNs: ev.TimeNs, WireLen: h.wireLen, TTL: h.ttl, Payload: data,
		}
	case EventDiscovery:
		if h.kind < uint8(flow.DiscoveryDHCP) || h.kind > uint8(flow.DiscoveryND) {
			return fmt.Errorf("decode event: bad discovery kind %d", h.kind)
		}
		ev.Discovery = flow.Discovery{
			Kind: flow.DiscoveryKind(h.kind), SrcMAC: h.smac, DstMAC: h.dmac, Src: src, Dst: dst,
			SrcPort: h.sport, DstPort: h.dport, VLAN: h.vlan, TimeNs: ev.TimeNs, TTL: h.ttl, Data: data,
		}
	case EventBaselineMiss:
		if int(h.kind) >= len(missReasons) || missReasons[h.kind] == "" {
			return fmt.Errorf("decode event: bad baseline miss reason %d", h.kind)
		}
		m := flow.BaselineMiss{Flow: pkt, DeviceIsSrc: h.dir != 0, Reason: missReasons[h.kind], TimeNs: ev.TimeNs}
		m.DeviceMAC = h.dmac
		if m.DeviceIsSrc {
			m.DeviceMAC = h.smac
		}
		ev.Miss = m
	default:
		return fmt.Errorf("decode event: unknown type %d", h.typ)
	}
	return nil
}

func reverse(t flow.Tuple) flow.Tuple {
	return flow.Tuple{Src: t.Dst, Dst: t.Src, SrcPort: t.DstPort, DstPort: t.SrcPort, Proto: t.Proto, VLAN: t.VLAN}
}

// Dispatch hands a decoded event to h (nil h: nothing). Flow starts have no
// handler method; the caller counts them.
func Dispatch(ev *Event, h flow.Handler) {
	if h == nil {
		return
	}
	switch ev.Kind {
	case EventSample:
		h.HandleSample(&ev.Sample)
	case EventDiscovery:
		h.HandleDiscovery(&ev.Discovery)
	case EventBaselineMiss:
		h.HandleBaselineMiss(&ev.Miss)
	}
}
