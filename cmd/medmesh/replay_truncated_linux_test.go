//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/medmesh/medmesh/internal/testutil"
)

// packetStarts returns the offset of each packet record (pcap) or packet
// block (pcapng) of a little-endian capture, by framing alone.
func packetStarts(t *testing.T, data []byte) []int {
	t.Helper()
	var starts []int
	if binary.LittleEndian.Uint32(data) != 0x0a0d0d0a {
		for off := 24; off+16 <= len(data); off += 16 + int(binary.LittleEndian.Uint32(data[off+8:])) {
			starts = append(starts, off)
		}
		return starts
	}
	for off := 0; off+8 <= len(data); off += int(binary.LittleEndian.Uint32(data[off+4:])) {
		if typ := binary.LittleEndian.Uint32(data[off:]); typ == 6 || typ == 3 || typ == 2 {
			starts = append(starts, off)
		}
	}
	return starts
}

// TestReplayTruncatedCapture runs `medmesh replay` on real captures cut
// inside the last packet and inside its header: it prints the flows of
// the packets before the cut and exits non-zero with "truncated after N
// packets". Before, a cut pcap printed no flows and a cut pcapng printed
// some and exited 0 without a word.
func TestReplayTruncatedCapture(t *testing.T) {
	testutil.RequireRoot(t)
	for _, name := range []string{"ndpi/hl7.pcap", "ndpi/custom_rules_ipv6.pcapng"} {
		src := filepath.Join("..", "..", "..", "shared", "testdata", "pcap", name)
		data, err := os.ReadFile(src)
		if os.IsNotExist(err) {
			t.Skipf("skipped: capture %s absent", src)
		}
		if err != nil {
			t.Fatal(err)
		}
		code, full, stderr := runCLI(t, "replay", "--pcap", src)
		if code != 0 || full == "" {
			t.Fatalf("%s uncut: exit %d, stderr %s", name, code, stderr)
		}
		fullFlows := strings.Count(full, "\n")
		starts := packetStarts(t, data)
		last := starts[len(starts)-1]
		for what, cut := range map[string]int{
			"mid-packet": last + 30 + (len(data)-last-30)/2, // inside the last packet's bytes
			"mid-header": last + 7,                          // inside its record or block header
		} {
			path := filepath.Join(t.TempDir(), filepath.Base(name))
			if err := os.WriteFile(path, data[:cut], 0o600); err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := runCLI(t, "replay", "--pcap", path)
			want := fmt.Sprintf("truncated after %d packets", len(starts)-1)
			if code == 0 || !strings.Contains(stderr, want) {
				t.Errorf("%s %s: exit %d, stderr %q; want non-zero and %q", name, what, code, stderr, want)
			}
			flows := strings.Count(stdout, "\n")
			if flows == 0 || flows > fullFlows {
				t.Errorf("%s %s: %d flows printed, want 1..%d (the flows before the cut)", name, what, flows, fullFlows)
			}
			t.Logf("%s %s at byte %d: %d of %d flows, %s", name, what, cut, flows, fullFlows, strings.TrimSpace(stderr))
		}
	}
}
