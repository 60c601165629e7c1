//go:build linux

package enforcer_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netns"

	"github.com/medmesh/medmesh/enforcer"
	"github.com/medmesh/medmesh/enforcer/internal/fakecoord"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

const helperEnv = "MEDMESH_TEST_ENFORCER_HELPER"

// TestMain doubles as the enforcer process of the privileged test: with
// helperEnv set, the test binary runs an enforcer until SIGTERM, so the test
// can kill -9 a real enforcer process and start another.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	os.Exit(m.Run())
}

func runHelper() int {
	cfg := enforcer.DefaultConfig()
	cfg.ID = os.Getenv("ENF_ID")
	cfg.Interface = os.Getenv("ENF_IFACE")
	cfg.Coordinators = strings.Split(os.Getenv("ENF_COORD"), ",")
	cfg.PinDir = os.Getenv("ENF_PIN")
	cfg.MaxDevices = 64
	cfg.ReportInterval = 100 * time.Millisecond
	cfg.DNSServers = []netip.Addr{netip.MustParseAddr("10.2.0.53")}
	cfg.DHCPServers = []netip.Addr{netip.MustParseAddr("10.2.0.67")}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e, err := enforcer.New(cfg, log, prometheus.NewRegistry())
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	err = errors.Join(e.Run(ctx), e.Close())
	if err != nil {
		log.Error("run", "err", err)
		return 1
	}
	return 0
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// inNS runs fn on a thread inside the named network namespace. Sockets
// created there stay in that namespace.
func inNS(t *testing.T, name string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // the thread is discarded, not reused, since it is never unlocked
		h, err := netns.GetFromName(name)
		if err != nil {
			t.Errorf("netns %s: %v", name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			t.Errorf("setns %s: %v", name, err)
			return
		}
		fn()
	}()
	<-done
}

type lab struct {
	dev, enf, srv string
	pinDir        string
	log           *fakecoord.Log
	coord         *fakecoord.Server
	udpCount      sync.Map // port -> *atomic.Int64
}

func newLab(t *testing.T) *lab {
	testutil.RequireRoot(t)
	sfx := fmt.Sprintf("%d", os.Getpid()%100000)
	l := &lab{dev: "mmdev" + sfx, enf: "mmenf" + sfx, srv: "mmsrv" + sfx, pinDir: "/sys/fs/bpf/medmesh/test-" + sfx}
	for _, ns := range []string{l.dev, l.enf, l.srv} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
		sh(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	}
	t.Cleanup(func() { enforcer.Uninstall(l.pinDir) })
	sh(t, "ip", "-n", l.dev, "link", "add", "d0", "type", "veth", "peer", "name", "e0", "netns", l.enf)
	sh(t, "ip", "-n", l.srv, "link", "add", "s0", "type", "veth", "peer", "name", "e1", "netns", l.enf)
	addrs := []struct{ ns, ifc, a string }{
		{l.dev, "d0", "10.1.0.10/24"}, {l.dev, "d0", "2001:db8:1::10/64"},
		{l.enf, "e0", "10.1.0.1/24"}, {l.enf, "e0", "2001:db8:1::1/64"},
		{l.enf, "e1", "10.2.0.1/24"}, {l.enf, "e1", "2001:db8:2::1/64"},
		{l.srv, "s0", "10.2.0.2/24"}, {l.srv, "s0", "10.2.0.53/24"}, {l.srv, "s0", "10.2.0.67/24"},
		{l.srv, "s0", "2001:db8:2::2/64"},
	}
	for _, a := range addrs {
		args := []string{"ip", "-n", a.ns, "addr", "add", a.a, "dev", a.ifc}
		if strings.Contains(a.a, ":") {
			args = append(args, "nodad")
		}
		sh(t, args...)
	}
	for _, x := range []struct{ ns, ifc string }{{l.dev, "d0"}, {l.enf, "e0"}, {l.enf, "e1"}, {l.srv, "s0"}} {
		sh(t, "ip", "-n", x.ns, "link", "set", x.ifc, "up")
	}
	sh(t, "ip", "-n", l.dev, "route", "add", "default", "via", "10.1.0.1")
	sh(t, "ip", "-n", l.dev, "-6", "route", "add", "default", "via", "2001:db8:1::1")
	sh(t, "ip", "-n", l.srv, "route", "add", "default", "via", "10.2.0.1")
	sh(t, "ip", "-n", l.srv, "-6", "route", "add", "default", "via", "2001:db8:2::1")
	sh(t, "ip", "netns", "exec", l.enf, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")

	// Servers: TCP 22, 443, 8080 (v4 and v6), UDP 53, 67, 9000, 9999.
	inNS(t, l.srv, func() {
		for _, port := range []int{22, 443, 8080} {
			ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
			if err != nil {
				t.Errorf("listen tcp %d: %v", port, err)
				return
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
		}
		for _, port := range []int{53, 67, 9000, 9999} {
			pc, err := net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
			if err != nil {
				t.Errorf("listen udp %d: %v", port, err)
				return
			}
			t.Cleanup(func() { pc.Close() })
			n := &atomic.Int64{}
			l.udpCount.Store(port, n)
			go func() {
				buf := make([]byte, 2048)
				for {
					if _, _, err := pc.ReadFrom(buf); err != nil {
						return
					}
					n.Add(1)
				}
			}()
		}
	})
	// The fake coordinator listens inside the enforcer's namespace.
	l.log = fakecoord.NewLog()
	inNS(t, l.enf, func() {
		var err error
		l.coord, err = fakecoord.Start(l.log, "127.0.0.1:0", 100*time.Millisecond)
		if err != nil {
			t.Errorf("fake coordinator: %v", err)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	t.Cleanup(l.coord.Stop)
	return l
}

func (l *lab) udp(port int) int64 {
	v, _ := l.udpCount.Load(port)
	return v.(*atomic.Int64).Load()
}

// startEnforcer runs the enforcer as a child process in the enforcer ns.
func (l *lab) startEnforcer(t *testing.T, logName string) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), logName))
	if err != nil {
		t.Fatal(err)
	}
	// nsenter enters only the network namespace: "ip netns exec" would also
	// give the child a private /sys, and pins in a private bpffs die with it.
	cmd := exec.Command("nsenter", "--net=/run/netns/"+l.enf, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "ENF_ID=e1", "ENF_IFACE=e0", "ENF_COORD="+l.coord.Addr(), "ENF_PIN="+l.pinDir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("%s:\n%s", logName, b)
		}
	})
	return cmd
}

// tcpOK reports whether a TCP connection from the device succeeds.
func (l *lab) tcpOK(t *testing.T, addr string) bool {
	t.Helper()
	var err error
	inNS(t, l.dev, func() {
		var c net.Conn
		c, err = net.DialTimeout("tcp", addr, 400*time.Millisecond)
		if err == nil {
			c.Close()
		}
	})
	return err == nil
}

// sendUDP sends n datagrams from the device to addr, from local port lport (0: any).
func (l *lab) sendUDP(t *testing.T, lport int, addr string, n int) {
	t.Helper()
	inNS(t, l.dev, func() {
		c, err := net.DialUDP("udp4", &net.UDPAddr{Port: lport}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		if err != nil {
			t.Errorf("udp %s: %v", addr, err)
			return
		}
		defer c.Close()
		for range n {
			c.Write([]byte("probe"))
		}
	})
}

func devMAC(t *testing.T, l *lab) string {
	var mac string
	inNS(t, l.dev, func() {
		ifc, err := net.InterfaceByName("d0")
		if err != nil {
			t.Errorf("d0: %v", err)
			return
		}
		mac = ifc.HardwareAddr.String()
	})
	return mac
}

func rule(name, cidr string, proto, port uint32) *medmeshv1.Rule {
	return &medmeshv1.Rule{Name: name, Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: cidr}, Protocol: proto, PortMin: port, PortMax: port, Direction: medmeshv1.Direction_DIRECTION_OUTBOUND}
}

func (l *lab) waitApplied(t *testing.T, idx uint64) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool {
		m := l.log.Member("e1")
		return m != nil && m.AppliedIndex >= idx
	}, "enforcer reports applied index %d", idx)
}

func pinnedVerdicts(t *testing.T, pinDir string) map[string]uint64 {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "verdicts"), nil)
	if err != nil {
		t.Fatalf("pinned verdicts: %v", err)
	}
	defer m.Close()
	names := []string{"pass_non_ip", "pass_no_policy", "pass_allowed", "pass_monitor_would_drop", "drop_denied", "pass_quarantine_infra", "drop_quarantine", "drop_blocked", "pass_neighbor"}
	out := map[string]uint64{}
	for i, n := range names {
		var per []struct{ Packets, Bytes uint64 }
		if err := m.Lookup(uint32(i), &per); err != nil {
			t.Fatalf("lookup verdict %s: %v", n, err)
		}
		for _, c := range per {
			out[n] += c.Packets
		}
	}
	return out
}

func TestEnforcerInNetns(t *testing.T) {
	l := newLab(t)
	mac := devMAC(t, l)
	srv, srv6 := "10.2.0.2", "[2001:db8:2::2]"

	first := l.startEnforcer(t, "enforcer-1.log")
	testutil.Eventually(t, 15*time.Second, 20*time.Millisecond, func() bool { return l.log.Member("e1") != nil }, "enforcer reports its status")
	for _, a := range []string{srv + ":22", srv6 + ":22"} {
		testutil.Eventually(t, 10*time.Second, 50*time.Millisecond, func() bool { return l.tcpOK(t, a) }, "no policy yet: tcp to %s must pass", a)
	}

	pol := &medmeshv1.Policy{
		Name: "device/" + mac, Subject: &medmeshv1.Policy_DeviceMac{DeviceMac: mac}, Mode: medmeshv1.PolicyMode_POLICY_MODE_MONITOR,
		Rules: []*medmeshv1.Rule{
			rule("https", "10.2.0.2/32", 6, 443), rule("https6", "2001:db8:2::2/128", 6, 443),
			rule("probe", "10.2.0.2/32", 17, 9000), rule("dns", "10.2.0.53/32", 17, 53),
		},
	}
	idx := l.log.Commit(&medmeshv1.Decision{Action: medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY, State: medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE, DeviceMac: mac, Policy: pol}, 3)
	l.waitApplied(t, idx)
	before := pinnedVerdicts(t, l.pinDir)
	for _, a := range []string{srv + ":22", srv6 + ":22"} {
		if !l.tcpOK(t, a) {
			t.Fatalf("monitor mode dropped tcp to %s", a)
		}
	}
	if after := pinnedVerdicts(t, l.pinDir); after["pass_monitor_would_drop"] <= before["pass_monitor_would_drop"] || after["drop_denied"] != 0 {
		t.Fatalf("monitor counters: before %v after %v", before, after)
	}

	idx = l.log.Commit(&medmeshv1.Decision{Action: medmeshv1.DecisionAction_DECISION_ACTION_ENFORCE_POLICY, State: medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE, DeviceMac: mac, Policy: &medmeshv1.Policy{Name: pol.Name}}, 0)
	l.waitApplied(t, idx)
	for _, c := range []struct {
		addr string
		want bool
	}{{srv + ":443", true}, {srv6 + ":443", true}, {srv + ":22", false}, {srv6 + ":22", false}, {srv + ":8080", false}} {
		if got := l.tcpOK(t, c.addr); got != c.want {
			t.Fatalf("enforce: tcp %s connected=%v, want %v", c.addr, got, c.want)
		}
	}
	if v := pinnedVerdicts(t, l.pinDir); v["drop_denied"] == 0 || v["pass_allowed"] == 0 {
		t.Fatalf("enforce counters %v", v)
	}

	// Probe continuously: allowed UDP 9000 and denied UDP 9999, across a
	// kill -9 and a restart that reconciles a newer policy.
	stop := make(chan struct{})
	var probes sync.WaitGroup
	probes.Add(1)
	go func() {
		defer probes.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			l.sendUDP(t, 0, srv+":9999", 20)
			l.sendUDP(t, 0, srv+":9000", 20)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	allowedAtKill := l.udp(9000)
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, func() bool { return l.udp(9000) > allowedAtKill+100 }, "allowed traffic flows while the enforcer is dead")
	if l.tcpOK(t, srv+":22") {
		t.Fatal("killed enforcer stopped enforcing")
	}
	// Committed while the enforcer is down: v2 also allows 8080.
	pol2 := &medmeshv1.Policy{Name: pol.Name, Subject: pol.Subject, Mode: medmeshv1.PolicyMode_POLICY_MODE_ENFORCE, Rules: append(pol.Rules, rule("alt", "10.2.0.2/32", 6, 8080))}
	idx = l.log.Commit(&medmeshv1.Decision{Action: medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY, State: medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE, DeviceMac: mac, Policy: pol2}, 5)
	l.startEnforcer(t, "enforcer-2.log")
	l.waitApplied(t, idx)
	if !l.tcpOK(t, srv+":8080") {
		t.Fatal("restarted enforcer did not apply the decision committed while it was down")
	}
	afterRestart := l.udp(9000)
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, func() bool { return l.udp(9000) > afterRestart+100 }, "allowed traffic flows after restart")
	close(stop)
	probes.Wait()
	if n := l.udp(9999); n != 0 {
		t.Fatalf("%d denied datagrams passed around kill -9 and restart", n)
	}
	if l.tcpOK(t, srv+":22") {
		t.Fatal("restarted enforcer let denied traffic pass")
	}

	// A life-critical quarantine waits for approval, then isolates the
	// device except DHCP and DNS to the configured servers.
	pending := l.log.Commit(&medmeshv1.Decision{Id: "q-pump", Action: medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE, State: medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL, DeviceMac: mac, Tier: medmeshv1.Tier_TIER_LIFE_CRITICAL}, 0)
	l.waitApplied(t, pending)
	if !l.tcpOK(t, srv+":443") {
		t.Fatal("pending decision took effect before approval")
	}
	// The approval entry carries its target's action, as the FSM writes it.
	idx = l.log.Commit(&medmeshv1.Decision{Action: medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE, State: medmeshv1.DecisionState_DECISION_STATE_APPROVED, TargetDecisionId: "q-pump", DeviceMac: mac}, 0)
	l.waitApplied(t, idx)
	if l.tcpOK(t, srv+":443") || l.tcpOK(t, srv6+":443") {
		t.Fatal("quarantined device still reaches its policy's peers")
	}
	dns, dhcp := l.udp(53), l.udp(67)
	l.sendUDP(t, 0, "10.2.0.53:53", 5)
	l.sendUDP(t, 68, "10.2.0.67:67", 5)
	l.sendUDP(t, 0, "10.2.0.2:9000", 5)
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, func() bool { return l.udp(53) >= dns+5 && l.udp(67) >= dhcp+5 }, "DNS and DHCP pass in quarantine")
	idx = l.log.Commit(&medmeshv1.Decision{Action: medmeshv1.DecisionAction_DECISION_ACTION_RELEASE, State: medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE, DeviceMac: mac}, 0)
	l.waitApplied(t, idx)
	if !l.tcpOK(t, srv+":443") {
		t.Fatal("released device still isolated")
	}
	if v := pinnedVerdicts(t, l.pinDir); v["drop_quarantine"] == 0 || v["pass_quarantine_infra"] < 10 {
		t.Fatalf("quarantine counters %v", v)
	}
}
