package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEnforcerUninstallStaysInBPFFS: `medmesh enforcer --uninstall` with
// an id or a pin dir that leaves the bpffs directory is refused with a
// usage error and deletes nothing. Before, `--pin-dir DIR` or
// `--id ../../..` removed every file of that directory.
func TestEnforcerUninstallStaysInBPFFS(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "keep.txt")
	if err := os.WriteFile(file, []byte("not medmesh's"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--id", "../../.."}, `--id: id "../../..": want 1-64 characters of [A-Za-z0-9._-] without ".."`},
		{[]string{"--id", ".."}, `--id: id ".."`},
		{[]string{"--id", "."}, `--id: id "."`},
		{[]string{"--id", "e1/../../x"}, `--id: id "e1/../../x"`},
		{[]string{"--id", strings.Repeat("e", 65)}, `--id: id`},
		{[]string{"--id", "e1", "--pin-dir", dir}, `--pin-dir: pin dir "` + dir + `" is not under /sys/fs/bpf`},
		{[]string{"--id", "e1", "--pin-dir", "/sys/fs/bpf/../../.." + dir}, `is not under /sys/fs/bpf`},
		{[]string{"--id", "e1", "--pin-dir", "/sys/fs/bpf"}, `is not under /sys/fs/bpf`},
	} {
		args := append([]string{"enforcer", "--uninstall"}, c.args...)
		code, stdout, stderr := runCLI(t, args...)
		if code != exitUsage || !strings.Contains(stderr, c.want) || strings.Contains(stdout, "uninstalled") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and %q", c.args, code, stdout, stderr, exitUsage, c.want)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "not medmesh's" {
		t.Fatalf("foreign file: %q, %v", b, err)
	}
}
