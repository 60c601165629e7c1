package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/testutil"
)

// TestSinksPutListTestStatusDelete drives `medmesh sinks` against a dev
// coordinator and a TCP syslog receiver (octet-counted frames): the sink is
// stored (a retried put applies once), listed, sent a test event and the
// audit record of its own creation, reported by status, and deleted.
func TestSinksPutListTestStatusDelete(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	frames := make(chan string, 100)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				r := bufio.NewReader(c)
				for {
					n, err := r.ReadString(' ')
					if err != nil {
						return
					}
					size, err := strconv.Atoi(strings.TrimSpace(n))
					if err != nil || size <= 0 || size > 1<<20 {
						return
					}
					buf := make([]byte, size)
					if _, err := io.ReadFull(r, buf); err != nil {
						return
					}
					frames <- string(buf)
				}
			}()
		}
	}()
	addr := startDevCoordinator(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "siem.json")
	doc := `{"name": "siem", "kind": "SINK_KIND_SYSLOG", "address": "` + lis.Addr().String() + `"}`
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"name": "siem", "kind": "SINK_KIND_SYSLOG", "address": "x", "hmacKey": "s3cret"}`), 0o600)
	if code, _, stderr := runCLI(t, "sinks", "put", bad, "--addr", addr); code == 0 || !strings.Contains(stderr, "unknown field") || strings.Contains(stderr, "s3cret") {
		t.Fatalf("bad sink file: exit %d: %s", code, stderr)
	}
	code, stdout, stderr := runCLI(t, "sinks", "put", file, "--addr", addr, "--reason", "SIEM", "--request-id", "put-1")
	if code != 0 || !strings.Contains(stdout, "sink siem stored: version 1") {
		t.Fatalf("put: exit %d: %s%s", code, stdout, stderr)
	}
	if code, again, _ := runCLI(t, "sinks", "put", file, "--addr", addr, "--reason", "SIEM", "--request-id", "put-1"); code != 0 || again != stdout {
		t.Fatalf("retried put: %q, first %q", again, stdout)
	}
	_, out, _ := runCLI(t, "sinks", "list", "--addr", addr)
	if !strings.Contains(out, "siem") || !strings.Contains(out, "syslog") || !strings.Contains(out, "cef") || !strings.Contains(out, lis.Addr().String()) {
		t.Fatalf("list:\n%s", out)
	}
	// The sink delivers its own creation's audit record.
	select {
	case f := <-frames:
		if !strings.Contains(f, "CEF:0|medmesh|medmesh|") || !strings.Contains(f, "act=sink.put") || !strings.Contains(f, "cs1=sink/siem") {
			t.Fatalf("first frame: %q", f)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sink.put audit record was not delivered")
	}
	code, out, stderr = runCLI(t, "sinks", "test", "siem", "--addr", addr)
	if code != 0 || !strings.Contains(out, "delivered") {
		t.Fatalf("test: exit %d: %s%s", code, out, stderr)
	}
	select {
	case f := <-frames:
		if !strings.Contains(f, "externalId=test/") || !strings.Contains(f, "act=sink.test") {
			t.Fatalf("test frame: %q", f)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the test event was not delivered")
	}
	testutil.Eventually(t, 10*time.Second, 100*time.Millisecond, func() bool {
		_, out, _ = runCLI(t, "sinks", "status", "--addr", addr)
		return strings.Contains(out, "siem") && strings.Contains(out, "false") && strings.Contains(out, "delivered by")
	}, "status:\n%s", out)
	code, out, stderr = runCLI(t, "sinks", "delete", "siem", "--addr", addr, "--reason", "replaced")
	if code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("delete: exit %d: %s%s", code, out, stderr)
	}
	_, out, _ = runCLI(t, "policies", "audit", "--resource", "sink/siem", "--addr", addr)
	if !strings.Contains(out, "sink.put") || !strings.Contains(out, "sink.delete") || strings.Count(out, "sink.put") != 1 {
		t.Fatalf("audit of sink/siem (one put: the retry applied once, and a delete):\n%s", out)
	}
}
