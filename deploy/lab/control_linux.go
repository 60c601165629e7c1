package lab

import (
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// RunIn runs cmd to completion from a thread inside namespace ns ("" is the
// host's), so the child starts in that namespace.
func RunIn(ns string, cmd *exec.Cmd) error {
	if err := inNS(ns, cmd.Start); err != nil {
		return err
	}
	return cmd.Wait()
}

// Proc returns the lab process named name from the state file.
func (l *Lab) Proc(name string) (Proc, error) {
	st, err := ReadState(l.cfg.StateDir)
	if err != nil {
		return Proc{}, err
	}
	if st == nil {
		return Proc{}, fmt.Errorf("the lab is not up")
	}
	for _, p := range st.Procs {
		if p.Name == name {
			return p, nil
		}
	}
	return Proc{}, fmt.Errorf("no lab process %q", name)
}

// Signal sends sig to the named process (SIGKILL, SIGSTOP, SIGCONT ...).
func (l *Lab) Signal(name string, sig syscall.Signal) error {
	p, err := l.Proc(name)
	if err != nil {
		return err
	}
	if !p.Alive() {
		return fmt.Errorf("%s (pid %d) is not running", name, p.PID)
	}
	if err := syscall.Kill(p.PID, sig); err != nil {
		return fmt.Errorf("signal %s: %w", name, err)
	}
	return nil
}

// Restart starts the named process again, with the same arguments and in
// the same namespace, after killing it if it still runs.
func (l *Lab) Restart(name string) (Proc, error) {
	st, err := ReadState(l.cfg.StateDir)
	if err != nil {
		return Proc{}, err
	}
	if st == nil {
		return Proc{}, fmt.Errorf("the lab is not up")
	}
	for i, p := range st.Procs {
		if p.Name != name {
			continue
		}
		if err := kill(p.PID, p.Start, 3*time.Second); err != nil {
			return Proc{}, err
		}
		np, err := spawn(l.cfg.StateDir, l.cfg.Prefix, l.cfg.binary(p.Role), l.cfg.Env, p.Name, p.Role, p.Netns, p.Args)
		if err != nil {
			return Proc{}, err
		}
		st.Procs[i] = np
		return np, writeState(l.cfg.StateDir, st)
	}
	return Proc{}, fmt.Errorf("no lab process %q", name)
}

// InNamespace runs fn on an OS thread inside namespace ns ("" is the
// host's): sockets fn opens belong to ns.
func InNamespace(ns string, fn func() error) error { return inNS(ns, fn) }

// Namespace names, for harnesses that act on one part of the lab.

// CoreNS is the core router's namespace.
func (c Config) CoreNS() string { return c.nsCore() }

// EnforcerNS is the enforcer of floor n's namespace.
func (c Config) EnforcerNS(n int) string { return c.nsEnforcer(n) }

// SensorNS is the sensor of floor n's namespace.
func (c Config) SensorNS(n int) string { return c.nsSensor(n) }

// ServiceNS is a core service's namespace ("hl7", "pacs", "dhcp", "ntp",
// "central", "inet").
func (c Config) ServiceNS(name string) string { return c.nsService(name) }

// HostLink is the host's link into the lab.
func (c Config) HostLink() string { return c.hostLink() }

// Check reports what is wrong with a running lab: a missing namespace or a
// dead process. Harnesses call it before and after every fault.
func (l *Lab) Check() error {
	st, err := l.Status()
	if err != nil {
		return err
	}
	if !st.Up || !st.Complete {
		return fmt.Errorf("the lab is not up (complete=%v)", st.Complete)
	}
	var errs []error
	for _, ns := range st.Missing {
		errs = append(errs, fmt.Errorf("namespace %s is gone", ns))
	}
	for _, p := range st.Procs {
		if !p.Alive {
			errs = append(errs, fmt.Errorf("%s %s (pid %d) is not running; see %s", p.Role, p.Name, p.PID, p.Log))
		}
	}
	return errors.Join(errs...)
}
