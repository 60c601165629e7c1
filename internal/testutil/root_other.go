//go:build !linux

package testutil

// IsRoot reports false off Linux: the privileged tests need network
// namespaces and XDP, which only Linux has, so they skip.
func IsRoot() bool { return false }
