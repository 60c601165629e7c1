package detect

// NTP (RFC 5905): a 48-byte header, then optional extension fields and a
// MAC, on UDP port 123. The header has no magic, so it is accepted only on
// the NTP port and with a version of 1 to 4 and a mode of 1 to 5 (symmetric,
// client, server, broadcast); a server's stratum is at most 16.

const ntpHeader = 48

var ntpModes = [...]string{1: "symmetric-active", 2: "symmetric-passive", 3: "client", 4: "server", 5: "broadcast"}

func ntp(s *sample, d *Detection) bool {
	p := s.p
	if !s.port(123) || len(p) < ntpHeader || s.wire%4 != 0 {
		return false
	}
	vn, mode := p[0]>>3&7, int(p[0]&7)
	if vn < 1 || vn > 4 || mode < 1 || mode >= len(ntpModes) {
		return false
	}
	if (mode == 4 || mode == 5) && (p[1] == 0 || p[1] > 16) {
		return false // a server that answers is synchronised: stratum 1-16
	}
	*d = Detection{App: AppNTP}
	d.add(FieldNTPMode, ntpModes[mode])
	return true
}
