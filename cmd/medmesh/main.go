// Command medmesh is the one binary of a medmesh deployment: coordinator,
// sensor node, enforcer, replay and the operator CLI. The campus lab and
// the coordinator benchmark are medmesh-lab (cmd/medmesh-lab). This package
// parses flags and wires components together; it holds no domain logic.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes: 1 for runtime failures (unreachable server, failed RPC), 2 for
// usage errors (bad flags or arguments).
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
		Use:           "medmesh",
		Short:         "medmesh protects networked medical devices from the network",
		Long:          "medmesh watches hospital device traffic with eBPF/XDP sensors, learns each device's\nnormal behaviour, and enforces least-privilege policies through inline XDP enforcers,\ncoordinated by a Raft-replicated control plane.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newVersionCmd(),
		withConfig(newCoordinatorCmd(), func() any { return new(coordinatorConfig) }),
		needLinux(withConfig(newNodeCmd(), func() any { return new(nodeConfig) }), "the sensor node needs Linux (XDP)"),
		needLinux(withConfig(newEnforcerCmd(), func() any { return new(enforcerConfig) }), "the enforcer needs Linux (XDP)"),
		needLinux(newReplayCmd(), "replay needs Linux (it runs the sensor's XDP program)"),
		newTLSCmd(),
		newKeygenCmd(),
		newAuditCmd(),
		newSnapshotCmd(),
		newGenManCmd(),
		newDoctorCmd(),
	)
	intelCmd, riskCmd := newIntelCmd(), newRiskCmd()
	complianceCmd := newComplianceCmd()
	root.AddCommand(intelCmd, riskCmd, complianceCmd)
	addRiskClusterCommands(root, riskCmd, intelCmd)
	addComplianceClusterCommands(complianceCmd)
	addOperatorCommands(root)
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
	fmt.Fprintln(os.Stderr, "medmesh: "+err.Error())
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}
