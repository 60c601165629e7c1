//go:build e2e && linux

// This file holds the nemeses; nftables.go the network faults.

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/medmesh/medmesh/deploy/lab"
)

// Nemesis is one kind of fault. Inject starts the fault, Heal ends it; a
// history injects one fault and heals it before its checks run.
type Nemesis interface {
	Name() string
	// Available says why the nemesis cannot run here, or nil.
	Available() error
	Inject(ctx context.Context) error
	Heal(ctx context.Context) error
}

// Target picks the lab process a nemesis acts on when it is injected (for
// example, the current Raft leader).
type Target func(ctx context.Context) (string, error)

// Fixed targets one named process.
func Fixed(name string) Target {
	return func(context.Context) (string, error) { return name, nil }
}

// Kill sends SIGKILL to its target; Heal restarts it with the same
// arguments (a restarted coordinator keeps its data directory).
type Kill struct {
	Lab     *lab.Lab
	Target  Target
	Restart bool
	victim  string
	picked  string
}

// Victim is the process the last Inject killed.
func (k *Kill) Victim() string { return k.picked }

var _ Nemesis = (*Kill)(nil)

func (k *Kill) Name() string { return "kill" }

func (k *Kill) Available() error { return nil }

func (k *Kill) Inject(ctx context.Context) error {
	name, err := k.Target(ctx)
	if err != nil {
		return fmt.Errorf("kill: pick target: %w", err)
	}
	p, err := k.Lab.Proc(name)
	if err != nil {
		return err
	}
	if err := k.Lab.Signal(name, syscall.SIGKILL); err != nil {
		return err
	}
	k.victim, k.picked = name, name
	deadline := time.Now().Add(5 * time.Second)
	for p.Alive() {
		if time.Now().After(deadline) {
			return fmt.Errorf("kill: %s survived SIGKILL", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func (k *Kill) Heal(context.Context) error {
	if k.victim == "" || !k.Restart {
		return nil
	}
	_, err := k.Lab.Restart(k.victim)
	k.victim = ""
	return err
}

// Pause stops its target with SIGSTOP (longer than the election timeout
// makes a paused leader lose its leadership) and resumes it with SIGCONT.
type Pause struct {
	Lab    *lab.Lab
	Target Target
	victim string
	picked string
}

var _ Nemesis = (*Pause)(nil)

// Victim is the process the last Inject stopped.
func (p *Pause) Victim() string { return p.picked }

func (p *Pause) Name() string     { return "pause" }
func (p *Pause) Available() error { return nil }

func (p *Pause) Inject(ctx context.Context) error {
	name, err := p.Target(ctx)
	if err != nil {
		return fmt.Errorf("pause: pick target: %w", err)
	}
	if err := p.Lab.Signal(name, syscall.SIGSTOP); err != nil {
		return err
	}
	p.victim, p.picked = name, name
	// SIGSTOP is asynchronous: wait until the process is stopped.
	proc, err := p.Lab.Proc(name)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for procState(proc.PID) != "T" {
		if time.Now().After(deadline) {
			return fmt.Errorf("pause: %s did not stop", name)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// procState is the state letter of /proc/PID/stat ("R", "S", "T" ...).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+3 > len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

func (p *Pause) Heal(context.Context) error {
	if p.victim == "" {
		return nil
	}
	err := p.Lab.Signal(p.victim, syscall.SIGCONT)
	p.victim = ""
	return err
}

// nftAvailable checks that the nft tool is installed.
func nftAvailable() error {
	if _, err := exec.LookPath("nft"); err != nil {
		return errors.New("nft is not installed (apt-get install nftables)")
	}
	return nil
}

// Roam moves a device to another floor; Heal moves it back.
type Roam struct {
	Lab    *lab.Lab
	Device string
	To     int
	from   int
}

var _ Nemesis = (*Roam)(nil)

func (r *Roam) Name() string     { return "roam" }
func (r *Roam) Available() error { return nil }

func (r *Roam) Inject(context.Context) error {
	d, ok := r.Lab.Config().Device(r.Device)
	if !ok {
		return fmt.Errorf("roam: no device %q", r.Device)
	}
	if _, err := r.Lab.Roam(r.Device, r.To); err != nil {
		return err
	}
	r.from = d.Floor
	return nil
}

func (r *Roam) Heal(context.Context) error {
	if r.from == 0 {
		return nil
	}
	_, err := r.Lab.Roam(r.Device, r.from)
	r.from = 0
	return err
}
