package xdp

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/flow"
)

// FuzzProgram feeds random frames through the program and decodes every
// event and every map entry it leaves: none of it may panic, and every
// ring-buffer record must decode.
func FuzzProgram(f *testing.F) {
	testutil.RequireRoot(f)
	seeds := [][]byte{
		pad(v4frame(macA, macB, ipv4("10.0.0.1", "10.0.0.2", 6, tcpSeg(1, 2, 0x18, []byte("x")), v4opts{}))),
		v6frame(macA, macB, ipv6("2001:db8::1", "2001:db8::2", 17, udpDgram(53, 9, make([]byte, 12)), ext6{typ: 0}, ext6{typ: 44, fragOff: 1})),
		pad(v4frame(macA, macB, ipv4("10.0.0.1", "10.0.0.2", 17, udpDgram(68, 67, nil), v4opts{}), [2]uint16{0x88a8, 1}, [2]uint16{0x8100, 2})),
		pad(append(ether(macA, macB, 0x0806), arpPkt()...)),
		v6frame(macA, macB, ipv6("fe80::1", "ff02::1", 58, icmpMsg(135, 0))),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	var once sync.Once
	var d *Datapath
	var rd *Reader
	var loadErr error
	f.Cleanup(func() {
		if d != nil {
			rd.Close()
			d.Close()
		}
	})
	f.Fuzz(func(t *testing.T, frame []byte) {
		once.Do(func() {
			cfg := DefaultConfig()
			cfg.FlowEntries = 4096
			if d, loadErr = Load(cfg); loadErr == nil {
				loadErr = d.SetBaseline(macA, []BaselineRule{{Prefix: mustPrefix("10.0.0.0/8"), Proto: 6, Port: 80}})
				if loadErr == nil {
					rd, loadErr = d.NewReader()
				}
			}
		})
		if loadErr != nil {
			t.Fatal(loadErr)
		}
		for len(frame) < 14 {
			frame = append(frame, 0) // the kernel's minimum for XDP test runs
		}
		if len(frame) > 3520 {
			frame = frame[:3520]
		}
		if _, err := d.Program().Run(&ebpf.RunOptions{Data: frame}); err != nil {
			t.Fatalf("run: %v", err)
		}
		var ev Event
		for {
			err := rd.Read(time.Unix(1, 0), &ev)
			if errors.Is(err, ErrNoEvent) {
				break
			}
			if err != nil {
				t.Fatalf("event from the program does not decode: %v", err)
			}
			Dispatch(&ev, nopHandler{})
		}
		n := 0
		if err := d.ForEachFlow(func(k FlowKey, r *flow.Record) bool {
			n++
			_ = r.Tuple()
			if _, err := r.MarshalJSON(); err != nil {
				t.Fatalf("record %+v: %v", r, err)
			}
			return true
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.NonIP(); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Stats(); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzDecodeEvent: arbitrary bytes never panic the event decoder.
func FuzzDecodeEvent(f *testing.F) {
	f.Add(make([]byte, evHdrLen))
	f.Add(append([]byte{2, 1, 3, 4, 6, 0, 0, 0, 1, 0, 2, 0, 4, 0, 9, 0}, make([]byte, evHdrLen)...))
	f.Add(append([]byte{3, 0, 0, 6, 17, 3, 0, 0, 53, 0, 2, 0, 0, 1, 0, 0}, make([]byte, evHdrLen)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev Event
		if DecodeEvent(b, nil, &ev) == nil {
			Dispatch(&ev, nopHandler{})
		}
	})
}

type nopHandler struct{}

func (nopHandler) HandleFlow(*flow.Record)                 {}
func (nopHandler) HandleSample(s *flow.Sample)             { _ = len(s.Payload) }
func (nopHandler) HandleDiscovery(d *flow.Discovery)       { _ = len(d.Data) }
func (nopHandler) HandleBaselineMiss(m *flow.BaselineMiss) { _ = m.Reason }
