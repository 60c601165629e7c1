//go:build linux

package xdp

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/medmesh/medmesh/internal/testutil"
)

func TestCheckPinDir(t *testing.T) {
	for _, dir := range []string{"/sys/fs/bpf/medmesh/e1", "/sys/fs/bpf/medmesh/../medmesh/e1/", "/sys/fs/bpf/x"} {
		if _, err := CheckPinDir(dir); err != nil {
			t.Errorf("%s: %v", dir, err)
		}
	}
	for dir, want := range map[string]string{
		"/tmp/x":                       "is not under /sys/fs/bpf",
		"medmesh/e1":                   "not an absolute path",
		"/sys/fs/bpf":                  "is not under /sys/fs/bpf",
		"/sys/fs/bpf/":                 "is not under /sys/fs/bpf",
		"/sys/fs/bpf/medmesh/../../..": "is not under /sys/fs/bpf",
		"/sys/fs/bpf/../../../tmp":     "is not under /sys/fs/bpf",
		"/sys/fs/bpfx/e1":              "is not under /sys/fs/bpf",
		"/":                            "is not under /sys/fs/bpf",
	} {
		if _, err := CheckPinDir(dir); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want %q", dir, err, want)
		}
	}
}

// TestUnpinRemovesOnlyOwnPins: Unpin removes the pins Load made, by name,
// and leaves a foreign pin in the same directory (and so the directory).
// Before, it removed every file of any directory it was given.
func TestUnpinRemovesOnlyOwnPins(t *testing.T) {
	testutil.RequireRoot(t)
	cfg := pinnedConfig(t)
	d, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	names, err := PinNames()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(cfg.PinDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatal("Load pinned nothing")
	}
	for _, e := range entries {
		if !slices.Contains(names, e.Name()) {
			t.Errorf("Load pinned %s, which PinNames does not list: Unpin would leave it", e.Name())
		}
	}
	// A map pinned by someone else in the same directory.
	foreign, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	foreignPath := filepath.Join(cfg.PinDir, "not-medmesh")
	if err := foreign.Pin(foreignPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { foreign.Unpin() })
	kept, err := Unpin(cfg.PinDir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(kept, []string{"not-medmesh"}) {
		t.Fatalf("kept %v, want [not-medmesh]", kept)
	}
	if _, err := os.Stat(foreignPath); err != nil {
		t.Fatalf("foreign pin removed: %v", err)
	}
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(cfg.PinDir, e.Name())); !os.IsNotExist(err) {
			t.Errorf("own pin %s not removed: %v", e.Name(), err)
		}
	}
	// Once the foreign pin is gone, the directory goes too.
	if err := foreign.Unpin(); err != nil {
		t.Fatal(err)
	}
	if kept, err := Unpin(cfg.PinDir); err != nil || len(kept) != 0 {
		t.Fatalf("second unpin: kept %v, %v", kept, err)
	}
	if _, err := os.Stat(cfg.PinDir); !os.IsNotExist(err) {
		t.Fatalf("empty pin dir not removed: %v", err)
	}
}

// TestUnpinRefusesOrdinaryDirectory: a directory outside bpffs is refused
// and keeps its files.
func TestUnpinRefusesOrdinaryDirectory(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "patient-records.db")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Unpin(dir); err == nil || !strings.Contains(err.Error(), "is not under /sys/fs/bpf") {
		t.Fatalf("unpin %s: %v", dir, err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("file removed: %v", err)
	}
}

// TestUnpinRefusesSymlinkOut: a bpffs symbolic link to an ordinary
// directory is refused too.
func TestUnpinRefusesSymlinkOut(t *testing.T) {
	testutil.RequireRoot(t)
	if err := ensureBPFFS(filepath.Join(BPFFS, "medmesh")); err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	file := filepath.Join(target, "maps") // a pin name Unpin would remove
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(BPFFS, "medmesh-test-link-"+filepath.Base(t.TempDir()))
	if err := os.Symlink(target, link); err != nil {
		t.Skipf("skipped: bpffs takes no symbolic links: %v", err)
	}
	t.Cleanup(func() { os.Remove(link) })
	if _, err := Unpin(link); err == nil || !strings.Contains(err.Error(), "not under /sys/fs/bpf") {
		t.Fatalf("unpin %s -> %s: %v", link, target, err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("file behind the link removed: %v", err)
	}
}
