package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/testutil"
)

// TestClusterStatusWithoutLeader: a coordinator waiting for two peers that
// never come has no leader. cluster status shows each --addr member's
// reachability and Raft state, and exits 1.
func TestClusterStatusWithoutLeader(t *testing.T) {
	dead1 := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	dead2 := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	o := coordinatorOptions{
		id: "c1", dataDir: t.TempDir(), bootstrapExpect: 3, join: []string{dead1, dead2}, logLevel: "error",
		api:   fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
		raft:  fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
		admin: "",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runCoordinator(ctx, o, io.Discard, nil) }()
	defer func() {
		cancel()
		<-done
	}()
	addrs := o.api + "," + dead1
	var code int
	var stdout, stderr string
	testutil.Eventually(t, 15*time.Second, 100*time.Millisecond, func() bool {
		code, stdout, stderr = runCLI(t, "cluster", "status", "--addr", addrs, "--timeout", "2s")
		return strings.Contains(stdout, o.api)
	}, "cluster status never showed %s: exit %d, stdout %q, stderr %q", o.api, code, stdout, stderr)
	if code != exitFailure {
		t.Fatalf("exit %d, want %d", code, exitFailure)
	}
	if !strings.Contains(stderr, "no leader: 1 of 2 coordinators answer") {
		t.Fatalf("stderr %q", stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var self, dead string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, o.api):
			self = l
		case strings.HasPrefix(l, dead1):
			dead = l
		}
	}
	if f := strings.Fields(self); len(f) < 4 || f[1] != "c1" || f[2] != "yes" || f[3] != "follower" && f[3] != "candidate" {
		t.Fatalf("row of the live coordinator %q, want c1 yes follower|candidate\n%s", self, stdout)
	}
	if f := strings.Fields(dead); len(f) < 4 || f[2] != "no" || f[3] != "unreachable" {
		t.Fatalf("row of the dead address %q, want unreachable\n%s", dead, stdout)
	}
	// JSON: the same members, and still exit 1.
	code, stdout, _ = runCLI(t, "cluster", "status", "--addr", addrs, "--timeout", "2s", "-o", "json")
	var got struct {
		Members []struct {
			ID      string `json:"id"`
			APIAddr string `json:"api_addr"`
			State   string `json:"state"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || code != exitFailure || len(got.Members) != 2 {
		t.Fatalf("json: exit %d, %v\n%s", code, err, stdout)
	}
	if got.Members[0].ID != "c1" || got.Members[1].State != "unreachable" {
		t.Fatalf("members %+v", got.Members)
	}
}
