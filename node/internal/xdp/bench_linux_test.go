package xdp

import (
	"encoding/binary"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/medmesh/medmesh/internal/testutil"
)

// bareXDPPass is the baseline every figure is a ratio to.
func bareXDPPass(tb testing.TB) *ebpf.Program {
	tb.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
		License:      "Dual BSD/GPL",
	})
	if err != nil {
		tb.Fatalf("load bare XDP_PASS: %v", err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

func benchDatapath(b *testing.B, entries, ring uint32) *Datapath {
	b.Helper()
	testutil.RequireRoot(b)
	cfg := DefaultConfig()
	cfg.FlowEntries = entries
	cfg.RingBytes = ring
	d, err := Load(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	if err := d.SetClock(1_700_000_000_000_000_000); err != nil {
		b.Fatal(err)
	}
	return d
}

// single runs p once on each frame and returns the kernel-measured time
// per run: the way to time packets that must differ (new flows, samples).
// Every 64 packets the ring buffer is drained, untimed, as the sensor's
// reader does (rd may be nil).
func single(b *testing.B, p *ebpf.Program, frames [][]byte, rd *Reader) time.Duration {
	b.Helper()
	var total time.Duration
	var ev Event
	for i, f := range frames {
		_, d, err := p.Benchmark(f, 1, nil)
		if err != nil {
			b.Fatal(err)
		}
		total += d
		if rd != nil && i%64 == 63 {
			for rd.Read(time.Unix(1, 0), &ev) == nil {
			}
		}
	}
	return total / time.Duration(len(frames))
}

func reader(b *testing.B, d *Datapath) *Reader {
	b.Helper()
	rd, err := d.NewReader()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rd.Close() })
	return rd
}

// plainVariant compiles sensor.c with plain (non-atomic) counter adds: the
// lower bound of what per-CPU values could save. Nil without clang.
func plainVariant(b *testing.B) *ebpf.Program {
	b.Helper()
	if _, err := exec.LookPath("clang"); err != nil {
		b.Log("clang not installed: atomic-vs-plain comparison skipped")
		return nil
	}
	obj := filepath.Join(b.TempDir(), "plain.o")
	out, err := exec.Command("clang", "-O2", "-g", "-Wall", "-mcpu=v3", "-target", "bpfel", "-DSENSOR_PLAIN_ADD",
		"-I/usr/include/x86_64-linux-gnu", "-c", "sensor.c", "-o", obj).CombinedOutput()
	if err != nil {
		b.Fatalf("compile plain variant: %v\n%s", err, out)
	}
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		b.Fatal(err)
	}
	if err := spec.Variables["clock_override_ns"].Set(uint64(1_700_000_000_000_000_000)); err != nil {
		b.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { coll.Close() })
	return coll.Programs["sensor"]
}

func report(b *testing.B, sensor, pass time.Duration) {
	b.ReportMetric(float64(sensor.Nanoseconds()), "ns/pkt")
	b.ReportMetric(float64(pass.Nanoseconds()), "pass-ns/pkt")
	b.ReportMetric(float64(sensor)/float64(pass), "x-pass")
	b.Logf("sensor %v/packet, bare XDP_PASS %v/packet, ratio %.2fx", sensor, pass, float64(sensor)/float64(pass))
}

func tcpFrame(i uint32, flags uint8, payload []byte) []byte {
	src := [4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}
	ip := ipv4("10.200.0.1", "10.200.0.2", 6, tcpSeg(uint16(1024+i%60000), 443, flags, payload), v4opts{})
	copy(ip[12:16], src[:])
	return v4frame(macA, macB, ip)
}

// BenchmarkDatapath compares the sensor program with a bare XDP_PASS program
// in the same run: (a) a packet of an established flow, (b) new flows with
// the table half full, (c) a payload-sampled packet. Run with -benchtime=1x
// (make bench-datapath): each sub-benchmark sets its own packet counts.
func BenchmarkDatapath(b *testing.B) {
	b.Run("a-established", func(b *testing.B) {
		d := benchDatapath(b, 65536, 4<<20)
		pass := bareXDPPass(b)
		pkt := tcpFrame(1, 0x10, make([]byte, 100))
		// Use up the flow's sample budget: steady state of a flow.
		for range 40 {
			if _, err := d.Program().Run(&ebpf.RunOptions{Data: pkt}); err != nil {
				b.Fatal(err)
			}
		}
		plain := plainVariant(b)
		if plain != nil {
			for range 40 {
				if _, err := plain.Run(&ebpf.RunOptions{Data: pkt}); err != nil {
					b.Fatal(err)
				}
			}
		}
		const rounds, repeat = 20, 50000
		var s, p, n time.Duration
		for range rounds {
			_, ds, err := d.Program().Benchmark(pkt, repeat, nil)
			if err != nil {
				b.Fatal(err)
			}
			_, dp, err := pass.Benchmark(pkt, repeat, nil)
			if err != nil {
				b.Fatal(err)
			}
			s, p = s+ds, p+dp
			if plain != nil {
				_, dn, err := plain.Benchmark(pkt, repeat, nil)
				if err != nil {
					b.Fatal(err)
				}
				n += dn
			}
		}
		report(b, s/rounds, p/rounds)
		if plain != nil {
			b.ReportMetric(float64((n / rounds).Nanoseconds()), "plain-add-ns/pkt")
			b.Logf("same program with plain (non-atomic) adds: %v/packet", n/rounds)
		}
	})
	b.Run("b-new-flows-half-full", func(b *testing.B) {
		const entries, newFlows = 65536, 16384
		d := benchDatapath(b, entries, 16<<20)
		pass := bareXDPPass(b)
		// Pre-fill half the table with other flows.
		keys := make([]sensorFlowKey, entries/2)
		vals := make([]sensorFlowVal, entries/2)
		for i := range keys {
			binary.BigEndian.PutUint32(keys[i].AddrA[:], 0xac100000+uint32(i))
			binary.BigEndian.PutUint32(keys[i].AddrB[:], 0xac200000)
			keys[i].PortA, keys[i].PortB, keys[i].Proto, keys[i].Family = 1000, 80, 6, 4
			vals[i].Dir[0].Packets = 1
		}
		if _, err := d.objs.Flows.BatchUpdate(keys, vals, nil); err != nil {
			if !errors.Is(err, ebpf.ErrNotSupported) {
				b.Fatal(err)
			}
			for i := range keys {
				if err := d.objs.Flows.Put(&keys[i], &vals[i]); err != nil {
					b.Fatal(err)
				}
			}
		}
		frames := make([][]byte, newFlows)
		for i := range frames {
			frames[i] = tcpFrame(uint32(i), 0x02, nil)
		}
		s := single(b, d.Program(), frames, reader(b, d))
		p := single(b, pass, frames, nil)
		st, err := d.Stats()
		if err != nil {
			b.Fatal(err)
		}
		if st.FlowsCreated != newFlows {
			b.Fatalf("created %d flows, want %d", st.FlowsCreated, newFlows)
		}
		report(b, s, p)
	})
	b.Run("c-payload-sampled", func(b *testing.B) {
		const flows = 8192
		d := benchDatapath(b, 65536, 16<<20)
		pass := bareXDPPass(b)
		syn := make([][]byte, flows)
		data := make([][]byte, flows)
		for i := range syn {
			syn[i] = tcpFrame(uint32(i), 0x02, nil)
			data[i] = tcpFrame(uint32(i), 0x18, make([]byte, 200))
		}
		rd := reader(b, d)
		single(b, d.Program(), syn, rd) // create the flows, untimed
		before, _ := d.Stats()
		s := single(b, d.Program(), data, rd)
		p := single(b, pass, data, nil)
		after, _ := d.Stats()
		if n := after.Samples - before.Samples; n != flows {
			b.Fatalf("%d samples, want %d", n, flows)
		}
		report(b, s, p)
	})
}
