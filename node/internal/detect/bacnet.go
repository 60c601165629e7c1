package detect

// BACnet/IP (ASHRAE 135 Annex J): a BVLC header, type 0x81, a function
// and the BVLC length, which covers the whole UDP payload. NPDU-carrying
// functions continue with NPDU version 1.

var bvlcFunctions = [...]string{
	0x00: "result",
	0x01: "write-bdt",
	0x02: "read-bdt",
	0x03: "read-bdt-ack",
	0x04: "forwarded-npdu",
	0x05: "register-foreign-device",
	0x06: "read-fdt",
	0x07: "read-fdt-ack",
	0x08: "delete-fdt-entry",
	0x09: "distribute-broadcast-to-network",
	0x0a: "original-unicast-npdu",
	0x0b: "original-broadcast-npdu",
	0x0c: "secure-bvll",
}

func bacnet(s *sample, d *Detection) bool {
	p := s.p
	if len(p) < 4 || p[0] != 0x81 || int(p[1]) >= len(bvlcFunctions) || be16(p[2:]) != s.wire {
		return false
	}
	npdu := -1
	switch p[1] {
	case 0x04:
		npdu = 10 // after the original source B/IP address
	case 0x09, 0x0a, 0x0b:
		npdu = 4
	}
	if npdu >= 0 && (npdu >= len(p) || p[npdu] != 0x01) {
		return false
	}
	var e Detection
	e.App = AppBACnet
	e.add(FieldBACnetFunction, bvlcFunctions[p[1]])
	*d = e
	return true
}
