package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medmesh/medmesh/internal/pki"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// testCA is a CA in a temporary directory that issues file pairs.
type testCA struct {
	t   testing.TB
	dir string
	ca  *pki.CA
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	ca, err := pki.CreateCA(dir, name, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{t: t, dir: dir, ca: ca}
}

func (c *testCA) issue(role pki.Role, name string) pki.Files {
	c.t.Helper()
	cert, key, err := c.ca.IssueFiles(c.dir, name, pki.CertRequest{
		Identity: pki.Identity{Role: role, Name: name}, Days: 1, IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return pki.Files{CAFile: filepath.Join(c.dir, pki.CAFile), CertFile: cert, KeyFile: key}
}

// TestRaftPortRefusesAllButCoordinators: the Raft port of a coordinator
// with TLS completes a connection only for a coordinator certificate of
// its own CA. A Raft RPC carries no identity, so anything else reaching it
// could rewrite the log.
func TestRaftPortRefusesAllButCoordinators(t *testing.T) {
	campus, other := newTestCA(t, "campus"), newTestCA(t, "other")
	cfg := testConfig("c1", "", fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	cfg.Dev, cfg.TLS = true, campus.issue(pki.RoleCoordinator, "c1")
	c, err := New(cfg, testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, func() bool { return c.Ready() == nil }, "not ready: %v", c.Ready())
	raftAddr := c.layer.Addr().String()

	none := pki.Files{}
	cases := []struct {
		name   string
		files  pki.Files
		accept bool
	}{
		{"no client certificate", none, false},
		{"operator of the campus CA", campus.issue(pki.RoleOperator, "alice"), false},
		{"sensor of the campus CA", campus.issue(pki.RoleSensor, "s1"), false},
		{"coordinator of another CA", other.issue(pki.RoleCoordinator, "c9"), false},
		{"coordinator of the campus CA", campus.issue(pki.RoleCoordinator, "c2"), true},
	}
	for _, tc := range cases {
		t.Run("go/"+tc.name, func(t *testing.T) {
			err := probeRaft(raftAddr, tc.files)
			switch {
			case tc.accept && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.accept && err == nil:
				t.Fatal("the Raft port kept the connection open")
			}
			t.Logf("result: %v", err)
		})
	}
	t.Run("go/plain tcp", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", raftAddr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// A plaintext AppendEntries request starts with its type byte (0).
		conn.Write([]byte{0, 0x80, 0x80, 0x80, 0x80})
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = conn.Read(make([]byte, 64))
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("plaintext bytes: read %v, want the connection closed", err)
		}
	})

	// openssl s_client, the tool a security team would try. TLS 1.2, so a
	// refused client certificate fails the handshake itself.
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Log("openssl not installed: s_client cases skipped")
		return
	}
	for _, tc := range cases {
		t.Run("openssl/"+tc.name, func(t *testing.T) {
			args := []string{"s_client", "-connect", raftAddr, "-tls1_2", "-CAfile", filepath.Join(campus.dir, pki.CAFile)}
			if tc.files.Enabled() {
				args = append(args, "-cert", tc.files.CertFile, "-key", tc.files.KeyFile)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "openssl", args...)
			cmd.Stdin = strings.NewReader("") // EOF: close once connected
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("openssl s_client hung: %s", out)
			}
			if tc.accept != (err == nil) {
				t.Fatalf("openssl s_client: err=%v, want accepted=%v\n%s", err, tc.accept, out)
			}
			if tc.accept && !strings.Contains(string(out), "spiffe://medmesh/coordinator/c1") && !strings.Contains(string(out), "coordinator/c1") {
				t.Errorf("s_client did not see the coordinator's certificate:\n%s", out)
			}
		})
	}
}

// probeRaft connects to a Raft port with files' certificate (none if
// empty), trusting any server certificate: only the server's verdict
// counts. It returns nil if the server kept the connection open (a Raft
// server waits for a request), or the error that ended it.
func probeRaft(addr string, files pki.Files) error {
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	if files.Enabled() {
		kp, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
		if err != nil {
			return fmt.Errorf("load key pair: %w", err)
		}
		// Always send it, even when the server asks for another CA.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp, nil }
	}
	raw, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	conn := tls.Client(raw, cfg)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if err := conn.Handshake(); err != nil {
		return err
	}
	// TLS 1.3: the server judges the client certificate after the client
	// finished its handshake; its verdict arrives as an alert on read.
	conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if err == nil {
		return errors.New("the Raft server sent data unasked")
	}
	return err
}

// TestTLSClusterElectsReplicatesForwards: three coordinators with mutual
// TLS on Raft and on the API elect a leader, replicate a write, and forward
// a write sent to a follower, which the leader authorizes as the original
// caller (the operator), not as the forwarding coordinator.
func TestTLSClusterElectsReplicatesForwards(t *testing.T) {
	campus := newTestCA(t, "campus")
	files := map[string]pki.Files{}
	for _, id := range []string{"c1", "c2", "c3"} {
		files[id] = campus.issue(pki.RoleCoordinator, id)
	}
	operator := campus.issue(pki.RoleOperator, "alice")
	cl := newClusterAs(t, 3, func(c *Config) { c.TLS = files[c.ID] }, operator)
	leader := cl.leader()
	fol := cl.followers()
	if len(fol) != 2 {
		t.Fatalf("followers = %d, want 2", len(fol))
	}

	// Replication: a write on the leader reaches both followers.
	resp := put(t, leader, "direct", "v1")
	for _, f := range fol {
		testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, func() bool {
			return f.c.FSM().Policy("direct").GetDescription() == "v1" && f.c.raft.AppliedIndex() >= resp.GetIndex()
		}, "write not replicated to %s", f.cfg.ID)
	}

	// Forwarding: a follower passes the write to the leader over mutual TLS
	// with its coordinator certificate, on behalf of the operator.
	fwd := put(t, fol[0], "forwarded", "v2")
	if fwd.GetIndex() <= resp.GetIndex() {
		t.Fatalf("forwarded put index %d, want > %d", fwd.GetIndex(), resp.GetIndex())
	}
	got, err := fol[1].policies().GetPolicy(ctxT(t, 5*time.Second), &medmeshv1.GetPolicyRequest{Name: "forwarded"})
	if err != nil || got.GetPolicy().GetDescription() != "v2" {
		t.Fatalf("read the forwarded write via the other follower: %v %v", got, err)
	}
	// The leader audits both writes as the operator whose certificate made
	// them, not as the coordinator that forwarded one.
	for _, name := range []string{"direct", "forwarded"} {
		audit, err := leader.policies().ListAuditRecords(ctxT(t, 5*time.Second), &medmeshv1.ListAuditRecordsRequest{Resource: "policy/" + name})
		if err != nil || len(audit.GetRecords()) == 0 {
			t.Fatalf("audit of policy/%s: %v %v", name, audit, err)
		}
		for _, r := range audit.GetRecords() {
			if r.GetActor() != "operator/alice" {
				t.Errorf("policy/%s audited as %q, want operator/alice", name, r.GetActor())
			}
		}
	}
}
