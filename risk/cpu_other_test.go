//go:build !unix

package risk

// cpuSeconds is not measured off Unix; the benchmark then reports 0.
func cpuSeconds() float64 { return 0 }
