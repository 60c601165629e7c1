//go:build !unix

package main

import "syscall"

// ownGroup returns nil off Unix: the process stays in the driver's group.
func ownGroup() *syscall.SysProcAttr { return nil }
