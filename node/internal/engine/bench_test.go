package engine

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/medmesh/medmesh/node/flow"
)

// cpuClock measures the CPU time of the benchmark's own thread, so that a
// figure per core does not depend on how busy the shared machine is: wall
// time includes the time other processes held the core.
type cpuClock struct{ start time.Duration }

func startCPU() cpuClock {
	runtime.LockOSThread()
	return cpuClock{start: threadCPU()}
}

// report adds "<unit>/cpu-s": operations per second of this thread's CPU.
func (c cpuClock) report(b *testing.B, unit string) {
	d := threadCPU() - c.start
	runtime.UnlockOSThread()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), unit+"/s")
	if d > 0 {
		b.ReportMetric(float64(b.N)/d.Seconds(), unit+"/cpu-s")
	}
}

// fastPath returns an engine whose devices all have frozen baselines and
// records that are all inside them: the steady state of a sensor.
func fastPath(tb testing.TB, devices, records int) (*Engine, []flow.Record) {
	tb.Helper()
	c := testConfig()
	c.Scan.Window = time.Minute
	e := newEngine(tb, c)
	mk := func(i int, ts int64) flow.Record {
		d := i % devices
		mac := flow.MAC{0x00, 0x0a, 0xf7, 0, byte(d >> 8), byte(d)}
		ip := netip.AddrFrom4([4]byte{10, 2, byte(d >> 8), byte(d)})
		peer, peerMAC, port, proto := ipHL7, macHL7, uint16(2575), uint8(6)
		if i%4 == 3 {
			peer, peerMAC, port, proto = ipDNS, macDNS, 53, 17
		}
		r := flow.Record{Src: ip, Dst: peer, SrcPort: uint16(30000 + i%20000), DstPort: port, Proto: proto,
			FwdPackets: 4, FwdBytes: 900, RevPackets: 3, RevBytes: 400, FirstNs: ts - 1000, LastNs: ts,
			SrcMAC: mac, DstMAC: peerMAC, EndReason: "fin"}
		if proto == 6 { // a whole connection, as the datapath records it
			r.FwdTCPFlags, r.RevTCPFlags = 0x02|0x10|0x01, 0x02|0x10|0x01
		}
		return r
	}
	// Learn for the window, then freeze.
	for i := range 20 * devices {
		r := mk(i, at(time.Duration(i)*10*time.Second/time.Duration(20*devices)))
		e.HandleFlow(&r)
	}
	e.FreezeAll()
	e.SetMode(Score)
	recs := make([]flow.Record, records)
	for i := range recs {
		recs[i] = mk(i, at(11*time.Second+time.Duration(i)*time.Microsecond))
	}
	return e, recs
}

// TestFastPathAllocs: scoring an in-baseline record of a known device
// allocates nothing (issue 4 acceptance 7).
func TestFastPathAllocs(t *testing.T) {
	e, recs := fastPath(t, 64, 4096)
	for i := range recs { // warm the scan and volume state
		e.HandleFlow(&recs[i])
	}
	i := 0
	allocs := testing.AllocsPerRun(10000, func() {
		e.HandleFlow(&recs[i%len(recs)])
		i++
	})
	if allocs != 0 {
		t.Fatalf("fast path allocates %.2f times per record, want 0", allocs)
	}
	if n := len(e.Alerts()); n != 0 {
		t.Fatalf("in-baseline records raised %d alerts", n)
	}
}

// BenchmarkHandleFlow is the sensor's steady state: known devices, flows
// inside their baselines. Reports records scored per second (run with
// -cpu 1 for the per-core figure).
func BenchmarkHandleFlow(b *testing.B) {
	for _, devices := range []int{16, 1024} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) {
			e, recs := fastPath(b, devices, 1<<14)
			for i := range recs {
				e.HandleFlow(&recs[i])
			}
			b.ReportAllocs()
			clk := startCPU()
			for i := 0; b.Loop(); i++ {
				e.HandleFlow(&recs[i&(len(recs)-1)])
			}
			clk.report(b, "records")
		})
	}
}

// BenchmarkHandleFlowNovel scores records that are all outside the
// baseline and alert-worthy but already alerted (deduplicated): the slow
// path's cost.
func BenchmarkHandleFlowNovel(b *testing.B) {
	e, recs := fastPath(b, 16, 1<<12)
	for i := range recs {
		recs[i].DstPort = 8443
		recs[i].Dst = netip.AddrFrom4([4]byte{203, 0, 113, byte(i % 8)})
		recs[i].DstMAC = macGW
	}
	for i := range recs {
		e.HandleFlow(&recs[i])
	}
	b.ReportAllocs()
	clk := startCPU()
	for i := 0; b.Loop(); i++ {
		e.HandleFlow(&recs[i&(len(recs)-1)])
	}
	clk.report(b, "records")
}

// BenchmarkHandleSample is the detectors' cost per payload sample through
// the engine (detection, field recording on devices, credential scoring).
func BenchmarkHandleSample(b *testing.B) {
	payloads := map[string]string{
		"hl7":  "\x0bMSH|^~\\&|PUMP_GW|ICU|EMR|HOSP|20261128080000||ORU^R01|1234|P|2.6\rPID|1||12345||DOE^JANE\r",
		"http": "GET /status HTTP/1.1\r\nHost: pump.local\r\nUser-Agent: curl/8.0\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\n\r\n",
		"none": "\x00\x01\x02\x03 opaque binary payload that no detector claims \x04\x05\x06",
	}
	for _, name := range []string{"hl7", "http", "none"} {
		p := []byte(payloads[name])
		b.Run(name, func(b *testing.B) {
			e := newEngine(b, testConfig())
			tuples := make([]flow.Tuple, 1024)
			for i := range tuples {
				tuples[i] = flow.Tuple{Src: netip.AddrFrom4([4]byte{10, 3, byte(i >> 8), byte(i)}), Dst: ipHL7,
					SrcPort: uint16(20000 + i), DstPort: 2575, Proto: 6}
			}
			s := flow.Sample{Dir: flow.Fwd, SrcMAC: macPump, DstMAC: macHL7, WireLen: uint16(len(p)), Payload: p}
			b.ReportAllocs()
			clk := startCPU()
			for i := 0; b.Loop(); i++ {
				s.Flow = tuples[i&1023]
				s.TimeNs = at(time.Duration(i) * time.Microsecond)
				e.HandleSample(&s)
			}
			clk.report(b, "samples")
		})
	}
}
