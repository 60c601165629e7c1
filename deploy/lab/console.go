package lab

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/medmesh/medmesh/internal/pki"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// The web console of the lab: every coordinator serves it (--web-addr) on
// its loopback address at WebPort, HTTPS with its own certificate of the
// lab's CA. Up creates the console accounts below with generated
// passwords, written to ConsoleAccountsFile (0600) and nowhere else: not
// to a log, not to the state file.

// consoleAccountsName is the file, in StateDir, of the console accounts'
// passwords.
const consoleAccountsName = "console-accounts"

// ConsoleAccount is a console account of the lab and its password.
type ConsoleAccount struct {
	Name     string
	Role     pki.Role
	Password string
}

// consoleAccounts are the people of the lab's console: two approvers (the
// two-person rule needs a second one), an operator and a viewer.
var consoleAccounts = []struct {
	name string
	role pki.Role
}{
	{"biomed.lead", pki.RoleApprover},
	{"nurse.manager", pki.RoleApprover},
	{"soc.analyst", pki.RoleOperator},
	{"auditor", pki.RoleViewer},
}

// WebPort is the console's port on each coordinator's loopback address:
// the API's + 43, 7443 by default (the API's + 1 to + 5 are Raft, gossip
// and the admin ports of the three daemons; + 6 the README's FHIR).
func (c Config) WebPort() int { return c.APIPort + 43 }

// ConsoleAddr is coordinator i's (1-based) console listen address.
func (c Config) ConsoleAddr(i int) string { return fmt.Sprintf("127.0.0.%d:%d", i, c.WebPort()) }

// ConsoleURL is coordinator i's (1-based) console, as a browser on the
// host opens it.
func (c Config) ConsoleURL(i int) string { return "https://" + c.ConsoleAddr(i) + "/" }

// ConsoleAccountsFile holds the console accounts and their passwords, one
// "NAME ROLE PASSWORD" line each (0600, root's).
func (c Config) ConsoleAccountsFile() string { return filepath.Join(c.StateDir, consoleAccountsName) }

// ReadConsoleAccounts reads the console accounts Up created.
func (c Config) ReadConsoleAccounts() ([]ConsoleAccount, error) {
	f, err := os.Open(c.ConsoleAccountsFile())
	if err != nil {
		return nil, fmt.Errorf("console accounts: %w (is the lab up? medmesh-lab up)", err)
	}
	defer f.Close()
	var out []ConsoleAccount
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) != 3 {
			return nil, fmt.Errorf("%s:%d: want NAME ROLE PASSWORD", c.ConsoleAccountsFile(), n)
		}
		role, err := pki.ParseRole(fs[1])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", c.ConsoleAccountsFile(), n, err)
		}
		out = append(out, ConsoleAccount{Name: fs[0], Role: role, Password: fs[2]})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s lists no account", c.ConsoleAccountsFile())
	}
	return out, nil
}

// newPassword is 24 characters of base64url from 18 random bytes (144 bits).
func newPassword() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// writeConsoleAccounts generates the console accounts' passwords and
// writes them to ConsoleAccountsFile (0600), replacing an older file.
func (c Config) writeConsoleAccounts() ([]ConsoleAccount, error) {
	var accts []ConsoleAccount
	var file strings.Builder
	file.WriteString("# medmesh lab web console accounts: NAME ROLE PASSWORD (open " + c.ConsoleURL(1) + ")\n")
	for _, a := range consoleAccounts {
		pw, err := newPassword()
		if err != nil {
			return nil, fmt.Errorf("console password: %w", err)
		}
		accts = append(accts, ConsoleAccount{Name: a.name, Role: a.role, Password: pw})
		fmt.Fprintf(&file, "%s %s %s\n", a.name, a.role, pw)
	}
	if err := os.MkdirAll(c.StateDir, 0o755); err != nil {
		return nil, err
	}
	// Not WriteFile: it keeps the mode of a file that exists.
	tmp := c.ConsoleAccountsFile() + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("console accounts: %w", err)
	}
	_, err = f.WriteString(file.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, c.ConsoleAccountsFile())
	}
	if err != nil {
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("console accounts: %w", err)
	}
	return accts, nil
}

// provisionConsole creates the console accounts as the lab's approver
// (only approvers manage accounts, audited) with the passwords
// writeConsoleAccounts wrote first, so an account that exists has its
// password on disk. The passwords never reach a log.
func (l *Lab) provisionConsole(ctx context.Context, timeout time.Duration) error {
	c := l.cfg
	accts, err := c.writeConsoleAccounts()
	if err != nil {
		return err
	}
	conn, err := c.dial(ApproverName)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, a := range accts {
		if err := putConsoleAccount(ctx, conn, a); err != nil {
			return fmt.Errorf("console account %s: %w", a.Name, err)
		}
	}
	l.log.Info("console accounts created", "accounts", len(accts), "passwords", c.ConsoleAccountsFile(), "console", c.ConsoleURL(1))
	return nil
}

// putConsoleAccount creates account a, retrying until the cluster takes
// it (a retry with the same request id applies once).
func putConsoleAccount(ctx context.Context, conn *grpc.ClientConn, a ConsoleAccount) error {
	zero := uint64(0)
	req := &medmeshv1.PutAccountRequest{Account: &medmeshv1.Account{Name: a.Name, Role: string(a.Role)}, Password: a.Password,
		ExpectedVersion: &zero, Reason: "lab up: the campus console's " + string(a.Role), RequestId: "lab-console-" + a.Name}
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := medmeshv1.NewAccountServiceClient(conn).PutAccount(cctx, req)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
