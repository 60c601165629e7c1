package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/medmesh/medmesh/internal/passwd"
	"github.com/medmesh/medmesh/internal/pki"
)

// TestConsoleAccountsFile: the console accounts' passwords are generated
// fresh, valid console passwords, distinct, in a file only its owner can
// read (also when an older, looser file was there), and read back as
// written: two approvers, an operator and a viewer.
func TestConsoleAccountsFile(t *testing.T) {
	cfg := DefaultConfig()
	cfg.StateDir = filepath.Join(t.TempDir(), "lab")
	if _, err := cfg.ReadConsoleAccounts(); err == nil || !strings.Contains(err.Error(), "medmesh-lab up") {
		t.Fatalf("no file yet: %v", err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.ConsoleAccountsFile(), []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wrote, err := cfg.writeConsoleAccounts()
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(cfg.ConsoleAccountsFile())
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("console accounts file: %v, mode %v; want 0600", err, st.Mode())
	}
	read, err := cfg.ReadConsoleAccounts()
	if err != nil {
		t.Fatal(err)
	}
	if len(read) != len(wrote) {
		t.Fatalf("read %d accounts, wrote %d", len(read), len(wrote))
	}
	roles := map[pki.Role]int{}
	seen := map[string]bool{}
	for i, a := range read {
		if a != wrote[i] {
			t.Errorf("account %d: read %s %s, wrote %s %s (or another password)", i, a.Name, a.Role, wrote[i].Name, wrote[i].Role)
		}
		if err := passwd.Check(a.Password); err != nil || seen[a.Password] {
			t.Errorf("%s: password not valid or not distinct: %v", a.Name, err)
		}
		if err := pki.ValidName(a.Name); err != nil {
			t.Error(err)
		}
		seen[a.Password] = true
		roles[a.Role]++
	}
	if roles[pki.RoleApprover] != 2 || roles[pki.RoleOperator] != 1 || roles[pki.RoleViewer] != 1 {
		t.Errorf("roles %v: want two approvers (the two-person rule), an operator and a viewer", roles)
	}
	again, err := cfg.writeConsoleAccounts()
	if err != nil {
		t.Fatal(err)
	}
	if again[0].Password == wrote[0].Password {
		t.Error("a second lab up wrote the same password")
	}
	if err := os.WriteFile(cfg.ConsoleAccountsFile(), []byte("auditor viewer\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.ReadConsoleAccounts(); err == nil || !strings.Contains(err.Error(), ":1: want NAME ROLE PASSWORD") {
		t.Errorf("a line without a password: %v", err)
	}
}

// TestConsoleURL: the console of coordinator i is HTTPS on its loopback
// address, at the API port + 43.
func TestConsoleURL(t *testing.T) {
	cfg := DefaultConfig()
	if got := cfg.ConsoleURL(2); got != "https://127.0.0.2:7443/" {
		t.Errorf("ConsoleURL(2) = %q", got)
	}
	cfg.APIPort = 17000
	if got := cfg.ConsoleAddr(1); got != "127.0.0.1:17043" {
		t.Errorf("ConsoleAddr(1) with API port 17000 = %q", got)
	}
}
