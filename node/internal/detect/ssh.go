package detect

import (
	"bytes"

	"github.com/medmesh/medmesh/node/flow"
)

// SSH (RFC 4253 section 4.2): each side opens with an identification
// string "SSH-protoversion-softwareversion SP comments CR LF". Everything
// after it is encrypted, the login included. What a sensor can see is the
// server's banner: when the default-credential list names the model it
// identifies (Defaults.Banner), the login is reported as Inferred: the
// model ships with that account; whether anyone logged in with it, and
// with which password, cannot be seen.

// maxBanner bounds the banner field.
const maxBanner = 96

func ssh(st *State, s *sample, d *Detection) bool {
	p := s.p
	if !bytes.HasPrefix(p, []byte("SSH-2.0-")) && !bytes.HasPrefix(p, []byte("SSH-1.99-")) {
		if st.app == AppSSH {
			*d = Detection{} // the encrypted rest of the flow
			return true
		}
		return false
	}
	line := p
	i := bytes.IndexByte(line, '\n')
	if i < 0 {
		if !s.complete() || len(line) > 255 {
			return false // RFC 4253: at most 255 bytes, CR LF included
		}
	} else {
		line = line[:i]
	}
	line = bytes.TrimRight(line, "\r")
	if !printable(line) {
		return false
	}
	var e Detection
	e.App = AppSSH
	banner := text(line[4:], maxBanner) // after "SSH-"
	e.add(FieldSSHBanner, banner)
	if s.dir == flow.Rev && s.def != nil && (st.login == nil || !st.login.done) {
		if account, ok := s.def.Banner(AppSSH, string(line)); ok {
			st.auth().done = true // one report per flow
			e.Logins = append(e.Logins, Login{Protocol: AppSSH, Method: "banner", User: account,
				Default: true, Inferred: true, Subject: flow.Rev})
		}
	}
	*d = e
	return true
}
