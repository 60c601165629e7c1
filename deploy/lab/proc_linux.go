package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// spawn starts binary args in namespace ns as a session leader, output to a
// log file under the state directory.
func spawn(stateDir, prefix, binary string, env []string, name, role, ns string, args []string) (Proc, error) {
	logDir := filepath.Join(stateDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return Proc{}, err
	}
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return Proc{}, err
	}
	defer f.Close()
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(append(os.Environ(), EnvMarker+"="+prefix), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// The child inherits the namespace of the thread that forks it.
	if err := inNS(ns, cmd.Start); err != nil {
		return Proc{}, fmt.Errorf("start %s: %w", name, err)
	}
	// Reap it if it dies while this process lives (tests, lab run).
	go func() { _ = cmd.Wait() }()
	p := Proc{Name: name, Role: role, Netns: ns, PID: cmd.Process.Pid, Args: args, Log: logPath}
	p.Start, _ = procStart(p.PID)
	// Start returns once exec has closed the child's close-on-exec pipe,
	// before the kernel has set up the new environment: for a moment,
	// /proc/PID/environ is empty and markedProcs would miss the process
	// (seen under load: a Down right after a spawn left it running).
	// Return once it can be found by its marker.
	want := []byte(EnvMarker + "=" + prefix)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && p.Alive(); time.Sleep(time.Millisecond) {
		if hasEnv(p.PID, want) {
			break
		}
	}
	return p, nil
}

// hasEnv reports whether kv is in the environment of pid.
func hasEnv(pid int, kv []byte) bool {
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return false
	}
	for _, e := range bytes.Split(env, []byte{0}) {
		if bytes.Equal(e, kv) {
			return true
		}
	}
	return false
}

// procStart reads the start time of pid (clock ticks since boot).
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, errors.New("short stat")
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, errors.New("zombie")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// Alive reports whether the process still runs (and is the one started).
func (p Proc) Alive() bool {
	st, err := procStart(p.PID)
	return err == nil && (p.Start == 0 || st == p.Start)
}

// kill stops the process group of pid: SIGTERM, then SIGKILL after grace.
func kill(pid int, start uint64, grace time.Duration) error {
	alive := func() bool {
		st, err := procStart(pid)
		return err == nil && (start == 0 || st == start)
	}
	if !alive() {
		return nil
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !alive() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if !alive() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("process %d survived SIGKILL", pid)
}

// markedProcs finds processes whose environment carries EnvMarker=prefix.
func markedProcs(prefix string) []int {
	want := []byte(EnvMarker + "=" + prefix)
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if hasEnv(pid, want) {
			if _, err := procStart(pid); err == nil {
				out = append(out, pid)
			}
		}
	}
	return out
}
