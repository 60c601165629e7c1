// Command medmesh-lab is medmesh's lab, kept out of the production binary:
// the campus lab in network namespaces (up, down, status, env, run, roam),
// its device simulators and the compromised device's attack generator
// (sim, which the lab starts), and the coordinator write benchmark
// (bench). The lab runs its coordinators, sensors and enforcers with the
// medmesh binary beside this one. This package parses flags and wires
// components together; it holds no domain logic.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/spf13/cobra"
)

// Exit codes, as medmesh's: 1 for runtime failures, 2 for usage errors.
const (
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks an error as a usage error (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "medmesh-lab",
		Short: "The campus lab, its device simulators and the coordinator benchmark (not part of a deployment)",
		Long: `medmesh-lab builds a hospital campus on this host out of network namespaces (root only):
a core with HL7, PACS, DHCP/DNS, NTP and a central station, an "internet" host, two floors of
simulated medical devices, a sensor per floor and one on the core services' segment fed by
mirrored traffic, an inline enforcer per floor (the floor's gateway), and three coordinators on
the host with the API at 127.0.0.1:7400. The coordinators, sensors and enforcers are the
medmesh binary beside medmesh-lab (make build puts both in bin/).
Every connection is mutual TLS with certificates of a CA the lab makes at 'medmesh-lab up';
talk to it with
  eval "$(medmesh-lab env)"`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	for _, c := range newLabCmds() {
		root.AddCommand(needLinux(c, "the lab needs Linux (network namespaces, veth, tc, XDP)"))
	}
	root.AddCommand(newBenchCmd())
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	typedArgs(root)
	return root
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintln(os.Stderr, "medmesh-lab: "+err.Error())
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}

// goos is the system this build is for; a variable so tests can play
// another one.
var goos = runtime.GOOS

// needLinux makes cmd fail before it does anything when this build is not
// for Linux, with why.
func needLinux(cmd *cobra.Command, why string) *cobra.Command {
	cmd.PersistentPreRunE = func(*cobra.Command, []string) error {
		if goos == "linux" {
			return nil
		}
		return fmt.Errorf("%s; this build is for %s", why, goos)
	}
	return cmd
}

// typedArgs makes the argument validation of c and every command below it
// return usageError (exit 2), as medmesh's does: cobra's validators and its
// unknown-command check return untyped errors. A group (subcommands, no
// Run) prints its help, or fails on an unknown subcommand.
func typedArgs(c *cobra.Command) {
	if !c.Runnable() && c.HasSubCommands() {
		c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	}
	check := c.Args
	if check == nil {
		check = knownSubcommand
	}
	c.Args = func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
	for _, sub := range c.Commands() {
		typedArgs(sub)
	}
}

// knownSubcommand is cobra's default for a command without Args, stricter
// for groups: a command with subcommands takes no arguments of its own.
func knownSubcommand(cmd *cobra.Command, args []string) error {
	if !cmd.HasSubCommands() || len(args) == 0 {
		return nil
	}
	return fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())
}
