package datapath

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/medmesh/medmesh/internal/testutil"
	"github.com/medmesh/medmesh/node/flow"
)

// TestCaptureBench is `make bench-capture`: tcpreplay --topspeed loops a
// capture to >= 2 M packets over a veth pair while medmesh (XDP, tap mode),
// softflowd, pmacctd and ndpiReader capture on the receiving end, one at a
// time. It reports packets accounted / sent and CPU seconds per million
// packets. It runs only with MEDMESH_BENCH_CAPTURE=1.
func TestCaptureBench(t *testing.T) {
	if os.Getenv("MEDMESH_BENCH_CAPTURE") == "" {
		t.Skip("skipped: benchmark; run with MEDMESH_BENCH_CAPTURE=1 (make bench-capture)")
	}
	testutil.RequireRoot(t)
	pcap := os.Getenv("MEDMESH_BENCH_PCAP")
	if pcap == "" {
		pcap = "../../../shared/testdata/pcap/ndpi/ftp.pcap"
	}
	if _, err := os.Stat(pcap); err != nil {
		t.Skipf("skipped: capture %s: %v", pcap, err)
	}
	for _, tool := range []string{"tcpreplay", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipped: %s not installed", tool)
		}
	}
	frames, err := countFrames(pcap)
	if err != nil {
		t.Fatal(err)
	}
	target := 2_000_000
	if s := os.Getenv("MEDMESH_BENCH_PACKETS"); s != "" {
		target, _ = strconv.Atoi(s)
	}
	loops := (target + frames - 1) / frames

	type result struct {
		tool            string
		sent, accounted uint64
		cpu, softirq    time.Duration
		note            string
	}
	var results []result
	tools := []struct {
		name string
		run  func(t *testing.T, l *benchLab, replay func() uint64) (sent, accounted uint64, cpu time.Duration, note string)
	}{
		{"medmesh", runMedmesh},
		{"softflowd", runSoftflowd},
		{"pmacctd", runPmacctd},
		{"ndpiReader", runNdpi},
	}
	for _, tool := range tools {
		if tool.name != "medmesh" {
			if _, err := exec.LookPath(tool.name); err != nil {
				t.Logf("%s: not installed, skipped", tool.name)
				continue
			}
		}
		l := newBenchLab(t)
		var softirq time.Duration
		replay := func() uint64 {
			s0 := softirqTime()
			defer func() { softirq = softirqTime() - s0 }()
			out, err := exec.Command("ip", "netns", "exec", l.a, "tcpreplay", "-i", "va", "--topspeed", "-K",
				"-l", strconv.Itoa(loops), pcap).CombinedOutput()
			if err != nil {
				t.Fatalf("tcpreplay: %v\n%s", err, out)
			}
			m := regexp.MustCompile(`Actual: (\d+) packets`).FindSubmatch(out)
			if m == nil {
				t.Fatalf("tcpreplay output: %s", out)
			}
			n, _ := strconv.ParseUint(string(m[1]), 10, 64)
			return n
		}
		start := time.Now()
		sent, acc, cpu, note := tool.run(t, l, replay)
		results = append(results, result{tool.name, sent, acc, cpu, softirq, note})
		t.Logf("%s: sent %d, accounted %d (%.2f%%), process cpu %v, softirq cpu %v (system-wide, during the replay), %v wall %s",
			tool.name, sent, acc, 100*float64(acc)/float64(sent), cpu, softirq, time.Since(start).Round(time.Millisecond), note)
		l.close()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| tool | packets sent | accounted | accounted/sent | process CPU s/M pkts | softirq CPU s/M pkts | total CPU s/M pkts |\n|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		m := float64(r.sent) / 1e6
		fmt.Fprintf(&b, "| %s | %d | %d | %.2f%% | %.3f | %.3f | %.3f |\n", r.tool, r.sent, r.accounted, 100*float64(r.accounted)/float64(r.sent),
			r.cpu.Seconds()/m, r.softirq.Seconds()/m, (r.cpu+r.softirq).Seconds()/m)
	}
	t.Log(b.String())
}

func countFrames(path string) (int, error) {
	out, err := exec.Command("capinfos", "-c", "-M", path).Output()
	if err != nil {
		return 0, fmt.Errorf("capinfos %s: %w", path, err)
	}
	m := regexp.MustCompile(`Number of packets:\s+(\d+)`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("capinfos %s: %s", path, out)
	}
	return strconv.Atoi(string(m[1]))
}

type benchLab struct {
	t    *testing.T
	a, b string
}

func newBenchLab(t *testing.T) *benchLab {
	t.Helper()
	id := fmt.Sprintf("%d%d", os.Getpid()%10000, time.Now().UnixNano()%1000)
	l := &benchLab{t: t, a: "mmbca" + id, b: "mmbcb" + id}
	run := func(args ...string) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	run("ip", "netns", "add", l.a)
	run("ip", "netns", "add", l.b)
	// No IPv6 autoconfiguration chatter: only the replayed packets cross.
	run("ip", "netns", "exec", l.a, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	run("ip", "netns", "exec", l.b, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	run("ip", "-n", l.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", l.b)
	run("ip", "-n", l.a, "link", "set", "va", "up")
	run("ip", "-n", l.b, "link", "set", "vb", "up")
	run("ip", "-n", l.b, "link", "set", "lo", "up")
	return l
}

func (l *benchLab) close() {
	_ = exec.Command("ip", "netns", "del", l.a).Run()
	_ = exec.Command("ip", "netns", "del", l.b).Run()
}

// inNS runs fn on a thread in namespace ns, and leaves the thread locked
// (it dies with its goroutine) when keep is set.
func inNS(t *testing.T, ns string, keep bool, fn func()) {
	runtime.LockOSThread()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Error(err)
		return
	}
	defer h.Close()
	orig, _ := netns.Get()
	defer orig.Close()
	if err := netns.Set(h); err != nil {
		t.Error(err)
		return
	}
	fn()
	if !keep {
		if err := netns.Set(orig); err != nil {
			panic(err)
		}
		runtime.UnlockOSThread()
	}
}

// softirqTime is the machine's softirq CPU time (/proc/stat): where the
// receive path runs, XDP included, charged to no process.
func softirqTime() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	if len(f) < 8 {
		return 0
	}
	n, _ := strconv.ParseInt(f[7], 10, 64)
	return time.Duration(n) * time.Second / 100 // USER_HZ
}

func rusageSelf() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runMedmesh runs the sensor in tap mode on vb. Its process CPU is this
// process's (ring-buffer reader, exporter); the XDP program runs in softirq
// and is reported from the kernel's BPF statistics too.
func runMedmesh(t *testing.T, l *benchLab, replay func() uint64) (uint64, uint64, time.Duration, string) {
	if err := os.WriteFile("/proc/sys/kernel/bpf_stats_enabled", []byte("1"), 0); err != nil {
		t.Fatalf("enable bpf stats: %v", err)
	}
	defer os.WriteFile("/proc/sys/kernel/bpf_stats_enabled", []byte("0"), 0)
	ctx, cancel := context.WithCancel(context.Background())
	recs := make(chan flow.Record, 1024)
	ready := make(chan string, 1)
	done := make(chan error, 1)
	var accounted uint64
	collected := make(chan struct{})
	go func() {
		for r := range recs {
			accounted += r.FwdPackets + r.RevPackets
		}
		close(collected)
	}()
	cfg := DefaultConfig()
	cfg.Iface, cfg.Mode, cfg.LogFlows, cfg.Records = "vb", ModeTap, false, recs
	cfg.Ready = func(mode string) { ready <- mode }
	go inNS(t, l.b, true, func() { done <- Run(ctx, cfg, nil, nil, nil) })
	var mode string
	select {
	case mode = <-ready:
	case err := <-done:
		t.Fatalf("sensor: %v", err)
	}
	var progID ebpf.ProgramID
	inNS(t, l.b, false, func() {
		lk, err := netlink.LinkByName("vb")
		if err != nil || lk.Attrs().Xdp == nil {
			t.Fatalf("link vb: %v", err)
		}
		progID = ebpf.ProgramID(lk.Attrs().Xdp.ProgId)
	})
	prog, err := ebpf.NewProgramFromID(progID)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	info0, _ := prog.Stats()
	cpu0 := rusageSelf()
	sent := replay()
	info1, _ := prog.Stats()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cpu := rusageSelf() - cpu0
	close(recs)
	<-collected
	xdpTime := info1.Runtime - info0.Runtime
	return sent, accounted, cpu, fmt.Sprintf("(attach %s; XDP program run time %v, inside the softirq time)", mode, xdpTime)
}

// procCPU is a process's user+system CPU from /proc/PID/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// runTool starts a capture tool in ns B, replays, reads its CPU, stops it
// with SIGINT and returns its output.
func runTool(t *testing.T, l *benchLab, replay func() uint64, settle time.Duration, beforeStop func(), args ...string) (uint64, time.Duration, string) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.b}, args...)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(settle) // let the tool open its capture; no readiness signal exists
	sent := replay()
	time.Sleep(500 * time.Millisecond)
	cpu := procCPU(cmd.Process.Pid)
	if beforeStop != nil {
		beforeStop()
	}
	_ = cmd.Process.Signal(os.Interrupt)
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case <-waitErr:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-waitErr
	}
	return sent, cpu, out.String()
}

func runSoftflowd(t *testing.T, l *benchLab, replay func() uint64) (uint64, uint64, time.Duration, string) {
	var pc net.PacketConn
	inNS(t, l.b, false, func() {
		var err error
		if pc, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	})
	defer pc.Close()
	var pkts uint64
	got := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(got)
		buf := make([]byte, 65536)
		for {
			pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				select {
				case <-stop:
					return
				default:
					continue
				}
			}
			if n < 24 || binary.BigEndian.Uint16(buf) != 5 {
				continue
			}
			cnt := int(binary.BigEndian.Uint16(buf[2:]))
			for i := 0; i < cnt && 24+48*(i+1) <= n; i++ {
				pkts += uint64(binary.BigEndian.Uint32(buf[24+48*i+16:]))
			}
		}
	}()
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl")
	var processed uint64
	var stats string
	before := func() {
		b, err := exec.Command("ip", "netns", "exec", l.b, "softflowctl", "-c", ctl, "statistics").CombinedOutput()
		stats = string(b)
		if m := regexp.MustCompile(`Packets processed: (\d+)`).FindSubmatch(b); err == nil && m != nil {
			processed, _ = strconv.ParseUint(string(m[1]), 10, 64)
		}
	}
	sent, cpu, out := runTool(t, l, replay, time.Second, before, "softflowd", "-d", "-i", "vb", "-v", "5", "-n", pc.LocalAddr().String(),
		"-p", filepath.Join(dir, "pid"), "-c", filepath.Join(dir, "ctl"), "-m", "65536")
	time.Sleep(time.Second) // the exit export is in flight; nothing signals its end
	close(stop)
	<-got
	// softflowctl's "Packets processed" counts every packet it put in a
	// flow, exported or not.
	if processed == 0 {
		t.Logf("softflowd: statistics %q, output %q", stats, out)
	}
	return sent, processed, cpu, fmt.Sprintf("(softflowctl packets processed; NetFlow v5 dPkts exported %d)", pkts)
}

func runPmacctd(t *testing.T, l *benchLab, replay func() uint64) (uint64, uint64, time.Duration, string) {
	file := filepath.Join(t.TempDir(), "out.csv")
	sent, cpu, out := runTool(t, l, replay, 2*time.Second, nil, "pmacctd", "-i", "vb", "-P", "print", "-O", "csv", "-o", file, "-r", "3600", "-c", "proto")
	var pkts uint64
	testutil.Eventually(t, 10*time.Second, 100*time.Millisecond, func() bool {
		b, err := os.ReadFile(file)
		if err != nil || len(b) == 0 {
			return false
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		hdr := strings.Split(lines[0], ",")
		col := -1
		for i, h := range hdr {
			if h == "PACKETS" {
				col = i
			}
		}
		if col < 0 {
			return false
		}
		pkts = 0
		for _, ln := range lines[1:] {
			f := strings.Split(ln, ",")
			if col < len(f) {
				n, _ := strconv.ParseUint(f[col], 10, 64)
				pkts += n
			}
		}
		return true
	}, "pmacctd wrote no csv: %s", out)
	return sent, pkts, cpu, "(print plugin, PACKETS column)"
}

func runNdpi(t *testing.T, l *benchLab, replay func() uint64) (uint64, uint64, time.Duration, string) {
	sent, cpu, out := runTool(t, l, replay, 2*time.Second, nil, "ndpiReader", "-i", "vb")
	m := regexp.MustCompile(`IP packets:\s+\d+\s+of (\d+) packets total`).FindStringSubmatch(out)
	if m == nil {
		t.Logf("ndpiReader output: %s", out)
		return sent, 0, cpu, "(no summary)"
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return sent, n, cpu, "(summary: packets total)"
}
