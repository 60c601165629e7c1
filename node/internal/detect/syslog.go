package detect

// Syslog (RFC 3164, RFC 5424) on UDP port 514: a message starts with a
// priority "<PRI>", PRI from 0 to 191 without leading zeros, followed by
// printable text. The port gates it: a bracketed number is a weak
// signature. Nothing of the message is kept: log lines can carry anything,
// patient data included.

func syslog(s *sample, d *Detection) bool {
	p := s.p
	if !s.port(514) || len(p) < 4 || p[0] != '<' {
		return false
	}
	pri, i := 0, 1
	for ; i < len(p) && i <= 4 && isDigit(p[i]); i++ {
		pri = pri*10 + int(p[i]-'0')
	}
	if i == 1 || i > 4 || i >= len(p) || p[i] != '>' || pri > 191 || (p[1] == '0' && i > 2) {
		return false
	}
	rest := p[i+1:]
	if len(rest) == 0 {
		return false
	}
	if len(rest) > 16 {
		rest = rest[:16]
	}
	if !printable(rest) {
		return false
	}
	*d = Detection{App: AppSyslog}
	return true
}
