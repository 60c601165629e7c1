// Package replay runs a pcap or pcapng capture through the sensor's own XDP
// program with BPF_PROG_TEST_RUN, packet by packet with the capture's
// timestamps as the program's clock, and returns the flows it accounted.
package replay

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/cilium/ebpf"

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
// returned. A capture that ends inside a packet or header returns the
// flows read until then together with an error wrapping ErrTruncated
// ("truncated after N packets").
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
	var truncated error
	for {
		pkt, err := src.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, ErrTruncated) {
			// The flows read so far are still returned, with the error.
			truncated = fmt.Errorf("replay: %s: %w after %d packets", path, ErrTruncated, st.Packets)
			break
		}
		if err != nil {
			return nil, st, fmt.Errorf("replay: %s: packet %d: %w", path, st.Packets+1, err)
		}
		data, lt := pkt.data, pkt.linkType
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
		if err := d.SetClock(max(pkt.ts.UnixNano(), 1)); err != nil {
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
		if truncated != nil {
			return nil, st, truncated
		}
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
	return recs, st, truncated
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

// open opens a pcap or pcapng file, telling the two apart by magic.
func open(path string) (captureReader, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("replay: %w", err)
	}
	src, err := newCaptureReader(bufio.NewReaderSize(f, 1<<16))
	if err != nil {
		f.Close()
		if errors.Is(err, ErrTruncated) {
			return nil, nil, fmt.Errorf("replay: %s: truncated capture header: %w", path, err)
		}
		return nil, nil, fmt.Errorf("replay: %s: %w", path, err)
	}
	return src, func() { f.Close() }, nil
}
