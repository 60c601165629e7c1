package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc"

	"github.com/medmesh/medmesh/internal/passwd"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// accountFlags are the flags of accounts add and passwd.
type accountFlags struct {
	passwordFile string
	reason       string
}

func (a *accountFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&a.passwordFile, "password-file", "", "read the password from the first line of this file (\"-\": standard input) instead of prompting")
	c.Flags().StringVar(&a.reason, "reason", "", "why (recorded in the audit trail)")
}

func newAccountsCmd(o *opFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "accounts",
		Short: "Manage the web console's accounts (approvers only)",
		Long: "Console accounts are replicated state: a name, a role (viewer, operator or approver)\n" +
			"and an argon2id hash of the password. A person logged in to the console acts as the\n" +
			"identity ROLE/NAME, like a certificate of that identity: the same authorization and the\n" +
			"same audit trail. " + fmt.Sprint(fsmMaxLoginFailures) + " failed logins in a row lock an account out for 15 minutes on every\n" +
			"coordinator; a new password (accounts passwd) lifts a lock-out and ends the account's\n" +
			"sessions. Passwords are read from a prompt or a file, never from a flag.",
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the accounts: role, last login, lock-out",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewAccountServiceClient(conn).ListAccounts(ctx, &medmeshv1.ListAccountsRequest{})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				t := newTable(w, "NAME", "ROLE", "IDENTITY", "LAST LOGIN", "FAILED", "LOCKED UNTIL", "VERSION", "UPDATED BY")
				for _, a := range resp.GetAccounts() {
					t.row(a.GetName(), a.GetRole(), a.GetRole()+"/"+a.GetName(), ts(a.GetLastLogin()), a.GetFailedLogins(), ts(a.GetLockedUntil()), a.GetVersion(), a.GetUpdatedBy())
				}
				return t.flush()
			})
		},
	}

	var af accountFlags
	var role string
	add := &cobra.Command{
		Use:   "add NAME --role ROLE",
		Short: "Create an account (the password is prompted for, or read with --password-file)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := readPassword(cmd, af.passwordFile)
			if err != nil {
				return err
			}
			zero := uint64(0)
			req := &medmeshv1.PutAccountRequest{Account: &medmeshv1.Account{Name: args[0], Role: role}, Password: pw, ExpectedVersion: &zero, Reason: af.reason}
			return putAccount(cmd, o, req, "created")
		},
	}
	add.Flags().StringVar(&role, "role", "viewer", "viewer, operator or approver")
	af.register(add)

	var pf accountFlags
	pass := &cobra.Command{
		Use:   "passwd NAME",
		Short: "Set an account's password: lifts a lock-out, ends its sessions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := readPassword(cmd, pf.passwordFile)
			if err != nil {
				return err
			}
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				// The role is kept: read it, then compare-and-set on its version.
				cl := medmeshv1.NewAccountServiceClient(conn)
				list, err := cl.ListAccounts(ctx, &medmeshv1.ListAccountsRequest{})
				if err != nil {
					return err
				}
				for _, a := range list.GetAccounts() {
					if a.GetName() == args[0] {
						v := a.GetVersion()
						resp, err := cl.PutAccount(ctx, &medmeshv1.PutAccountRequest{Account: a, Password: pw, ExpectedVersion: &v, Reason: pf.reason, RequestId: requestID})
						if err != nil {
							return err
						}
						return printAccount(cmd, o, resp, "password set")
					}
				}
				return usagef("no account %q", args[0])
			})
		},
	}
	pf.register(pass)

	var rf accountFlags
	var newRole string
	setRole := &cobra.Command{
		Use:   "set-role NAME ROLE",
		Short: "Change an account's role: ends its sessions",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			newRole = args[1]
			req := &medmeshv1.PutAccountRequest{Account: &medmeshv1.Account{Name: args[0], Role: newRole}, Reason: rf.reason}
			return putAccount(cmd, o, req, "role set")
		},
	}
	setRole.Flags().StringVar(&rf.reason, "reason", "", "why (recorded in the audit trail)")

	var reason string
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an account and end its sessions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				resp, err := medmeshv1.NewAccountServiceClient(conn).DeleteAccount(ctx, &medmeshv1.DeleteAccountRequest{Name: args[0], Reason: reason, RequestId: requestID})
				if err != nil {
					return err
				}
				if o.json() {
					return printProto(cmd.OutOrStdout(), resp)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "account %s deleted at index %d\n", args[0], resp.GetIndex())
				return nil
			})
		},
	}
	del.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit trail)")
	c.AddCommand(list, add, pass, setRole, del)
	return c
}

// fsmMaxLoginFailures mirrors fsm.MaxLoginFailures for the help text
// (the CLI does not import the coordinator's internals).
const fsmMaxLoginFailures = 5

func putAccount(cmd *cobra.Command, o *opFlags, req *medmeshv1.PutAccountRequest, what string) error {
	return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
		req.RequestId = requestID
		resp, err := medmeshv1.NewAccountServiceClient(conn).PutAccount(ctx, req)
		if err != nil {
			return err
		}
		return printAccount(cmd, o, resp, what)
	})
}

func printAccount(cmd *cobra.Command, o *opFlags, resp *medmeshv1.PutAccountResponse, what string) error {
	if o.json() {
		return printProto(cmd.OutOrStdout(), resp)
	}
	a := resp.GetAccount()
	fmt.Fprintf(cmd.OutOrStdout(), "account %s %s: acts as %s/%s, version %d, index %d\n", a.GetName(), what, a.GetRole(), a.GetName(), a.GetVersion(), resp.GetIndex())
	return nil
}

// readPassword reads a new password: from the file's first line, or from
// the terminal without echo, twice. It is never a flag (flags show in ps
// and shell history) and never printed.
func readPassword(cmd *cobra.Command, file string) (string, error) {
	var pw string
	switch {
	case file == "-":
		line, err := firstLine(cmd.InOrStdin())
		if err != nil {
			return "", usagef("read password from standard input: %v", err)
		}
		pw = line
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return "", usagef("read password: %v", err)
		}
		defer f.Close()
		if pw, err = firstLine(f); err != nil {
			return "", usagef("read password from %s: %v", file, err)
		}
	default:
		fd := int(os.Stdin.Fd())
		if !term.IsTerminal(fd) {
			return "", usagef("no terminal to prompt for the password: use --password-file FILE (or - for standard input)")
		}
		fmt.Fprint(cmd.ErrOrStderr(), "New password: ")
		a, err := term.ReadPassword(fd)
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", err
		}
		fmt.Fprint(cmd.ErrOrStderr(), "Repeat it: ")
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", err
		}
		if string(a) != string(b) {
			return "", usagef("the passwords differ")
		}
		pw = string(a)
	}
	if err := passwd.Check(pw); err != nil {
		return "", usagef("password: %v", err)
	}
	return pw, nil
}

func firstLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, passwd.MaxLen+2)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}
