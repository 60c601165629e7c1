package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// TODO(owner of this file): replace this placeholder.
func newLabCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "lab",
		Short:  "not built yet",
		Hidden: true,
		RunE:   func(*cobra.Command, []string) error { return errors.New("lab: not built yet") },
	}
}
