//go:build !linux

package engine

import "time"

// threadCPU returns 0 off Linux, which has no RUSAGE_THREAD: the benchmarks
// then report no per-CPU-second figure.
func threadCPU() time.Duration { return 0 }
