package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestCrossBuild builds the CLI for the operators' laptops: the daemons'
// Linux-only code (XDP, bpffs, network namespaces) must stay behind build
// tags with a stub for other systems.
func TestCrossBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("cross builds of the CLI take seconds with a warm build cache, a minute or more without; -short skips them")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build with: %v", err)
	}
	for _, target := range []struct{ goos, goarch string }{
		{"darwin", "arm64"},
		{"windows", "amd64"},
	} {
		t.Run(target.goos+"_"+target.goarch, func(t *testing.T) {
			cmd := exec.Command(gobin, "build", "-o", filepath.Join(t.TempDir(), "medmesh"), ".")
			cmd.Env = append(os.Environ(), "GOOS="+target.goos, "GOARCH="+target.goarch, "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("GOOS=%s GOARCH=%s go build ./cmd/medmesh: %v\n%s", target.goos, target.goarch, err, out)
			}
		})
	}
}
