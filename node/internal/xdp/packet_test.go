package xdp

import (
	"encoding/binary"
	"net/netip"
)

// Packet builders for prog.Run tests: every header is written by hand so
// that malformed variants are easy to make.

var (
	macA = [6]byte{0x02, 0, 0, 0, 0, 0x0a}
	macB = [6]byte{0x02, 0, 0, 0, 0, 0x0b}
)

func be16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }

// ether builds an Ethernet header with optional VLAN tags (tpid, vid pairs).
func ether(src, dst [6]byte, etype uint16, tags ...[2]uint16) []byte {
	b := append(append([]byte{}, dst[:]...), src[:]...)
	for _, t := range tags {
		b = be16(b, t[0])
		b = be16(b, t[1])
	}
	return be16(b, etype)
}

type v4opts struct {
	options []byte
	flags   uint16 // frag_off field (flags and offset)
	totLen  int    // override when > 0
	ttl     uint8  // 0: 64
}

func ipv4(src, dst string, proto uint8, l4 []byte, o v4opts) []byte {
	hl := 20 + len(o.options)
	tot := hl + len(l4)
	if o.totLen > 0 {
		tot = o.totLen
	}
	b := []byte{byte(0x40 | hl/4), 0}
	b = be16(b, uint16(tot))
	b = be16(b, 1)
	b = be16(b, o.flags)
	ttl := o.ttl
	if ttl == 0 {
		ttl = 64
	}
	b = append(b, ttl, proto, 0, 0)
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b = append(b, s[:]...)
	b = append(b, d[:]...)
	b = append(b, o.options...)
	return append(b, l4...)
}

// ipv6 builds an IPv6 header; exts are (next header, body) pairs written
// in order before l4, each body padded to a multiple of 8 with its length.
func ipv6(src, dst string, proto uint8, l4 []byte, exts ...ext6) []byte {
	var chain []byte
	for i, e := range exts {
		nh := proto
		if i+1 < len(exts) {
			nh = exts[i+1].typ
		}
		chain = append(chain, e.bytes(nh)...)
	}
	first := proto
	if len(exts) > 0 {
		first = exts[0].typ
	}
	plen := len(chain) + len(l4)
	b := []byte{0x60, 0, 0, 0}
	b = be16(b, uint16(plen))
	b = append(b, first, 64)
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	b = append(b, s[:]...)
	b = append(b, d[:]...)
	b = append(b, chain...)
	return append(b, l4...)
}

type ext6 struct {
	typ     uint8
	units   int    // length in 8-byte units beyond the first (not for fragment)
	fragOff uint16 // fragment: offset<<3 | M
}

func (e ext6) bytes(nh uint8) []byte {
	if e.typ == 44 {
		b := []byte{nh, 0}
		b = be16(b, e.fragOff)
		return append(b, 0, 0, 0, 7)
	}
	b := make([]byte, 8*(e.units+1))
	b[0], b[1] = nh, byte(e.units)
	b[2] = 1 // PadN
	b[3] = byte(len(b) - 4)
	return b
}

func tcpSeg(sport, dport uint16, flags uint8, payload []byte) []byte {
	b := be16(be16(nil, sport), dport)
	b = append(b, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0)
	return append(b, payload...)
}

func udpDgram(sport, dport uint16, payload []byte) []byte {
	b := be16(be16(nil, sport), dport)
	b = be16(b, uint16(8+len(payload)))
	b = append(b, 0, 0)
	return append(b, payload...)
}

func sctpPkt(sport, dport uint16) []byte {
	b := be16(be16(nil, sport), dport)
	return append(b, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 4)
}

func icmpMsg(typ, code uint8) []byte { return []byte{typ, code, 0, 0, 0, 1, 0, 1} }

func arpPkt() []byte {
	b := []byte{0, 1, 8, 0, 6, 4, 0, 1}
	b = append(b, macA[:]...)
	b = append(b, 10, 0, 0, 1)
	b = append(b, 0, 0, 0, 0, 0, 0)
	return append(b, 10, 0, 0, 2)
}

func v4frame(src, dst [6]byte, ip []byte, tags ...[2]uint16) []byte {
	return append(ether(src, dst, 0x0800, tags...), ip...)
}

func v6frame(src, dst [6]byte, ip []byte, tags ...[2]uint16) []byte {
	return append(ether(src, dst, 0x86dd, tags...), ip...)
}

// pad brings a frame to Ethernet's 60-byte minimum, as a NIC would.
func pad(b []byte) []byte {
	for len(b) < 60 {
		b = append(b, 0)
	}
	return b
}
