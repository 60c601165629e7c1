package detect

import "net/netip"

// DNS (RFC 1035) and mDNS (RFC 6762, same wire format on port 5353 or the
// mDNS groups). Queries give the query name; responses map A and AAAA
// records to names. mDNS adds service instances and TXT model / friendly
// names (fn=, md=, model=, ty=).

const (
	dnsHeader  = 12
	maxAnswers = 16
)

func dns(p []byte, complete, mdns bool, d *Detection) bool {
	if len(p) < dnsHeader+5 {
		return false
	}
	flags := be16(p[2:])
	qd, an, ns, ar := be16(p[4:]), be16(p[6:]), be16(p[8:]), be16(p[10:])
	opcode := flags >> 11 & 0xf
	if opcode != 0 && opcode != 4 && opcode != 5 || flags&0x40 != 0 { // Z bit
		return false
	}
	if qd > 8 || an > 64 || ns > 64 || ar > 64 || qd+an+ns+ar == 0 {
		return false
	}
	if qd == 0 && !(mdns && flags&0x8000 != 0) {
		return false // only mDNS responses omit the question
	}
	if nbns(p[dnsHeader:]) {
		return false
	}
	var e Detection
	e.App = AppDNS
	if mdns {
		e.App = AppMDNS
	}
	i := dnsHeader
	var qname string
	for k := 0; k < qd; k++ {
		name, j, ok := dnsName(p, i)
		if !ok || j+4 > len(p) {
			if k == 0 {
				return false // the first question must be whole and well formed
			}
			*d = e
			return true
		}
		class := be16(p[j+2:]) &^ 0x8000 // mDNS unicast-response bit
		if class != 1 && class != 255 && class != 3 && class != 4 {
			return false
		}
		if k == 0 {
			qname = name
		}
		if name != "" {
			if mdns {
				e.add(FieldMDNSService, name)
			} else {
				e.add(FieldDNSQuery, name)
			}
		}
		i = j + 4
	}
	// Records: answers, then authority and additional (mDNS puts A/AAAA and
	// TXT in additional).
	for k := 0; k < an+ns+ar && len(e.Answers) < maxAnswers; k++ {
		name, j, ok := dnsName(p, i)
		if !ok || j+10 > len(p) {
			break
		}
		typ, rdl := be16(p[j:]), be16(p[j+8:])
		v := j + 10
		if v+rdl > len(p) {
			break
		}
		rd := p[v : v+rdl]
		owner := name
		if qd == 1 && !mdns && k < an {
			owner = qname // map addresses to the name the device asked for
		}
		switch {
		case typ == 1 && rdl == 4:
			e.Answers = append(e.Answers, DNSAnswer{Name: owner, Addr: netip.AddrFrom4([4]byte(rd)).String()})
		case typ == 28 && rdl == 16:
			e.Answers = append(e.Answers, DNSAnswer{Name: owner, Addr: netip.AddrFrom16([16]byte(rd)).String()})
		case mdns && typ == 12: // PTR: service instance
			if inst, _, ok := dnsName(p, v); ok {
				e.add(FieldMDNSService, inst)
			}
		case mdns && typ == 16:
			txt(rd, &e)
		}
		i = v + rdl
	}
	*d = e
	return true
}

// txt reads mDNS TXT strings for a model or friendly name.
func txt(rd []byte, e *Detection) {
	for i := 0; i < len(rd); {
		l := int(rd[i])
		if i+1+l > len(rd) {
			return
		}
		kv := rd[i+1 : i+1+l]
		switch {
		case hasPrefixFold(kv, "fn="):
			e.add(FieldFriendlyName, text(kv[3:], 64))
		case hasPrefixFold(kv, "md="), hasPrefixFold(kv, "ty="):
			e.add(FieldModel, text(kv[3:], 64))
		case hasPrefixFold(kv, "model="):
			e.add(FieldModel, text(kv[6:], 64))
		}
		i += 1 + l
	}
}

// dnsName decodes the possibly compressed name at p[i]; j is the offset
// after it in the original position. Each compression pointer must point
// below every byte read so far, so no byte is read twice: a name is never
// longer than the message and pointer loops cannot occur.
func dnsName(p []byte, i int) (name string, j int, ok bool) {
	var buf [255]byte
	n, end := 0, -1
	segStart, limit := i, len(p) // the segment being read: [segStart, limit)
	for {
		if i >= limit {
			return "", 0, false
		}
		l := int(p[i])
		switch {
		case l == 0:
			if end < 0 {
				end = i + 1
			}
			return text(buf[:n], 255), end, true
		case l&0xc0 == 0xc0:
			if i+1 >= limit {
				return "", 0, false
			}
			if end < 0 {
				end = i + 2
			}
			ptr := (l&0x3f)<<8 | int(p[i+1])
			if ptr >= segStart {
				return "", 0, false
			}
			segStart, limit, i = ptr, segStart, ptr
		case l > 63:
			return "", 0, false
		default:
			if i+1+l > limit || n+l+1 > len(buf) {
				return "", 0, false
			}
			label := p[i+1 : i+1+l]
			for _, c := range label {
				if c < 0x20 || c == 0x7f {
					return "", 0, false
				}
			}
			if n > 0 {
				buf[n] = '.'
				n++
			}
			n += copy(buf[n:], label)
			i += 1 + l
		}
	}
}

// nbns reports whether the first question name is a NetBIOS name (RFC 1002
// 4.1: 32 characters 'A'..'P'), whose service shares the DNS wire format.
func nbns(q []byte) bool {
	if len(q) < 33 || q[0] != 32 {
		return false
	}
	for _, c := range q[1:33] {
		if c < 'A' || c > 'P' {
			return false
		}
	}
	return true
}

// dnsTCP recognises DNS over TCP (RFC 1035 4.2.2): a 2-byte length prefix
// that covers the rest of the payload, then a DNS message.
func dnsTCP(s *sample, d *Detection) bool {
	p := s.p
	if len(p) < 2+dnsHeader+5 || be16(p) != s.wire-2 {
		return false
	}
	return dns(p[2:], s.complete(), false, d)
}
