package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// TODO(owner of this file): replace this placeholder.
func newEnforcerCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "enforcer",
		Short:  "not built yet",
		Hidden: true,
		RunE:   func(*cobra.Command, []string) error { return errors.New("enforcer: not built yet") },
	}
}
