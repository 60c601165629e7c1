package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// startDevCoordinator runs `medmesh coordinator --dev` in process on free
// ports and returns its API address once it serves.
func startDevCoordinator(t *testing.T) string {
	t.Helper()
	return startCoordinator(t, coordinatorOptions{dev: true}).api
}

// devClient starts a --dev coordinator and returns its API address and a
// plaintext client connection to it, closed when the test ends.
func devClient(t *testing.T) (string, *grpc.ClientConn) {
	t.Helper()
	addr := startDevCoordinator(t)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return addr, conn
}

// startCoordinator runs `medmesh coordinator` in process with o, taking free
// loopback ports for the API, Raft and admin addresses o leaves empty, and
// returns the options it ran with once the API serves. It stops the
// coordinator when the test ends, failing the test if it exits with an error.
func startCoordinator(t *testing.T, o coordinatorOptions) coordinatorOptions {
	t.Helper()
	for _, a := range []*string{&o.api, &o.raft, &o.admin} {
		if *a == "" {
			*a = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
		}
	}
	if o.logLevel == "" {
		o.logLevel = "warn"
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- runCoordinator(ctx, o, io.Discard, ready) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("coordinator exited: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("coordinator not ready within 10s")
	}
	return o
}

// syncBuffer is a bytes.Buffer safe for a writer and a concurrent reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// reportBatch sends n scan alerts as one sensor batch: one Raft command,
// so every alert of it shares one Raft index.
func reportBatch(t *testing.T, conn *grpc.ClientConn, sensor string, seq uint64, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := medmeshv1.NewSensorServiceClient(conn).Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &medmeshv1.ReportRequest{SensorId: sensor}
	for i := range n {
		mac := fmt.Sprintf("02:00:00:00:%02x:%02x", seq%256, i)
		req.Records = append(req.Records, &medmeshv1.SensorRecord{Seq: seq + uint64(i), Record: &medmeshv1.SensorRecord_Alert{Alert: &medmeshv1.Alert{
			SensorId: sensor, DeviceMac: mac, Kind: "scan",
			Risk: &medmeshv1.RiskScore{Score: 95, Factors: []*medmeshv1.RiskFactor{{Name: "scan", Weight: 95}}},
			Flow: &medmeshv1.FlowRef{Src: fmt.Sprintf("10.9.%d.%d", seq%256, i), Dst: "10.9.255.1", Proto: 6, Dport: 22}}}})
	}
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	if resp.GetAckedSeq() != seq+uint64(n)-1 {
		t.Fatalf("acked %d, want %d", resp.GetAckedSeq(), seq+uint64(n)-1)
	}
	_ = stream.CloseSend()
}

type record struct {
	ID    string `json:"id"`
	Index string `json:"index"`
	// A device posture's (risk watch): many share an index.
	DeviceMac string `json:"device_mac"`
}

// runWatch runs a watch verb in process until it printed want records (or
// the deadline), then stops it as Ctrl-C would.
func runWatch(t *testing.T, want int, args ...string) []record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	root := newRootCmd()
	var out, errOut syncBuffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	var recs []record
	testutil.Eventually(t, 15*time.Second, 20*time.Millisecond, func() bool {
		recs = parseLines(t, out.String())
		return len(recs) >= want
	}, "%v printed %d records, want %d; stderr %q", args, len(recs), want, errOut.String())
	// Nothing more arrives: the watch printed each record once.
	time.Sleep(300 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return parseLines(t, out.String())
}

func parseLines(t *testing.T, s string) []record {
	t.Helper()
	var recs []record
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if line == "" {
			continue
		}
		var r record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

// watchVerbs is every "watch" subcommand of the CLI, by parent ("alerts").
func watchVerbs(root *cobra.Command) []string {
	var out []string
	for _, c := range root.Commands() {
		for _, sub := range c.Commands() {
			if sub.Name() == "watch" {
				out = append(out, c.Name())
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestWatchMatchesList: every watch verb prints the same records, in the
// same order, as its list verb, against a real --dev coordinator. The
// alerts come in sensor batches, many alerts per Raft index (the bug that
// made `alerts watch` print 4 of 95).
func TestWatchMatchesList(t *testing.T) {
	addr, conn := devClient(t)
	t.Setenv("MEDMESH_ADDR", addr)
	reportBatch(t, conn, "s1", 1, 40)
	reportBatch(t, conn, "s2", 1, 55)
	reportBatch(t, conn, "s1", 41, 3)

	// Devices that send HL7 in clear: the leader commits their postures
	// (cleartext_phi_protocol) without any bundle, in one batch.
	rs, err := medmeshv1.NewSensorServiceClient(conn).Report(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	devReq := &medmeshv1.ReportRequest{SensorId: "s3"}
	for i := range 5 {
		devReq.Records = append(devReq.Records, &medmeshv1.SensorRecord{Seq: uint64(i + 1), Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{
			Device: &medmeshv1.Device{Mac: fmt.Sprintf("02:00:00:00:ee:%02x", i), Protocols: []string{"hl7"}}}}})
	}
	if err := rs.Send(devReq); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Recv(); err != nil {
		t.Fatal(err)
	}
	_ = rs.CloseSend()

	list := func(verb string) []record {
		if verb == "risk" {
			// The postures top lists, in commit order: what watch sends.
			code, stdout, stderr := runCLI(t, "risk", "top", "-n", "1000", "-o", "json")
			if code != 0 {
				t.Fatalf("risk top: exit %d: %s", code, stderr)
			}
			var resp struct {
				Postures []record `json:"postures"`
			}
			if err := json.Unmarshal([]byte(stdout), &resp); err != nil {
				t.Fatal(err)
			}
			slices.SortFunc(resp.Postures, func(a, b record) int {
				if c := cmp.Compare(len(a.Index), len(b.Index)); c != 0 {
					return c
				}
				return cmp.Or(strings.Compare(a.Index, b.Index), strings.Compare(a.DeviceMac, b.DeviceMac))
			})
			return resp.Postures
		}
		code, stdout, stderr := runCLI(t, verb, "list", "-o", "json")
		if code != 0 {
			t.Fatalf("%s list: exit %d: %s", verb, code, stderr)
		}
		var resp map[string]json.RawMessage
		if err := json.Unmarshal([]byte(stdout), &resp); err != nil {
			t.Fatalf("%s list: %v", verb, err)
		}
		var recs []record
		if err := json.Unmarshal(resp[verb], &recs); err != nil {
			t.Fatalf("%s list: %v\n%s", verb, err, stdout)
		}
		return recs
	}
	// The response engine turns the scans into decisions; wait for them so
	// both verbs see one settled log.
	var decisions []record
	testutil.Eventually(t, 15*time.Second, 50*time.Millisecond, func() bool {
		prev := len(decisions)
		decisions = list("decisions")
		return len(decisions) > 0 && len(decisions) == prev
	}, "decisions settle; have %d", len(decisions))

	testutil.Eventually(t, 15*time.Second, 50*time.Millisecond, func() bool { return len(list("risk")) == 5 }, "five postures committed")

	verbs := watchVerbs(newRootCmd())
	tested := map[string]bool{}
	for _, verb := range []string{"alerts", "decisions", "incidents", "risk"} {
		t.Run(verb, func(t *testing.T) {
			want := list(verb)
			if verb == "alerts" {
				if len(want) != 98 {
					t.Fatalf("alerts list shows %d alerts, want 98", len(want))
				}
				byIndex := map[string]int{}
				for _, r := range want {
					byIndex[r.Index]++
				}
				if len(byIndex) != 3 {
					t.Fatalf("98 alerts over %d Raft indexes, want 3 batches", len(byIndex))
				}
			}
			if verb == "incidents" && len(want) != 58 {
				// One incident per scanning device: the second sensor's
				// 55 alerts name 40 devices of the first's batch again
				// (they fold into those incidents, which move to the
				// second batch's index) and 15 new ones; the third batch
				// 3 more.
				t.Fatalf("incidents list shows %d incidents, want 58", len(want))
			}
			got := runWatch(t, len(want), verb, "watch", "-o", "json")
			if !slices.Equal(got, want) {
				t.Fatalf("%s watch printed %d records, list %d; differ:\nwatch %v\nlist  %v", verb, len(got), len(want), got, want)
			}
			// Resuming from an index in the middle prints the list's tail.
			num := func(r record) uint64 {
				n, err := strconv.ParseUint(r.Index, 10, 64)
				if err != nil {
					t.Fatalf("index %q: %v", r.Index, err)
				}
				return n
			}
			mid := want[len(want)/2].Index
			var tail []record
			for _, r := range want {
				if num(r) > num(want[len(want)/2]) {
					tail = append(tail, r)
				}
			}
			if len(tail) > 0 {
				got = runWatch(t, len(tail), verb, "watch", "-o", "json", "--from-index", mid)
				if !slices.Equal(got, tail) {
					t.Fatalf("%s watch --from-index %s: %v, want %v", verb, mid, got, tail)
				}
			}
		})
		tested[verb] = true
	}
	for _, v := range verbs {
		if !tested[v] {
			t.Errorf("%s watch has no check against %s list in this test", v, v)
		}
	}
}
