package detect

import "bytes"

// The system group (RFC 3418) an SNMP agent answers with names the device:
// sysDescr.0 (its hardware, OS and firmware) and sysName.0 (its host name).
// snmpSystem reads them from a response PDU's variable bindings; other
// variables are skipped without being read.

var (
	oidSysDescr = []byte{0x2b, 6, 1, 2, 1, 1, 1, 0} // 1.3.6.1.2.1.1.1.0
	oidSysName  = []byte{0x2b, 6, 1, 2, 1, 1, 5, 0} // 1.3.6.1.2.1.1.5.0
)

// snmpSystem reads the response PDU at p[i:] (tag 0xa2), up to the sample's
// end.
func snmpSystem(p []byte, i int, d *Detection) {
	if i >= len(p) || p[i] != 0xa2 {
		return
	}
	_, j, ok := berLen(p, i+1)
	if !ok {
		return
	}
	// request-id, error-status, error-index: three INTEGERs.
	for range 3 {
		if j >= len(p) || p[j] != 0x02 {
			return
		}
		l, k, ok := berLen(p, j+1)
		if !ok {
			return
		}
		j = k + l
	}
	if j >= len(p) || p[j] != 0x30 {
		return
	}
	_, j, ok = berLen(p, j+1)
	for ok && j < len(p) && p[j] == 0x30 {
		var vl, v int
		vl, v, ok = berLen(p, j+1)
		if !ok || v+vl > len(p) {
			return // the binding is cut by the sample
		}
		bind := p[v : v+vl]
		j = v + vl
		if len(bind) < 2 || bind[0] != 0x06 {
			continue
		}
		ol, o, ok2 := berLen(bind, 1)
		if !ok2 || o+ol >= len(bind) {
			continue
		}
		oid, val := bind[o:o+ol], bind[o+ol:]
		if val[0] != 0x04 { // OCTET STRING
			continue
		}
		sl, s, ok3 := berLen(val, 1)
		if !ok3 || s+sl > len(val) {
			continue
		}
		switch {
		case bytes.Equal(oid, oidSysDescr):
			d.add(FieldSNMPSysDescr, text(val[s:s+sl], maxValue))
		case bytes.Equal(oid, oidSysName):
			d.add(FieldSNMPSysName, text(val[s:s+sl], 64))
		}
	}
}
