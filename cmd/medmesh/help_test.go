package main

import (
	"regexp"
	"strings"
	"testing"
)

// TestHelpListsNoLabCommands: the campus lab and the coordinator benchmark
// are medmesh-lab's (cmd/medmesh-lab); the production binary neither lists
// nor runs them.
func TestHelpListsNoLabCommands(t *testing.T) {
	code, stdout, stderr := runCLI(t, "--help")
	if code != 0 || !strings.Contains(stdout, "coordinator") || !strings.Contains(stdout, "policies") {
		t.Fatalf("medmesh --help: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	for _, name := range []string{"lab", "bench"} {
		if regexp.MustCompile(`(?m)^\s+` + name + `\s`).MatchString(stdout) {
			t.Errorf("medmesh --help lists %s:\n%s", name, stdout)
		}
		if code, _, stderr := runCLI(t, name); code != exitUsage || !strings.Contains(stderr, "unknown command") {
			t.Errorf("medmesh %s: exit %d, stderr %q; want exit %d, unknown command", name, code, stderr, exitUsage)
		}
	}
}
