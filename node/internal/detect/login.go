package detect

import (
	"bytes"

	"github.com/medmesh/medmesh/node/flow"
)

// Telnet (RFC 854) and FTP (RFC 959) logins. A flow keeps at most
// maxLogin characters of user name and of password, only until the login
// completes; nothing else of the stream is kept.

const maxLogin = 32

type loginPhase uint8

const (
	phaseIdle     loginPhase = iota
	phaseUser                // a login prompt was seen: the client types the user name
	phaseWaitPass            // user name entered, waiting for the password prompt
	phasePass                // a password prompt was seen: the client types the password
)

// login is the bounded login buffer of a Telnet or FTP flow.
type login struct {
	phase loginPhase
	done  bool
	nu    uint8
	np    uint8
	user  [maxLogin]byte
	pass  [maxLogin]byte
}

func (l *login) finish() {
	l.done = true
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

// telnet detects a Telnet flow by its option negotiation and follows the
// login: prompt and the characters typed after it.
func telnet(st *State, s *sample, d *Detection) bool {
	if st.app == "" {
		p := s.p
		if len(p) < 3 || p[0] != iac || !((p[1] >= will && p[1] <= dont) || p[1] == sb) {
			return false
		}
		// Every IAC in the sample must be a well-formed command.
		var scratch [0]byte
		if _, ok := stripIAC(p, scratch[:]); !ok {
			return false
		}
		st.login = &login{}
	}
	if st.login == nil {
		st.login = &login{}
	}
	var e Detection
	e.App = AppTelnet
	l := st.login
	var buf [128]byte
	data, _ := stripIAC(s.p, buf[:])
	if !l.done {
		if s.dir == flow.Rev {
			switch {
			case indexFold(data, "password") >= 0 && bytes.IndexByte(data, ':') >= 0:
				// Some devices ask for a password only: the user is then "".
				if l.phase != phasePass {
					l.phase, l.np = phasePass, 0
				}
			case indexFold(data, "login:") >= 0 || indexFold(data, "username:") >= 0 || indexFold(data, "user:") >= 0:
				l.phase, l.nu = phaseUser, 0
			}
		} else {
			typed(l, data, &e)
		}
	}
	clear(buf[:])
	*d = e
	return true
}

// typed appends client keystrokes to the login buffer of the current phase.
func typed(l *login, data []byte, e *Detection) {
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
				e.Credentials = append(e.Credentials, Credential{
					Protocol: AppTelnet, User: text(l.user[:l.nu], maxLogin), Secret: string(l.pass[:l.np]),
				})
				l.finish()
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
// FTP command, and reads USER and PASS.
func ftp(st *State, s *sample, d *Detection) bool {
	p := s.p
	if st.app == "" {
		if s.dir == flow.Rev {
			// A 220 greeting: SMTP greets with 220 too, so wait for the
			// client's first command unless the greeting names FTP.
			if len(p) >= 4 && string(p[:3]) == "220" && (p[3] == ' ' || p[3] == '-') {
				line := p
				if i := bytes.IndexByte(line, '\n'); i >= 0 {
					line = line[:i]
				}
				if indexFold(line, "smtp") >= 0 {
					return false
				}
				st.ftpBanner = true
				if indexFold(line, "ftp") < 0 {
					return false
				}
			} else {
				return false
			}
		} else if !st.ftpBanner || !ftpCommand(p) {
			return false
		}
		st.login = &login{}
	}
	if st.login == nil {
		st.login = &login{}
	}
	var e Detection
	e.App = AppFTP
	l := st.login
	if s.dir == flow.Fwd && !l.done {
		line := p
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line = line[:i]
		} else if !s.complete() {
			line = nil // a command cut by the sample
		}
		line = bytes.TrimRight(line, "\r")
		switch {
		case hasPrefixFold(line, "USER ") && len(line) > 5:
			arg := line[5:]
			l.nu = uint8(copy(l.user[:], arg))
			l.phase = phaseWaitPass
			e.add(FieldFTPUser, text(l.user[:l.nu], maxLogin))
		case hasPrefixFold(line, "PASS ") || len(line) == 4 && hasPrefixFold(line, "PASS"):
			arg := bytes.TrimPrefix(line[4:], []byte(" "))
			e.Credentials = append(e.Credentials, Credential{
				Protocol: AppFTP, User: text(l.user[:l.nu], maxLogin), Secret: string(arg[:min(len(arg), 64)]),
			})
			l.finish()
		case hasPrefixFold(line, "AUTH TLS") || hasPrefixFold(line, "AUTH SSL"):
			l.done = true // the login will be encrypted
		}
	}
	*d = e
	return true
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
