package main

import (
	"strconv"
	"testing"

	"github.com/medmesh/medmesh/internal/testutil"
)

// TestDaemonsNeedLinux plays a darwin build: the commands that need XDP or
// network namespaces fail before doing anything, saying so; the operator
// commands run as on Linux.
func TestDaemonsNeedLinux(t *testing.T) {
	old := goos
	goos = "darwin"
	t.Cleanup(func() { goos = old })

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"node", "--iface", "eth0"}, "the sensor node needs Linux (XDP)"},
		{[]string{"enforcer", "--id", "e1", "--iface", "eth0", "--coordinator", "127.0.0.1:7400"}, "the enforcer needs Linux (XDP)"},
		{[]string{"enforcer", "--id", "e1", "--uninstall"}, "the enforcer needs Linux (XDP)"},
		{[]string{"replay", "--pcap", "capture.pcap"}, "replay needs Linux (it runs the sensor's XDP program)"},
	} {
		code, stdout, stderr := runCLI(t, tc.args...)
		want := "medmesh: " + tc.want + "; this build is for darwin"
		if code != exitFailure || oneLine(t, stderr) != want || stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and %q", tc.args, code, stdout, stderr, exitFailure, want)
		}
	}

	if code, stdout, stderr := runCLI(t, "version"); code != 0 || stdout == "" {
		t.Errorf("version: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	addr := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	code, _, stderr := runCLI(t, "cluster", "status", "--addr", addr, "--timeout", "3s")
	if want := "medmesh: cannot reach coordinator at " + addr + ": connection refused"; code != exitFailure || oneLine(t, stderr) != want {
		t.Errorf("cluster status: exit %d, stderr %q; want %q", code, stderr, want)
	}
}
