//go:build linux

package xdp

import "github.com/cilium/ebpf"

// The loaded programs, for BPF_PROG_TEST_RUN in the tests and benchmarks;
// the enforcer itself only attaches the verdict program.

// Program is the verdict program.
func (d *Datapath) Program() *ebpf.Program { return d.objs.Enforce }

// MissProgram is the verdict program with every cache lookup forced to
// miss: the benchmarks measure the slow path with it. Never attach it.
func (d *Datapath) MissProgram() *ebpf.Program { return d.objs.EnforceMiss }

// PassProgram is a bare XDP_PASS program, the benchmark baseline.
func (d *Datapath) PassProgram() *ebpf.Program { return d.objs.Pass }
