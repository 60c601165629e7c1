package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/testutil"
)

// TestRulesListPutDelete drives `medmesh rules` against a dev coordinator:
// the seeded defaults are listed, a rule is replaced with compare-and-set
// and deleted, and the audit trail names each change.
func TestRulesListPutDelete(t *testing.T) {
	addr := startDevCoordinator(t)
	var out string
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool {
		_, out, _ = runCLI(t, "rules", "list", "--addr", addr)
		return strings.Contains(out, "quarantine-scanner")
	}, "default rules not seeded: %s", out)
	if !regexp.MustCompile(`quarantine-scanner\s+scan\s+50\s`).MatchString(out) {
		t.Fatalf("rules list:\n%s", out)
	}
	file := filepath.Join(t.TempDir(), "r.json")
	doc := `{"name": "quarantine-scanner", "kinds": ["scan"], "min_score": 70, "action": "DECISION_ACTION_QUARANTINE"}`
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI(t, "rules", "put", file, "--addr", addr, "--expected-version", "5", "--reason", "stale"); code == 0 {
		t.Fatal("stale compare-and-set accepted")
	} else if !strings.Contains(stderr, "Aborted") && !strings.Contains(stderr, "version") {
		t.Fatalf("stale put: %s", stderr)
	}
	code, stdout, stderr := runCLI(t, "rules", "put", file, "--addr", addr, "--expected-version", "1", "--reason", "fewer false positives")
	if code != 0 || !strings.Contains(stdout, "version 2") {
		t.Fatalf("put: exit %d: %s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := runCLI(t, "rules", "delete", "notify-medium", "--addr", addr, "--reason", "noisy"); code != 0 {
		t.Fatalf("delete: exit %d: %s%s", code, stdout, stderr)
	}
	_, out, _ = runCLI(t, "rules", "list", "--addr", addr, "-o", "json")
	if strings.Contains(out, "notify-medium") || !strings.Contains(out, `"min_score": 70`) {
		t.Fatalf("rules after changes:\n%s", out)
	}
	_, out, _ = runCLI(t, "policies", "audit", "--addr", addr)
	if !strings.Contains(out, "rule.put") || !strings.Contains(out, "rule.delete") {
		t.Fatalf("audit trail:\n%s", out)
	}
}
