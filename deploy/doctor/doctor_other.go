//go:build !linux

package doctor

import "runtime"

// The daemons need Linux (XDP, bpffs); off Linux every host check says so.

func kernel() Result {
	return Result{Check: "kernel", Status: Fail, Detail: "this is " + runtime.GOOS,
		Fix: "run medmesh's daemons on Linux 5.9 or newer with BTF; this build is the CLI for an operator's laptop"}
}

func clock() Result {
	return Result{Check: "clock", Status: Warn, Detail: "not checked off Linux"}
}
