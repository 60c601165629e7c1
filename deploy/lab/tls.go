package lab

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
)

// The lab's certificates: a campus CA made at Up in StateDir/tls, one
// certificate per coordinator (with its host and namespace-facing
// addresses), sensor and enforcer, and one per CLI role.
const (
	tlsDirName = "tls"
	gossipKey  = "gossip.key"
	// certDays is how long the lab's certificates last.
	certDays = 30
)

// The names of the lab's CLI identities (spiffe://medmesh/<role>/<name>).
const (
	OperatorName = "lab-operator"
	ApproverName = "lab-approver"
	ViewerName   = "lab-viewer"
)

// TLSDir is where the lab keeps its CA, certificates and gossip key.
func (c Config) TLSDir() string { return filepath.Join(c.StateDir, tlsDirName) }

// GossipKeyFile is the sensors' gossip key.
func (c Config) GossipKeyFile() string { return filepath.Join(c.TLSDir(), gossipKey) }

// TLSFiles are the CA, certificate and key files of the lab identity name
// (c1, s1, e1, lab-operator, ...).
func (c Config) TLSFiles(name string) pki.Files {
	d := c.TLSDir()
	return pki.Files{CAFile: filepath.Join(d, pki.CAFile), CertFile: pki.CertFile(d, name), KeyFile: pki.KeyFile(d, name)}
}

// ClientTLS are the files of the lab's CLI identity with role (operator,
// approver or viewer).
func (c Config) ClientTLS(role pki.Role) (pki.Files, error) {
	switch role {
	case pki.RoleOperator:
		return c.TLSFiles(OperatorName), nil
	case pki.RoleApprover:
		return c.TLSFiles(ApproverName), nil
	case pki.RoleViewer:
		return c.TLSFiles(ViewerName), nil
	}
	return pki.Files{}, fmt.Errorf("the lab has no %s certificate (operator, approver or viewer)", role)
}

// CoordinatorTargets is the three coordinators' API addresses on the host,
// comma-separated (MEDMESH_ADDR).
func (c Config) CoordinatorTargets() string {
	return strings.Join([]string{c.CoordinatorAPI(1), c.CoordinatorAPI(2), c.CoordinatorAPI(3)}, ",")
}

// makePKI makes the lab's CA, every certificate and the gossip key. A
// directory left from an earlier lab is replaced: Down removes it anyway.
func (c Config) makePKI() error {
	dir := c.TLSDir()
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("lab tls: %w", err)
	}
	ca, err := pki.CreateCA(dir, "medmesh lab campus CA", certDays, time.Now())
	if err != nil {
		return fmt.Errorf("lab tls: %w", err)
	}
	issue := func(role pki.Role, name string, ips ...net.IP) error {
		_, _, err := ca.IssueFiles(dir, name, pki.CertRequest{
			Identity: pki.Identity{Role: role, Name: name}, Days: certDays, IPs: ips, DNS: []string{"localhost"},
		})
		return err
	}
	for i := 1; i <= 3; i++ {
		if err := issue(pki.RoleCoordinator, fmt.Sprintf("c%d", i), net.IPv4(127, 0, 0, byte(i)), net.IP(c.CoordinatorVIP(i).AsSlice())); err != nil {
			return fmt.Errorf("lab tls: %w", err)
		}
	}
	if err := issue(pki.RoleSensor, "s0", net.IP(c.SensorMgmt(0).AsSlice())); err != nil { // the core's sensor
		return fmt.Errorf("lab tls: %w", err)
	}
	for n := 1; n <= len(c.Floors); n++ {
		if err := issue(pki.RoleSensor, fmt.Sprintf("s%d", n), net.IP(c.SensorMgmt(n).AsSlice())); err != nil {
			return fmt.Errorf("lab tls: %w", err)
		}
		if err := issue(pki.RoleEnforcer, fmt.Sprintf("e%d", n), net.IP(c.EnforcerUplink(n).AsSlice())); err != nil {
			return fmt.Errorf("lab tls: %w", err)
		}
	}
	for _, x := range []struct {
		role pki.Role
		name string
	}{{pki.RoleOperator, OperatorName}, {pki.RoleApprover, ApproverName}, {pki.RoleViewer, ViewerName}} {
		if err := issue(x.role, x.name); err != nil {
			return fmt.Errorf("lab tls: %w", err)
		}
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return fmt.Errorf("lab gossip key: %w", err)
	}
	if err := os.WriteFile(c.GossipKeyFile(), []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		return fmt.Errorf("lab gossip key: %w", err)
	}
	return c.makeIntelKey()
}

// tlsArgs are a daemon's TLS flags for the lab identity name.
func (c Config) tlsArgs(name string) []string {
	f := c.TLSFiles(name)
	return []string{"--tls-ca", f.CAFile, "--tls-cert", f.CertFile, "--tls-key", f.KeyFile}
}

// dial connects to the three coordinators as the lab identity name.
func (c Config) dial(name string) (*grpc.ClientConn, error) {
	cc := grpcx.DefaultClientConfig()
	cc.TLS = c.TLSFiles(name)
	return grpcx.Dial(c.CoordinatorTargets(), cc, nil)
}
