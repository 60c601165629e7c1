// Package testutil holds helpers shared by the project's tests.
package testutil

import (
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Eventually calls cond every tick until it returns true or timeout passes,
// then fails the test with msg.
func Eventually(t testing.TB, timeout, tick time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("eventually: "+msg, args...)
		}
		time.Sleep(tick)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for
// a server the test starts later. It is picked at random below the kernel's
// ephemeral range (net.ipv4.ip_local_port_range), where neither outgoing
// connections nor listeners on port 0 get their ports: with packages tested
// in parallel, a port from that range was sometimes taken by another
// process's connection between this check and the test's own bind. A
// port is handed out once per process: a test that picks several ports
// before it binds any (a cluster's API and Raft ports) never gets one
// twice. Only another process's FreePort can still pick the same port.
func FreePort(t testing.TB) int {
	t.Helper()
	lo := ephemeralLow()
	for range 200 {
		p := freePortMin + rand.IntN(lo-freePortMin)
		if !handOut(p) {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		l.Close()
		return p
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var (
	handedMu sync.Mutex
	handed   = map[int]bool{}
)

// handOut records p as handed out by this process; false if it was before.
func handOut(p int) bool {
	handedMu.Lock()
	defer handedMu.Unlock()
	if handed[p] {
		return false
	}
	handed[p] = true
	return true
}

// freePortMin is the lowest port FreePort picks: above the registered
// services most hosts run.
const freePortMin = 20000

// ephemeralLow is the first port of the kernel's ephemeral range, 32768
// (Linux's default) if it cannot be read or leaves no room below it.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil || lo < freePortMin+1000 {
		return 32768
	}
	return lo
}

// Captures returns ../shared/testdata/pcap/sub from the module root (the
// captures other projects publish, see that folder's README), or skips the
// test when they are absent.
func Captures(t testing.TB, sub string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("module root (go.mod) not found")
		}
		dir = parent
	}
	p := filepath.Join(dir, "..", "shared", "testdata", "pcap", sub)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("captures absent at %s: %v", p, err)
	}
	return p
}

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if !IsRoot() {
		t.Skip("skipped: needs root (privileged tier)")
	}
}
