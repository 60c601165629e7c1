package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/coordinator"
	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// fakeAPI implements the services the operator commands call, over real gRPC.
type fakeAPI struct {
	medmeshv1.UnimplementedClusterServiceServer
	medmeshv1.UnimplementedPolicyServiceServer
	medmeshv1.UnimplementedDecisionServiceServer
	medmeshv1.UnimplementedRuleServiceServer

	mu      sync.Mutex
	puts    []*medmeshv1.PutPolicyRequest
	watches []uint64 // from_index of each WatchDecisions call
	// deletes are the request ids of DeletePolicy calls; the first
	// deleteFails fail UNKNOWN (or UNAVAILABLE, alternately), as writes
	// whose leader died do.
	deletes     []string
	deleteFails int
	// ruleWrites are the request ids of PutRule and DeleteRule calls,
	// failing as deletes do.
	ruleWrites []string
}

func (f *fakeAPI) ruleWrite(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ruleWrites = append(f.ruleWrites, id)
	if n := len(f.ruleWrites); n <= f.deleteFails {
		if n%2 == 1 {
			return status.Error(codes.Unknown, "outcome unknown: leadership lost while committing log")
		}
		return status.Error(codes.Unavailable, "no leader")
	}
	return nil
}

func (f *fakeAPI) PutRule(_ context.Context, req *medmeshv1.PutRuleRequest) (*medmeshv1.PutRuleResponse, error) {
	if err := f.ruleWrite(req.GetRequestId()); err != nil {
		return nil, err
	}
	r := req.GetRule()
	r.Version = 3
	return &medmeshv1.PutRuleResponse{Rule: r, Index: 8}, nil
}

func (f *fakeAPI) DeleteRule(_ context.Context, req *medmeshv1.DeleteRuleRequest) (*medmeshv1.DeleteRuleResponse, error) {
	if err := f.ruleWrite(req.GetRequestId()); err != nil {
		return nil, err
	}
	return &medmeshv1.DeleteRuleResponse{Index: 9}, nil
}

func (f *fakeAPI) DeletePolicy(_ context.Context, req *medmeshv1.DeletePolicyRequest) (*medmeshv1.DeletePolicyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes = append(f.deletes, req.GetRequestId())
	if n := len(f.deletes); n <= f.deleteFails {
		if n%2 == 1 {
			return nil, status.Error(codes.Unknown, "outcome unknown: leadership lost while committing log")
		}
		return nil, status.Error(codes.Unavailable, "no leader")
	}
	return &medmeshv1.DeletePolicyResponse{Index: 7}, nil
}

func (f *fakeAPI) GetClusterStatus(context.Context, *medmeshv1.GetClusterStatusRequest) (*medmeshv1.GetClusterStatusResponse, error) {
	return &medmeshv1.GetClusterStatusResponse{
		Leader: "c2", LeaderApiAddr: "127.0.0.1:7410", Term: 3, CommitIndex: 42,
		Members: []*medmeshv1.Member{
			{Id: "c1", Role: "coordinator", ApiAddr: "127.0.0.1:7400", RaftAddr: "127.0.0.1:7401", State: "follower", Suffrage: "voter"},
			{Id: "c2", Role: "coordinator", ApiAddr: "127.0.0.1:7410", RaftAddr: "127.0.0.1:7411", State: "leader", Suffrage: "voter"},
			{Id: "e1", Role: "enforcer", ApiAddr: "10.0.0.9:7400", State: "alive", AppliedIndex: 40},
		},
	}, nil
}

func (f *fakeAPI) GetPolicy(_ context.Context, req *medmeshv1.GetPolicyRequest) (*medmeshv1.GetPolicyResponse, error) {
	return nil, status.Errorf(codes.NotFound, "policy %q not found", req.GetName())
}

func (f *fakeAPI) PutPolicy(_ context.Context, req *medmeshv1.PutPolicyRequest) (*medmeshv1.PutPolicyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.puts = append(f.puts, req)
	p := req.GetPolicy()
	p.Version = 1
	return &medmeshv1.PutPolicyResponse{Policy: p, Index: uint64(len(f.puts))}, nil
}

// WatchDecisions serves index > from_index from a log of 1..5, dropping the
// stream after index 3 once and ending with FailedPrecondition on the third
// call; the first reconnect also replays an entry to check dedup.
func (f *fakeAPI) WatchDecisions(req *medmeshv1.WatchDecisionsRequest, s grpc.ServerStreamingServer[medmeshv1.WatchDecisionsResponse]) error {
	f.mu.Lock()
	f.watches = append(f.watches, req.GetFromIndex())
	call := len(f.watches)
	f.mu.Unlock()
	send := func(i uint64) error {
		return s.Send(&medmeshv1.WatchDecisionsResponse{
			Decision:     &medmeshv1.Decision{Id: "d" + strconv.FormatUint(i, 10), Index: i, Action: medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE},
			AppliedIndex: i,
		})
	}
	switch call {
	case 1:
		for i := req.GetFromIndex() + 1; i <= 3; i++ {
			if err := send(i); err != nil {
				return err
			}
		}
		return status.Error(codes.Unavailable, "leader changed")
	case 2:
		if err := send(req.GetFromIndex()); err != nil { // a replayed entry
			return err
		}
		for i := req.GetFromIndex() + 1; i <= 5; i++ {
			if err := send(i); err != nil {
				return err
			}
		}
		if err := s.Send(&medmeshv1.WatchDecisionsResponse{AppliedIndex: 9}); err != nil { // heartbeat
			return err
		}
		return status.Error(codes.Unavailable, "node shutting down")
	default:
		return status.Error(codes.FailedPrecondition, "test over")
	}
}

func startFake(t *testing.T) (*fakeAPI, string) {
	t.Helper()
	cfg := grpcx.DefaultServerConfig()
	cfg.Addr, cfg.Authz = "127.0.0.1:0", coordinator.AuthzTable()
	s, err := grpcx.NewServer(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAPI{}
	medmeshv1.RegisterClusterServiceServer(s.GRPC(), f)
	medmeshv1.RegisterPolicyServiceServer(s.GRPC(), f)
	medmeshv1.RegisterDecisionServiceServer(s.GRPC(), f)
	medmeshv1.RegisterRuleServiceServer(s.GRPC(), f)
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
		<-done
	})
	return f, s.Addr().String()
}

// runCLI runs the real entry point with stdout and stderr captured.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	dir := t.TempDir()
	outF, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	errF, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	oldOut, oldErr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = outF, errF
	code = run(args)
	os.Stdout, os.Stderr = oldOut, oldErr
	read := func(f *os.File) string {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(f)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		return string(b)
	}
	return code, read(outF), read(errF)
}

func oneLine(t *testing.T, s string) string {
	t.Helper()
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		t.Fatalf("stderr is not exactly one line: %q", s)
	}
	return strings.TrimSuffix(s, "\n")
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{
		{"cluster", "status", "--bogus"},
		{"policies", "get"},
		{"policies", "list", "-o", "yaml"},
		{"devices", "list", "--class", "toaster"},
		{"cluster", "status", "--addr", "no-port"},
		{"decisions", "approve", "d1"}, // --reason is required
		{"policies", "activate", "p1", "--mode", "enforce"},
		{"policies", "activate", "p1", "--reason", "r", "--mode", "block"},
		{"frobnicate"},                       // unknown command
		{"alerts", "frobnicate"},             // unknown subcommand
		{"alerts", "list", "extra"},          // cobra.NoArgs
		{"alerts", "ack", "a1", "a2"},        // cobra.ExactArgs
		{"policies", "get", "--addr", "x:1"}, // cobra.ExactArgs with flags
		{"completion", "bash", "extra"},      // cobra's own commands too
		{"devices", "export", "--format", "csv"},
		{"devices", "import", "README.md", "--format", "xml"},
		{"devices", "import"},
	} {
		code, _, stderr := runCLI(t, args...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", args, code, exitUsage, stderr)
			continue
		}
		if line := oneLine(t, stderr); !strings.HasPrefix(line, "medmesh: ") {
			t.Errorf("%v: stderr %q", args, line)
		}
	}
}

func TestUnreachableExit1(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	code, stdout, stderr := runCLI(t, "cluster", "status", "--addr", addr, "--timeout", "3s")
	if code != exitFailure {
		t.Fatalf("exit %d, want %d", code, exitFailure)
	}
	want := "medmesh: cannot reach coordinator at " + addr + ": connection refused"
	if got := oneLine(t, stderr); got != want {
		t.Fatalf("stderr %q, want %q", got, want)
	}
	if stdout != "" {
		t.Fatalf("stdout %q, want nothing", stdout)
	}
}

func TestClusterStatusJSON(t *testing.T) {
	_, addr := startFake(t)
	t.Setenv("MEDMESH_ADDR", addr)
	code, stdout, stderr := runCLI(t, "cluster", "status", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got struct {
		Leader  string `json:"leader"`
		Members []map[string]any
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout)
	}
	if got.Leader != "c2" || len(got.Members) != 3 {
		t.Fatalf("leader %q, %d members; want c2, 3\n%s", got.Leader, len(got.Members), stdout)
	}
	for _, m := range got.Members {
		for _, k := range []string{"id", "api_addr", "raft_addr", "role", "state"} {
			if _, ok := m[k]; !ok {
				t.Errorf("member %v lacks %q", m["id"], k)
			}
		}
	}
	if got.Members[1]["state"] != "leader" || got.Members[0]["raft_addr"] != "127.0.0.1:7401" {
		t.Fatalf("members: %v", got.Members)
	}
	// The table form shows the same.
	code, stdout, _ = runCLI(t, "cluster", "status")
	if code != 0 || !strings.Contains(stdout, "leader: c2") || !strings.Contains(stdout, "127.0.0.1:7411") {
		t.Fatalf("table output (exit %d):\n%s", code, stdout)
	}
}

func TestRPCErrorIsCodeAndMessage(t *testing.T) {
	_, addr := startFake(t)
	code, _, stderr := runCLI(t, "policies", "get", "device/x", "--addr", addr)
	if code != exitFailure {
		t.Fatalf("exit %d, want 1", code)
	}
	if got, want := oneLine(t, stderr), `medmesh: NotFound: policy "device/x" not found`; got != want {
		t.Fatalf("stderr %q, want %q", got, want)
	}
}

func TestPoliciesPutFromFile(t *testing.T) {
	f, addr := startFake(t)
	file := filepath.Join(t.TempDir(), "p.json")
	doc := `{"name": "device/00:1b:44:11:3a:b7", "device_mac": "00:1b:44:11:3a:b7", "mode": "POLICY_MODE_MONITOR",
	  "rules": [{"name": "pacs", "peer_cidr": "10.20.0.5/32", "protocol": 6, "port_min": 104, "port_max": 104}]}`
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "policies", "put", file, "--addr", addr, "--actor", "alice", "--reason", "ticket 7", "--expected-version", "0", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, `"index": "1"`) {
		t.Fatalf("stdout: %s", stdout)
	}
	f.mu.Lock()
	req := f.puts[0]
	f.mu.Unlock()
	if req.GetActor() != "alice" || req.GetReason() != "ticket 7" || req.ExpectedVersion == nil || *req.ExpectedVersion != 0 {
		t.Fatalf("request: %v", req)
	}
	if r := req.GetPolicy().GetRules(); len(r) != 1 || r[0].GetPortMin() != 104 || req.GetPolicy().GetDeviceMac() != "00:1b:44:11:3a:b7" {
		t.Fatalf("policy: %v", req.GetPolicy())
	}
	// Without --expected-version the write is unconditional.
	if code, _, stderr := runCLI(t, "policies", "put", file, "--addr", addr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.puts[1].ExpectedVersion != nil {
		t.Fatal("expected_version sent without the flag")
	}
	if code, _, _ := runCLI(t, "policies", "put", filepath.Join(t.TempDir(), "missing.json"), "--addr", addr); code != exitUsage {
		t.Fatalf("missing file: exit %d, want 2", code)
	}
}

func TestDecisionsWatchResumes(t *testing.T) {
	f, addr := startFake(t)
	code, stdout, stderr := runCLI(t, "decisions", "watch", "--addr", addr, "-o", "json")
	if code != exitFailure || !strings.Contains(stderr, "FailedPrecondition: test over") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var idx []uint64
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var d struct {
			Index string `json:"index"`
		}
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		i, _ := strconv.ParseUint(d.Index, 10, 64)
		idx = append(idx, i)
	}
	if !slices.Equal(idx, []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("indexes %v, want 1..5 once each", idx)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Resumed after 3, then after the heartbeat's applied index 9.
	if !slices.Equal(f.watches, []uint64{0, 3, 9}) {
		t.Fatalf("from_index of each call %v, want [0 3 9]", f.watches)
	}
	if strings.Count(stderr, "resuming after index") != 2 {
		t.Fatalf("stderr %q", stderr)
	}
}

// A write whose outcome is unknown is retried with the same request id,
// one per invocation; a write that stays unknown says which id settles it.
func TestWriteRetriesWithOneRequestID(t *testing.T) {
	f, addr := startFake(t)
	f.deleteFails = 2
	code, stdout, stderr := runCLI(t, "policies", "delete", "p", "--addr", addr, "--timeout", "5s")
	if code != 0 || !strings.Contains(stdout, "deleted at index 7") {
		t.Fatalf("exit %d: %s%s", code, stdout, stderr)
	}
	f.mu.Lock()
	ids := slices.Clone(f.deletes)
	f.mu.Unlock()
	// grpcx itself retries UNAVAILABLE with the same message: at least the
	// CLI's three attempts, all with one id.
	if len(ids) < 3 || len(ids[0]) != 32 {
		t.Fatalf("request ids %q: want >= 3 attempts with one 32-hex-digit id", ids)
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("attempts carried different request ids: %q", ids)
		}
	}
	// Another invocation is another request.
	f.mu.Lock()
	f.deletes, f.deleteFails = nil, 0
	f.mu.Unlock()
	if code, _, stderr := runCLI(t, "policies", "delete", "p", "--addr", addr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	f.mu.Lock()
	second := f.deletes[0]
	f.deletes, f.deleteFails = nil, 1000
	f.mu.Unlock()
	if second == ids[0] {
		t.Fatal("two invocations sent the same request id")
	}
	// Never settled: the error names the id to retry with, and
	// --request-id sends it.
	code, _, stderr = runCLI(t, "policies", "delete", "p", "--addr", addr, "--timeout", "3s", "--request-id", "ticket-42")
	if code != exitFailure || !strings.Contains(stderr, "--request-id ticket-42") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.deletes) < 2 || f.deletes[0] != "ticket-42" || f.deletes[len(f.deletes)-1] != "ticket-42" {
		t.Fatalf("request ids %q, want ticket-42 on every attempt", f.deletes)
	}
	if len(f.deletes) > 4*writeAttempts {
		t.Fatalf("%d attempts: retries are not bounded", len(f.deletes))
	}
}

// `rules put` and `rules delete` retry a write whose outcome is unknown
// with the invocation's one request id, as the policy writes do.
func TestRuleWritesRetryWithOneRequestID(t *testing.T) {
	f, addr := startFake(t)
	file := filepath.Join(t.TempDir(), "r.json")
	if err := os.WriteFile(file, []byte(`{"name": "quarantine-scanner", "kinds": ["scan"], "action": "DECISION_ACTION_QUARANTINE"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"rules", "put", file}, "version 3, index 8"},
		{[]string{"rules", "delete", "quarantine-scanner"}, "deleted at index 9"},
	} {
		f.mu.Lock()
		f.ruleWrites, f.deleteFails = nil, 2
		f.mu.Unlock()
		code, stdout, stderr := runCLI(t, append(tc.args, "--addr", addr, "--timeout", "5s")...)
		if code != 0 || !strings.Contains(stdout, tc.want) {
			t.Fatalf("%v: exit %d: %s%s", tc.args, code, stdout, stderr)
		}
		f.mu.Lock()
		ids := slices.Clone(f.ruleWrites)
		f.mu.Unlock()
		if len(ids) < 3 || len(ids[0]) != 32 {
			t.Fatalf("%v: request ids %q: want >= 3 attempts with one 32-hex-digit id", tc.args, ids)
		}
		for _, id := range ids {
			if id != ids[0] {
				t.Fatalf("%v: attempts carried different request ids: %q", tc.args, ids)
			}
		}
	}
}
