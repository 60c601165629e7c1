package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeTrail writes a three-record audit trail the way a coordinator does
// (SHA-256 over prev, seq and body) into dataDir/audit.
func writeTrail(t *testing.T, dataDir string) string {
	t.Helper()
	dir := filepath.Join(dataDir, "audit")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var prev [32]byte
	var b strings.Builder
	for seq := uint64(1); seq <= 3; seq++ {
		body := fmt.Sprintf(`{"index":%d,"time":"2025-01-01T00:00:00Z","actor":"operator/alice","action":"policy.put","resource":"policy/p%d"}`, 10+seq, seq)
		h := sha256.New()
		h.Write(prev[:])
		h.Write(binary.BigEndian.AppendUint64(nil, seq))
		h.Write([]byte(body))
		sum := [32]byte(h.Sum(nil))
		fmt.Fprintf(&b, `{"seq":%d,"prev":"%x","hash":"%x","body":%s}`+"\n", seq, prev, sum, body)
		prev = sum
	}
	path := filepath.Join(dir, "00000001.seg")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestAuditVerify(t *testing.T) {
	dataDir := t.TempDir()
	seg := writeTrail(t, dataDir)
	code, out, errOut := runCLI(t, "audit", "verify", "--data-dir", dataDir)
	if code != 0 || !strings.Contains(out, "records:     3") || !strings.Contains(out, "verified") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	// One byte of the second record changed: caught there.
	data, _ := os.ReadFile(seg)
	i := strings.Index(string(data), "policy/p2")
	data[i+len("policy/p")] = '9'
	if err := os.WriteFile(seg, data, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCLI(t, "audit", "verify", "--data-dir", dataDir)
	if code != exitFailure || !strings.Contains(out, "BROKEN:      00000001.seg line 2 (record 2)") {
		t.Fatalf("tampered: exit %d\n%s", code, out)
	}
	if code, _, _ := runCLI(t, "audit", "verify"); code != exitUsage {
		t.Fatalf("no --data-dir: exit %d, want %d", code, exitUsage)
	}
}
