package detect

// MQTT CONNECT (MQTT 3.1 "MQIsdp", 3.1.1 and 5.0 "MQTT"): fixed header
// 0x10, remaining length, protocol name, level, flags, keep-alive,
// (v5 properties), then client id, will topic and payload, user name and
// password, each as a length-prefixed string. The broker's CONNACK answers
// the login: return code 0 lets it in, 4 (bad user name or password) and
// 5 (not authorized), or v5 reason codes 0x86, 0x87 and 0x8c, turn it
// down; other codes are not about the credentials.

func mqtt(st *State, s *sample, d *Detection) bool {
	p := s.p
	if len(p) < 12 || p[0] != 0x10 {
		return false
	}
	rl, i, ok := varint(p[1:])
	if !ok || rl < 10 {
		return false
	}
	i++ // past the fixed header byte
	var level byte
	switch {
	case hasAt(p, i, "\x00\x04MQTT"):
		i += 6
	case hasAt(p, i, "\x00\x06MQIsdp"):
		i += 8
	default:
		return false
	}
	if i+4 > len(p) {
		return false
	}
	level = p[i]
	flags := p[i+1]
	if level < 3 || level > 5 || flags&1 != 0 {
		return false
	}
	i += 4
	var e Detection
	e.App = AppMQTT
	*d = e
	if level == 5 {
		pl, n, ok := varint(p[i:])
		if !ok {
			return true
		}
		i += n + pl
	}
	id, i, ok := mqttString(p, i)
	if !ok {
		return true
	}
	d.add(FieldMQTTClientID, text(id, 64))
	if flags&0x04 != 0 { // will flag
		if level == 5 {
			pl, n, ok := varint(p[i:])
			if !ok {
				return true
			}
			i += n + pl
		}
		if _, i, ok = mqttString(p, i); !ok {
			return true
		}
		if _, i, ok = mqttString(p, i); !ok {
			return true
		}
	}
	var user, pass []byte
	if flags&0x80 != 0 {
		if user, i, ok = mqttString(p, i); !ok {
			mqttLogin(st, s, Login{Protocol: AppMQTT, Cleartext: flags&0x40 != 0, Partial: true, Subject: other(s.dir)}, d)
			return true
		}
		d.add(FieldMQTTUser, text(user, maxValue))
	}
	x := Login{Protocol: AppMQTT, User: text(user, maxValue), Subject: other(s.dir)}
	switch {
	case flags&0x40 != 0:
		x.Cleartext = true
		if pass, _, ok = mqttString(p, i); ok {
			x.Default = isDefault(s.def, AppMQTT, x.User, pass)
		} else {
			x.Partial = true
		}
	case flags&0x80 != 0:
		// A user name without a password: a broker that accepts it asks
		// for none.
		x.NoPassword = true
		x.Default = isDefault(s.def, AppMQTT, x.User, nil)
	default:
		return true // an anonymous client: no login
	}
	mqttLogin(st, s, x, d)
	return true
}

func mqttLogin(st *State, s *sample, x Login, d *Detection) {
	if st == nil {
		d.Logins = append(d.Logins, x)
		return
	}
	l := st.auth()
	l.client = s.dir // the client sends CONNECT
	l.sent(x, d)
}

// mqttConnack reads the broker's CONNACK, answering a waiting login.
func mqttConnack(st *State, s *sample, d *Detection) {
	l := st.login
	if l == nil || !l.waiting || s.dir == l.client {
		return
	}
	p := s.p
	if len(p) < 4 || p[0] != 0x20 {
		l.unanswered(d)
		return
	}
	rl, n, ok := varint(p[1:])
	if !ok || rl < 2 || 1+n+1 >= len(p) {
		l.unanswered(d)
		return
	}
	switch rc := p[1+n+1]; rc {
	case 0:
		l.answer(Accepted, d)
	case 4, 5, 0x86, 0x87, 0x8c:
		l.answer(Refused, d)
	default:
		l.answer(NotSeen, d)
	}
}

func hasAt(p []byte, i int, s string) bool {
	return i >= 0 && i+len(s) <= len(p) && string(p[i:i+len(s)]) == s
}

// varint decodes an MQTT variable byte integer; n is its encoded length.
func varint(p []byte) (v, n int, ok bool) {
	mul := 1
	for n < 4 && n < len(p) {
		c := p[n]
		v += int(c&0x7f) * mul
		n++
		if c&0x80 == 0 {
			return v, n, true
		}
		mul *= 128
	}
	return 0, 0, false
}

// mqttString reads a 2-byte length-prefixed string at i.
func mqttString(p []byte, i int) ([]byte, int, bool) {
	if i < 0 || i+2 > len(p) {
		return nil, i, false
	}
	l := be16(p[i:])
	if i+2+l > len(p) {
		return nil, i, false
	}
	return p[i+2 : i+2+l], i + 2 + l, true
}
