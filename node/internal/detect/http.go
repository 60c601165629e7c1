package detect

import (
	"bytes"
	"encoding/base64"
)

// HTTP/1.x over TCP, and SSDP (HTTP over UDP, UPnP Device Architecture
// 1.1). Headers are read line by line as far as the sample reaches; a line
// cut by the sample end is ignored, except an Authorization: Basic line,
// reported as a partial credential.

var httpMethods = []string{"GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "}

// httpMsg detects an HTTP request or response; app is AppHTTP on TCP and
// AppSSDP on UDP.
func httpMsg(s *sample, d *Detection, app string) bool {
	p := s.p
	if !httpStart(p, app) {
		return false
	}
	var e Detection
	e.App = app
	first := true
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		line, cut := p, true
		if i >= 0 {
			line, cut, p = p[:i], false, p[i+1:]
		} else {
			p = nil
			cut = !s.complete()
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if first {
			first = false
			continue
		}
		if len(line) == 0 && !cut {
			break // end of headers
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			continue
		}
		name, val := line[:c], bytes.TrimSpace(line[c+1:])
		if hasPrefixFold(name, "authorization") && len(name) == len("authorization") && app == AppHTTP {
			basicAuth(val, cut, &e)
			continue
		}
		if cut {
			continue
		}
		switch {
		case app == AppHTTP && headerIs(name, "host"):
			e.add(FieldHTTPHost, text(val, 96))
		case app == AppHTTP && headerIs(name, "user-agent"):
			e.add(FieldHTTPUserAgent, text(val, 128))
		case app == AppHTTP && headerIs(name, "server"):
			e.add(FieldHTTPServer, text(val, 96))
		case app == AppSSDP && headerIs(name, "server"):
			e.add(FieldSSDPServer, text(val, 96))
		case app == AppSSDP && headerIs(name, "usn"):
			e.add(FieldSSDPUSN, text(val, 96))
		case app == AppSSDP && (headerIs(name, "st") || headerIs(name, "nt")):
			e.add(FieldSSDPSearch, text(val, 96))
		case app == AppSSDP && (headerIs(name, "x-friendly-name") || headerIs(name, "friendlyname.dlna.org")):
			e.add(FieldFriendlyName, text(val, 64))
		case app == AppSSDP && headerIs(name, "x-model-name"):
			e.add(FieldModel, text(val, 64))
		}
	}
	*d = e
	return true
}

func headerIs(name []byte, want string) bool {
	return len(name) == len(want) && hasPrefixFold(name, want)
}

// httpStart reports whether p starts an HTTP/1.x request or response line.
// On UDP only the SSDP methods and responses count.
func httpStart(p []byte, app string) bool {
	if bytes.HasPrefix(p, []byte("HTTP/1.")) {
		return len(p) >= 12 && (p[7] == '0' || p[7] == '1') && p[8] == ' ' &&
			isDigit(p[9]) && isDigit(p[10]) && isDigit(p[11])
	}
	if app == AppSSDP {
		return bytes.HasPrefix(p, []byte("M-SEARCH * HTTP/1.")) || bytes.HasPrefix(p, []byte("NOTIFY * HTTP/1."))
	}
	for _, m := range httpMethods {
		if bytes.HasPrefix(p, []byte(m)) {
			rest := p[len(m):]
			if len(rest) == 0 {
				return false
			}
			if rest[0] != '/' && rest[0] != '*' && !hasPrefixFold(rest, "http") && m != "CONNECT " {
				return false
			}
			// The request line must be printable up to its end or the sample's.
			if i := bytes.IndexByte(rest, '\n'); i >= 0 {
				rest = rest[:i]
				if !bytes.Contains(rest, []byte(" HTTP/1.")) {
					return false
				}
			}
			return printable(bytes.TrimSuffix(rest, []byte("\r")))
		}
	}
	return false
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// basicAuth decodes an Authorization header value. A value cut by the sample
// end yields a partial credential from the complete base64 quanta present.
func basicAuth(val []byte, cut bool, e *Detection) {
	if !hasPrefixFold(val, "basic ") {
		return
	}
	b64 := bytes.TrimSpace(val[6:])
	if cut {
		b64 = b64[:len(b64)/4*4]
	}
	if len(b64) == 0 || len(b64) > 256 {
		if cut {
			e.Credentials = append(e.Credentials, Credential{Protocol: AppHTTP, Partial: true})
		}
		return
	}
	var buf [192]byte
	n, err := base64.StdEncoding.Decode(buf[:], b64)
	if err != nil {
		return
	}
	dec := buf[:n]
	c := Credential{Protocol: AppHTTP, Partial: cut}
	if i := bytes.IndexByte(dec, ':'); i >= 0 {
		c.User, c.Secret = text(dec[:i], 64), string(dec[i+1:])
	} else {
		c.User = text(dec, 64) // the user name itself may be cut
	}
	e.Credentials = append(e.Credentials, c)
	clear(buf[:])
}
