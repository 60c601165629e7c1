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
	code, stdout, stderr := runCLI(t, "rules", "put", file, "--addr", addr, "--expected-version", "1", "--reason", "fewer false positives", "--request-id", "put-1")
	if code != 0 || !strings.Contains(stdout, "version 2") {
		t.Fatalf("put: exit %d: %s%s", code, stdout, stderr)
	}
	// The same request again (a retry whose first answer was lost) gets
	// the first answer: version 2 at the same index, not version 3, and
	// its compare-and-set is not checked again.
	code, again, stderr := runCLI(t, "rules", "put", file, "--addr", addr, "--expected-version", "1", "--reason", "fewer false positives", "--request-id", "put-1")
	if code != 0 || again != stdout {
		t.Fatalf("retried put: exit %d: %q%s, first answer %q", code, again, stderr, stdout)
	}
	code, stdout, stderr = runCLI(t, "rules", "delete", "notify-medium", "--addr", addr, "--reason", "noisy", "--request-id", "del-1")
	if code != 0 {
		t.Fatalf("delete: exit %d: %s%s", code, stdout, stderr)
	}
	if code, again, stderr := runCLI(t, "rules", "delete", "notify-medium", "--addr", addr, "--reason", "noisy", "--request-id", "del-1"); code != 0 || again != stdout {
		t.Fatalf("retried delete: exit %d: %q%s, first answer %q", code, again, stderr, stdout)
	}
	if code, _, stderr := runCLI(t, "rules", "delete", "notify-medium", "--addr", addr); code == 0 || !strings.Contains(stderr, "NotFound") {
		t.Fatalf("a new delete of a deleted rule: exit %d: %s", code, stderr)
	}
	_, out, _ = runCLI(t, "rules", "list", "--addr", addr, "-o", "json")
	if strings.Contains(out, "notify-medium") || !strings.Contains(out, `"min_score": 70`) {
		t.Fatalf("rules after changes:\n%s", out)
	}
	_, out, _ = runCLI(t, "policies", "audit", "--addr", addr)
	// One record per request, however often it was sent.
	if strings.Count(out, "fewer false positives") != 1 || strings.Count(out, "rule.delete") != 1 {
		t.Fatalf("audit trail: want one record of the put and one of the delete:\n%s", out)
	}
}
