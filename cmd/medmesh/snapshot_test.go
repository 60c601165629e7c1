package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/testutil"
)

// field is the value after "key:" in the CLI's output.
func field(out, key string) string {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestSnapshotCLI: save against a running coordinator writes FILE (no
// FILE.partial left); restore prints the same state hash and the next
// command; a damaged copy is refused naming the member and leaves the
// data directory empty; a used data directory is refused.
func TestSnapshotCLI(t *testing.T) {
	dir := t.TempDir()
	o := coordinatorOptions{
		id: "c1", dataDir: filepath.Join(dir, "src"), logLevel: "error", admin: "",
		api:  fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
		raft: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- runCoordinator(ctx, o, io.Discard, ready) }()
	defer func() {
		cancel()
		<-done
	}()
	<-ready
	file := filepath.Join(dir, "backup.snap")
	var code int
	var out, errOut string
	testutil.Eventually(t, 20*time.Second, 200*time.Millisecond, func() bool {
		code, out, errOut = runCLI(t, "snapshot", "save", file, "--addr", o.api)
		return code == 0
	}, "snapshot save: exit %d, %s%s", code, out, errOut)
	if _, err := os.Stat(file + ".partial"); !os.IsNotExist(err) {
		t.Fatalf("%s.partial left behind: %v", file, err)
	}
	hash := field(out, "state hash")
	if len(hash) != 64 || !strings.Contains(out, "from c1") {
		t.Fatalf("save output:\n%s", out)
	}

	// A damaged copy: one bit of the compressed stream flipped.
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x10
	bad := filepath.Join(dir, "bad.snap")
	if err := os.WriteFile(bad, data, 0o600); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "new")
	code, out, errOut = runCLI(t, "snapshot", "restore", bad, "--data-dir", target, "--id", "n1", "--raft", "127.0.0.1:17999")
	if code != exitFailure || !strings.Contains(errOut, "snapshot archive is corrupt") || !strings.Contains(errOut, "member") {
		t.Fatalf("damaged archive: exit %d\n%s%s", code, out, errOut)
	}
	if des, _ := os.ReadDir(target); len(des) != 0 {
		t.Fatalf("a refused restore left %d entries in %s", len(des), target)
	}

	code, out, errOut = runCLI(t, "snapshot", "restore", file, "--data-dir", target, "--id", "n1", "--raft", "127.0.0.1:17999")
	if code != 0 || field(out, "state hash") != hash || !strings.Contains(out, "medmesh coordinator --id n1 --raft 127.0.0.1:17999") {
		t.Fatalf("restore: exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = runCLI(t, "snapshot", "restore", file, "--data-dir", target, "--id", "n1")
	if code != exitFailure || !strings.Contains(errOut, "restore only into a fresh data directory") {
		t.Fatalf("restore into a used directory: exit %d, %s", code, errOut)
	}
	code, _, errOut = runCLI(t, "snapshot", "restore", file)
	if code != exitUsage {
		t.Fatalf("restore without --data-dir: exit %d, %s", code, errOut)
	}
}
