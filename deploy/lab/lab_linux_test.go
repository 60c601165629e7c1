package lab

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/medmesh/medmesh/deploy/lab/sim"
	"github.com/medmesh/medmesh/internal/testutil"
)

// The test binary stands in for both binaries: with helperEnv set it runs
// `sim --config JSON`, as medmesh-lab does, and knows no component
// commands, like a medmesh whose components are not built.
const helperEnv = "MEDMESH_LAB_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helperMain(os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

func helperMain(args []string) int {
	if len(args) < 1 || args[0] != "sim" {
		fmt.Fprintln(os.Stderr, "helper: unknown command", args)
		return 2
	}
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	js := fs.String("config", "", "")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	var cfg sim.Config
	if err := json.Unmarshal([]byte(*js), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if cfg.Kind == sim.KindCompromised {
		out, err := sim.Attack(ctx, cfg, log)
		if err != nil {
			return 1
		}
		_ = json.NewEncoder(os.Stdout).Encode(out)
		return 0
	}
	if err := sim.Run(ctx, cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// testConfig is a lab with its own prefix, address block, state dir and API
// port, so it collides neither with a demo lab on the same host nor with
// another run of these tests.
func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	pid := os.Getpid()
	cfg.Prefix = fmt.Sprintf("t%04d-", pid%10000)
	cfg.Octet = 112 + 16*(pid%4) // 112-160; the e2e harness uses 176-224
	cfg.StateDir = filepath.Join(t.TempDir(), "lab")
	cfg.Binary, cfg.LabBinary = os.Args[0], os.Args[0]
	cfg.Env = []string{helperEnv + "=1"}
	cfg.APIPort = testutil.FreePort(t)
	cfg.PinGlobs = []string{filepath.Join(t.TempDir(), "medmesh-pins*")}
	cfg.SimInterval = 300 * time.Millisecond
	return cfg
}

func quietLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func upLab(t *testing.T, cfg Config) *Lab {
	t.Helper()
	testutil.RequireRoot(t)
	l, err := New(cfg, quietLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Down(); err != nil {
			t.Errorf("down: %v", err)
		}
		if left := l.Leftovers(); len(left) > 0 {
			t.Errorf("left behind after down: %v", left)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := l.Up(ctx); err != nil {
		t.Fatalf("up: %v", err)
	}
	return l
}

// inNSDo runs fn in the namespace, on a locked thread.
func inNSDo(t *testing.T, ns string, fn func() error) {
	t.Helper()
	if err := inNS(ns, fn); err != nil {
		t.Fatalf("in %s: %v", ns, err)
	}
}

func dialFrom(ns, addr string) error {
	return inNS(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func rxPackets(t *testing.T, ns, ifname string) uint64 {
	t.Helper()
	var n uint64
	inNSDo(t, ns, func() error {
		// sysfs shows the namespace that mounted it, so ask netlink.
		l, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		h := newNSHandles()
		defer h.Close()
		nl, _, err := h.get(ns)
		if err != nil {
			return err
		}
		link, err := nl.LinkByIndex(l.Index)
		if err != nil {
			return err
		}
		n = link.Attrs().Statistics.RxPackets
		return nil
	})
	return n
}

func TestLabUpTrafficAndDown(t *testing.T) {
	cfg := testConfig(t)
	cfg.Components = true // the helper binary has none: Up must say so and go on
	// Stand in for coordinator c1 on the host's 127.0.0.1. Bound before
	// the lab comes up: a port FreePort found may be taken by another
	// package's test in the seconds the lab takes.
	apiLn, err := net.Listen("tcp", cfg.CoordinatorAPI(1))
	if err != nil {
		t.Fatal(err)
	}
	defer apiLn.Close()
	l := upLab(t, cfg)

	st, err := l.Status()
	if err != nil {
		t.Fatal(err)
	}
	if !st.Complete || len(st.Missing) != 0 || st.Namespaces != len(cfg.namespaces()) {
		t.Fatalf("status: complete=%v missing=%v namespaces=%d", st.Complete, st.Missing, st.Namespaces)
	}
	for _, role := range []string{"coordinator", "node", "enforcer"} {
		if !strings.Contains(st.Skipped[role], "not built yet") {
			t.Errorf("skipped[%s] = %q, want a not-built-yet reason", role, st.Skipped[role])
		}
	}
	wantProcs := len(services) + 1 + len(cfg.Devices())
	if len(st.Procs) != wantProcs {
		t.Fatalf("%d processes, want %d", len(st.Procs), wantProcs)
	}

	t.Run("device reaches core through its enforcer", func(t *testing.T) {
		pump, _ := cfg.Device("pump1")
		hl7 := net.JoinHostPort(cfg.ServiceIP(0).String(), strconv.Itoa(sim.PortHL7Engine))
		testutil.Eventually(t, 10*time.Second, 100*time.Millisecond, func() bool {
			return dialFrom(pump.Namespace, hl7) == nil
		}, "pump1 cannot reach the interface engine %s", hl7)
		// The path goes through the enforcer: its counters saw pump1.
		testutil.Eventually(t, 5*time.Second, 100*time.Millisecond, func() bool {
			tr, err := l.Traffic()
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range tr {
				if x.Device == "pump1" {
					return x.ToEnforcer > 0 && x.Passed > 0 && x.Dropped == 0
				}
			}
			return false
		}, "enforcer counters never saw pump1's traffic")
		ws, _ := cfg.Device("ws2")
		if err := dialFrom(ws.Namespace, net.JoinHostPort(InternetIP.String(), "443")); err != nil {
			t.Errorf("ws2 cannot reach the internet host: %v", err)
		}
	})

	t.Run("sensors and enforcers reach the host API", func(t *testing.T) {
		ln := apiLn
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte("c1"))
				c.Close()
			}
		}()
		vip := cfg.CoordinatorAddrs()[0]
		for _, ns := range []string{cfg.nsSensor(1), cfg.nsEnforcer(2)} {
			inNSDo(t, ns, func() error {
				c, err := net.DialTimeout("tcp", vip, 2*time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				b, err := io.ReadAll(c)
				if string(b) != "c1" {
					return fmt.Errorf("read %q, %v", b, err)
				}
				return nil
			})
		}
		// A device has no business with the control plane, but the path
		// exists through the core; what must not exist is a route out.
		pump, _ := cfg.Device("pump1")
		if err := dialFrom(pump.Namespace, "192.0.2.1:80"); err == nil {
			t.Error("a device reached an address outside the lab")
		}
	})

	t.Run("sensor tap receives mirrored frames", func(t *testing.T) {
		// Sensor 0 is the core's, on the services' segment.
		for n := 0; n <= len(cfg.Floors); n++ {
			before := rxPackets(t, cfg.nsSensor(n), "tap0")
			testutil.Eventually(t, 10*time.Second, 100*time.Millisecond, func() bool {
				return rxPackets(t, cfg.nsSensor(n), "tap0") > before+20
			}, "sensor %d tap0 got no mirrored frames (rx %d)", n, before)
		}
		// The capture links' far ends send nothing of their own.
		for ns, link := range map[string]string{cfg.nsFloor(1): "mirror", cfg.nsCore(): "svcmirror"} {
			inNSDo(t, ns, func() error {
				b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + link + "/disable_ipv6")
				if err != nil {
					return err
				}
				if strings.TrimSpace(string(b)) != "1" {
					t.Errorf("%s in %s: IPv6 on", link, ns)
				}
				return nil
			})
		}
	})

	t.Run("simulators exchange HL7 and DICOM", func(t *testing.T) {
		// The simulators log each failed exchange; the services count the
		// successful ones. Look at both through the logs.
		testutil.Eventually(t, 15*time.Second, 200*time.Millisecond, func() bool {
			return rounds(t, cfg, "pump1") >= 2 && rounds(t, cfg, "modality1") >= 2 && rounds(t, cfg, "monitor2") >= 2
		}, "devices did not complete two rounds")
		for _, d := range cfg.Devices() {
			if b, _ := os.ReadFile(filepath.Join(cfg.StateDir, "logs", d.Name+".log")); strings.Contains(string(b), "exchange failed") {
				t.Errorf("%s: %s", d.Name, firstLine(string(b), "exchange failed"))
			}
		}
	})

	t.Run("up twice is a no-op", func(t *testing.T) {
		before, _ := l.Status()
		if _, err := l.Up(context.Background()); err != nil {
			t.Fatal(err)
		}
		after, _ := l.Status()
		if len(after.Procs) != len(before.Procs) || after.Procs[0].PID != before.Procs[0].PID {
			t.Fatal("second up restarted the lab")
		}
	})

	t.Run("compromised device is measured", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := l.RunCompromised(ctx, 600*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if out.Probes == 0 || out.OpenPorts == 0 || !out.LoginOK || out.ExfilOK == 0 {
			t.Fatalf("attack outcome %+v", out)
		}
	})

	t.Run("roam a device to another floor and back", func(t *testing.T) {
		hl7 := net.JoinHostPort(cfg.ServiceIP(0).String(), strconv.Itoa(sim.PortHL7Engine))
		before, _ := l.Config().Device("pump1")
		for _, floor := range []int{2, 1} {
			now, err := l.Roam("pump1", floor)
			if err != nil {
				t.Fatal(err)
			}
			if now.Floor != floor || now.Namespace != before.Namespace || !cfg.FloorSubnet(floor).Contains(netip.MustParseAddr(now.IP)) {
				t.Fatalf("after roam: %+v", now)
			}
			testutil.Eventually(t, 5*time.Second, 50*time.Millisecond, func() bool {
				return dialFrom(now.Namespace, hl7) == nil
			}, "pump1 on floor %d cannot reach the engine", floor)
			testutil.Eventually(t, 5*time.Second, 50*time.Millisecond, func() bool {
				tr, err := l.Traffic()
				if err != nil {
					t.Fatal(err)
				}
				for _, x := range tr {
					if x.Device == "pump1" {
						return x.Floor == floor && x.Passed > 0
					}
				}
				return false
			}, "floor %d's enforcer counters never saw pump1", floor)
			// Another lab handle reads the moved layout from the state file.
			o, err := Open(cfg, quietLog(t))
			if err != nil {
				t.Fatal(err)
			}
			if d, _ := o.Config().Device("pump1"); d.Floor != floor {
				t.Errorf("state file has pump1 on floor %d, want %d", d.Floor, floor)
			}
		}
		if err := l.Check(); err != nil {
			t.Errorf("unhealthy after roaming: %v", err)
		}
	})
}

// rounds counts the successful rounds a device logged.
func rounds(t *testing.T, cfg Config, dev string) int {
	b, err := os.ReadFile(filepath.Join(cfg.StateDir, "logs", dev+".log"))
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "round done")
}

func firstLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

func TestDownOnNothingAndTwice(t *testing.T) {
	testutil.RequireRoot(t)
	cfg := testConfig(t)
	l, err := New(cfg, quietLog(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := l.Down(); err != nil {
			t.Fatalf("down #%d on nothing: %v", i+1, err)
		}
	}
	if left := l.Leftovers(); len(left) > 0 {
		t.Fatalf("leftovers: %v", left)
	}
}

func TestDownRemovesPartialLab(t *testing.T) {
	testutil.RequireRoot(t)
	cfg := testConfig(t)
	cfg.Simulators, cfg.Components = false, false
	l, err := New(cfg, quietLog(t))
	if err != nil {
		t.Fatal(err)
	}
	// A namespace, a pin and a marked process with no state file: what a
	// crashed `lab up` might leave.
	if err := createNS(cfg.Prefix + "f1"); err != nil {
		t.Fatal(err)
	}
	pin := strings.TrimSuffix(cfg.PinGlobs[0], "*") + "-enforcer"
	if err := os.MkdirAll(pin, 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := spawn(t.TempDir(), cfg.Prefix, "/bin/sleep", nil, "sleeper", "device", cfg.Prefix+"f1", []string{"60"})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Alive() {
		t.Fatal("sleeper not running")
	}
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	if p.Alive() {
		t.Error("marked process survived down")
	}
	if left := l.Leftovers(); len(left) > 0 {
		t.Fatalf("leftovers: %v", left)
	}
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.Binary, good.LabBinary = "/bin/true", "/bin/true"
	if err := good.validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"long prefix":    func(c *Config) { c.Prefix = "toolong-" },
		"octet":          func(c *Config) { c.Octet = 97 },
		"no floors":      func(c *Config) { c.Floors = nil },
		"relative state": func(c *Config) { c.StateDir = "run/lab" },
		"dup device":     func(c *Config) { c.Floors[1].Devices[0].Name = "pump1" },
		"service kind":   func(c *Config) { c.Floors[0].Devices[0].Kind = sim.KindPACS },
		"compromised":    func(c *Config) { c.Compromised = "nope" },
	} {
		c := DefaultConfig()
		c.Binary, c.LabBinary = "/bin/true", "/bin/true"
		c.Floors = []Floor{{Devices: append([]Device(nil), c.Floors[0].Devices...)}, {Devices: append([]Device(nil), c.Floors[1].Devices...)}}
		mut(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%s: validate passed", name)
		}
	}
}

// TestScenarioCountsEnforcerDrops stands a tc filter in for the enforcer's
// XDP verdict: it discards the compromised device's packets on the
// enforcer's floor-facing ingress, before the "passed" counters, as an XDP
// drop would. The scenario must report those drops for that device only,
// none for life-critical devices, and a detection-to-drop latency.
func TestScenarioCountsEnforcerDrops(t *testing.T) {
	cfg := testConfig(t)
	cfg.Components = false
	l := upLab(t, cfg)
	d, _ := cfg.Device(cfg.Compromised)

	h := newNSHandles()
	defer h.Close()
	nl, _, err := h.get(cfg.nsEnforcer(d.Floor))
	if err != nil {
		t.Fatal(err)
	}
	dev0, _ := nl.LinkByName("dev0")
	sink, _ := nl.LinkByName("cnt0")
	drop := netlink.NewMirredAction(sink.Attrs().Index) // redirect to a down link: the packet is gone
	b := netip.MustParseAddr(d.IP).As4()
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: dev0.Attrs().Index, Parent: netlink.HANDLE_MIN_INGRESS, Priority: 1, Protocol: unix.ETH_P_IP},
		Sel: &netlink.TcU32Sel{Flags: netlink.TC_U32_TERMINAL, Keys: []netlink.TcU32Key{
			{Mask: 0xffffffff, Val: uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]), Off: 12},
			{Mask: 0xffffffff, Val: 203<<24 | 113<<8 | 10, Off: 16}, // only towards the internet host
		}},
		Actions: []netlink.Action{drop},
	}
	if err := nl.FilterAdd(f); err != nil {
		t.Fatal(err)
	}

	obs := NewObserver(l, nil)
	opts := ScenarioOptions{ExfilFor: 500 * time.Millisecond, Settle: 100 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := l.RunScenario(ctx, ScenarioCompromisedDevice, obs, opts)
	if err != nil {
		t.Fatal(err)
	}
	if out.Attack.ExfilOK != 0 || out.Attack.ExfilAttempts == 0 {
		t.Errorf("exfiltration got through a dropping enforcer: %+v", out.Attack)
	}
	if !out.Attack.LoginOK {
		t.Errorf("the same-floor login must not be affected by the enforcer: %s", out.Attack.LoginError)
	}
	for _, tr := range out.Traffic {
		switch {
		case tr.Device == d.Name && tr.Dropped == 0:
			t.Errorf("%s: no drops counted: %+v", tr.Device, tr)
		case tr.Device != d.Name && tr.Dropped != 0:
			t.Errorf("%s: %d drops counted for a device nobody blocked", tr.Device, tr.Dropped)
		}
	}
	if out.Totals.LifeCriticalDrops != 0 {
		t.Errorf("life-critical drops %d", out.Totals.LifeCriticalDrops)
	}
	if got := dropsOf(out.Traffic, d.Name); out.Totals.EnforcerDrops != got {
		t.Errorf("totals: %d enforcer drops, the traffic of %s (the only device dropped) says %d", out.Totals.EnforcerDrops, d.Name, got)
	}
	if out.DetectionToDropMs < 0 || out.DetectionToDropMs > 1000 {
		t.Errorf("detection-to-drop %.1f ms, want a measured value under 1 s", out.DetectionToDropMs)
	}
	t.Logf("dropped %d packets of %s; first external packet to first drop: %.1f ms", dropsOf(out.Traffic, d.Name), d.Name, out.DetectionToDropMs)
}

// TestFailedUpRemovesWhatItBuilt makes `lab up` fail part-way for real
// reasons and checks, without asking the lab, that nothing with the lab's
// prefix is left: no namespace, host link, nftables table, process or
// state directory.
func TestFailedUpRemovesWhatItBuilt(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tc := range []struct {
		name string
		// breaks the config; wantErr is in the error of Up
		mod     func(t *testing.T, c *Config)
		wantErr []string
	}{
		{
			// The topology is built (namespaces, links, nftables) when
			// the first simulator cannot be started.
			name:    "lab binary missing",
			mod:     func(t *testing.T, c *Config) { c.LabBinary = filepath.Join(t.TempDir(), "no-such-medmesh-lab") },
			wantErr: []string{"no-such-medmesh-lab"},
		},
		{
			// The core services are up and serving when a device
			// simulator exits at start.
			name: "device simulator exits",
			mod: func(t *testing.T, c *Config) {
				c.Floors[0].Devices = append(c.Floors[0].Devices, Device{Name: "xray1", Kind: sim.Kind("x-ray"), MAC: "02:00:5e:00:01:0f"})
			},
			wantErr: []string{"xray1 exited", `unknown simulator kind "x-ray"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			// Not the demo's mm- and not the other tests' t####-.
			cfg.Prefix = fmt.Sprintf("mt%03d-", os.Getpid()%1000)
			cfg.Floors = cfg.Floors[:1]
			cfg.Floors[0].Devices = cfg.Floors[0].Devices[:2]
			cfg.Compromised = cfg.Floors[0].Devices[0].Name
			tc.mod(t, &cfg)
			l, err := New(cfg, quietLog(t))
			if err != nil {
				t.Fatal(err)
			}
			if left := leftWithPrefix(t, cfg); len(left) > 0 {
				t.Fatalf("before up, already there: %v", left)
			}
			t.Cleanup(func() { _ = l.Down() })
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err = l.Up(ctx)
			if err == nil {
				t.Fatal("up succeeded")
			}
			for _, w := range append(tc.wantErr, "the partial lab was removed") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("up: %v; want it to say %q", err, w)
				}
			}
			if left := leftWithPrefix(t, cfg); len(left) > 0 {
				t.Errorf("a failed up left: %v", left)
			}
			if left := l.Leftovers(); len(left) > 0 {
				t.Errorf("Leftovers after a failed up: %v", left)
			}
		})
	}
}

// leftWithPrefix lists what carries cfg's prefix on this host, read from
// the kernel and nft directly rather than through the lab's own Leftovers.
func leftWithPrefix(t *testing.T, cfg Config) []string {
	t.Helper()
	var left []string
	ents, err := os.ReadDir(netnsDir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), cfg.Prefix) {
			left = append(left, "netns "+e.Name())
		}
	}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if strings.HasPrefix(i.Name, cfg.Prefix) {
			left = append(left, "link "+i.Name)
		}
	}
	out, err := exec.Command("nft", "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[2] == cfg.nftTable() {
			left = append(left, line)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range procs {
		env, err := os.ReadFile(p)
		if err != nil {
			continue // gone, or not ours to read
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			if kv == EnvMarker+"="+cfg.Prefix {
				left = append(left, "process "+filepath.Base(filepath.Dir(p)))
			}
		}
	}
	if _, err := os.Stat(cfg.StateDir); err == nil {
		left = append(left, "dir "+cfg.StateDir)
	}
	return left
}
