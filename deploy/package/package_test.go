package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/testutil"
)

func TestDebVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.0":           "1.2.0",
		"1.2.0":            "1.2.0",
		"v1.2.0-3-gabc123": "1.2.0+3+gabc123",
		"29e0321":          "0.0.0~git29e0321",
		"29e0321-dirty":    "0.0.0~git29e0321+dirty",
	} {
		got, err := debVersion(in)
		if err != nil || got != want {
			t.Errorf("debVersion(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "v", "1.0 beta", "1.0_rc"} {
		if v, err := debVersion(bad); err == nil {
			t.Errorf("debVersion(%q) = %q, want an error", bad, v)
		}
	}
}

// medmeshBinary builds medmesh once per test run (as make package does:
// static, PIE, stripped), or uses MEDMESH_PACKAGE_BIN.
var medmeshBinary = sync.OnceValues(func() (string, error) {
	if p := os.Getenv("MEDMESH_PACKAGE_BIN"); p != "" {
		return p, nil
	}
	dir, err := os.MkdirTemp("", "medmesh-package-bin-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "medmesh")
	cmd := exec.Command("go", "build", "-trimpath", "-buildmode=pie", "-ldflags", "-s -w -X main.version=0.0.0-test", "-o", out, "../../cmd/medmesh")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, b)
	}
	return out, nil
})

// builtPackage builds the amd64 package once per test run.
var builtPackage = sync.OnceValues(func() (string, error) {
	bin, err := medmeshBinary()
	if err != nil {
		return "", err
	}
	out, err := os.MkdirTemp("", "medmesh-package-out-")
	if err != nil {
		return "", err
	}
	return build(spec{Version: "v0.0.0-test", Arch: "amd64", Binary: bin, DocsFrom: bin, OutDir: out,
		MTime: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)})
})

func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s is not installed (make deps installs it): %v", name, err)
	}
}

func debPackage(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: building the package takes a minute")
	}
	p, err := builtPackage()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// TestPackageContents reads the built .deb back with dpkg-deb: control
// fields, conffiles, maintainer scripts and every file the issue asks for.
func TestPackageContents(t *testing.T) {
	requireTool(t, "dpkg-deb")
	deb := debPackage(t)
	if got := filepath.Base(deb); got != "medmesh_0.0.0+test_amd64.deb" {
		t.Errorf("file name %s", got)
	}
	for field, want := range map[string]string{"Package": "medmesh", "Architecture": "amd64", "Version": "0.0.0+test", "Depends": "adduser"} {
		if got := strings.TrimSpace(output(t, "dpkg-deb", "--field", deb, field)); got != want {
			t.Errorf("%s: %q, want %q", field, got, want)
		}
	}
	conffiles := strings.Fields(output(t, "dpkg-deb", "--info", deb, "conffiles"))
	if want := []string{"/etc/medmesh/coordinator.toml", "/etc/medmesh/enforcer.toml", "/etc/medmesh/node.toml"}; !slices.Equal(conffiles, want) {
		t.Errorf("conffiles %v, want %v", conffiles, want)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if !strings.HasPrefix(output(t, "dpkg-deb", "--info", deb, s), "#!/bin/sh") {
			t.Errorf("%s missing", s)
		}
	}
	listing := output(t, "dpkg-deb", "--contents", deb)
	var paths []string
	for _, line := range strings.Split(listing, "\n") {
		if f := strings.Fields(line); len(f) >= 6 {
			paths = append(paths, strings.TrimPrefix(f[5], "."))
		}
	}
	for _, want := range []string{
		"/usr/bin/medmesh",
		"/usr/share/man/man1/medmesh.1.gz",
		"/usr/share/man/man1/medmesh-coordinator.1.gz",
		"/usr/share/man/man1/medmesh-node.1.gz",
		"/usr/share/man/man1/medmesh-enforcer.1.gz",
		"/usr/share/bash-completion/completions/medmesh",
		"/usr/share/zsh/vendor-completions/_medmesh",
		"/usr/share/fish/vendor_completions.d/medmesh.fish",
		"/lib/systemd/system/medmesh-coordinator.service",
		"/lib/systemd/system/medmesh-node@.service",
		"/lib/systemd/system/medmesh-enforcer@.service",
		"/usr/share/doc/medmesh/copyright",
		"/usr/share/doc/medmesh/changelog.gz",
	} {
		if !slices.Contains(paths, want) {
			t.Errorf("the package lacks %s", want)
		}
	}
	if slices.Contains(paths, "/usr/share/man/man1/medmesh-gen-man.1.gz") {
		t.Error("the hidden gen-man command got a man page")
	}
}

// TestPackageLintian: lintian reports no errors (warnings are printed).
func TestPackageLintian(t *testing.T) {
	requireTool(t, "lintian")
	deb := debPackage(t)
	out, err := exec.Command("lintian", "--tag-display-limit", "0", deb).CombinedOutput()
	t.Logf("lintian:\n%s", out)
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "E: ") {
			t.Errorf("lintian error: %s", line)
		}
	}
	if err != nil && !strings.Contains(string(out), "E: ") {
		t.Fatalf("lintian: %v", err)
	}
}

// TestUnitsAreHardened reads the shipped units: the hardening the issue
// asks for, and the capabilities TestNodeCapabilities and
// TestEnforcerCapabilities prove are needed.
func TestUnitsAreHardened(t *testing.T) {
	common := []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "ProtectKernelModules=yes"}
	for unit, want := range map[string][]string{
		"medmesh-coordinator.service": {"User=medmesh", "CapabilityBoundingSet=", "AmbientCapabilities=", "StateDirectory=medmesh", "ExecStart=/usr/bin/medmesh coordinator --config /etc/medmesh/coordinator.toml"},
		"medmesh-node@.service":       {"User=medmesh", "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON", "AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON", "StateDirectory=medmesh"},
		"medmesh-enforcer@.service":   {"CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON", "AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON", "ReadWritePaths=/sys/fs/bpf"},
	} {
		b, err := assets.ReadFile("systemd/" + unit)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for _, w := range append(common, want...) {
			if !slices.Contains(lines, w) {
				t.Errorf("%s lacks the line %q", unit, w)
			}
		}
	}
}

// unitCaps returns the AmbientCapabilities of a shipped unit as setpriv
// spells them (+bpf,+net_admin,...).
func unitCaps(t *testing.T, unit string) []string {
	t.Helper()
	b, err := assets.ReadFile("systemd/" + unit)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "AmbientCapabilities="); ok {
			var caps []string
			for _, c := range strings.Fields(v) {
				caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
			}
			return caps
		}
	}
	t.Fatalf("%s has no AmbientCapabilities", unit)
	return nil
}

// capNetns makes a network namespace with a veth pair (v0, v1), up, and
// removes it when the test ends. Not named mm-*: it is not the lab's.
func capNetns(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("pkgcap-%d", os.Getpid())
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1"},
		{"-n", ns, "link", "set", "v0", "up"},
		{"-n", ns, "link", "set", "v1", "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	return ns
}

// runWithCaps runs medmesh in netns ns (nsenter keeps the host's /sys and
// bpffs, as systemd does) with exactly caps, as uid (0 or 65534), until
// the line `until` appears in its log or it exits; it returns the log.
func runWithCaps(t *testing.T, ns string, uid int, caps []string, args ...string) (string, bool) {
	t.Helper()
	bin, err := medmeshBinary()
	if err != nil {
		t.Fatal(err)
	}
	set := "-all"
	if len(caps) > 0 {
		set += "," + strings.Join(caps, ",")
	}
	sp := []string{"--net=/run/netns/" + ns, "setpriv"}
	if uid != 0 {
		sp = append(sp, "--reuid", fmt.Sprint(uid), "--regid", fmt.Sprint(uid), "--clear-groups")
	}
	sp = append(sp, "--inh-caps", set, "--ambient-caps", set, "--bounding-set", set, "--no-new-privs", bin)
	cmd := exec.Command("nsenter", append(sp, args...)...)
	var log syncBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	attached := regexp.MustCompile(`msg="(sensor datapath|enforcer) attached"`)
	deadline := time.After(20 * time.Second)
	for {
		select {
		case <-exited:
			return log.String(), attached.MatchString(log.String())
		case <-deadline:
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("medmesh %s neither attached nor exited in 20s:\n%s", strings.Join(args, " "), log.String())
		case <-time.After(50 * time.Millisecond):
			if attached.MatchString(log.String()) {
				_ = cmd.Process.Signal(os.Interrupt)
				<-exited
				return log.String(), true
			}
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// checkLeastCaps: with the unit's capabilities the daemon attaches; with
// any one of them dropped it does not, so each is needed.
func checkLeastCaps(t *testing.T, unit string, uid int, args func() []string, cleanup func()) {
	testutil.RequireRoot(t)
	requireTool(t, "setpriv")
	requireTool(t, "nsenter")
	caps := unitCaps(t, unit)
	if len(caps) == 0 {
		t.Fatalf("%s grants no capability", unit)
	}
	ns := capNetns(t)
	log, ok := runWithCaps(t, ns, uid, caps, args()...)
	cleanup()
	if !ok {
		t.Fatalf("with %v (the unit's) it did not attach:\n%s", caps, log)
	}
	t.Logf("with %v: attached", caps)
	for i := range caps {
		fewer := slices.Delete(slices.Clone(caps), i, i+1)
		log, ok := runWithCaps(t, ns, uid, fewer, args()...)
		cleanup()
		if ok {
			t.Errorf("without %s it still attached: the unit grants more than it needs", caps[i])
			continue
		}
		last := strings.TrimSpace(log)
		if i := strings.LastIndex(last, "\n"); i >= 0 {
			last = last[i+1:]
		}
		t.Logf("without %s: %.200s", caps[i], last)
	}
}

// TestNodeCapabilities runs `medmesh node` as an unprivileged user with
// medmesh-node@.service's capabilities, and with each one missing.
func TestNodeCapabilities(t *testing.T) {
	spool := t.TempDir()
	if testutil.IsRoot() {
		if err := os.Chown(spool, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	checkLeastCaps(t, "medmesh-node@.service", 65534, func() []string {
		return []string{"node", "--id", "s1", "--iface", "v0", "--spool-dir", spool, "--admin", ""}
	}, func() {})
}

// TestEnforcerCapabilities runs `medmesh enforcer` as root with only
// medmesh-enforcer@.service's capabilities, and with each one missing; its
// pins go into the host's bpffs and are removed after each run.
func TestEnforcerCapabilities(t *testing.T) {
	id := fmt.Sprintf("pkgcap%d", os.Getpid())
	bin, err := medmeshBinary()
	if err != nil {
		t.Fatal(err)
	}
	uninstall := func() {
		if out, err := exec.Command(bin, "enforcer", "--id", id, "--uninstall").CombinedOutput(); err != nil {
			t.Errorf("uninstall: %v: %s", err, out)
		}
	}
	checkLeastCaps(t, "medmesh-enforcer@.service", 0, func() []string {
		return []string{"enforcer", "--id", id, "--iface", "v1", "--coordinator", "127.0.0.1:1", "--admin", "127.0.0.1:0"}
	}, uninstall)
}
