package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// previousRelease is the commit of the last released medmesh: the rolling
// upgrade starts from a cluster its binary formed and wrote.
const previousRelease = "526b602"

// buildPreviousRelease builds medmesh at previousRelease in a temporary git
// worktree (or takes MEDMESH_PREVIOUS_BINARY, built the same way).
func buildPreviousRelease(t *testing.T, dir string) string {
	t.Helper()
	if p := os.Getenv("MEDMESH_PREVIOUS_BINARY"); p != "" {
		return p
	}
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not in a git checkout, cannot build %s: %v", previousRelease, err)
	}
	repo := strings.TrimSpace(string(top))
	src := filepath.Join(dir, "src")
	if out, err := exec.Command("git", "-C", repo, "worktree", "add", "--detach", src, previousRelease).CombinedOutput(); err != nil {
		t.Skipf("git worktree add %s: %v\n%s", previousRelease, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("git", "-C", repo, "worktree", "remove", "--force", src).Run() })
	bin := filepath.Join(dir, "medmesh-"+previousRelease)
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/medmesh")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", previousRelease, err, out)
	}
	t.Logf("built the previous release %s in %s", previousRelease, time.Since(start).Round(time.Second))
	return bin
}

// coordProc is one coordinator process.
type coordProc struct {
	id, api, raft, dir string
	join               []string
	cmd                *exec.Cmd
	done               chan error
	log                *os.File
}

func (p *coordProc) start(t *testing.T, bin string) {
	t.Helper()
	args := []string{"coordinator", "--id", p.id, "--data-dir", p.dir, "--api", p.api, "--raft", p.raft, "--admin", "",
		"--bootstrap-expect", "3", "--join", strings.Join(p.join, ","), "--log-level", "warn"}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s (%s): %v", p.id, bin, err)
	}
	p.done = make(chan error, 1)
	go func() { p.done <- p.cmd.Wait() }()
}

// stop sends SIGTERM (a leader hands over leadership) and waits.
func (p *coordProc) stop(t *testing.T) {
	t.Helper()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop within 30s of SIGTERM", p.id)
	}
	p.cmd = nil
}

// status is a coordinator's own view (the probe coordinators use).
func coordStatus(conn *grpc.ClientConn) (*medmeshv1.GetClusterStatusResponse, error) {
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-medmesh-probe", "test"), time.Second)
	defer cancel()
	return medmeshv1.NewClusterServiceClient(conn).GetClusterStatus(ctx, &medmeshv1.GetClusterStatusRequest{Consistency: medmeshv1.ReadConsistency_READ_CONSISTENCY_STALE})
}

func self(resp *medmeshv1.GetClusterStatusResponse) *medmeshv1.Member {
	for _, m := range resp.GetMembers() {
		if m.GetId() == resp.GetReadInfo().GetServedBy() {
			return m
		}
	}
	return nil
}

// TestRollingUpgradeFromPreviousRelease: three coordinator processes of
// the previous release form a cluster and take writes; each is stopped,
// swapped for this build and started on the same data directory, one at a
// time, followers first and the leader last, each waited for until it has
// caught up; a client writes all along, retrying each write with its
// request id through any coordinator. No acknowledged write is lost, no
// write waits longer than the bound below, every replica ends with the same
// policies, and every audit trail verifies.
func TestRollingUpgradeFromPreviousRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the previous release and this one and runs six coordinator processes; -short skips it")
	}
	dir := t.TempDir()
	old := buildPreviousRelease(t, dir)
	cur := filepath.Join(dir, "medmesh-current")
	if out, err := exec.Command("go", "build", "-o", cur, ".").CombinedOutput(); err != nil {
		t.Fatalf("build current: %v\n%s", err, out)
	}

	var procs []*coordProc
	var apis []string
	for i := 1; i <= 3; i++ {
		apis = append(apis, fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)))
	}
	conns := make([]*grpc.ClientConn, 3)
	for i := range 3 {
		lf, err := os.Create(filepath.Join(dir, fmt.Sprintf("c%d.log", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		p := &coordProc{id: fmt.Sprintf("c%d", i+1), api: apis[i], raft: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
			dir: filepath.Join(dir, fmt.Sprintf("c%d", i+1)), join: apis, log: lf}
		procs = append(procs, p)
		if conns[i], err = grpc.NewClient(apis[i], grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
	}
	defer func() {
		for _, p := range procs {
			p.stop(t)
		}
		if t.Failed() {
			for _, p := range procs {
				b, _ := os.ReadFile(p.log.Name())
				t.Logf("%s log (last 3000 bytes):\n%s", p.id, b[max(0, len(b)-3000):])
			}
		}
	}()
	for _, p := range procs {
		p.start(t, old)
	}
	leaderOf := func() (string, uint64) {
		for _, c := range conns {
			if r, err := coordStatus(c); err == nil {
				if m := self(r); m != nil && m.GetState() == "leader" {
					return m.GetId(), r.GetCommitIndex()
				}
			}
		}
		return "", 0
	}
	testutil.Eventually(t, 60*time.Second, 100*time.Millisecond, func() bool {
		id, _ := leaderOf()
		if id == "" {
			return false
		}
		for _, c := range conns {
			r, err := coordStatus(c)
			if err != nil || len(r.GetMembers()) != 3 || r.GetLeader() == "" {
				return false
			}
		}
		return true
	}, "the previous release's cluster never formed")

	// The writer: one policy per write, each retried with its request id
	// through the next coordinator until acknowledged.
	type ack struct{ name, value string }
	var (
		mu       sync.Mutex
		acked    []ack
		maxStall time.Duration
		retries  int
		failed   error
	)
	stopWriting := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		at := 0
		for i := 0; ; i++ {
			select {
			case <-stopWriting:
				return
			default:
			}
			name, value := fmt.Sprintf("w-%05d", i), fmt.Sprintf("v%d", i)
			req := &medmeshv1.PutPolicyRequest{Actor: "upgrade-test", RequestId: fmt.Sprintf("upgrade-%d", i), Policy: &medmeshv1.Policy{
				Name: name, Subject: &medmeshv1.Policy_DeviceClass{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP},
				Mode: medmeshv1.PolicyMode_POLICY_MODE_MONITOR, Description: value,
				Rules: []*medmeshv1.Rule{{Name: "hl7", Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: "10.20.0.0/16"}, Protocol: 6, PortMin: 2575, PortMax: 2575}},
			}}
			start := time.Now()
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := medmeshv1.NewPolicyServiceClient(conns[at]).PutPolicy(ctx, req)
				cancel()
				if err == nil {
					break
				}
				mu.Lock()
				retries++
				mu.Unlock()
				if time.Since(start) > 45*time.Second {
					mu.Lock()
					failed = fmt.Errorf("write %s not acknowledged for %s, last error %v", name, time.Since(start).Round(time.Millisecond), err)
					mu.Unlock()
					return
				}
				at = (at + 1) % len(conns)
				time.Sleep(50 * time.Millisecond)
			}
			mu.Lock()
			acked = append(acked, ack{name, value})
			maxStall = max(maxStall, time.Since(start))
			mu.Unlock()
		}
	}()
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, func() bool { return ackedCount() >= 20 }, "the writer never got going on the previous release")

	// Followers first, the leader last.
	leader, _ := leaderOf()
	var order []*coordProc
	for _, p := range procs {
		if p.id != leader {
			order = append(order, p)
		}
	}
	for _, p := range procs {
		if p.id == leader {
			order = append(order, p)
		}
	}
	upgradeStart := time.Now()
	for _, p := range order {
		i := slicesIndex(procs, p)
		before := ackedCount()
		t0 := time.Now()
		p.stop(t)
		p.start(t, cur)
		// Caught up: it answers, is a voter of a cluster with a leader, and
		// has applied what the leader had committed once it was back.
		var target uint64
		testutil.Eventually(t, 60*time.Second, 100*time.Millisecond, func() bool {
			r, err := coordStatus(conns[i])
			if err != nil || r.GetLeader() == "" || self(r) == nil || self(r).GetSuffrage() != "voter" {
				return false
			}
			if target == 0 {
				if _, target = leaderOf(); target == 0 {
					return false
				}
			}
			return self(r).GetAppliedIndex() >= target
		}, "%s on the current build never caught up", p.id)
		mu.Lock()
		f := failed
		mu.Unlock()
		if f != nil {
			t.Fatal(f)
		}
		t.Logf("%s upgraded and caught up in %s; %d writes acknowledged meanwhile", p.id, time.Since(t0).Round(time.Millisecond), ackedCount()-before)
		testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, func() bool { return ackedCount() >= before+10 }, "no writes acknowledged after upgrading %s", p.id)
	}
	upgradeTook := time.Since(upgradeStart)
	close(stopWriting)
	<-writerDone
	if failed != nil {
		t.Fatal(failed)
	}

	// Every acknowledged write is there, on every replica.
	_, commit := leaderOf()
	for i, c := range conns {
		testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, func() bool {
			r, err := coordStatus(c)
			return err == nil && self(r).GetAppliedIndex() >= commit
		}, "%s did not apply %d", procs[i].id, commit)
		have := map[string]string{}
		after := ""
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := medmeshv1.NewPolicyServiceClient(c).ListPolicies(ctx, &medmeshv1.ListPoliciesRequest{
				PageSize: 1000, PageToken: after, Consistency: medmeshv1.ReadConsistency_READ_CONSISTENCY_STALE})
			cancel()
			if err != nil {
				t.Fatalf("list policies on %s: %v", procs[i].id, err)
			}
			for _, p := range resp.GetPolicies() {
				have[p.GetName()] = p.GetDescription()
			}
			if after = resp.GetNextPageToken(); after == "" {
				break
			}
		}
		for _, a := range acked {
			if have[a.name] != a.value {
				t.Fatalf("acknowledged write %s=%s lost on %s (has %q)", a.name, a.value, procs[i].id, have[a.name])
			}
		}
	}
	t.Logf("rolling upgrade %s -> current: %d writes acknowledged, none lost; %d retried attempts; longest wait for one acknowledgement %s; upgrade of three nodes took %s",
		previousRelease, len(acked), retries, maxStall.Round(time.Millisecond), upgradeTook.Round(time.Millisecond))
	if maxStall > 20*time.Second {
		t.Fatalf("a write waited %s for its acknowledgement: the cluster was not writable throughout", maxStall)
	}
	for _, p := range procs {
		p.stop(t)
		if out, err := exec.Command(cur, "audit", "verify", "--data-dir", p.dir).CombinedOutput(); err != nil {
			t.Fatalf("audit verify %s: %v\n%s", p.id, err, out)
		}
	}
}

func slicesIndex(ps []*coordProc, p *coordProc) int {
	for i, q := range ps {
		if q == p {
			return i
		}
	}
	return -1
}
