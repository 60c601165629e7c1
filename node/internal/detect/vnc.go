package detect

import "encoding/binary"

// VNC, the Remote Framebuffer protocol (RFC 6143). The server opens with
// its ProtocolVersion "RFB 003.008\n", the client answers with its own.
// Security handshake:
//   - 3.3: the server decides: a 4-byte security type (0 failed, 1 None,
//     2 VNC Authentication);
//   - 3.7 and 3.8: the server lists the types it offers (a count byte,
//     then one byte each; a count of 0 is a failure), the client picks
//     one (one byte).
//
// With VNC Authentication the server sends a 16-byte challenge, the client
// a 16-byte DES response made with the password; the password never
// crosses the network in clear and cannot be compared with hashed
// defaults. The server then sends SecurityResult (4 bytes, 0 OK, 1
// failed) in 3.8, and in 3.3 and 3.7 for VNC Authentication; a 3.3 or 3.7
// server that chose None sends none. Security type None means the server
// asks for no password at all: reported as a default login without one.

type vncPhase uint8

const (
	vncIdle      vncPhase = iota
	vncVersion            // the server's version was seen
	vncTypes              // the client's version was seen: security types are due
	vncChoice             // 3.7/3.8 types listed: the client's choice is due
	vncChallenge          // VNC Authentication: the challenge is due
	vncResponse           // the client's response is due
	vncResult             // SecurityResult is due
	vncDone
)

type vncState struct {
	phase vncPhase
	minor uint8 // 3, 7 or 8
	none  bool  // None was offered (3.7/3.8)
}

// rfbVersion parses "RFB 003.00x\n"; it returns the minor version.
func rfbVersion(p []byte) (uint8, bool) {
	if len(p) != 12 || string(p[:4]) != "RFB " || p[7] != '.' || p[11] != '\n' {
		return 0, false
	}
	for _, c := range p[4:7] {
		if !isDigit(c) {
			return 0, false
		}
	}
	for _, c := range p[8:11] {
		if !isDigit(c) {
			return 0, false
		}
	}
	if string(p[4:7]) != "003" {
		return 0, false
	}
	minor := int(p[8]-'0')*100 + int(p[9]-'0')*10 + int(p[10]-'0')
	switch {
	case minor >= 8:
		return 8, true
	case minor == 7:
		return 7, true
	}
	return 3, true // 3.3 and the 3.4/3.6 some clients announce
}

func vnc(st *State, s *sample, d *Detection) bool {
	p := s.p
	if st.app == "" {
		minor, ok := rfbVersion(p)
		if !ok {
			return false
		}
		l := st.auth()
		l.client = other(s.dir) // the server speaks first
		l.vnc = vncState{phase: vncVersion, minor: minor}
		*d = Detection{App: AppVNC, Fields: []Field{{Name: FieldVNCVersion, Value: "3." + string(rune('0'+minor))}}}
		return true
	}
	l := st.auth()
	v := &l.vnc
	var e Detection
	e.App = AppVNC
	none := Login{Protocol: AppVNC, Method: "none", NoPassword: true, Default: true, Subject: l.server()}
	fromServer := s.dir == l.server()
	switch {
	case v.phase == vncVersion && !fromServer:
		if minor, ok := rfbVersion(p); ok {
			v.minor = min(v.minor, minor)
			v.phase = vncTypes
		}
	case v.phase == vncTypes && fromServer:
		if v.minor == 3 {
			if len(p) < 4 {
				break
			}
			switch binary.BigEndian.Uint32(p) {
			case 1:
				e.Logins = append(e.Logins, withOutcome(none, Accepted))
				v.phase = vncDone
			case 2:
				v.phase = vncChallenge
				if len(p) >= 4+16 {
					v.phase = vncResponse // the challenge came in the same packet
				}
			default:
				v.phase = vncDone
			}
			break
		}
		n := int(p[0])
		if n == 0 || len(p) < 1+n {
			v.phase = vncDone // the server refused the connection, or a cut list
			break
		}
		for _, t := range p[1 : 1+n] {
			v.none = v.none || t == 1
		}
		v.phase = vncChoice
	case v.phase == vncChoice && !fromServer:
		switch p[0] {
		case 1:
			if v.minor == 8 {
				l.sent(none, &e)
				v.phase = vncResult
			} else {
				e.Logins = append(e.Logins, withOutcome(none, Accepted))
				v.phase = vncDone
			}
		case 2:
			v.phase = vncChallenge
		default:
			v.phase = vncDone // another security type: not followed
		}
	case v.phase == vncChallenge && fromServer:
		if len(p) >= 16 {
			v.phase = vncResponse
		}
	case v.phase == vncResponse && !fromServer:
		if len(p) >= 16 {
			l.sent(Login{Protocol: AppVNC, Method: "vnc-auth", Subject: l.server()}, &e)
			v.phase = vncResult
		}
	case v.phase == vncResult && fromServer:
		if len(p) < 4 {
			break
		}
		if binary.BigEndian.Uint32(p) == 0 {
			l.answer(Accepted, &e)
		} else {
			l.answer(Refused, &e)
		}
		v.phase = vncDone
	}
	*d = e
	return true
}

func withOutcome(l Login, o Outcome) Login {
	l.Outcome = o
	return l
}
