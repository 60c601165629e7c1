package detect

import (
	"bytes"
	"encoding/base64"
)

// HTTP/1.x over TCP, and SSDP (HTTP over UDP, UPnP Device Architecture
// 1.1). Headers are read line by line as far as the sample reaches; a line
// cut by the sample end is ignored, except an Authorization: Basic line,
// reported as a partial login. A login (Basic authorization, or an HTML
// form posted as application/x-www-form-urlencoded with a password field)
// waits for the response: 401, 403 and 407 turn it down; for Basic any
// 2xx or 3xx lets it in; for a form a redirect does, unless it leads back
// to a login or error page (a 200 says nothing: the form may be shown
// again with an error).

var httpMethods = []string{"GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "}

// httpMsg detects an HTTP request or response; app is AppHTTP on TCP and
// AppSSDP on UDP.
func httpMsg(st *State, s *sample, d *Detection, app string) bool {
	p := s.p
	if !httpStart(p, app) {
		return false
	}
	var e Detection
	e.App = app
	status := 0
	if bytes.HasPrefix(p, []byte("HTTP/1.")) {
		status = int(p[9]-'0')*100 + int(p[10]-'0')*10 + int(p[11]-'0')
	}
	post := app == AppHTTP && bytes.HasPrefix(p, []byte("POST "))
	var form bool
	var location []byte
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
			if form {
				if len(p) > 0 {
					formLogin(st, s, p, &e)
				} else if st != nil {
					l := st.auth()
					l.form, l.client = true, s.dir // the body comes in the next packet
				}
			}
			break // end of headers
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			continue
		}
		name, val := line[:c], bytes.TrimSpace(line[c+1:])
		if headerIs(name, "authorization") && app == AppHTTP && status == 0 {
			basicAuth(st, s, val, cut, &e)
			continue
		}
		if cut {
			continue
		}
		switch {
		case post && headerIs(name, "content-type"):
			form = hasPrefixFold(val, "application/x-www-form-urlencoded")
		case status >= 300 && status < 400 && headerIs(name, "location"):
			location = val
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
	if status != 0 && st != nil && st.login != nil && s.dir != st.login.client {
		httpAnswer(st.login, status, location, &e)
	}
	*d = e
	return true
}

// httpAnswer completes a waiting login with the response's status.
func httpAnswer(l *login, status int, location []byte, e *Detection) {
	if !l.waiting || status < 200 {
		return // 1xx: the answer is still to come
	}
	switch {
	case status == 401 || status == 403 || status == 407:
		l.answer(Refused, e)
	case l.pending.Method == "basic" && status < 400:
		l.answer(Accepted, e)
	case l.pending.Method == "form" && status >= 300 && status < 400:
		if location == nil {
			l.unanswered(e) // the Location line was cut by the sample
			return
		}
		for _, w := range []string{"login", "logon", "signin", "sign-in", "error", "fail", "denied"} {
			if indexFold(location, w) >= 0 {
				l.answer(Refused, e)
				return
			}
		}
		l.answer(Accepted, e)
	default:
		l.answer(NotSeen, e)
	}
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

// basicAuth decodes an Authorization header value. A value cut by the
// sample end yields a partial login from the complete base64 quanta
// present. The decoded password is compared with the defaults and wiped.
func basicAuth(st *State, s *sample, val []byte, cut bool, e *Detection) {
	if !hasPrefixFold(val, "basic ") {
		return
	}
	b64 := bytes.TrimSpace(val[6:])
	if cut {
		b64 = b64[:len(b64)/4*4]
	}
	x := Login{Protocol: AppHTTP, Method: "basic", Cleartext: true, Partial: cut, Subject: other(s.dir)}
	if len(b64) == 0 || len(b64) > 256 {
		if cut {
			httpLogin(st, s, x, e)
		}
		return
	}
	var buf [192]byte
	n, err := base64.StdEncoding.Decode(buf[:], b64)
	if err != nil {
		clear(buf[:])
		return
	}
	dec := buf[:n]
	if i := bytes.IndexByte(dec, ':'); i >= 0 {
		x.User = text(dec[:i], 64)
		x.Default = !cut && isDefault(s.def, AppHTTP, x.User, dec[i+1:])
	} else {
		x.User = text(dec, 64) // the user name itself may be cut
	}
	clear(buf[:])
	httpLogin(st, s, x, e)
}

// httpLogin records a login sent in a request: it waits for the response.
func httpLogin(st *State, s *sample, x Login, e *Detection) {
	if st == nil {
		e.Logins = append(e.Logins, x)
		return
	}
	l := st.auth()
	l.client = s.dir
	l.sent(x, e)
}

// Form field names that carry the account and the password.
var (
	formUserFields = []string{"user", "username", "user_name", "userid", "user_id", "login", "login_name",
		"loginname", "uname", "usr", "account", "email", "j_username", "log"}
	formPassFields = []string{"pass", "password", "passwd", "passwort", "pwd", "pw", "j_password", "secret", "loginpassword"}
)

// maxFormValue bounds a decoded form value compared with the defaults.
const maxFormValue = 64

// formLogin reads a urlencoded form body (the part of it in body) for an
// account and a password. A password field cut by the sample end makes the
// login partial. The decoded password is wiped once compared.
func formLogin(st *State, s *sample, body []byte, e *Detection) {
	if st == nil {
		return
	}
	complete := s.complete()
	var user string
	var pass [maxFormValue]byte
	np, havePass, partial := 0, false, false
	for len(body) > 0 {
		pair := body
		last := true
		if i := bytes.IndexByte(body, '&'); i >= 0 {
			pair, body, last = body[:i], body[i+1:], false
		} else {
			body = nil
		}
		cut := last && !complete
		k, v, ok := bytes.Cut(pair, []byte("="))
		if !ok {
			continue
		}
		var kb [32]byte
		key, kok := urlDecode(k, kb[:])
		if !kok {
			continue
		}
		switch {
		case formField(key, formUserFields) && user == "":
			var ub [maxFormValue]byte
			u, uok := urlDecode(v, ub[:])
			if uok {
				user = text(u, maxFormValue)
				partial = partial || cut
			}
		case formField(key, formPassFields) && !havePass:
			p, pok := urlDecode(v, pass[:])
			havePass, np = true, len(p)
			partial = partial || cut || !pok
		}
	}
	if havePass {
		x := Login{Protocol: AppHTTP, Method: "form", User: user, Cleartext: true, Partial: partial, Subject: other(s.dir)}
		x.Default = !partial && isDefault(s.def, AppHTTP, user, pass[:np])
		httpLogin(st, s, x, e)
	}
	clear(pass[:])
}

// formBody reads the body of a form post that came in the packet after
// its headers.
func formBody(st *State, s *sample, e *Detection) {
	if st.login == nil || !st.login.form || s.dir != st.login.client {
		if st.login != nil && s.dir != st.login.client {
			st.login.unanswered(e)
		}
		return
	}
	st.login.form = false
	formLogin(st, s, s.p, e)
}

func formField(key []byte, names []string) bool {
	for _, n := range names {
		if len(key) == len(n) && hasPrefixFold(key, n) {
			return true
		}
	}
	return false
}

// urlDecode decodes application/x-www-form-urlencoded text into out; ok is
// false when the text is malformed or longer than out.
func urlDecode(b []byte, out []byte) ([]byte, bool) {
	n := 0
	for i := 0; i < len(b); i++ {
		if n == len(out) {
			return out[:n], false
		}
		c := b[i]
		switch c {
		case '+':
			c = ' '
		case '%':
			if i+2 >= len(b) || unhex(b[i+1]) < 0 || unhex(b[i+2]) < 0 {
				return out[:n], false
			}
			c = byte(unhex(b[i+1])<<4 | unhex(b[i+2]))
			i += 2
		}
		out[n] = c
		n++
	}
	return out[:n], true
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
