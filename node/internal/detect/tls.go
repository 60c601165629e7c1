package detect

import "strings"

// TLS (RFC 8446 4.1.2): a handshake record (content type 22) holding a
// ClientHello (type 1) or ServerHello (type 2). From a ClientHello, the
// server_name (extension 0) and ALPN (16) extensions, when the sample
// reaches them.

func tlsHello(s *sample, d *Detection) bool {
	p := s.p
	if len(p) >= 5 && p[0] != 22 {
		return tlsRecords(s, d)
	}
	if len(p) < 9 || p[0] != 22 || p[1] != 3 || p[2] > 4 {
		return false
	}
	rec := be16(p[3:])
	if rec < 4 || rec > 1<<14+2048 {
		return false
	}
	hs := p[5]
	if hs != 1 && hs != 2 {
		return false
	}
	hl := int(p[6])<<16 | be16(p[7:])
	if hl < 38 || hl > 1<<16 {
		return false
	}
	// The hello's own version follows; TLS 1.3 keeps 1.2 here and names
	// itself in the supported_versions extension, not read.
	if len(p) >= 11 && (p[9] != 3 || p[10] > 4) {
		return false
	}
	var e Detection
	e.App = AppTLS
	if len(p) >= 11 {
		e.add(FieldTLSVersion, tlsVersion(p[10]))
	}
	if hs == 1 {
		clientHelloExt(p[9:min(len(p), 9+hl)], &e)
	}
	*d = e
	return true
}

func tlsVersion(minor byte) string {
	switch minor {
	case 0:
		return "ssl3"
	case 1:
		return "1.0"
	case 2:
		return "1.1"
	case 3:
		return "1.2"
	default:
		return "1.3"
	}
}

// clientHelloExt walks a ClientHello body as far as the sample reaches.
func clientHelloExt(b []byte, e *Detection) {
	i := 2 + 32 // version, random
	if i >= len(b) {
		return
	}
	i += 1 + int(b[i]) // session id
	if i+2 > len(b) {
		return
	}
	i += 2 + be16(b[i:]) // cipher suites
	if i >= len(b) {
		return
	}
	i += 1 + int(b[i]) // compression methods
	if i+2 > len(b) {
		return
	}
	end := min(len(b), i+2+be16(b[i:]))
	i += 2
	for i+4 <= end {
		typ, l := be16(b[i:]), be16(b[i+2:])
		v := i + 4
		if v+l > end {
			return // cut by the sample
		}
		val := b[v : v+l]
		switch typ {
		case 0: // server_name: list length, then (type, length, name)...
			if len(val) >= 5 && val[2] == 0 {
				nl := be16(val[3:])
				if 5+nl <= len(val) && printable(val[5:5+nl]) {
					e.add(FieldTLSSNI, text(val[5:5+nl], 96))
				}
			}
		case 16: // ALPN: list length, then length-prefixed protocol names
			var names []string
			for j := 2; j < len(val); {
				nl := int(val[j])
				if j+1+nl > len(val) || !printable(val[j+1:j+1+nl]) {
					break
				}
				names = append(names, string(val[j+1:j+1+nl]))
				j += 1 + nl
			}
			if v := strings.Join(names, ","); len(v) <= 64 {
				e.add(FieldTLSALPN, v)
			}
		}
		i = v + l
	}
}

// tlsRecords recognises a flow seen after its handshake (the sensor started
// mid-connection): a run of TLS 1.2/1.3 records (change_cipher_spec, alert,
// application_data) whose lengths add up exactly to the payload.
func tlsRecords(s *sample, d *Detection) bool {
	p := s.p
	off, n := 0, 0
	for off < s.wire && n < 16 {
		if off+5 > len(p) {
			if n == 0 || off >= s.wire {
				return false
			}
			break // the next record header was cut by the sample
		}
		h := p[off:]
		if h[0] < 20 || h[0] > 23 || h[1] != 3 || h[2] != 3 {
			return false
		}
		l := be16(h[3:])
		if l == 0 || l > 1<<14+256 {
			return false
		}
		off += 5 + l
		n++
	}
	if off < s.wire && off+5 <= len(p) || off > s.wire && s.complete() {
		return false
	}
	*d = Detection{App: AppTLS}
	return true
}
