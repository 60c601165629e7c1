package datapath

import (
	"context"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/flow"
)

type countingHandler struct {
	mu    sync.Mutex
	flows []flow.Record
	samp  int
}

func (h *countingHandler) HandleFlow(r *flow.Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r.App = "test"
	h.flows = append(h.flows, *r)
}
func (h *countingHandler) HandleSample(*flow.Sample)             { h.mu.Lock(); h.samp++; h.mu.Unlock() }
func (h *countingHandler) HandleDiscovery(*flow.Discovery)       {}
func (h *countingHandler) HandleBaselineMiss(*flow.BaselineMiss) {}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if err := c.validate(); err == nil {
		t.Error("config without interface accepted")
	}
	c.Iface, c.Mode = "eth0", "inline"
	if err := c.validate(); err == nil {
		t.Error("mode inline accepted")
	}
	c.Mode = ModeTap
	if err := c.validate(); err != nil {
		t.Error(err)
	}
}

// TestRun: the sensor attaches in a namespace, samples and accounts real
// datagrams, exports them on idle timeout and on exit, and detaches.
func TestRun(t *testing.T) {
	testutil.RequireRoot(t)
	l := newBenchLab(t)
	defer l.close()
	for _, ns := range []struct{ ns, dev, addr string }{{l.a, "va", "10.98.0.1/24"}, {l.b, "vb", "10.98.0.2/24"}} {
		if out, err := exec.Command("ip", "-n", ns.ns, "addr", "add", ns.addr, "dev", ns.dev).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
	}
	h := &countingHandler{}
	recs := make(chan flow.Record, 64)
	ready := make(chan string, 1)
	done := make(chan error, 1)
	cfg := DefaultConfig()
	cfg.Iface, cfg.Mode, cfg.Records = "vb", ModePassive, recs
	cfg.IdleTimeout, cfg.TCPEndGrace, cfg.ScanInterval = 300*time.Millisecond, 100*time.Millisecond, 50*time.Millisecond
	cfg.Ready = func(m string) { ready <- m }
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go inNS(t, l.b, true, func() { done <- Run(ctx, cfg, slog.New(slog.DiscardHandler), reg, h) })
	select {
	case m := <-ready:
		if m != "native" {
			t.Errorf("attach mode %s", m)
		}
	case err := <-done:
		t.Fatal(err)
	}
	var rx net.PacketConn
	inNS(t, l.b, false, func() {
		var err error
		if rx, err = net.ListenPacket("udp4", "10.98.0.2:7777"); err != nil {
			t.Fatal(err)
		}
	})
	defer rx.Close()
	var tx net.Conn
	inNS(t, l.a, false, func() {
		var err error
		if tx, err = net.Dial("udp4", "10.98.0.2:7777"); err != nil {
			t.Fatal(err)
		}
	})
	defer tx.Close()
	for range 4 {
		if _, err := tx.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
	}
	var got flow.Record
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, func() bool {
		select {
		case r := <-recs:
			if r.DstPort == 7777 {
				got = r
				return true
			}
		default:
		}
		return false
	}, "no idle-expired record for the datagrams")
	if got.FwdPackets != 4 || got.FwdBytes != 4*32 || got.EndReason != "idle" || got.App != "test" {
		t.Errorf("record %+v", got)
	}
	// A second burst stays in the table until Run ends: the drain exports it.
	if _, err := tx.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, func() bool {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "medmesh_sensor_packets_total" {
				return mf.GetMetric()[0].GetCounter().GetValue() >= 5
			}
		}
		return false
	}, "packets metric never reached 5")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(recs)
	var drained []flow.Record
	for r := range recs {
		if r.DstPort == 7777 {
			drained = append(drained, r)
		}
	}
	if len(drained) != 1 || drained[0].FwdPackets != 1 || drained[0].EndReason != "drain" {
		t.Errorf("drained %+v", drained)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.samp < 2 || len(h.flows) < 2 {
		t.Errorf("handler saw %d samples, %d flows", h.samp, len(h.flows))
	}
	// Detached: the interface has no XDP program left.
	out, _ := exec.Command("ip", "-n", l.b, "link", "show", "vb").CombinedOutput()
	if string(out) == "" || strings.Contains(string(out), "xdp") {
		t.Errorf("vb still has a program: %s", out)
	}
}
