package replay

import (
	"encoding/binary"
	"fmt"
)

// Link types (LINKTYPE_* in the pcap and pcapng specifications).
const (
	linkNull     = 0
	linkEthernet = 1
	linkRaw12    = 12 // DLT_RAW on most BSDs
	linkRaw14    = 14 // DLT_RAW on OpenBSD
	linkRaw      = 101
	linkLoop     = 108
	linkSLL      = 113
	linkIPv4     = 228
	linkIPv6     = 229
	linkSLL2     = 276
)

const (
	etherIPv4 = 0x0800
	etherIPv6 = 0x86dd
	ethHLen   = 14
)

// linkName names the link types replay reads.
func linkName(lt int) string {
	switch lt {
	case linkNull:
		return "null"
	case linkEthernet:
		return "ethernet"
	case linkRaw12, linkRaw14, linkRaw:
		return "raw"
	case linkLoop:
		return "loop"
	case linkSLL:
		return "linux-sll"
	case linkSLL2:
		return "linux-sll2"
	case linkIPv4:
		return "ipv4"
	case linkIPv6:
		return "ipv6"
	}
	return fmt.Sprintf("linktype-%d", lt)
}

// toEthernet returns the frame as Ethernet, synthesizing a header where the
// capture has none (zero MACs, or the sender's MAC from a cooked header).
// ok is false for a link type replay does not read or a frame too short to
// carry its link header. buf is reused.
func toEthernet(lt int, data, buf []byte) (frame []byte, ok bool) {
	var src [6]byte
	var etype uint16
	var rest []byte
	switch lt {
	case linkEthernet:
		return data, true
	case linkNull, linkLoop:
		if len(data) < 4 {
			return nil, false
		}
		// The address family is in the capturing host's byte order (null)
		// or network order (loop): accept either.
		af := binary.LittleEndian.Uint32(data)
		if af > 0xffff {
			af = binary.BigEndian.Uint32(data)
		}
		switch af {
		case 2:
			etype = etherIPv4
		case 10, 24, 28, 30: // Linux, NetBSD/OpenBSD, FreeBSD, Darwin AF_INET6
			etype = etherIPv6
		default:
			return nil, false
		}
		rest = data[4:]
	case linkRaw12, linkRaw14, linkRaw, linkIPv4, linkIPv6:
		if len(data) < 1 {
			return nil, false
		}
		switch data[0] >> 4 {
		case 4:
			etype = etherIPv4
		case 6:
			etype = etherIPv6
		default:
			return nil, false
		}
		rest = data
	case linkSLL:
		// pkttype(2) hatype(2) halen(2) addr(8) protocol(2)
		if len(data) < 16 {
			return nil, false
		}
		if binary.BigEndian.Uint16(data[4:]) == 6 {
			copy(src[:], data[6:12])
		}
		etype = binary.BigEndian.Uint16(data[14:])
		rest = data[16:]
	case linkSLL2:
		// protocol(2) reserved(2) ifindex(4) hatype(2) pkttype(1) halen(1) addr(8)
		if len(data) < 20 {
			return nil, false
		}
		etype = binary.BigEndian.Uint16(data[0:])
		if data[11] == 6 {
			copy(src[:], data[12:18])
		}
		rest = data[20:]
	default:
		return nil, false
	}
	buf = append(buf[:0], make([]byte, 6)...)
	buf = append(buf, src[:]...)
	buf = binary.BigEndian.AppendUint16(buf, etype)
	return append(buf, rest...), true
}
