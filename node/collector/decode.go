package collector

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/netflow"

	"github.com/medmesh/medmesh/node/flow"
)

// Information elements read from data records (RFC 7012 / the IANA IPFIX
// registry; NetFlow v9 field types 1-80 are the same numbers).
const (
	ieOctetDeltaCount      = 1
	iePacketDeltaCount     = 2
	ieProtocolIdentifier   = 4
	ieTCPControlBits       = 6
	ieSourcePort           = 7
	ieSourceIPv4           = 8
	ieDestinationPort      = 11
	ieDestinationIPv4      = 12
	ieFlowEndSysUpTime     = 21
	ieFlowStartSysUpTime   = 22
	ieSourceIPv6           = 27
	ieDestinationIPv6      = 28
	ieSourceMAC            = 56
	ieVLANID               = 58
	ieDestinationMAC       = 80
	ieOctetTotalCount      = 85
	iePacketTotalCount     = 86
	ieFlowEndReason        = 136
	ieFlowStartSeconds     = 150
	ieFlowEndSeconds       = 151
	ieFlowStartMillis      = 152
	ieFlowEndMillis        = 153
	ieFlowStartMicros      = 154
	ieFlowEndMicros        = 155
	ieFlowStartNanos       = 156
	ieFlowEndNanos         = 157
	ieSystemInitTimeMillis = 160
	ieDot1qVLANID          = 243

	// penReverse is the enterprise number of RFC 5103's reverse
	// information elements (biflows): same numbers, other direction.
	penReverse = 29305
)

// oneWay is one decoded data record: a unidirectional flow, or a biflow
// when rev is set.
type oneWay struct {
	src, dst           netip.Addr
	sport, dport       uint16
	proto              uint8
	packets, bytes     uint64
	flags              uint8
	revPackets         uint64
	revBytes           uint64
	revFlags           uint8
	rev                bool
	firstNs, lastNs    int64
	vlan               uint16
	srcMAC, dstMAC     flow.MAC
	endReason          string
	startUp, endUp     uint32 // sysUpTime ms, when the record has them
	hasUp, hasAbsolute bool
}

// Stats counts what the decoder saw, per exporter or in total.
type Stats struct {
	Messages, Malformed, Records, Unknown uint64
	// Lost is what the exporters' sequence numbers say never arrived:
	// data records for IPFIX, export packets for NetFlow v9.
	Lost uint64
	// TemplatesRefused counts templates not kept (cache full, a field
	// of length 0, too many fields); TemplatesWithdrawn IPFIX withdrawals.
	TemplatesRefused, TemplatesWithdrawn uint64
	// ExportersRefused counts messages from exporters beyond MaxExporters.
	ExportersRefused uint64
}

type seqKey struct {
	version uint16
	domain  uint32
}

type seqState struct {
	next  uint32
	valid bool
}

// exporter is one flow exporter's state, keyed by its source address.
type exporter struct {
	site   string
	tmpl   *templates
	seq    map[seqKey]*seqState
	initMs map[uint32]uint64 // systemInitTimeMilliseconds per observation domain
	seen   time.Time
}

// Decoder turns IPFIX (RFC 7011) and NetFlow v9 (RFC 3954) messages into
// one-way flow records. Parsing is goflow2's; the decoder keeps one
// bounded template cache per exporter, expires templates, follows
// sequence numbers and maps information elements to the flow-record
// contract. It is not safe for concurrent use.
type Decoder struct {
	cfg       Config
	exporters map[netip.Addr]*exporter
	stats     Stats
	buf       []byte
}

func newDecoder(cfg Config) *Decoder {
	return &Decoder{cfg: cfg, exporters: make(map[netip.Addr]*exporter)}
}

// Stats returns the counts so far.
func (d *Decoder) Stats() Stats {
	s := d.stats
	for _, e := range d.exporters {
		s.TemplatesRefused += e.tmpl.refused
		s.TemplatesWithdrawn += e.tmpl.withdrawn
	}
	return s
}

func (d *Decoder) exporter(addr netip.Addr, now time.Time) *exporter {
	if e := d.exporters[addr]; e != nil {
		return e
	}
	if len(d.exporters) >= d.cfg.MaxExporters {
		// Make room only from exporters silent past the template
		// lifetime: a flood of spoofed sources must not evict the
		// templates of exporters that are alive.
		for a, e := range d.exporters {
			if now.Sub(e.seen) > d.cfg.TemplateTimeout {
				delete(d.exporters, a)
			}
		}
		if len(d.exporters) >= d.cfg.MaxExporters {
			return nil
		}
	}
	e := &exporter{site: d.cfg.site(addr), tmpl: newTemplates(d.cfg.MaxTemplates, d.cfg.TemplateTimeout),
		seq: make(map[seqKey]*seqState), initMs: make(map[uint32]uint64)}
	d.exporters[addr] = e
	return e
}

// Decode decodes one export message from the exporter at addr, received
// at now, and returns its flow records and the exporter's site. Records
// of a message decoded before an error are returned with it.
func (d *Decoder) Decode(addr netip.Addr, msg []byte, now time.Time) ([]oneWay, string, error) {
	addr = addr.Unmap()
	e := d.exporter(addr, now)
	if e == nil {
		d.stats.ExportersRefused++
		return nil, "", fmt.Errorf("exporter %s: more than %d exporters", addr, d.cfg.MaxExporters)
	}
	e.seen = now
	e.tmpl.now = now
	d.stats.Messages++
	var p9 netflow.NFv9Packet
	var p10 netflow.IPFIXPacket
	if len(msg) >= 4 && binary.BigEndian.Uint16(msg) == 9 {
		// RFC 3954's Count is the number of records of all kinds, which
		// exporters fill in differently (softflowd counts data records
		// only); goflow2 takes it for the number of FlowSets and stops
		// early. The sets are read to the end of the packet instead, as
		// RFC 3954 5.1 lets a collector do (Count is only a hint).
		msg = append(d.buf[:0], msg...)
		d.buf = msg
		binary.BigEndian.PutUint16(msg[2:], 0xffff)
	}
	err := netflow.DecodeMessageVersion(bytes.NewBuffer(msg), e.tmpl, &p9, &p10)
	if err != nil && !errors.Is(err, netflow.ErrorTemplateNotFound) {
		d.stats.Malformed++
	}
	var out []oneWay
	switch {
	case p10.Version == 10:
		out = d.sets(e, 10, p10.ObservationDomainId, p10.FlowSets, 0, 0, out)
		n, known := dataRecords(p10.FlowSets)
		d.sequence(e, seqKey{10, p10.ObservationDomainId}, p10.SequenceNumber, n, known)
	case p9.Version == 9:
		out = d.sets(e, 9, p9.SourceId, p9.FlowSets, p9.SystemUptime, p9.UnixSeconds, out)
		d.sequence(e, seqKey{9, p9.SourceId}, p9.SequenceNumber, 1, true)
	}
	d.stats.Records += uint64(len(out))
	if err != nil && errors.Is(err, netflow.ErrorTemplateNotFound) {
		// Data before its template (the exporter's restart, or a
		// collector started after it): counted, not an error.
		d.stats.Unknown++
		err = nil
	}
	if err != nil {
		return out, e.site, fmt.Errorf("exporter %s: %w", addr, err)
	}
	return out, e.site, nil
}

// sequence follows an exporter's sequence numbers: IPFIX counts data
// records sent before the message, NetFlow v9 counts export packets.
// A gap is loss; a step back is a restart or reordering, not loss. When
// a message held data of an unknown template (its record count is not
// known), the next message starts the count afresh.
func (d *Decoder) sequence(e *exporter, k seqKey, seq, n uint32, known bool) {
	s := e.seq[k]
	if s == nil {
		if len(e.seq) >= d.cfg.MaxTemplates {
			return
		}
		s = &seqState{}
		e.seq[k] = s
	} else if gap := seq - s.next; s.valid && gap != 0 && gap < 1<<31 {
		d.stats.Lost += uint64(gap)
	}
	s.next, s.valid = seq+n, known
}

// dataRecords counts the data records of a message, as IPFIX sequence
// numbers do; known is false when a set could not be decoded.
func dataRecords(sets []any) (n uint32, known bool) {
	known = true
	for _, s := range sets {
		switch s := s.(type) {
		case netflow.DataFlowSet:
			n += uint32(len(s.Records))
		case netflow.OptionsDataFlowSet:
			n += uint32(len(s.Records))
		case netflow.RawFlowSet:
			known = false
		}
	}
	return n, known
}

// sets turns a message's decoded sets into records. uptime and unixSecs
// are the NetFlow v9 header's (0 for IPFIX).
func (d *Decoder) sets(e *exporter, version uint16, domain uint32, sets []any, uptime, unixSecs uint32, out []oneWay) []oneWay {
	// Options first: a message may carry systemInitTimeMilliseconds
	// before or after the data it dates.
	for _, s := range sets {
		if od, ok := s.(netflow.OptionsDataFlowSet); ok {
			for _, r := range od.Records {
				for _, f := range r.OptionsValues {
					if b, ok := f.Value.([]byte); ok && !f.PenProvided && f.Type == ieSystemInitTimeMillis && len(b) == 8 {
						if len(e.initMs) < d.cfg.MaxTemplates {
							e.initMs[domain] = binary.BigEndian.Uint64(b)
						}
					}
				}
			}
		}
	}
	for _, s := range sets {
		ds, ok := s.(netflow.DataFlowSet)
		if !ok {
			continue
		}
		for _, r := range ds.Records {
			w, ok := record(r.Values)
			if !ok {
				continue
			}
			switch {
			case w.hasAbsolute:
			case w.hasUp && version == 9:
				// RFC 3954: times are sysUpTime ms; the header says
				// what sysUpTime was at UnixSeconds.
				base := int64(unixSecs)*1000 - int64(uptime)
				w.firstNs = (base + int64(w.startUp)) * 1e6
				w.lastNs = (base + int64(w.endUp)) * 1e6
			case w.hasUp:
				if init, ok := e.initMs[domain]; ok {
					w.firstNs = (int64(init) + int64(w.startUp)) * 1e6
					w.lastNs = (int64(init) + int64(w.endUp)) * 1e6
				}
			}
			out = append(out, w)
		}
	}
	return out
}

func beUint(b []byte) uint64 {
	if len(b) > 8 {
		b = b[len(b)-8:]
	}
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// ntpNs converts an NTP timestamp (RFC 7011 dateTimeMicroseconds and
// dateTimeNanoseconds) to Unix nanoseconds.
func ntpNs(v uint64, micro bool) int64 {
	const ntpToUnix = 2208988800
	secs := int64(v>>32) - ntpToUnix
	frac := v & 0xffffffff
	if micro {
		frac &^= 0x7ff // RFC 7011 6.1.9: the low 11 bits are not significant
	}
	return secs*1e9 + int64(frac*1e9>>32)
}

// record maps one data record's fields. ok is false for records without
// both addresses (options data, records of other kinds).
func record(vals []netflow.DataField) (w oneWay, ok bool) {
	var startMs, endMs int64
	for _, f := range vals {
		b, _ := f.Value.([]byte)
		if len(b) == 0 {
			continue
		}
		if f.PenProvided {
			if f.Pen != penReverse {
				continue
			}
			switch f.Type {
			case ieOctetDeltaCount, ieOctetTotalCount:
				w.revBytes, w.rev = beUint(b), true
			case iePacketDeltaCount, iePacketTotalCount:
				w.revPackets, w.rev = beUint(b), true
			case ieTCPControlBits:
				w.revFlags = uint8(beUint(b))
			}
			continue
		}
		switch f.Type {
		case ieOctetDeltaCount, ieOctetTotalCount:
			w.bytes = beUint(b)
		case iePacketDeltaCount, iePacketTotalCount:
			w.packets = beUint(b)
		case ieProtocolIdentifier:
			w.proto = uint8(beUint(b))
		case ieTCPControlBits:
			w.flags = uint8(beUint(b)) // the low 8 bits: FIN..CWR
		case ieSourcePort:
			w.sport = uint16(beUint(b))
		case ieDestinationPort:
			w.dport = uint16(beUint(b))
		case ieSourceIPv4, ieSourceIPv6:
			w.src, _ = netip.AddrFromSlice(b)
		case ieDestinationIPv4, ieDestinationIPv6:
			w.dst, _ = netip.AddrFromSlice(b)
		case ieSourceMAC:
			if len(b) == 6 {
				copy(w.srcMAC[:], b)
			}
		case ieDestinationMAC:
			if len(b) == 6 {
				copy(w.dstMAC[:], b)
			}
		case ieVLANID, ieDot1qVLANID:
			w.vlan = uint16(beUint(b)) & 0x0fff
		case ieFlowEndReason:
			w.endReason = endReason(uint8(beUint(b)))
		case ieFlowStartSysUpTime:
			w.startUp, w.hasUp = uint32(beUint(b)), true
		case ieFlowEndSysUpTime:
			w.endUp = uint32(beUint(b))
		case ieFlowStartSeconds:
			startMs, w.hasAbsolute = int64(beUint(b))*1000, true
		case ieFlowEndSeconds:
			endMs = int64(beUint(b)) * 1000
		case ieFlowStartMillis:
			startMs, w.hasAbsolute = int64(beUint(b)), true
		case ieFlowEndMillis:
			endMs = int64(beUint(b))
		case ieFlowStartMicros, ieFlowStartNanos:
			if len(b) == 8 {
				w.firstNs, w.hasAbsolute = ntpNs(beUint(b), f.Type == ieFlowStartMicros), true
			}
		case ieFlowEndMicros, ieFlowEndNanos:
			if len(b) == 8 {
				w.lastNs = ntpNs(beUint(b), f.Type == ieFlowEndMicros)
			}
		}
	}
	if !w.src.IsValid() || !w.dst.IsValid() || w.src.Is4() != w.dst.Is4() {
		return w, false
	}
	w.src, w.dst = w.src.Unmap(), w.dst.Unmap()
	if startMs != 0 {
		w.firstNs = startMs * 1e6
	}
	if endMs != 0 {
		w.lastNs = endMs * 1e6
	}
	if w.lastNs < w.firstNs {
		w.lastNs = w.firstNs
	}
	if !hasPorts(w.proto) {
		// ICMP type and code are not ports: the flow-record contract
		// keys ICMP and other portless protocols with ports 0.
		w.sport, w.dport = 0, 0
	}
	return w, true
}

func hasPorts(proto uint8) bool { return proto == 6 || proto == 17 || proto == 132 }

// endReason maps IPFIX flowEndReason (RFC 5102) to the flow record's.
func endReason(v uint8) string {
	switch v {
	case 1:
		return "idle"
	case 2:
		return "active"
	case 3:
		return "fin"
	case 4, 5:
		return "drain"
	}
	return ""
}
