// Package replay runs a pcap or pcapng capture through the sensor's own XDP
// program with BPF_PROG_TEST_RUN, packet by packet with the capture's
// timestamps as the program's clock, and returns the flows it accounted.
package replay

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/pcapgo"

	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/export"
	"github.com/medmesh/medmesh/node/internal/xdp"
)

// Options tune a replay.
type Options struct {
	// FlowEntries is the flow table's size; a replay never expires flows
	// before the end, so it should exceed the capture's flow count.
	FlowEntries uint32
	// Debug puts the full verifier log in load errors.
	Debug bool
}

// DefaultOptions returns a 262144-flow table.
func DefaultOptions() Options { return Options{FlowEntries: 1 << 18} }

// Stats describe a finished replay.
type Stats struct {
	Packets      uint64 // read from the capture
	Run          uint64 // run through the program
	Skipped      uint64 // unreadable link type or shorter than a link header
	Truncated    uint64 // longer than BPF_PROG_TEST_RUN takes; tail cut (headers intact)
	NonIP        uint64
	Fragments    uint64
	ParseErrors  map[string]uint64
	RingDrops    uint64
	FlowsCreated uint64
	LinkTypes    []string
}

// maxRun is the largest frame BPF_PROG_TEST_RUN accepts for a non-frags XDP
// program: a page less XDP headroom (256) and skb_shared_info (320).
const maxRun = 4096 - 256 - 320

// Run replays the capture at path through the sensor program and returns
// one record per flow, sorted by first_ns then tuple. Events go to h (nil
// allowed) as they come; h.HandleFlow sees each record before it is
// returned.
func Run(ctx context.Context, path string, opts Options, h flow.Handler) ([]flow.Record, error) {
	recs, _, err := RunStats(ctx, path, opts, h)
	return recs, err
}

// RunStats is Run that also reports what the replay did.
func RunStats(ctx context.Context, path string, opts Options, h flow.Handler) ([]flow.Record, Stats, error) {
	var st Stats
	if opts.FlowEntries == 0 {
		opts.FlowEntries = DefaultOptions().FlowEntries
	}
	src, closeFile, err := open(path)
	if err != nil {
		return nil, st, err
	}
	defer closeFile()

	cfg := xdp.DefaultConfig()
	cfg.FlowEntries = opts.FlowEntries
	cfg.Debug = opts.Debug
	d, err := xdp.Load(cfg)
	if err != nil {
		return nil, st, fmt.Errorf("replay: %w", err)
	}
	defer d.Close()
	rd, err := d.NewReader()
	if err != nil {
		return nil, st, fmt.Errorf("replay: %w", err)
	}
	defer rd.Close()
	if bs, ok := h.(flow.BudgetSetter); ok {
		bs.SetSampleBudget(d)
	}

	prog := d.Program()
	var buf []byte
	seen := map[int]bool{}
	var ev xdp.Event
	past := time.Unix(1, 0)
	for {
		data, ci, lt, err := src.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, st, fmt.Errorf("replay: %s: %w", path, err)
		}
		st.Packets++
		if st.Packets%1024 == 0 && ctx.Err() != nil {
			return nil, st, fmt.Errorf("replay: %w", ctx.Err())
		}
		if !seen[lt] {
			seen[lt] = true
			st.LinkTypes = append(st.LinkTypes, linkName(lt))
		}
		frame, ok := toEthernet(lt, data, buf)
		if !ok || len(frame) < ethHLen {
			st.Skipped++
			continue
		}
		if lt != linkEthernet {
			buf = frame
		}
		if len(frame) > maxRun {
			frame = frame[:maxRun]
			st.Truncated++
		}
		if err := d.SetClock(max(ci.Timestamp.UnixNano(), 1)); err != nil {
			return nil, st, fmt.Errorf("replay: %w", err)
		}
		if _, err := prog.Run(&ebpf.RunOptions{Data: frame}); err != nil {
			return nil, st, fmt.Errorf("replay: packet %d: run program: %w", st.Packets, err)
		}
		st.Run++
		for {
			err := rd.Read(past, &ev)
			if errors.Is(err, xdp.ErrNoEvent) {
				break
			}
			if err != nil {
				return nil, st, fmt.Errorf("replay: packet %d: %w", st.Packets, err)
			}
			xdp.Dispatch(&ev, h)
		}
	}
	if st.Packets == 0 {
		return nil, st, fmt.Errorf("replay: %s: capture holds no packets", path)
	}

	ex, err := export.New(export.DefaultConfig(), d, nil)
	if err != nil {
		return nil, st, fmt.Errorf("replay: %w", err)
	}
	var recs []flow.Record
	if err := ex.Drain(func(r *flow.Record) { recs = append(recs, *r) }); err != nil {
		return nil, st, fmt.Errorf("replay: %w", err)
	}
	SortRecords(recs)
	if h != nil {
		for i := range recs {
			h.HandleFlow(&recs[i])
		}
	}
	ks, err := d.Stats()
	if err != nil {
		return nil, st, fmt.Errorf("replay: %w", err)
	}
	st.NonIP, st.Fragments, st.RingDrops, st.FlowsCreated = ks.NonIP, ks.Fragments, ks.RingDrops, ks.FlowsCreated
	st.ParseErrors = ks.ParseErrorsByReason
	return recs, st, nil
}

// SortRecords orders records by first_ns, then tuple.
func SortRecords(recs []flow.Record) {
	slices.SortStableFunc(recs, func(a, b flow.Record) int {
		return cmp.Or(
			cmp.Compare(a.FirstNs, b.FirstNs),
			a.Src.Compare(b.Src),
			a.Dst.Compare(b.Dst),
			cmp.Compare(a.SrcPort, b.SrcPort),
			cmp.Compare(a.DstPort, b.DstPort),
			cmp.Compare(a.Proto, b.Proto),
			cmp.Compare(a.VLAN, b.VLAN),
		)
	})
}

// packetSource reads packets and their link type from a capture.
type packetSource struct {
	pcap     *pcapgo.Reader
	pcapLink int // from the file header: gopacket's LinkType has 8 bits
	ng       *pcapgo.NgReader
}

// fullLink undoes gopacket's 8-bit link type for pcapng interfaces: 20 is
// no assigned link type, but LINKTYPE_LINUX_SLL2 (276) truncated.
func fullLink(lt int) int {
	if lt == linkSLL2&0xff {
		return linkSLL2
	}
	return lt
}

func (s *packetSource) next() ([]byte, gopacket.CaptureInfo, int, error) {
	if s.pcap != nil {
		data, ci, err := s.pcap.ReadPacketData()
		if err != nil {
			return nil, ci, 0, readErr(err)
		}
		return data, ci, s.pcapLink, nil
	}
	data, ci, err := s.ng.ReadPacketData()
	if err != nil {
		return nil, ci, 0, readErr(err)
	}
	lt := int(s.ng.LinkType())
	if ifc, err := s.ng.Interface(ci.InterfaceIndex); err == nil {
		lt = int(ifc.LinkType)
	}
	return data, ci, fullLink(lt), nil
}

func readErr(err error) error {
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("truncated capture")
	}
	return fmt.Errorf("read capture: %w", err)
}

// open opens a pcap or pcapng file, telling the two apart by magic.
func open(path string) (*packetSource, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("replay: %w", err)
	}
	br := bufio.NewReaderSize(f, 1<<16)
	magic, err := br.Peek(4)
	if err != nil {
		f.Close()
		if len(magic) == 0 && errors.Is(err, io.EOF) {
			return nil, nil, fmt.Errorf("replay: %s: empty file", path)
		}
		if errors.Is(err, io.EOF) {
			return nil, nil, fmt.Errorf("replay: %s: not a pcap or pcapng file", path)
		}
		return nil, nil, fmt.Errorf("replay: %s: %w", path, err)
	}
	s := &packetSource{}
	switch m := binary.LittleEndian.Uint32(magic); {
	case m == 0x0a0d0d0a:
		s.ng, err = pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
	case slices.Contains([]uint32{0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1}, m):
		if hdr, perr := br.Peek(24); perr == nil {
			var order binary.ByteOrder = binary.LittleEndian
			if m == 0xd4c3b2a1 || m == 0x4d3cb2a1 {
				order = binary.BigEndian
			}
			s.pcapLink = int(order.Uint32(hdr[20:]) & 0x0fffffff) // low 28 bits: link type
		}
		s.pcap, err = pcapgo.NewReader(br)
	default:
		f.Close()
		return nil, nil, fmt.Errorf("replay: %s: not a pcap or pcapng file", path)
	}
	if err != nil {
		f.Close()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, fmt.Errorf("replay: %s: truncated capture header", path)
		}
		return nil, nil, fmt.Errorf("replay: %s: %w", path, err)
	}
	return s, func() { f.Close() }, nil
}
