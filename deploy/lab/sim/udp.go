package sim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// --- DHCP (RFC 2131), just enough for a discover/offer exchange ---

const dhcpMagic = 0x63825363

// dhcpDiscover builds a DHCPDISCOVER carrying the options device classifiers
// read: hostname (12), vendor class (60), parameter request list (55) and
// client identifier (61).
func dhcpDiscover(xid uint32, mac net.HardwareAddr, hostname, vendor string, prl []byte) []byte {
	b := make([]byte, 240, 320)
	b[0], b[1], b[2] = 1, 1, 6 // BOOTREQUEST, ethernet, hlen
	binary.BigEndian.PutUint32(b[4:], xid)
	copy(b[28:], mac)
	binary.BigEndian.PutUint32(b[236:], dhcpMagic)
	opt := func(code byte, v []byte) { b = append(b, code, byte(len(v))); b = append(b, v...) }
	opt(53, []byte{1})
	opt(12, []byte(hostname))
	opt(60, []byte(vendor))
	opt(55, prl)
	opt(61, append([]byte{1}, mac...))
	return append(b, 255)
}

// dhcpOptions parses the options of a DHCP message.
func dhcpOptions(b []byte) (map[byte][]byte, error) {
	if len(b) < 240 || binary.BigEndian.Uint32(b[236:]) != dhcpMagic {
		return nil, errors.New("not a dhcp message")
	}
	opts := map[byte][]byte{}
	for i := 240; i < len(b); {
		code := b[i]
		if code == 255 {
			break
		}
		if code == 0 {
			i++
			continue
		}
		if i+1 >= len(b) || i+2+int(b[i+1]) > len(b) {
			return nil, errors.New("truncated dhcp option")
		}
		opts[code] = b[i+2 : i+2+int(b[i+1])]
		i += 2 + int(b[i+1])
	}
	return opts, nil
}

// dhcpOffer answers a discover: the lab's addresses are static, so the offer
// gives the client the address it asked from. ntp, if set, is advertised
// as the NTP server (option 42).
func dhcpOffer(req []byte, yiaddr, server, router, dns, ntp net.IP) []byte {
	b := make([]byte, 240, 300)
	b[0], b[1], b[2] = 2, 1, 6 // BOOTREPLY
	copy(b[4:8], req[4:8])     // xid
	copy(b[16:20], yiaddr.To4())
	copy(b[20:24], server.To4())
	copy(b[28:44], req[28:44])
	binary.BigEndian.PutUint32(b[236:], dhcpMagic)
	opt := func(code byte, v []byte) { b = append(b, code, byte(len(v))); b = append(b, v...) }
	opt(53, []byte{2})
	opt(54, server.To4())
	opt(1, []byte{255, 255, 255, 0})
	opt(3, router.To4())
	opt(6, dns.To4())
	if ntp.To4() != nil {
		opt(42, ntp.To4())
	}
	opt(51, []byte{0, 0, 0x0e, 0x10})
	return append(b, 255)
}

// --- DNS (RFC 1035), A queries only ---

func dnsQuery(id uint16, name string) []byte {
	b := make([]byte, 12, 64)
	binary.BigEndian.PutUint16(b, id)
	b[2] = 0x01 // RD
	binary.BigEndian.PutUint16(b[4:], 1)
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0, 0, 1, 0, 1) // root, QTYPE A, QCLASS IN
}

// dnsQuestion returns the id, query name and the end offset of the question.
func dnsQuestion(b []byte) (uint16, string, int, error) {
	if len(b) < 12 || binary.BigEndian.Uint16(b[4:]) != 1 {
		return 0, "", 0, errors.New("dns: want exactly one question")
	}
	var labels []string
	i := 12
	for {
		if i >= len(b) {
			return 0, "", 0, errors.New("dns: truncated name")
		}
		n := int(b[i])
		if n == 0 {
			i++
			break
		}
		if n > 63 || i+1+n > len(b) {
			return 0, "", 0, errors.New("dns: bad label")
		}
		labels = append(labels, string(b[i+1:i+1+n]))
		i += 1 + n
	}
	if i+4 > len(b) {
		return 0, "", 0, errors.New("dns: truncated question")
	}
	return binary.BigEndian.Uint16(b), strings.ToLower(strings.Join(labels, ".")), i + 4, nil
}

// dnsAnswer answers query with addr, or NXDOMAIN when addr is nil.
func dnsAnswer(query []byte, end int, addr net.IP) []byte {
	b := append([]byte(nil), query[:end]...)
	b[2] = 0x81 // QR, RD
	b[3] = 0x80 // RA
	binary.BigEndian.PutUint16(b[6:], 0)
	binary.BigEndian.PutUint16(b[8:], 0)
	binary.BigEndian.PutUint16(b[10:], 0)
	if addr == nil {
		b[3] |= 3 // NXDOMAIN
		return b
	}
	binary.BigEndian.PutUint16(b[6:], 1)
	b = append(b, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
	return append(b, addr.To4()...)
}

// parseDNSAnswer returns the first A record of a response to id.
func parseDNSAnswer(b []byte, id uint16) (net.IP, error) {
	gotID, _, end, err := dnsQuestion(b)
	if err != nil {
		return nil, err
	}
	if gotID != id || b[2]&0x80 == 0 {
		return nil, errors.New("dns: not the answer to our query")
	}
	if rcode := b[3] & 0x0f; rcode != 0 {
		return nil, fmt.Errorf("dns: rcode %d", rcode)
	}
	if binary.BigEndian.Uint16(b[6:]) == 0 || end+16 > len(b) {
		return nil, errors.New("dns: no answer")
	}
	return net.IP(append([]byte(nil), b[end+12:end+16]...)), nil
}

// --- NTP (RFC 5905), client and server modes ---

const ntpEpochOffset = 2208988800

func ntpStamp(t time.Time) uint64 {
	secs := uint64(t.Unix() + ntpEpochOffset)
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	return secs<<32 | frac
}

func ntpTime(v uint64) time.Time {
	secs := int64(v>>32) - ntpEpochOffset
	nsec := int64((v & 0xffffffff) * 1e9 >> 32)
	return time.Unix(secs, nsec)
}

func ntpRequest(now time.Time) []byte {
	b := make([]byte, 48)
	b[0] = 0x23 // LI 0, VN 4, mode 3 (client)
	binary.BigEndian.PutUint64(b[40:], ntpStamp(now))
	return b
}

func ntpResponse(req []byte, recv, now time.Time) ([]byte, error) {
	if len(req) < 48 || req[0]&0x07 != 3 {
		return nil, errors.New("ntp: not a client request")
	}
	b := make([]byte, 48)
	b[0] = 0x24 // LI 0, VN 4, mode 4 (server)
	b[1] = 2    // stratum
	b[2] = 6
	b[3] = 0xec
	copy(b[12:16], "LAB\x00")
	binary.BigEndian.PutUint64(b[16:], ntpStamp(now))
	copy(b[24:32], req[40:48]) // originate = client's transmit
	binary.BigEndian.PutUint64(b[32:], ntpStamp(recv))
	binary.BigEndian.PutUint64(b[40:], ntpStamp(now))
	return b, nil
}
