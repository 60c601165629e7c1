package testutil

import "os"

// IsRoot reports whether the process runs with uid 0.
func IsRoot() bool { return os.Geteuid() == 0 }
