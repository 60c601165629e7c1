package detect

import "strings"

// SNMP (RFC 1157, 3416, 3412) in BER: SEQUENCE { version INTEGER,
// community OCTET STRING, PDU } for v1 and v2c; SEQUENCE { version 3,
// msgGlobalData SEQUENCE ... } for v3.

func snmp(s *sample, d *Detection) bool {
	p := s.p
	if len(p) < 7 || p[0] != 0x30 {
		return false
	}
	n, i, ok := berLen(p, 1)
	if !ok || i+n != s.wire {
		return false
	}
	if i+3 > len(p) || p[i] != 0x02 || p[i+1] != 0x01 {
		return false
	}
	ver := p[i+2]
	i += 3
	var e Detection
	e.App = AppSNMP
	switch ver {
	case 0, 1:
		if i+2 > len(p) || p[i] != 0x04 {
			return false
		}
		cl, j, ok := berLen(p, i+1)
		if !ok || cl > 255 || j+cl >= len(p) {
			return false // the community and the PDU tag must be in the sample
		}
		if tag := p[j+cl]; tag < 0xa0 || tag > 0xa8 {
			return false
		}
		community := p[j : j+cl]
		e.add(FieldSNMPVersion, [...]string{"1", "2c"}[ver])
		e.add(FieldSNMPCommunity, strings.Repeat("*", min(len(community), 16)))
		e.Credentials = append(e.Credentials, Credential{Protocol: AppSNMP, Secret: string(community)})
		snmpSystem(p, j+cl, &e)
	case 3:
		if i >= len(p) || p[i] != 0x30 {
			return false
		}
		e.add(FieldSNMPVersion, "3")
	default:
		return false
	}
	*d = e
	return true
}

// berLen decodes a BER definite length at p[i]; j is where the value starts.
func berLen(p []byte, i int) (n, j int, ok bool) {
	if i >= len(p) {
		return 0, 0, false
	}
	c := p[i]
	if c < 0x80 {
		return int(c), i + 1, true
	}
	k := int(c & 0x7f)
	if k == 0 || k > 3 || i+1+k > len(p) {
		return 0, 0, false
	}
	for _, b := range p[i+1 : i+1+k] {
		n = n<<8 | int(b)
	}
	return n, i + 1 + k, true
}
