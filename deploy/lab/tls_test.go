package lab

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/medmesh/medmesh/internal/pki"
)

// TestMakePKI: the lab's CA issues every component and CLI identity, with
// the addresses a coordinator is reached at, keys only for their owner,
// and a 32-byte gossip key.
func TestMakePKI(t *testing.T) {
	cfg := DefaultConfig()
	cfg.StateDir = t.TempDir()
	if err := cfg.makePKI(); err != nil {
		t.Fatal(err)
	}
	want := map[string]pki.Role{"c1": pki.RoleCoordinator, "c2": pki.RoleCoordinator, "c3": pki.RoleCoordinator,
		OperatorName: pki.RoleOperator, ApproverName: pki.RoleApprover, ViewerName: pki.RoleViewer}
	for n := 1; n <= len(cfg.Floors); n++ {
		want[fmt.Sprintf("s%d", n)], want[fmt.Sprintf("e%d", n)] = pki.RoleSensor, pki.RoleEnforcer
	}
	for name, role := range want {
		f := cfg.TLSFiles(name)
		kp, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		id, err := pki.IdentityFromCert(kp.Leaf)
		if err != nil || id != (pki.Identity{Role: role, Name: name}) {
			t.Errorf("%s: identity %v %v, want %s/%s", name, id, err, role, name)
		}
		if st, err := os.Stat(f.KeyFile); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s key: %v, mode %v; want 0600", name, err, st.Mode().Perm())
		}
		if role == pki.RoleCoordinator {
			i := int(name[1] - '0')
			ips := fmt.Sprint(kp.Leaf.IPAddresses)
			if !strings.Contains(ips, fmt.Sprintf("127.0.0.%d", i)) || !strings.Contains(ips, cfg.CoordinatorVIP(i).String()) {
				t.Errorf("%s: IP SANs %s, want 127.0.0.%d and %s", name, ips, i, cfg.CoordinatorVIP(i))
			}
		}
		if _, err := pki.ServerConfig(f, pki.ServerOptions{}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := cfg.ClientTLS(pki.RoleSensor); err == nil {
		t.Error("ClientTLS gave a sensor certificate to the CLI")
	}
	b, err := os.ReadFile(cfg.GossipKeyFile())
	if err != nil {
		t.Fatal(err)
	}
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b))); err != nil || len(k) != 32 {
		t.Errorf("gossip key: %d bytes, %v", len(k), err)
	}
	if st, _ := os.Stat(cfg.GossipKeyFile()); st.Mode().Perm() != 0o600 {
		t.Errorf("gossip key mode %v, want 0600", st.Mode().Perm())
	}
	// A second lab replaces the first one's CA.
	old, _ := os.ReadFile(cfg.TLSFiles("c1").CAFile)
	if err := cfg.makePKI(); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(cfg.TLSFiles("c1").CAFile); string(now) == string(old) {
		t.Error("makePKI kept the old CA")
	}
}
