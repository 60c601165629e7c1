package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// TODO(owner of this file): replace this placeholder.
func newNodeCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "node",
		Short:  "not built yet",
		Hidden: true,
		RunE:   func(*cobra.Command, []string) error { return errors.New("node: not built yet") },
	}
}
