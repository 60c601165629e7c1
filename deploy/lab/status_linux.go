package lab

import (
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
)

// Status reads the state file and checks namespaces and processes.
func (l *Lab) Status() (Status, error) {
	s := Status{StateFile: statePath(l.cfg.StateDir)}
	st, err := ReadState(l.cfg.StateDir)
	if err != nil || st == nil {
		return s, err
	}
	s.Complete, s.Skipped = st.Complete, st.Skipped
	s.API = st.Config.CoordinatorAPI(1)
	s.Devices = st.Config.Devices()
	for _, ns := range st.Namespaces {
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err != nil {
			s.Missing = append(s.Missing, ns)
		} else {
			s.Namespaces++
		}
	}
	for _, p := range st.Procs {
		s.Procs = append(s.Procs, ProcStatus{Proc: p, Alive: p.Alive()})
		if p.Role == "coordinator" && slices.Contains(p.Args, "--web-addr") {
			s.Console, s.ConsoleAccounts = st.Config.ConsoleURL(1), st.Config.ConsoleAccountsFile()
		}
	}
	s.Up = s.Namespaces > 0
	if s.Up && len(s.Missing) == 0 && os.Geteuid() == 0 {
		s.Traffic, _ = l.Traffic()
	}
	return s, nil
}

// Traffic reads the per-device enforcer counters.
func (l *Lab) Traffic() ([]Traffic, error) { return l.traffic(true) }

// traffic reads the counters; settle waits for packets in flight between
// the two counters before calling them dropped.
func (l *Lab) traffic(settle bool) ([]Traffic, error) {
	h := newNSHandles()
	defer h.Close()
	c := l.cfg
	var out []Traffic
	for _, d := range c.Devices() {
		n, prio := d.Floor, uint16(d.Host)
		sent, err := readCounter(h, c.nsFloor(n), "enf", netlink.HANDLE_MIN_EGRESS, prio)
		if err != nil {
			return nil, err
		}
		passed, err := readCounter(h, c.nsEnforcer(n), "dev0", netlink.HANDLE_MIN_INGRESS, prio)
		if err != nil {
			return nil, err
		}
		// A packet between the two counters is in flight, not dropped:
		// give in-flight packets a few milliseconds to land.
		for try := 0; settle && try < 10 && passed < sent; try++ {
			time.Sleep(3 * time.Millisecond)
			if passed, err = readCounter(h, c.nsEnforcer(n), "dev0", netlink.HANDLE_MIN_INGRESS, prio); err != nil {
				return nil, err
			}
		}
		t := Traffic{Device: d.Name, Floor: n, LifeCritical: d.LifeCritical, ToEnforcer: sent, Passed: passed}
		if sent > passed {
			t.Dropped = sent - passed
		}
		out = append(out, t)
	}
	return out, nil
}
