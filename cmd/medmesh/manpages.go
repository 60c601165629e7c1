package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newGenManCmd writes a man page per command (medmesh.1,
// medmesh-coordinator.1, ...) from the command tree, so the pages say
// exactly what --help says. make package runs it; it is hidden from help.
func newGenManCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:    "gen-man --dir DIR",
		Short:  "Write the man pages of every command into DIR (make package)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usagef("--dir is required")
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			// The date is the build's (SOURCE_DATE_EPOCH), so two builds
			// of one commit give the same pages.
			date := time.Now().UTC()
			if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
				sec, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
				}
				date = time.Unix(sec, 0).UTC()
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			return doc.GenManTree(root, &doc.GenManHeader{
				Title:   "MEDMESH",
				Section: "1",
				Date:    &date,
				Source:  "medmesh " + version,
				Manual:  "medmesh manual",
			}, dir)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the pages")
	return cmd
}
