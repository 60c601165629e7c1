package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/medmesh/medmesh/internal/testutil"
)

// hostSuite is this machine's Debian release (bookworm), which the fresh
// root is made of.
func hostSuite(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		t.Skipf("no /etc/os-release: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VERSION_CODENAME="); ok && v != "" {
			return strings.Trim(v, `"`)
		}
	}
	t.Skip("/etc/os-release names no VERSION_CODENAME: not Debian")
	return ""
}

// TestPackageInstallsOnFreshDebian makes a fresh Debian root with
// mmdebstrap (from the Debian mirror apt uses by default), installs the
// package into it with dpkg, and checks what a hospital's admin would:
// the files, the medmesh system user, the conffiles, the man pages,
// `systemd-analyze verify` of every unit, that the shipped configuration
// parses, and that removing and purging keep the audit data and the user.
// Root and mmdebstrap; about a minute.
func TestPackageInstallsOnFreshDebian(t *testing.T) {
	testutil.RequireRoot(t)
	requireTool(t, "mmdebstrap")
	requireTool(t, "chroot")
	deb := debPackage(t)
	suite := hostSuite(t)
	root := filepath.Join(t.TempDir(), "root")
	mm := exec.Command("mmdebstrap", "--variant=apt", "--mode=root", "--include=systemd,adduser,man-db", suite, root)
	if out, err := mm.CombinedOutput(); err != nil {
		t.Fatalf("mmdebstrap %s: %v (a Debian mirror must be reachable):\n%s", suite, err, tail(out, 30))
	}
	in := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("chroot", append([]string{root}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("in the fresh root: %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	b, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "tmp/medmesh.deb"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("dpkg -i:\n%s", in("dpkg", "-i", "/tmp/medmesh.deb"))

	// The binary runs; the user is a system user without a shell.
	if v := in("medmesh", "version"); !strings.HasPrefix(v, "medmesh 0.0.0-test") {
		t.Errorf("medmesh version: %q", v)
	}
	pw := strings.Split(strings.TrimSpace(in("getent", "passwd", "medmesh")), ":")
	if len(pw) != 7 || pw[5] != "/var/lib/medmesh" || !strings.HasSuffix(pw[6], "nologin") {
		t.Errorf("medmesh user: %v", pw)
	} else if uid := pw[2]; len(uid) > 3 {
		t.Errorf("medmesh uid %s: not a system user", uid)
	}
	in("getent", "group", "medmesh")
	if got := strings.TrimSpace(in("stat", "-c", "%a %U %G", "/etc/medmesh/tls")); got != "750 root medmesh" {
		t.Errorf("/etc/medmesh/tls: %s, want 750 root medmesh", got)
	}
	conf := in("dpkg-query", "-W", "-f=${Conffiles}", "medmesh")
	for _, c := range []string{"/etc/medmesh/coordinator.toml", "/etc/medmesh/node.toml", "/etc/medmesh/enforcer.toml"} {
		if !strings.Contains(conf, c) {
			t.Errorf("dpkg does not know %s as a conffile: %s", c, conf)
		}
	}
	in("man", "-w", "medmesh-coordinator")
	in("test", "-s", "/usr/share/bash-completion/completions/medmesh")

	// Every unit (templates through an instance) verifies clean, man
	// pages of Documentation= included.
	out, err := exec.Command("chroot", root, "systemd-analyze", "verify",
		"medmesh-coordinator.service", "medmesh-node@mirror0.service", "medmesh-enforcer@ward3.service").CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The shipped configuration parses: with every key commented out, the
	// coordinator stops at the missing id, not at the file.
	cmd := exec.Command("chroot", root, "runuser", "-u", "medmesh", "--", "medmesh", "coordinator", "--config", "/etc/medmesh/coordinator.toml")
	out, _ = cmd.CombinedOutput()
	if !strings.Contains(string(out), "--id is required") {
		t.Errorf("coordinator with the shipped config: %s", out)
	}

	// Remove, then purge: the user and /var/lib/medmesh stay (the audit
	// trail outlives the package), the conffiles go on purge.
	in("install", "-d", "-o", "medmesh", "-g", "medmesh", "/var/lib/medmesh/coordinator")
	in("dpkg", "-r", "medmesh")
	in("test", "-f", "/etc/medmesh/coordinator.toml")
	in("test", "!", "-e", "/usr/bin/medmesh")
	in("dpkg", "-P", "medmesh")
	in("test", "!", "-e", "/etc/medmesh/coordinator.toml")
	in("test", "-d", "/var/lib/medmesh/coordinator")
	in("getent", "passwd", "medmesh")
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
