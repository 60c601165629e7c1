package replay

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"
)

// pcapDir holds the third-party captures (shared by the worktrees).
const pcapDir = "../../../shared/testdata/pcap"

// ngBlock frames a little-endian pcapng block.
func ngBlock(typ uint32, body []byte) []byte {
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	total := uint32(12 + len(body))
	b := binary.LittleEndian.AppendUint32(nil, typ)
	b = binary.LittleEndian.AppendUint32(b, total)
	b = append(b, body...)
	return binary.LittleEndian.AppendUint32(b, total)
}

// tsresolFile is the minimal pcapng file that panics gopacket's pcapgo
// NgReader: a section header, an Ethernet interface with if_tsresol
// resol, and one enhanced packet with a 60-byte frame.
func tsresolFile(resol byte) []byte {
	shb := binary.LittleEndian.AppendUint32(nil, ngByteOrderMagic)
	shb = binary.LittleEndian.AppendUint16(shb, 1) // version 1.0
	shb = binary.LittleEndian.AppendUint16(shb, 0)
	shb = binary.LittleEndian.AppendUint64(shb, ^uint64(0)) // section length unknown
	idb := binary.LittleEndian.AppendUint16(nil, 1)         // LINKTYPE_ETHERNET
	idb = binary.LittleEndian.AppendUint16(idb, 0)
	idb = binary.LittleEndian.AppendUint32(idb, 65535)
	idb = append(idb, ngOptIfTsresol, 0, 1, 0, resol, 0, 0, 0) // if_tsresol, length 1, padded
	idb = append(idb, 0, 0, 0, 0)                              // opt_endofopt
	frame := make([]byte, 60)
	epb := binary.LittleEndian.AppendUint32(nil, 0) // interface 0
	epb = binary.LittleEndian.AppendUint32(epb, 0x0123)
	epb = binary.LittleEndian.AppendUint32(epb, 0x456789ab)
	epb = binary.LittleEndian.AppendUint32(epb, uint32(len(frame)))
	epb = binary.LittleEndian.AppendUint32(epb, uint32(len(frame)))
	epb = append(epb, frame...)
	var b []byte
	b = append(b, ngBlock(ngSectionHeader, shb)...)
	b = append(b, ngBlock(ngInterface, idb)...)
	return append(b, ngBlock(ngEnhancedPacket, epb)...)
}

func readAll(t *testing.T, data []byte) ([]packet, error) {
	t.Helper()
	r, err := newCaptureReader(bufio.NewReader(bytes.NewReader(data)))
	if err != nil {
		return nil, err
	}
	var pkts []packet
	for {
		p, err := r.next()
		if errors.Is(err, io.EOF) {
			return pkts, nil
		}
		if err != nil {
			return pkts, err
		}
		pkts = append(pkts, p)
	}
}

// TestTsresolOverflowFixture: if_tsresol 0x40, 0x7f and 0xc0 (10^-64 s,
// 10^-127 s, 2^-64 s: valid, if absurd) panic gopacket's pcapgo with an
// integer divide by zero (see capture.go); medmesh's reader reads the
// packet with the timestamp the resolution gives.
func TestTsresolOverflowFixture(t *testing.T) {
	for _, resol := range []byte{0x40, 0x7f, 0xc0} {
		file := tsresolFile(resol)
		func() {
			defer func() {
				if r := recover(); r == nil {
					t.Logf("if_tsresol %#x: gopacket's pcapgo no longer panics; the upstream bug may be fixed", resol)
				} else if !strings.Contains(fmtAny(r), "divide by zero") {
					t.Errorf("if_tsresol %#x: gopacket panicked with %v, not the known divide by zero", resol, r)
				}
			}()
			ng, err := pcapgo.NewNgReader(bytes.NewReader(file), pcapgo.DefaultNgReaderOptions)
			if err != nil {
				t.Fatalf("pcapgo rejects the fixture before the packet: %v", err)
			}
			ng.ReadPacketData() // upstream: panics
		}()
		pkts, err := readAll(t, file)
		if err != nil || len(pkts) != 1 || len(pkts[0].data) != 60 || pkts[0].linkType != linkEthernet {
			t.Fatalf("if_tsresol %#x: %d packets, %v", resol, len(pkts), err)
		}
		// 0x0123456789ab units: of 10^-64 s or 10^-127 s far below 1 ns,
		// of 2^-64 s 67.9 ns.
		want := map[byte]int64{0x40: 0, 0x7f: 0, 0xc0: 67}[resol]
		if !pkts[0].ts.Equal(time.Unix(0, want)) {
			t.Errorf("if_tsresol %#x: timestamp %v, want %d ns after the epoch", resol, pkts[0].ts, want)
		}
	}
}

func fmtAny(v any) string {
	if e, ok := v.(error); ok {
		return e.Error()
	}
	s, _ := v.(string)
	return s
}

// TestNgTimeEveryResolution checks ngTime against exact big-number
// arithmetic for all 256 if_tsresol values.
func TestNgTimeEveryResolution(t *testing.T) {
	for _, ts := range []uint64{0, 1, 999, 1e9 + 7, 1700000000123456789, 1<<63 + 12345, ^uint64(0)} {
		for r := 0; r < 256; r++ {
			k := int64(r & 0x7f)
			base := big.NewInt(10)
			if r&0x80 != 0 {
				base = big.NewInt(2)
			}
			unit := new(big.Int).Exp(base, big.NewInt(k), nil) // units per second
			sec, frac := new(big.Int).QuoRem(new(big.Int).SetUint64(ts), unit, new(big.Int))
			ns := new(big.Int).Quo(frac.Mul(frac, big.NewInt(1e9)), unit)
			got := ngTime(ts, uint8(r), 0)
			if !sec.IsUint64() || got.Unix() != int64(sec.Uint64()) || int64(got.Nanosecond()) != ns.Int64() {
				t.Fatalf("ngTime(%d, %#x) = %d s %d ns, want %v s %v ns", ts, r, got.Unix(), got.Nanosecond(), sec, ns)
			}
		}
	}
}

// TestReaderTruncation: a capture cut inside a packet or a header is
// ErrTruncated after the packets before the cut, at every cut point of a
// real pcap and a real pcapng file; the uncut files end cleanly.
func TestReaderTruncation(t *testing.T) {
	for _, name := range []string{"ndpi/hl7.pcap", "ndpi/custom_rules_ipv6.pcapng"} {
		data, err := os.ReadFile(filepath.Join(pcapDir, name))
		if err != nil {
			t.Skipf("skipped: %v", err)
		}
		full, err := readAll(t, data)
		if err != nil || len(full) == 0 {
			t.Fatalf("%s: %d packets, %v", name, len(full), err)
		}
		ends := recordEnds(t, data)
		if len(ends) != len(full) {
			t.Fatalf("%s: %d packet records by framing, reader read %d", name, len(ends), len(full))
		}
		for cut := ends[0] - 1; cut > 0 && cut < len(data); cut++ {
			pkts, err := readAll(t, data[:cut])
			want := 0
			for _, e := range ends {
				if e <= cut {
					want++
				}
			}
			clean := false
			for _, e := range blockEnds(t, data) {
				clean = clean || e == cut
			}
			switch {
			case clean && err != nil:
				t.Fatalf("%s cut at %d (a block boundary): %v", name, cut, err)
			case !clean && !errors.Is(err, ErrTruncated):
				t.Fatalf("%s cut at %d: err %v, want ErrTruncated", name, cut, err)
			case len(pkts) != want:
				t.Fatalf("%s cut at %d: %d packets before the cut, want %d", name, cut, len(pkts), want)
			}
		}
	}
}

// recordEnds returns the offset after each packet record or packet block,
// read by framing alone.
func recordEnds(t *testing.T, data []byte) []int {
	var ends []int
	if binary.LittleEndian.Uint32(data) != ngSectionHeader {
		for off := 24; off+16 <= len(data); {
			off += 16 + int(binary.LittleEndian.Uint32(data[off+8:]))
			ends = append(ends, off)
		}
		return ends
	}
	for off := 0; off+8 <= len(data); {
		typ, l := binary.LittleEndian.Uint32(data[off:]), int(binary.LittleEndian.Uint32(data[off+4:]))
		off += l
		if typ == ngEnhancedPacket || typ == ngSimplePacket || typ == ngObsoletePacket {
			ends = append(ends, off)
		}
	}
	return ends
}

// blockEnds returns every offset at which a file may end cleanly.
func blockEnds(t *testing.T, data []byte) []int {
	if binary.LittleEndian.Uint32(data) != ngSectionHeader {
		return append([]int{24}, recordEnds(t, data)...)
	}
	var ends []int
	for off := 0; off+8 <= len(data); {
		off += int(binary.LittleEndian.Uint32(data[off+4:]))
		ends = append(ends, off)
	}
	return ends
}

// FuzzCaptureReader: no byte string panics the pcap/pcapng reader or
// makes it return a packet larger than maxCaplen.
func FuzzCaptureReader(f *testing.F) {
	for _, name := range []string{"ndpi/hl7.pcap", "ndpi/custom_rules_ipv6.pcapng", "tapirx/HL7-ADT.pcap"} {
		if b, err := os.ReadFile(filepath.Join(pcapDir, name)); err == nil {
			f.Add(b)
		}
	}
	f.Add(tsresolFile(0x40))
	f.Add(tsresolFile(0xc0))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := newCaptureReader(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			return
		}
		for range 1 << 12 {
			p, err := r.next()
			if err != nil {
				return
			}
			if len(p.data) > maxCaplen {
				t.Fatalf("packet of %d bytes", len(p.data))
			}
		}
	})
}
