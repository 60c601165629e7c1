package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// TODO(owner of this file): replace this placeholder.
func newCoordinatorCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "coordinator",
		Short:  "not built yet",
		Hidden: true,
		RunE:   func(*cobra.Command, []string) error { return errors.New("coordinator: not built yet") },
	}
}
