package replay

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"time"
)

// medmesh reads captures itself rather than with gopacket's pcapgo, whose
// readers trust the file: pcapgo.NgReader (gopacket v1.1.19, ngread.go,
// readInterfaceDescriptor and convertTime) computes an interface's
// timestamp divisor as 10^k or 2^k in a uint64, so an if_tsresol option of
// 0x40..0x7f (10^-64 s and finer) or 0xc0..0xff (2^-64 s and finer)
// overflows it to 0 and the first packet panics with an integer divide by
// zero; it also indexes short option values (if_tsoffset, if_filter,
// isb_starttime) without a length check and allocates whatever capture
// length a block claims. TestTsresolOverflowFixture builds the minimal
// file (a section header, an interface with if_tsresol 0x40, one enhanced
// packet) and shows both the upstream panic and that this reader handles
// it. Every length here is checked against its block, and a file that ends
// inside a block or record is ErrTruncated, never a silent end.

// ErrTruncated is wrapped by the error of a capture that ends inside a
// packet or a header: the flows read until then are still returned.
var ErrTruncated = errors.New("truncated")

// Limits on what one record of a capture may claim.
const (
	maxCaplen   = 256 << 10 // a packet's captured bytes (Wireshark's largest snap length)
	maxBlockLen = 16 << 20  // a pcapng block
)

// packet is one captured frame.
type packet struct {
	data     []byte
	ts       time.Time
	linkType int
}

// captureReader reads packets until io.EOF at a clean end.
type captureReader interface {
	next() (packet, error)
}

// newCaptureReader tells pcap from pcapng by magic and reads the file or
// section header.
func newCaptureReader(r *bufio.Reader) (captureReader, error) {
	magic, err := r.Peek(4)
	if err != nil {
		if len(magic) == 0 && errors.Is(err, io.EOF) {
			return nil, errors.New("empty file")
		}
		if errors.Is(err, io.EOF) {
			return nil, errors.New("not a pcap or pcapng file")
		}
		return nil, err
	}
	switch binary.LittleEndian.Uint32(magic) {
	case 0x0a0d0d0a:
		return newNgReader(r)
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1:
		return newPcapReader(r)
	}
	return nil, errors.New("not a pcap or pcapng file")
}

// readFull reads len(b) bytes; running out after the first byte is
// ErrTruncated, before it io.EOF when eofOK.
func readFull(r io.Reader, b []byte, eofOK bool) error {
	n, err := io.ReadFull(r, b)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF) && n == 0 && eofOK:
		return io.EOF
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return ErrTruncated
	}
	return err
}

// pcapReader reads the classic libpcap format.
type pcapReader struct {
	r        *bufio.Reader
	order    binary.ByteOrder
	nano     bool
	linkType int
	hdr      [16]byte
}

func newPcapReader(r *bufio.Reader) (*pcapReader, error) {
	var h [24]byte
	if err := readFull(r, h[:], false); err != nil {
		return nil, fmt.Errorf("file header: %w", err)
	}
	p := &pcapReader{r: r, order: binary.LittleEndian}
	switch m := binary.LittleEndian.Uint32(h[:4]); m {
	case 0xd4c3b2a1, 0x4d3cb2a1:
		p.order = binary.BigEndian
		p.nano = m == 0x4d3cb2a1
	default:
		p.nano = m == 0xa1b23c4d
	}
	p.linkType = int(p.order.Uint32(h[20:]) & 0x0fffffff) // low 28 bits: link type
	return p, nil
}

func (p *pcapReader) next() (packet, error) {
	if err := readFull(p.r, p.hdr[:], true); err != nil {
		return packet{}, err
	}
	sec, sub := p.order.Uint32(p.hdr[0:]), p.order.Uint32(p.hdr[4:])
	caplen := p.order.Uint32(p.hdr[8:])
	if caplen > maxCaplen {
		return packet{}, fmt.Errorf("captured length %d above %d", caplen, maxCaplen)
	}
	if !p.nano {
		sub *= 1000
	}
	if sub >= 1e9 {
		return packet{}, fmt.Errorf("timestamp fraction %d out of range", sub)
	}
	data := make([]byte, caplen)
	if err := readFull(p.r, data, false); err != nil {
		return packet{}, err
	}
	return packet{data: data, ts: time.Unix(int64(sec), int64(sub)), linkType: p.linkType}, nil
}

// pcapng block types and options read here.
const (
	ngSectionHeader   = 0x0a0d0d0a
	ngInterface       = 1
	ngObsoletePacket  = 2
	ngSimplePacket    = 3
	ngEnhancedPacket  = 6
	ngByteOrderMagic  = 0x1a2b3c4d
	ngOptEnd          = 0
	ngOptIfTsresol    = 9
	ngOptIfTsoffset   = 14
	ngDefaultTsresol  = 6
	ngMinBlockLength  = 12
	ngSectionHdrBytes = 16 // byte-order magic, version, section length
)

type ngInterfaceDesc struct {
	linkType int
	snaplen  uint32
	tsresol  uint8
	tsoffset int64
}

// ngReader reads pcapng: every section, every interface, enhanced, simple
// and obsolete packet blocks; other blocks are skipped.
type ngReader struct {
	r      *bufio.Reader
	order  binary.ByteOrder
	ifaces []ngInterfaceDesc
	body   bytes.Buffer
}

func newNgReader(r *bufio.Reader) (*ngReader, error) {
	n := &ngReader{r: r}
	if err := n.section(false); err != nil {
		return nil, fmt.Errorf("section header: %w", err)
	}
	return n, nil
}

// section reads a section header block whose type is next in the stream.
func (n *ngReader) section(eofOK bool) error {
	var h [12]byte
	if err := readFull(n.r, h[:], eofOK); err != nil {
		return err
	}
	switch {
	case binary.LittleEndian.Uint32(h[8:]) == ngByteOrderMagic:
		n.order = binary.LittleEndian
	case binary.BigEndian.Uint32(h[8:]) == ngByteOrderMagic:
		n.order = binary.BigEndian
	default:
		return errors.New("section header: bad byte-order magic")
	}
	total := n.order.Uint32(h[4:])
	if total < ngMinBlockLength+ngSectionHdrBytes || total%4 != 0 || total > maxBlockLen {
		return fmt.Errorf("section header: block length %d", total)
	}
	n.ifaces = n.ifaces[:0]
	_, err := n.readBody(total-12, total)
	return err
}

// readBody reads a block's remaining bytes (its body, then the trailing
// length) and checks the trailing length against total.
func (n *ngReader) readBody(rest, total uint32) ([]byte, error) {
	n.body.Reset()
	if m, err := io.CopyN(&n.body, n.r, int64(rest)); err != nil {
		if errors.Is(err, io.EOF) && m < int64(rest) {
			return nil, ErrTruncated
		}
		return nil, err
	}
	b := n.body.Bytes()
	if n.order.Uint32(b[len(b)-4:]) != total {
		return nil, fmt.Errorf("block length %d, trailing length %d", total, n.order.Uint32(b[len(b)-4:]))
	}
	return b[:len(b)-4], nil
}

func (n *ngReader) next() (packet, error) {
	for {
		head, err := n.r.Peek(8)
		switch {
		case len(head) == 0 && errors.Is(err, io.EOF):
			return packet{}, io.EOF
		case errors.Is(err, io.EOF):
			return packet{}, ErrTruncated
		case err != nil:
			return packet{}, err
		}
		if binary.LittleEndian.Uint32(head) == ngSectionHeader {
			if err := n.section(false); err != nil {
				return packet{}, err
			}
			continue
		}
		typ, total := n.order.Uint32(head), n.order.Uint32(head[4:])
		if total < ngMinBlockLength || total%4 != 0 || total > maxBlockLen {
			return packet{}, fmt.Errorf("block type %#x: length %d", typ, total)
		}
		if _, err := n.r.Discard(8); err != nil {
			return packet{}, err
		}
		body, err := n.readBody(total-8, total)
		if err != nil {
			return packet{}, err
		}
		switch typ {
		case ngInterface:
			if err := n.addInterface(body); err != nil {
				return packet{}, err
			}
		case ngEnhancedPacket, ngObsoletePacket:
			return n.packet(typ, body)
		case ngSimplePacket:
			if len(n.ifaces) == 0 {
				return packet{}, errors.New("simple packet block before any interface")
			}
			if len(body) < 4 {
				return packet{}, errors.New("simple packet block too short")
			}
			caplen := min(n.order.Uint32(body), uint32(len(body)-4))
			if s := n.ifaces[0].snaplen; s != 0 {
				caplen = min(caplen, s)
			}
			return n.emit(0, 0, body[4:4+caplen])
		}
	}
}

func (n *ngReader) addInterface(body []byte) error {
	if len(body) < 8 {
		return errors.New("interface description block too short")
	}
	ifc := ngInterfaceDesc{linkType: int(n.order.Uint16(body)), snaplen: n.order.Uint32(body[4:]), tsresol: ngDefaultTsresol}
	idx := len(n.ifaces)
	for opts := body[8:]; len(opts) >= 4; {
		code, l := n.order.Uint16(opts), int(n.order.Uint16(opts[2:]))
		if code == ngOptEnd {
			break
		}
		padded := (l + 3) &^ 3
		if 4+padded > len(opts) {
			return fmt.Errorf("interface %d: option %d of %d bytes overruns its block", idx, code, l)
		}
		v := opts[4 : 4+l]
		switch code {
		case ngOptIfTsresol:
			if l != 1 {
				return fmt.Errorf("interface %d: if_tsresol of %d bytes, want 1", idx, l)
			}
			ifc.tsresol = v[0]
		case ngOptIfTsoffset:
			if l != 8 {
				return fmt.Errorf("interface %d: if_tsoffset of %d bytes, want 8", idx, l)
			}
			ifc.tsoffset = int64(n.order.Uint64(v))
		}
		opts = opts[4+padded:]
	}
	if len(n.ifaces) >= 1<<16 {
		return errors.New("more than 65536 interfaces in a section")
	}
	n.ifaces = append(n.ifaces, ifc)
	return nil
}

// packet decodes an enhanced (or obsolete) packet block body.
func (n *ngReader) packet(typ uint32, body []byte) (packet, error) {
	if len(body) < 20 {
		return packet{}, fmt.Errorf("packet block of %d bytes", len(body))
	}
	var ifid uint32
	if typ == ngEnhancedPacket {
		ifid = n.order.Uint32(body)
	} else {
		ifid = uint32(n.order.Uint16(body))
	}
	if ifid >= uint32(len(n.ifaces)) {
		return packet{}, fmt.Errorf("packet on interface %d; the section has %d", ifid, len(n.ifaces))
	}
	ts := uint64(n.order.Uint32(body[4:]))<<32 | uint64(n.order.Uint32(body[8:]))
	caplen := n.order.Uint32(body[12:])
	if caplen > uint32(len(body)-20) {
		return packet{}, fmt.Errorf("captured length %d overruns its block", caplen)
	}
	return n.emit(int(ifid), ts, body[20:20+caplen])
}

func (n *ngReader) emit(ifid int, ts uint64, data []byte) (packet, error) {
	if len(data) > maxCaplen {
		return packet{}, fmt.Errorf("captured length %d above %d", len(data), maxCaplen)
	}
	ifc := n.ifaces[ifid]
	return packet{data: bytes.Clone(data), ts: ngTime(ts, ifc.tsresol, ifc.tsoffset), linkType: ifc.linkType}, nil
}

// ngTime converts a pcapng timestamp in units of if_tsresol (10^-k s, or
// 2^-k s with the top bit set; every k of 0..127 is valid) plus
// if_tsoffset seconds into a time, without overflow: a resolution finer
// than a uint64 can count makes every timestamp a fraction of a second.
func ngTime(ts uint64, resol uint8, offset int64) time.Time {
	k := uint(resol & 0x7f)
	var sec, ns uint64
	if resol&0x80 != 0 { // 2^-k
		frac := ts
		if k < 64 {
			sec, frac = ts>>k, ts&(1<<k-1)
		}
		hi, lo := bits.Mul64(frac, 1e9) // frac*1e9 >> k < 1e9
		if k < 64 {
			ns = lo>>k | hi<<(64-k)
			if k == 0 {
				ns = lo
			}
		} else {
			ns = hi >> (k - 64)
		}
	} else { // 10^-k
		switch {
		case k <= 9:
			p := pow10(k)
			sec, ns = ts/p, ts%p*pow10(9-k)
		case k <= 19:
			p := pow10(k)
			sec, ns = ts/p, ts%p/pow10(k-9)
		case k-9 <= 19:
			ns = ts / pow10(k-9)
		}
	}
	return time.Unix(int64(sec)+offset, int64(ns))
}

func pow10(k uint) uint64 {
	p := uint64(1)
	for range k {
		p *= 10
	}
	return p
}
