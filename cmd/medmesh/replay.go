package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// TODO(owner of this file): replace this placeholder.
func newReplayCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "replay",
		Short:  "not built yet",
		Hidden: true,
		RunE:   func(*cobra.Command, []string) error { return errors.New("replay: not built yet") },
	}
}
