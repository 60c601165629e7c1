package detect

import (
	"bytes"

	"github.com/medmesh/medmesh/node/flow"
)

// Telnet (RFC 854) and FTP (RFC 959) logins, and the login state every
// login-carrying protocol shares. A flow keeps at most maxLogin characters
// of user name and of password, the password only until it was compared
// with the defaults; nothing else of the stream is kept.

const maxLogin = 32

// maxAnswerSamples bounds the server samples a login waits for its answer
// in; past it the login is reported as NotSeen.
const maxAnswerSamples = 8

type loginPhase uint8

const (
	phaseIdle     loginPhase = iota
	phaseUser                // a login prompt was seen: the client types the user name
	phaseWaitPass            // user name entered, waiting for the password prompt
	phasePass                // a password prompt was seen: the client types the password
	phaseAnswer              // the password was sent: the server's answer is due
)

// login is a flow's login state.
type login struct {
	// client is the direction the client sends in: Fwd unless the content
	// showed otherwise (a capture or a sensor that started mid-flow sees
	// the server's packet first).
	client flow.Dir
	phase  loginPhase
	// done: the login succeeded or went encrypted; nothing more to follow
	// (Telnet, FTP).
	done bool
	nu   uint8
	np   uint8
	user [maxLogin]byte
	pass [maxLogin]byte
	// pending is the login awaiting the server's answer (never with a
	// password); waited counts the server samples seen meanwhile.
	pending Login
	waiting bool
	waited  uint8
	// form: an HTTP form post's body is due in the client's next sample.
	form bool
	// snmp: a message was seen in this flow (a response then answers it).
	snmp bool
	vnc  vncState
}

func (st *State) auth() *login {
	if st.login == nil {
		st.login = &login{}
	}
	return st.login
}

// server is the direction the server sends in.
func (l *login) server() flow.Dir { return other(l.client) }

func other(d flow.Dir) flow.Dir {
	if d == flow.Fwd {
		return flow.Rev
	}
	return flow.Fwd
}

// sent records a login whose answer is awaited. A login still waiting is
// reported first, as NotSeen.
func (l *login) sent(x Login, d *Detection) {
	if l.waiting {
		d.Logins = append(d.Logins, l.pending)
	}
	l.pending, l.waiting, l.waited = x, true, 0
}

// answer completes the waiting login with o.
func (l *login) answer(o Outcome, d *Detection) {
	if !l.waiting {
		return
	}
	p := l.pending
	p.Outcome = o
	d.Logins = append(d.Logins, p)
	l.pending, l.waiting = Login{}, false
}

// unanswered counts a server sample that did not answer; past the bound
// the login is given up on.
func (l *login) unanswered(d *Detection) {
	if !l.waiting {
		return
	}
	if l.waited++; l.waited >= maxAnswerSamples {
		l.answer(NotSeen, d)
	}
}

// wipe forgets the typed password.
func (l *login) wipe() {
	clear(l.pass[:])
	l.np = 0
}

// Telnet commands (RFC 854).
const (
	iac  = 0xff
	sb   = 0xfa
	se   = 0xf0
	will = 0xfb
	dont = 0xfe
)

// telnet detects a Telnet flow by its option negotiation, or a text
// console by the login prompt it opens with, and follows the login:
// prompt, the characters typed after it and the server's answer.
func telnet(st *State, s *sample, d *Detection) bool {
	if st.app == "" {
		p := s.p
		switch {
		case len(p) >= 3 && p[0] == iac && ((p[1] >= will && p[1] <= dont) || p[1] == sb):
			// Every IAC in the sample must be a well-formed command.
			var scratch [0]byte
			if _, ok := stripIAC(p, scratch[:]); !ok {
				return false
			}
		case consolePrompt(p):
			st.auth().client = other(s.dir) // the console prompts its client
		default:
			return false
		}
	}
	l := st.auth()
	var e Detection
	e.App = AppTelnet
	var buf [128]byte
	data, _ := stripIAC(s.p, buf[:])
	if !l.done {
		if s.dir == l.server() {
			serverText(l, data, s.def, &e)
		} else {
			typed(l, data, s.def, &e)
		}
	}
	clear(buf[:])
	*d = e
	return true
}

// consolePrompt reports whether p is a whole text console greeting ending
// in a login prompt: printable lines, the last one "login:", "username:"
// or "password:" (ASCII case ignored), trailing spaces allowed.
func consolePrompt(p []byte) bool {
	t := bytes.TrimRight(p, " ")
	if len(t) < 6 || len(t) > 512 {
		return false
	}
	for _, c := range t {
		if (c < 0x20 || c > 0x7e) && c != '\r' && c != '\n' && c != '\t' {
			return false
		}
	}
	for _, prompt := range []string{"login:", "username:", "password:"} {
		if len(t) >= len(prompt) && indexFold(t[len(t)-len(prompt):], prompt) == 0 {
			return true
		}
	}
	return false
}

// serverText follows what the server prints: prompts, and the answer to a
// password.
func serverText(l *login, data []byte, def Defaults, e *Detection) {
	userPrompt := indexFold(data, "login:") >= 0 || indexFold(data, "username:") >= 0 || indexFold(data, "user:") >= 0
	passPrompt := indexFold(data, "password") >= 0 && bytes.IndexByte(data, ':') >= 0
	if l.phase == phaseAnswer {
		var o Outcome
		switch {
		case indexFold(data, "last login") >= 0:
			// Before refusal: "Last failed login: ... There were 2 failed
			// login attempts" greets a successful login too.
			o = Accepted
		case refusal(data):
			o = Refused
		case acceptance(data):
			o = Accepted
		case userPrompt || passPrompt:
			o = Refused // prompted again
		default:
			if l.unanswered(e); !l.waiting {
				l.phase = phaseIdle // given up
			}
			return
		}
		l.answer(o, e)
		l.phase = phaseIdle
		if o == Accepted {
			l.done = true
			return
		}
	}
	switch {
	case passPrompt:
		// Some devices ask for a password only: the user is then "".
		if l.phase != phasePass {
			l.phase, l.np = phasePass, 0
		}
	case userPrompt:
		l.phase, l.nu = phaseUser, 0
	}
}

// refusal reports a server's answer that turns a login down.
func refusal(b []byte) bool {
	for _, w := range []string{"incorrect", "invalid", "denied", "login failed", "authentication fail",
		"bad password", "not authorized", "authentication error"} {
		if indexFold(b, w) >= 0 {
			return true
		}
	}
	return false
}

// acceptance reports a server's answer that lets a login in: a greeting,
// or a shell prompt ending the text.
func acceptance(b []byte) bool {
	if indexFold(b, "welcome") >= 0 {
		return true
	}
	t := bytes.TrimRight(b, " ")
	if len(t) == 0 {
		return false
	}
	switch t[len(t)-1] {
	case '#', '$', '>', '%':
		return true
	}
	return false
}

// typed appends client keystrokes to the login buffer of the current phase.
func typed(l *login, data []byte, def Defaults, e *Detection) {
	for _, c := range data {
		switch l.phase {
		case phaseUser:
			switch {
			case c == '\r' || c == '\n':
				if l.nu > 0 {
					l.phase = phaseWaitPass
					e.add(FieldTelnetUser, text(l.user[:l.nu], maxLogin))
				}
			case c == 0x08 || c == 0x7f:
				if l.nu > 0 {
					l.nu--
				}
			case c >= 0x20 && c < 0x7f && l.nu < maxLogin:
				l.user[l.nu] = c
				l.nu++
			}
		case phasePass:
			switch {
			case c == '\r' || c == '\n':
				user := text(l.user[:l.nu], maxLogin)
				l.sent(Login{Protocol: AppTelnet, User: user, Cleartext: true, Subject: l.server(),
					Default: isDefault(def, AppTelnet, user, l.pass[:l.np])}, e)
				l.wipe()
				l.phase = phaseAnswer
				return
			case c == 0x08 || c == 0x7f:
				if l.np > 0 {
					l.np--
				}
			case c >= 0x20 && c < 0x7f && l.np < maxLogin:
				l.pass[l.np] = c
				l.np++
			}
		}
	}
}

// stripIAC copies the data bytes of p into out (as many as fit), skipping
// Telnet commands and subnegotiations. ok is false when p holds a malformed
// command.
func stripIAC(p []byte, out []byte) (data []byte, ok bool) {
	n := 0
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != iac {
			if c != 0 && n < len(out) {
				out[n] = c
				n++
			}
			continue
		}
		if i+1 >= len(p) {
			return out[:n], true // cut by the sample
		}
		cmd := p[i+1]
		switch {
		case cmd == iac: // escaped 0xff data byte
			i++
		case cmd >= will && cmd <= dont:
			i += 2
		case cmd == sb:
			j := bytes.Index(p[i+2:], []byte{iac, se})
			if j < 0 {
				return out[:n], true
			}
			i += 2 + j + 1
		case cmd >= se && cmd < sb:
			i++
		default:
			return out[:n], false
		}
	}
	return out[:n], true
}

// ftp detects an FTP control connection from a 220 greeting followed by an
// FTP command, reads USER and PASS, and the server's answer to them.
func ftp(st *State, s *sample, d *Detection) bool {
	p := s.p
	if st.app == "" {
		if len(p) >= 4 && string(p[:3]) == "220" && (p[3] == ' ' || p[3] == '-') {
			// A 220 greeting: SMTP greets with 220 too, so wait for the
			// client's first command unless the greeting names FTP.
			line := p
			if i := bytes.IndexByte(line, '\n'); i >= 0 {
				line = line[:i]
			}
			if indexFold(line, "smtp") >= 0 {
				return false
			}
			st.ftpBanner = true
			st.auth().client = other(s.dir)
			if indexFold(line, "ftp") < 0 {
				return false
			}
		} else if !st.ftpBanner || !ftpCommand(p) || st.login != nil && s.dir != st.login.client {
			return false
		}
	}
	l := st.auth()
	var e Detection
	e.App = AppFTP
	if l.done {
		*d = e
		return true
	}
	line := p
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	} else if !s.complete() {
		line = nil // a line cut by the sample
	}
	line = bytes.TrimRight(line, "\r")
	if s.dir == l.server() {
		ftpReply(l, line, &e)
		*d = e
		return true
	}
	switch {
	case hasPrefixFold(line, "USER ") && len(line) > 5:
		arg := line[5:]
		l.nu = uint8(copy(l.user[:], arg))
		l.phase = phaseWaitPass
		e.add(FieldFTPUser, text(l.user[:l.nu], maxLogin))
	case hasPrefixFold(line, "PASS ") || len(line) == 4 && hasPrefixFold(line, "PASS"):
		arg := bytes.TrimPrefix(line[4:], []byte(" "))
		user := text(l.user[:l.nu], maxLogin)
		l.sent(Login{Protocol: AppFTP, User: user, Cleartext: true, Subject: l.server(),
			Default: isDefault(s.def, AppFTP, user, arg[:min(len(arg), 64)])}, &e)
		l.phase = phaseAnswer
	case hasPrefixFold(line, "AUTH TLS") || hasPrefixFold(line, "AUTH SSL"):
		l.done = true // the login will be encrypted
	}
	*d = e
	return true
}

// ftpReply reads a server reply line: 230 lets the login in (after PASS,
// or after USER alone: no password asked), 530 and 430 turn it down.
func ftpReply(l *login, line []byte, e *Detection) {
	if len(line) < 3 || !isDigit(line[0]) || !isDigit(line[1]) || !isDigit(line[2]) {
		return
	}
	code := string(line[:3])
	switch l.phase {
	case phaseAnswer:
		switch code {
		case "230", "232":
			l.answer(Accepted, e)
			l.done = true
		case "530", "430", "421":
			l.answer(Refused, e)
			l.phase = phaseIdle
		default:
			l.unanswered(e)
		}
	case phaseWaitPass:
		if code == "230" || code == "232" {
			user := text(l.user[:l.nu], maxLogin)
			e.Logins = append(e.Logins, Login{Protocol: AppFTP, User: user, Cleartext: true, NoPassword: true,
				Default: true, Outcome: Accepted, Subject: l.server()})
			l.done = true
		}
	}
}

var ftpCommands = []string{"USER ", "AUTH ", "FEAT", "SYST", "OPTS ", "HELP"}

func ftpCommand(p []byte) bool {
	for _, c := range ftpCommands {
		if hasPrefixFold(p, c) {
			i := bytes.IndexByte(p, '\n')
			return i > 0 && p[i-1] == '\r' && printable(p[:i-1])
		}
	}
	return false
}
