//go:build unix

package risk

import (
	"syscall"
	"time"
)

// cpuSeconds is this process's user and system CPU time: on a shared,
// loaded machine it varies far less than wall time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
