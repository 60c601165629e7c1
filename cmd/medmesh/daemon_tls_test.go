package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/pki"
)

// TestDaemonsRefusePlaintextOffLoopback: coordinator, node and enforcer
// without TLS files exit with a usage error naming the TLS flags as soon
// as one address is not loopback.
func TestDaemonsRefusePlaintextOffLoopback(t *testing.T) {
	t.Setenv("MEDMESH_TLS_CA", "")
	t.Setenv("MEDMESH_TLS_CERT", "")
	t.Setenv("MEDMESH_TLS_KEY", "")
	dir := t.TempDir()
	for _, args := range [][]string{
		{"coordinator", "--id", "c1", "--data-dir", dir, "--api", "10.0.0.1:7400", "--admin", ""},
		{"coordinator", "--id", "c1", "--data-dir", dir, "--raft", "0.0.0.0:7401", "--admin", ""},
		{"coordinator", "--id", "c1", "--data-dir", dir, "--bootstrap-expect", "3", "--join", "127.0.0.2:7400,10.0.0.3:7400", "--admin", ""},
		{"node", "--id", "s1", "--iface", "lo", "--admin", "", "--spool-dir", dir, "--coordinator", "10.0.0.1:7400"},
		{"enforcer", "--id", "e1", "--iface", "lo", "--pin-dir", dir, "--coordinator", "127.0.0.1:7400,10.0.0.1:7400"},
	} {
		if code := run(args); code != exitUsage {
			t.Errorf("%s: exit %d, want %d (usage)", strings.Join(args, " "), code, exitUsage)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err := checkDaemonTLS("node", pki.Files{}, false, log, "10.0.0.1:7400")
	for _, flag := range []string{"--tls-ca", "--tls-cert", "--tls-key", "medmesh tls", "--dev"} {
		if err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("refusal %v does not name %s", err, flag)
		}
	}
	if err := checkDaemonTLS("node", pki.Files{}, false, log, "127.0.0.1:7400", "[::1]:7400", "localhost:7400"); err != nil {
		t.Errorf("loopback only: %v", err)
	}
	if err := checkDaemonTLS("node", pki.Files{}, true, log, "10.0.0.1:7400"); err != nil {
		t.Errorf("--dev: %v", err)
	}
	if err := checkDaemonTLS("node", pki.Files{CAFile: "ca.pem"}, true, log, "127.0.0.1:7400"); err == nil {
		t.Error("incomplete TLS files accepted")
	}
}

// TestDaemonCertificateMustNameIt: a sensor or enforcer certificate must
// carry the daemon's role and --id.
func TestDaemonCertificateMustNameIt(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.CreateCA(dir, "campus", 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, k, err := ca.IssueFiles(dir, "s1", pki.CertRequest{Identity: pki.Identity{Role: pki.RoleSensor, Name: "s1"}, Days: 1})
	if err != nil {
		t.Fatal(err)
	}
	files := pki.Files{CAFile: filepath.Join(dir, pki.CAFile), CertFile: c, KeyFile: k}
	if err := checkIdentity(files, pki.RoleSensor, "s1"); err != nil {
		t.Errorf("sensor s1 with its own certificate: %v", err)
	}
	if err := checkIdentity(files, pki.RoleSensor, "s2"); err == nil {
		t.Error("sensor s2 accepted the certificate of s1")
	}
	if err := checkIdentity(files, pki.RoleEnforcer, "s1"); err == nil {
		t.Error("enforcer accepted a sensor certificate")
	}
}

// TestNodeGossipNeedsKey: gossip without a key file is refused outside
// --dev, with the way to make one; keygen makes a key the node accepts.
func TestNodeGossipNeedsKey(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	o := nodeOptions{id: "s1", gossip: "127.0.0.1:7402", campus: "north"}
	_, err := gossipConfig(o, log)
	if err == nil || !strings.Contains(err.Error(), "medmesh keygen") {
		t.Fatalf("gossip without a key: %v, want a refusal naming medmesh keygen", err)
	}
	o.dev = true
	if gc, err := gossipConfig(o, log); err != nil || len(gc.Keys) != 0 || gc.Label != "north" {
		t.Fatalf("--dev gossip without a key: %+v %v", gc, err)
	}
	key := filepath.Join(t.TempDir(), "gossip.key")
	if code := run([]string{"keygen", "--out", key}); code != 0 {
		t.Fatalf("keygen exit %d", code)
	}
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v mode %v, want 0600", err, st.Mode().Perm())
	}
	if code := run([]string{"keygen", "--out", key}); code != exitUsage {
		t.Errorf("keygen over an existing file: exit %d, want %d", code, exitUsage)
	}
	o.dev, o.gossipKeyFile = false, key
	gc, err := gossipConfig(o, log)
	if err != nil || len(gc.Keys) != 1 || len(gc.Keys[0]) != 32 || gc.Label != "north" {
		t.Fatalf("gossip with a keygen key: keys %d, label %q, err %v", len(gc.Keys), gc.Label, err)
	}
}
