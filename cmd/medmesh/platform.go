package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

// goos is the system this build is for; a variable so tests can play
// another one.
var goos = runtime.GOOS

// needLinux makes cmd, and every command under it, fail before it does
// anything when this build is not for Linux, with why: what it runs needs
// XDP or network namespaces, which only Linux has. The operator commands
// need neither and work everywhere.
func needLinux(cmd *cobra.Command, why string) *cobra.Command {
	cmd.PersistentPreRunE = func(*cobra.Command, []string) error {
		if goos == "linux" {
			return nil
		}
		return fmt.Errorf("%s; this build is for %s", why, goos)
	}
	return cmd
}
