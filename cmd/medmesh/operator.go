package main

import "github.com/spf13/cobra"

// addOperatorCommands adds the operator commands (cluster, devices, policies,
// decisions, alerts, bench). TODO(owner): fill in.
func addOperatorCommands(root *cobra.Command) {}
