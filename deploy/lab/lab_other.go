//go:build !linux

package lab

import (
	"context"
	"errors"
	"os/exec"
	"syscall"
	"time"

	"github.com/medmesh/medmesh/deploy/lab/sim"
)

var errLinuxOnly = errors.New("the campus lab runs on Linux only (network namespaces, veth, tc, XDP)")

func (l *Lab) Up(context.Context) (*State, error) { return nil, errLinuxOnly }
func (l *Lab) Down() error                        { return errLinuxOnly }
func (l *Lab) Leftovers() []string                { return nil }
func (l *Lab) Status() (Status, error)            { return Status{}, errLinuxOnly }
func (l *Lab) Traffic() ([]Traffic, error)        { return nil, errLinuxOnly }
func (l *Lab) RunScenario(context.Context, string, *Observer, ScenarioOptions) (ScenarioOutcome, error) {
	return ScenarioOutcome{}, errLinuxOnly
}
func (l *Lab) RunCompromised(context.Context, time.Duration) (sim.Outcome, error) {
	return sim.Outcome{}, errLinuxOnly
}
func (l *Lab) Proc(string) (Proc, error)            { return Proc{}, errLinuxOnly }
func (l *Lab) Signal(string, syscall.Signal) error  { return errLinuxOnly }
func (l *Lab) Restart(string) (Proc, error)         { return Proc{}, errLinuxOnly }
func (l *Lab) Check() error                         { return errLinuxOnly }
func (l *Lab) Roam(string, int) (DeviceInfo, error) { return DeviceInfo{}, errLinuxOnly }

// Alive is always false off Linux.
func (p Proc) Alive() bool { return false }

// RunIn is Linux only.
func RunIn(string, *exec.Cmd) error { return errLinuxOnly }

// InNamespace is Linux only.
func InNamespace(string, func() error) error { return errLinuxOnly }
