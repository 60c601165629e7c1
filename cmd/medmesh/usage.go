package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// typedArgs makes the argument validation of c and every command below it
// return usageError (exit 2): cobra's validators (cobra.ExactArgs, ...) and
// its unknown-command check return untyped errors. Flag errors already
// become usageError through SetFlagErrorFunc. A group (subcommands, no
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
// for groups: a command with subcommands takes no arguments of its own, so
// an argument there is an unknown subcommand.
func knownSubcommand(cmd *cobra.Command, args []string) error {
	if !cmd.HasSubCommands() || len(args) == 0 {
		return nil
	}
	return fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())
}
