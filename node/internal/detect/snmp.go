package detect

import (
	"strings"

	"github.com/medmesh/medmesh/node/flow"
)

// SNMP (RFC 1157, 3416, 3412) in BER: SEQUENCE { version INTEGER,
// community OCTET STRING, PDU } for v1 and v2c; SEQUENCE { version 3,
// msgGlobalData SEQUENCE ... } for v3.
//
// A v1/v2c community string is a password in cleartext. A request is a
// login the agent answers with a Response PDU (it stays silent on a wrong
// community, so a refusal is never seen); a notification (trap, inform)
// carries the sender's community and asks for no login.

// PDU tags (context-specific, constructed).
const (
	pduGet      = 0xa0
	pduResponse = 0xa2
	pduTrapV1   = 0xa4
	pduInform   = 0xa6
	pduTrapV2   = 0xa7
	pduReport   = 0xa8
)

func snmp(st *State, s *sample, d *Detection) bool {
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
		tag := p[j+cl]
		if tag < pduGet || tag > pduReport {
			return false
		}
		community := p[j : j+cl]
		e.add(FieldSNMPVersion, [...]string{"1", "2c"}[ver])
		e.add(FieldSNMPCommunity, strings.Repeat("*", min(len(community), 16)))
		snmpLogin(st, s, tag, isDefault(s.def, AppSNMP, "", community), &e)
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

// snmpLogin follows the community strings of a flow's messages.
func snmpLogin(st *State, s *sample, tag byte, def bool, e *Detection) {
	other := flow.Rev
	if s.dir == flow.Rev {
		other = flow.Fwd
	}
	x := Login{Protocol: AppSNMP, Cleartext: true, Default: def, Subject: other}
	if st == nil {
		e.Logins = append(e.Logins, x)
		return
	}
	l := st.auth()
	first := !l.snmp
	l.snmp = true
	switch tag {
	case pduResponse:
		if l.waiting && l.pending.Subject == s.dir {
			l.answer(Accepted, e) // the agent answered the request
		} else if first {
			// A response without its request: the sending agent took the
			// community.
			x.Subject, x.Outcome = s.dir, Accepted
			e.Logins = append(e.Logins, x)
		}
	case pduTrapV1, pduTrapV2, pduInform, pduReport:
		x.Subject, x.Outcome = s.dir, NoAnswer
		e.Logins = append(e.Logins, x)
	default:
		l.sent(x, e)
	}
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
