package detect

// LDAP (RFC 4511) over TCP: a BER LDAPMessage, SEQUENCE { messageID
// INTEGER, protocolOp [APPLICATION n] ... }. Only the operation is named;
// bind names, passwords and search results are not read.

var ldapOps = map[byte]string{
	0x60: "bind_request", 0x61: "bind_response", 0x42: "unbind_request",
	0x63: "search_request", 0x64: "search_result_entry", 0x65: "search_result_done",
	0x73: "search_result_reference", 0x66: "modify_request", 0x67: "modify_response",
	0x68: "add_request", 0x69: "add_response", 0x4a: "delete_request", 0x6b: "delete_response",
	0x6c: "modify_dn_request", 0x6d: "modify_dn_response", 0x6e: "compare_request",
	0x6f: "compare_response", 0x50: "abandon_request", 0x77: "extended_request",
	0x78: "extended_response", 0x79: "intermediate_response",
}

func ldap(s *sample, d *Detection) bool {
	p := s.p
	if len(p) < 7 || p[0] != 0x30 {
		return false
	}
	n, i, ok := berLen(p, 1)
	if !ok || n < 5 || i+n > s.wire {
		return false
	}
	// messageID: INTEGER of 1 to 4 bytes, 0 to 2^31-1.
	if i+2 > len(p) || p[i] != 0x02 || p[i+1] < 1 || p[i+1] > 4 {
		return false
	}
	l := int(p[i+1])
	if i+2+l >= len(p) || p[i+2]&0x80 != 0 {
		return false
	}
	j := i + 2 + l
	op, known := ldapOps[p[j]]
	if !known {
		return false
	}
	ol, k, ok := berLen(p, j+1)
	if !ok || k+ol > i+n {
		return false
	}
	*d = Detection{App: AppLDAP}
	d.add(FieldLDAPOperation, op)
	return true
}
