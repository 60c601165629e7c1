package detect

import (
	"bytes"
	"strings"
)

// HL7 v2 over MLLP: a message starts with the start block 0x0B followed by
// the MSH segment; segments end with '\r'; the end block is 0x1C 0x0D.
// Only MSH-3 (sending application), MSH-4 (sending facility), MSH-9
// (message type), PRT-16 and OBX-18 (device identifiers, the UDI) are read:
// patient segments (PID, NK1, PV1...) are skipped without being copied.

const (
	mllpStart = 0x0b
	mllpEnd   = 0x1c
)

// hl7 detects and extracts from one sample. When first is set the sample
// must start a message (MLLP start block, or a bare MSH with the standard
// encoding characters); later samples may be continuation segments.
func hl7(st *State, s *sample, d *Detection, first bool) bool {
	p := s.p
	start := false
	if len(p) >= 1 && p[0] == mllpStart {
		p = p[1:]
		start = true
	}
	msh := len(p) >= 8 && p[0] == 'M' && p[1] == 'S' && p[2] == 'H' && !isHL7Text(p[3]) && p[3] > 0x20 &&
		(start || (p[4] == '^' && p[5] == '~'))
	if first && !msh {
		return false
	}
	var e Detection
	sep := st.hl7Sep
	if msh {
		sep = p[3]
		st.hl7Sep = sep
	}
	if sep == 0 {
		sep = '|'
	}
	complete := s.complete()
	// Walk segments; a segment is cut by the sample end unless the sample
	// is the whole payload.
	for len(p) > 0 {
		end := bytes.IndexAny(p, "\r\n\x1c")
		seg, cut := p, true
		if end >= 0 {
			seg, cut, p = p[:end], false, p[end+1:]
		} else {
			p = nil
			cut = !complete
		}
		if len(seg) < 4 || seg[3] != sep {
			continue
		}
		switch string(seg[:3]) {
		case "MSH":
			// MSH-1 is the separator itself, so MSH-n is element n-1.
			e.add(FieldHL7SendingApp, hl7Field(seg, sep, 2, cut))
			e.add(FieldHL7SendingFacility, hl7Field(seg, sep, 3, cut))
			e.add(FieldHL7MessageType, hl7Field(seg, sep, 8, cut))
		case "PRT":
			if v := hl7Field(seg, sep, 16, cut); v != "" {
				e.add(FieldHL7UDI, v)
				st.hl7UDI = true
			}
		case "OBX":
			if v := hl7Field(seg, sep, 18, cut); v != "" {
				e.add(FieldHL7UDI, v)
				st.hl7UDI = true
			}
		case "SFT":
			// SFT-3 software product name, SFT-2 its version.
			if prod := hl7Field(seg, sep, 3, cut); prod != "" {
				e.add(FieldHL7Software, firstComponent(prod))
				e.add(FieldHL7SoftwareVer, firstComponent(hl7Field(seg, sep, 2, cut)))
			}
		}
	}
	e.App = AppHL7
	*d = e
	return true
}

func isHL7Text(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

// hl7Field returns element i of seg (split on sep), or "" when absent or
// when it may have been cut by the sample end.
func hl7Field(seg []byte, sep byte, i int, cut bool) string {
	for k := 0; k < i; k++ {
		j := bytes.IndexByte(seg, sep)
		if j < 0 {
			return ""
		}
		seg = seg[j+1:]
	}
	j := bytes.IndexByte(seg, sep)
	if j < 0 {
		if cut {
			return ""
		}
		j = len(seg)
	}
	return text(seg[:j], 64)
}

// firstComponent is the first component of an HL7 field value (up to '^').
func firstComponent(v string) string {
	c, _, _ := strings.Cut(v, "^")
	return c
}
