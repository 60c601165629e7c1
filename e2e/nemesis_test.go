//go:build e2e && linux

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/deploy/lab"
	"github.com/medmesh/medmesh/deploy/lab/sim"
	"github.com/medmesh/medmesh/internal/testutil"
)

// The binaries the lab runs: medmesh (coordinators, sensors, enforcers)
// and medmesh-lab (simulators, the compromised device).
var medmeshBin, labBin string

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			fmt.Println("e2e: skipped: the campus lab needs root")
			return 0
		}
		dir, err := os.MkdirTemp("", "medmesh-e2e-")
		if err != nil {
			fmt.Println(err)
			return 1
		}
		defer os.RemoveAll(dir)
		medmeshBin, labBin = filepath.Join(dir, "medmesh"), filepath.Join(dir, "medmesh-lab")
		for bin, pkg := range map[string]string{medmeshBin: "../cmd/medmesh", labBin: "../cmd/medmesh-lab"} {
			build := exec.Command("go", "build", "-o", bin, pkg)
			build.Stdout, build.Stderr = os.Stdout, os.Stderr
			if err := build.Run(); err != nil {
				fmt.Printf("e2e: build %s: %v\n", filepath.Base(bin), err)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// simLab brings up a lab with simulators only, on a prefix and address
// block of its own.
func simLab(t *testing.T) *lab.Lab {
	t.Helper()
	testutil.RequireRoot(t)
	cfg := lab.DefaultConfig()
	pid := os.Getpid()
	cfg.Prefix = fmt.Sprintf("x%04d-", pid%10000)
	cfg.Octet = 176 + 16*(pid%4) // 176-224; deploy/lab tests use 112-160
	cfg.StateDir = filepath.Join(t.TempDir(), "lab")
	cfg.Binary, cfg.LabBinary = medmeshBin, labBin
	cfg.APIPort = testutil.FreePort(t)
	cfg.PinGlobs = nil
	cfg.Components = false
	cfg.SimInterval = 200 * time.Millisecond
	l, err := lab.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Down(); err != nil {
			t.Errorf("down: %v", err)
		}
		if left := l.Leftovers(); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := l.Up(ctx); err != nil {
		t.Fatalf("up: %v", err)
	}
	return l
}

func dial(ns, addr string) error {
	return lab.InNamespace(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func hostPrefix(a string) netip.Prefix {
	return netip.PrefixFrom(netip.MustParseAddr(a), 32)
}

func TestNetworkNemeses(t *testing.T) {
	l := simLab(t)
	cfg := l.Config()
	pump1, _ := cfg.Device("pump1")
	pump2, _ := cfg.Device("pump2")
	hl7 := net.JoinHostPort(cfg.ServiceIP(0).String(), strconv.Itoa(sim.PortHL7Engine))
	ctx := context.Background()

	reach := func(dev lab.DeviceInfo) bool { return dial(dev.Namespace, hl7) == nil }
	testutil.Eventually(t, 5*time.Second, 50*time.Millisecond, func() bool { return reach(pump1) && reach(pump2) }, "pumps never reached the engine")

	for _, tc := range []struct {
		nemesis Nemesis
		cut     lab.DeviceInfo // loses the engine while the fault lasts
		spared  lab.DeviceInfo // keeps it
	}{
		{&Partition{Netns: cfg.CoreNS(), Table: "e2e_part", A: []netip.Prefix{hostPrefix(pump1.IP)}, B: []netip.Prefix{hostPrefix(cfg.ServiceIP(0).String())}}, pump1, pump2},
		{&Loss{Netns: cfg.EnforcerNS(2), Table: "e2e_loss", Iface: "dev0", Percent: 100}, pump2, pump1},
	} {
		n := tc.nemesis
		t.Run(n.Name(), func(t *testing.T) {
			if err := n.Available(); err != nil {
				t.Skip(err)
			}
			if err := n.Inject(ctx); err != nil {
				t.Fatal(err)
			}
			healed := false
			defer func() {
				if !healed {
					_ = n.Heal(ctx)
				}
			}()
			if reach(tc.cut) {
				t.Errorf("%s: %s still reaches the engine", n.Name(), tc.cut.Name)
			}
			if !reach(tc.spared) {
				t.Errorf("%s: %s lost the engine too", n.Name(), tc.spared.Name)
			}
			if err := n.Heal(ctx); err != nil {
				t.Fatal(err)
			}
			healed = true
			testutil.Eventually(t, 5*time.Second, 50*time.Millisecond, func() bool { return reach(tc.cut) }, "%s: %s did not recover after heal", n.Name(), tc.cut.Name)
			if err := n.Heal(ctx); err != nil {
				t.Errorf("second heal: %v", err)
			}
		})
	}
}

func TestProcessNemeses(t *testing.T) {
	l := simLab(t)
	ctx := context.Background()

	t.Run("pause", func(t *testing.T) {
		p := &Pause{Lab: l, Target: Fixed("pacs")}
		if err := p.Inject(ctx); err != nil {
			t.Fatal(err)
		}
		proc, _ := l.Proc("pacs")
		if st := procState(proc.PID); st != "T" {
			t.Errorf("paused pacs in state %q, want T", st)
		}
		if err := p.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 2*time.Second, 20*time.Millisecond, func() bool { return procState(proc.PID) != "T" }, "pacs still stopped")
	})

	t.Run("roam", func(t *testing.T) {
		r := &Roam{Lab: l, Device: "monitor1", To: 2}
		if err := r.Inject(ctx); err != nil {
			t.Fatal(err)
		}
		if d, _ := l.Config().Device("monitor1"); d.Floor != 2 {
			t.Fatalf("monitor1 on floor %d after roam", d.Floor)
		}
		logPath := filepath.Join(l.Config().StateDir, "logs", "monitor1.log")
		mark := countLines(logPath, "round done")
		testutil.Eventually(t, 10*time.Second, 100*time.Millisecond, func() bool {
			return countLines(logPath, "round done") >= mark+2
		}, "monitor1 stopped reaching the central station from floor 2")
		if err := r.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		if d, _ := l.Config().Device("monitor1"); d.Floor != 1 {
			t.Fatalf("monitor1 on floor %d after heal", d.Floor)
		}
	})

	t.Run("kill and restart", func(t *testing.T) {
		if err := l.Check(); err != nil {
			t.Fatalf("unhealthy before the fault: %v", err)
		}
		before, _ := l.Proc("pacs")
		k := &Kill{Lab: l, Target: Fixed("pacs"), Restart: true}
		if err := k.Inject(ctx); err != nil {
			t.Fatal(err)
		}
		if before.Alive() {
			t.Fatal("pacs alive after kill")
		}
		if err := l.Check(); err == nil || !strings.Contains(err.Error(), "pacs") {
			t.Errorf("check during the fault: %v, want pacs reported", err)
		}
		if err := k.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		if err := l.Check(); err != nil {
			t.Errorf("unhealthy after heal: %v", err)
		}
		after, _ := l.Proc("pacs")
		if after.PID == before.PID || !after.Alive() {
			t.Fatalf("pacs not restarted: before %d, after %d alive=%v", before.PID, after.PID, after.Alive())
		}
		// The modality's DICOM stores succeed again against the new PACS.
		logPath := filepath.Join(l.Config().StateDir, "logs", "modality1.log")
		mark := countLines(logPath, "round done")
		testutil.Eventually(t, 10*time.Second, 100*time.Millisecond, func() bool {
			return countLines(logPath, "round done") >= mark+2
		}, "modality1 did not complete rounds after the PACS restart")
	})
}

func countLines(path, sub string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			n++
		}
	}
	return n
}

func TestNftScripts(t *testing.T) {
	p := &Partition{Table: "t", A: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, B: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32"), netip.MustParsePrefix("10.96.0.0/12")}}
	s := p.Script()
	for _, want := range []string{"hook input", "hook output", "hook forward", "ip saddr { 127.0.0.1/32 } ip daddr { 127.0.0.2/32, 10.96.0.0/12 } drop", "meta l4proto { tcp, udp }"} {
		if !strings.Contains(s, want) {
			t.Errorf("partition script lacks %q:\n%s", want, s)
		}
	}
	lo := (&Loss{Table: "t", Iface: "up0", Percent: 30}).Script()
	if !strings.Contains(lo, `iifname "up0" numgen random mod 100 < 30 drop`) {
		t.Errorf("loss script:\n%s", lo)
	}
}

func TestPartitionBuilders(t *testing.T) {
	cfg := lab.DefaultConfig()
	p := CoordinatorPartition(cfg, 2)
	s := p.Script()
	if !strings.Contains(s, "ip saddr { 127.0.0.2/32 } ip daddr { 127.0.0.1/32, 127.0.0.3/32, 10.96.0.0/12 } drop") || p.Netns != "" {
		t.Errorf("coordinator partition:\n%s", s)
	}
	e := EnforcerPartition(cfg, 1)
	if e.Netns != cfg.EnforcerNS(1) || !strings.Contains(e.Script(), "ip saddr { 10.97.1.2/32 } ip daddr { 10.99.0.11/32, 10.99.0.12/32, 10.99.0.13/32 } drop") {
		t.Errorf("enforcer partition in %q:\n%s", e.Netns, e.Script())
	}
	if sp := SensorPartition(cfg, 2); sp.Netns != cfg.SensorNS(2) || sp.A[0].String() != "10.96.2.2/32" {
		t.Errorf("sensor partition %+v", sp)
	}
}
