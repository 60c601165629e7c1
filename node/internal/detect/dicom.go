package detect

import "bytes"

// DICOM upper layer (PS3.8 9.3): an A-ASSOCIATE-RQ (PDU type 0x01) or -AC
// (0x02) carries the called and calling AE titles at fixed offsets, then
// variable items; the user-information item (0x50) holds the
// implementation class UID (sub-item 0x52) and version name (0x55).

const (
	pduAssociateRQ = 0x01
	pduAssociateAC = 0x02
	pduPDataTF     = 0x04
	dicomFixedLen  = 74 // PDU header (6) + fixed A-ASSOCIATE fields (68)
)

// dicomPData recognises an association already under way (the sensor
// started after it was negotiated): a P-DATA-TF PDU whose first
// presentation data value item fits in it, with an odd presentation
// context id and a valid message control header (PS3.8 9.3.5, E.2).
func dicomPData(s *sample, d *Detection) bool {
	p := s.p
	if p[1] != 0 {
		return false
	}
	n, item := be32(p[2:]), be32(p[6:])
	if n < 6 || n > 1<<24 || item < 2 || item+4 > n || p[10]&1 == 0 || p[11] > 3 {
		return false
	}
	// A PDU that ends inside the payload must be followed by another PDU.
	if end := 6 + n; end < s.wire && end < len(p) && p[end] != pduPDataTF && (p[end] < 0x05 || p[end] > 0x07) {
		return false
	}
	*d = Detection{App: AppDICOM}
	return true
}

func dicom(s *sample, d *Detection) bool {
	p := s.p
	if len(p) >= 12 && p[0] == pduPDataTF {
		return dicomPData(s, d)
	}
	if len(p) < dicomFixedLen || (p[0] != pduAssociateRQ && p[0] != pduAssociateAC) || p[1] != 0 {
		return false
	}
	n := be32(p[2:])
	if n < dicomFixedLen-6 || n > 1<<20 || be16(p[6:]) != 1 {
		return false
	}
	called, calling := p[10:26], p[26:42]
	if !aeTitle(called) || !aeTitle(calling) {
		return false
	}
	var e Detection
	e.App = AppDICOM
	e.add(FieldDICOMCalledAE, text(called, 16))
	e.add(FieldDICOMCallingAE, text(calling, 16))
	// Items: type (1), reserved (1), length (2), value.
	end := min(len(p), n+6)
	for i := dicomFixedLen; i+4 <= end; {
		typ, l := p[i], be16(p[i+2:])
		v := i + 4
		if typ == 0x50 {
			// User information: sub-items in the same layout.
			for j := v; j+4 <= min(end, v+l); {
				st, sl := p[j], be16(p[j+2:])
				if j+4+sl > end {
					break // cut by the sample
				}
				val := p[j+4 : j+4+sl]
				switch st {
				case 0x52:
					e.add(FieldDICOMImplClass, uid(val))
				case 0x55:
					if printable(bytes.TrimSpace(val)) {
						e.add(FieldDICOMImplVersion, text(val, 16))
					}
				}
				j += 4 + sl
			}
			break
		}
		i = v + l
	}
	*d = e
	return true
}

// aeTitle reports whether b is a space-padded AE title: printable ASCII
// without backslash, not all spaces (PS3.5 AE value representation).
func aeTitle(b []byte) bool {
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return false
	}
	for _, c := range b {
		if (c < 0x20 && c != 0) || c > 0x7e || c == '\\' {
			return false
		}
	}
	return true
}

// uid returns b as a DICOM UID (digits and dots, NUL-padded) or "".
func uid(b []byte) string {
	b = bytes.TrimRight(b, "\x00 ")
	if len(b) == 0 || len(b) > 64 {
		return ""
	}
	for _, c := range b {
		if c != '.' && (c < '0' || c > '9') {
			return ""
		}
	}
	return string(b)
}
