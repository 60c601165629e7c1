package detect

import "strconv"

// Modbus/TCP: a 7-byte MBAP header (transaction id, protocol id 0, length
// of the rest, unit id) then the PDU's function code. The length must
// account for the whole payload, ADU after ADU.

func modbus(s *sample, d *Detection) bool {
	p := s.p
	if !mbap(p, s.wire) {
		return false
	}
	var e Detection
	e.App = AppModbus
	e.add(FieldModbusUnit, strconv.Itoa(int(p[6])))
	*d = e
	return true
}

// mbap checks the ADUs in p, whose wire length is wire.
func mbap(p []byte, wire int) bool {
	off, adus := 0, 0
	for off < wire && adus < 8 {
		if off+8 > len(p) {
			return adus > 0 && len(p) < wire // the rest was cut by the sample
		}
		h := p[off:]
		l := be16(h[4:])
		if be16(h[2:]) != 0 || l < 2 || l > 254 || !modbusFunction(h[7]) {
			return false
		}
		off += 6 + l
		adus++
	}
	return off == wire
}

func modbusFunction(fc byte) bool {
	switch fc &^ 0x80 {
	case 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24, 43:
		return true
	}
	return false
}
