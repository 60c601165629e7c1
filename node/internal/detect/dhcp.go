package detect

import (
	"net/netip"
	"strconv"
	"strings"
)

// DHCP (RFC 2131/2132) and DHCPv6 (RFC 8415). A payload sample reaches
// only the BOOTP header (the options start at byte 240), so flows are
// classified from the header and the options are read from discovery
// events, which carry the whole datagram.

const (
	bootpLen    = 236
	dhcpOptions = 240
)

// dhcp4Sample classifies a DHCP sample from its BOOTP header.
func dhcp4Sample(s *sample, d *Detection) bool {
	if !bootpHeader(s.p, s.wire) {
		return false
	}
	var e Detection
	e.App = AppDHCP
	if len(s.p) >= dhcpOptions {
		dhcpOpts(s.p[dhcpOptions:], &e)
	}
	*d = e
	return true
}

// bootpHeader checks a BOOTP header: op 1 or 2, Ethernet hardware type and
// length, few hops, zero chaddr padding, and room for the magic cookie.
func bootpHeader(p []byte, wire int) bool {
	if len(p) < 44 || wire < dhcpOptions || (p[0] != 1 && p[0] != 2) || p[1] != 1 || p[2] != 6 || p[3] > 16 {
		return false
	}
	for _, c := range p[34:44] {
		if c != 0 {
			return false
		}
	}
	if len(p) >= dhcpOptions && be32(p[bootpLen:]) != 0x63825363 {
		return false
	}
	return true
}

// dhcp4 decodes a whole DHCP datagram.
func dhcp4(p []byte, d *Detection) bool {
	if !bootpHeader(p, len(p)) || len(p) < dhcpOptions {
		return false
	}
	var e Detection
	e.App = AppDHCP
	dhcpOpts(p[dhcpOptions:], &e)
	*d = e
	return true
}

func dhcpOpts(b []byte, e *Detection) {
	for i := 0; i < len(b); {
		code := b[i]
		if code == 0 {
			i++
			continue
		}
		if code == 255 || i+2 > len(b) {
			return
		}
		l := int(b[i+1])
		if i+2+l > len(b) {
			return // cut
		}
		v := b[i+2 : i+2+l]
		switch code {
		case 12:
			e.add(FieldDHCPHostname, text(v, 64))
		case 53:
			if l == 1 {
				e.add(FieldDHCPMessageType, strconv.Itoa(int(v[0])))
			}
		case 55:
			e.add(FieldDHCPFingerprint, byteList(v))
		case 60:
			e.add(FieldDHCPVendorClass, text(v, 64))
		case 61:
			e.add(FieldDHCPClientID, hexString(v, 32))
		case 81: // flags, rcode1, rcode2, domain name (RFC 4702)
			if l > 3 {
				if v[0]&0x04 != 0 {
					e.add(FieldDHCPFQDN, wireName(v[3:]))
				} else {
					e.add(FieldDHCPFQDN, text(v[3:], 96))
				}
			}
		case 161:
			e.add(FieldDHCPMUDURL, text(v, 128))
		case 54:
			e.add(FieldDHCPServerID, ipv4List(v))
		case 3:
			e.add(FieldDHCPRouter, ipv4List(v))
		case 6:
			e.add(FieldDHCPDNSServers, ipv4List(v))
		case 42:
			e.add(FieldDHCPNTPServers, ipv4List(v))
		}
		i += 2 + l
	}
}

// ipv4List formats b, a list of IPv4 addresses, as "10.0.0.1,10.0.0.2";
// "" when its length is not a multiple of 4. At most 8 addresses.
func ipv4List(b []byte) string {
	if len(b) == 0 || len(b)%4 != 0 {
		return ""
	}
	var sb strings.Builder
	for i := 0; i+4 <= len(b) && i < 32; i += 4 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(netip.AddrFrom4([4]byte(b[i : i+4])).String())
	}
	return sb.String()
}

// byteList formats b as decimal numbers joined by commas: "1,3,6,15".
func byteList(b []byte) string {
	var sb strings.Builder
	for i, c := range b {
		if sb.Len() > maxValue-4 {
			break
		}
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(strconv.Itoa(int(c)))
	}
	return sb.String()
}

// wireName decodes an uncompressed DNS wire-format name.
func wireName(b []byte) string {
	var sb strings.Builder
	for i := 0; i < len(b) && b[i] != 0; {
		l := int(b[i])
		if l > 63 || i+1+l > len(b) {
			return ""
		}
		if sb.Len() > 0 {
			sb.WriteByte('.')
		}
		sb.Write(b[i+1 : i+1+l])
		i += 1 + l
	}
	return text([]byte(sb.String()), 96)
}

// dhcp6 decodes a DHCPv6 client/server message. The format is weak (a type
// byte, a transaction id, then TLV options), so it is accepted only on the
// DHCPv6 ports (onPort) and when its options parse and include a DUID.
func dhcp6(p []byte, complete, onPort bool, d *Detection) bool {
	if !onPort || len(p) < 8 || p[0] < 1 || p[0] > 11 {
		return false
	}
	var e Detection
	e.App = AppDHCPv6
	e.add(FieldDHCPMessageType, strconv.Itoa(int(p[0])))
	duid := false
	i := 4
	for i+4 <= len(p) {
		code, l := be16(p[i:]), be16(p[i+2:])
		if code == 0 || code > 200 {
			return false
		}
		if i+4+l > len(p) {
			if complete {
				return false
			}
			break
		}
		v := p[i+4 : i+4+l]
		switch code {
		case 1, 2: // client id, server id: DUIDs
			duid = true
			if code == 1 {
				e.add(FieldDHCPClientID, hexString(v, 32))
			}
		case 6: // option request option: 16-bit codes
			var sb strings.Builder
			for j := 0; j+1 < len(v) && sb.Len() <= maxValue-6; j += 2 {
				if j > 0 {
					sb.WriteByte(',')
				}
				sb.WriteString(strconv.Itoa(be16(v[j:])))
			}
			e.add(FieldDHCPFingerprint, sb.String())
		case 16: // vendor class: enterprise number, then length-prefixed data
			if len(v) >= 6 {
				n := be16(v[4:])
				if 6+n <= len(v) {
					e.add(FieldDHCPVendorClass, text(v[6:6+n], 64))
				}
			}
		case 39: // client FQDN: flags, then a wire-format name
			if len(v) > 1 {
				e.add(FieldDHCPFQDN, wireName(v[1:]))
			}
		case 112:
			e.add(FieldDHCPMUDURL, text(v, 128))
		}
		i += 4 + l
	}
	if complete && i != len(p) {
		return false
	}
	if !duid {
		return false
	}
	*d = e
	return true
}
