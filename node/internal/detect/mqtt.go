package detect

// MQTT CONNECT (MQTT 3.1 "MQIsdp", 3.1.1 and 5.0 "MQTT"): fixed header
// 0x10, remaining length, protocol name, level, flags, keep-alive,
// (v5 properties), then client id, will topic and payload, user name and
// password, each as a length-prefixed string.

func mqtt(s *sample, d *Detection) bool {
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
			return true
		}
		d.add(FieldMQTTUser, text(user, maxValue))
	}
	if flags&0x40 != 0 {
		if pass, _, ok = mqttString(p, i); ok {
			d.Credentials = append(d.Credentials, Credential{Protocol: AppMQTT, User: text(user, maxValue), Secret: string(pass)})
		} else {
			d.Credentials = append(d.Credentials, Credential{Protocol: AppMQTT, User: text(user, maxValue), Partial: true})
		}
	}
	return true
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
