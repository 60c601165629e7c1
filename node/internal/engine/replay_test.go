package engine

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/medmesh/medmesh/node/flow"
)

// This file is a test-only stand-in for the datapath: it turns a capture
// into the flow records, payload samples and discovery events the XDP
// datapath hands a flow.Handler, by the same rules (first 4 payload
// packets per direction cut to 512 bytes, more while the detector wants
// more; L3 byte counts; records in order of first packet at the end).

const (
	snapLen        = 512
	samplesPerDir  = 4
	maxFlowSamples = 64
)

type replayKey struct {
	a, b  netip.AddrPort
	proto uint8
}

type replayFlow struct {
	rec *flow.Record
	n   [2]int
}

// wantMorer is the engine's sample-budget hint.
type wantMorer interface{ WantMore(flow.Tuple) bool }

// replayCapture feeds a capture through h and returns the records it
// produced (after h.HandleFlow set their App).
func replayCapture(t testing.TB, path string, h flow.Handler) []*flow.Record {
	return replayCaptureSnap(t, path, h, snapLen)
}

// replayCaptureSnap is replayCapture with snap bytes of payload per
// sample (the leak test hands detectors whole payloads).
func replayCaptureSnap(t testing.TB, path string, h flow.Handler, snap int) []*flow.Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	magic, err := br.Peek(4)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var r interface {
		ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	}
	var link layers.LinkType
	if bytes.Equal(magic, []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		ng, err := pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		r, link = ng, ng.LinkType()
	} else {
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		r, link = pr, pr.LinkType()
	}
	wm, _ := h.(wantMorer)
	byKey := map[replayKey]*replayFlow{}
	var order []*replayFlow
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		ts := ci.Timestamp.UnixNano()
		pkt := gopacket.NewPacket(data, link, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
		var smac, dmac flow.MAC
		if eth, ok := pkt.LinkLayer().(*layers.Ethernet); ok && len(eth.SrcMAC) == 6 {
			copy(smac[:], eth.SrcMAC)
			copy(dmac[:], eth.DstMAC)
		}
		var src, dst netip.Addr
		var l3 uint64
		var ttl uint8
		switch ip := pkt.NetworkLayer().(type) {
		case *layers.IPv4:
			src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
			dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
			l3, ttl = uint64(ip.Length), ip.TTL
		case *layers.IPv6:
			src, _ = netip.AddrFromSlice(ip.SrcIP)
			dst, _ = netip.AddrFromSlice(ip.DstIP)
			l3, ttl = uint64(ip.Length)+40, ip.HopLimit
		default:
			continue
		}
		var sport, dport uint16
		var proto uint8
		var payload []byte
		synAck := false
		var flags uint8
		switch l4 := pkt.TransportLayer().(type) {
		case *layers.TCP:
			sport, dport, proto, payload = uint16(l4.SrcPort), uint16(l4.DstPort), 6, l4.Payload
			synAck = l4.SYN && l4.ACK
			flags = l4.Contents[13]
		case *layers.UDP:
			sport, dport, proto, payload = uint16(l4.SrcPort), uint16(l4.DstPort), 17, l4.Payload
		default:
			continue
		}
		s, d := netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
		k := replayKey{s, d, proto}
		if d.Addr().Less(s.Addr()) || d.Addr() == s.Addr() && d.Port() < s.Port() {
			k = replayKey{d, s, proto}
		}
		fl := byKey[k]
		if fl == nil {
			is, id, ism, idm := s, d, smac, dmac
			if synAck {
				is, id, ism, idm = d, s, dmac, smac
			}
			fl = &replayFlow{rec: &flow.Record{Src: is.Addr(), Dst: id.Addr(), SrcPort: is.Port(), DstPort: id.Port(),
				Proto: proto, FirstNs: ts, SrcMAC: ism, DstMAC: idm, EndReason: "drain"}}
			byKey[k] = fl
			order = append(order, fl)
		}
		rec := fl.rec
		rec.LastNs = max(rec.LastNs, ts)
		dir := flow.Fwd
		if src != rec.Src || sport != rec.SrcPort {
			dir = flow.Rev
			rec.RevPackets++
			rec.RevBytes += l3
			rec.RevTCPFlags |= flags
		} else {
			rec.FwdPackets++
			rec.FwdBytes += l3
			rec.FwdTCPFlags |= flags
		}
		if len(payload) == 0 {
			continue
		}
		if proto == 17 {
			var kind flow.DiscoveryKind
			switch {
			case sport == 67 || sport == 68 || dport == 67 || dport == 68:
				kind = flow.DiscoveryDHCP
			case sport == 546 || sport == 547 || dport == 546 || dport == 547:
				kind = flow.DiscoveryDHCPv6
			case sport == 53 && len(payload) > 2 && payload[2]&0x80 != 0:
				kind = flow.DiscoveryDNS
			}
			if kind != 0 {
				h.HandleDiscovery(&flow.Discovery{Kind: kind, SrcMAC: smac, DstMAC: dmac, Src: src, Dst: dst,
					SrcPort: sport, DstPort: dport, TimeNs: ts, TTL: ttl, Data: payload})
			}
		}
		idx := fl.n[dir]
		fl.n[dir]++
		t := rec.Tuple()
		if idx >= samplesPerDir && !(wm != nil && wm.WantMore(t) && idx < maxFlowSamples) {
			continue
		}
		h.HandleSample(&flow.Sample{Flow: t, Dir: dir, Index: uint8(min(idx, 255)), SrcMAC: smac, DstMAC: dmac,
			TimeNs: ts, WireLen: uint16(min(len(payload), 65535)), TTL: ttl, Payload: payload[:min(len(payload), snap)]})
	}
	out := make([]*flow.Record, 0, len(order))
	for _, fl := range order {
		h.HandleFlow(fl.rec)
		out = append(out, fl.rec)
	}
	return out
}
