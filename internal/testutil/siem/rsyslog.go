package siem

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Receiver is a running rsyslogd: imtcp with the gtls stream driver on
// 127.0.0.1 (TLS, RFC 5425 octet-counted framing), every message's raw
// text written as one line to Out.
type Receiver struct {
	// Addr is where it listens (host:port); CAFile verifies its
	// certificate (the sink's ca_file); Out is the file of received lines.
	Addr, CAFile, Out string
	cmd               *exec.Cmd
	done              chan error
}

// Options tune how rsyslogd runs.
type Options struct {
	// Stderr takes rsyslogd's own output (nil: discarded).
	Stderr io.Writer
	// Env is added to rsyslogd's environment (for example a marker that
	// lets a lab's teardown find it).
	Env []string
}

// Available says why rsyslogd cannot run here, or nil.
func Available() error {
	if _, err := exec.LookPath("rsyslogd"); err != nil {
		return errors.New("rsyslogd not installed (Debian rsyslog and rsyslog-gnutls, deploy/deps.txt)")
	}
	return nil
}

// Start runs Debian's rsyslogd with its files in dir (a fresh CA and
// server certificate, its configuration, work directory and the received
// lines), on a port the kernel picks, and waits until it accepts
// connections.
func Start(dir string, opts Options) (*Receiver, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	ca, err := NewCA(dir)
	if err != nil {
		return nil, fmt.Errorf("receiver CA: %w", err)
	}
	cert, key, err := ca.Issue("rsyslog", true)
	if err != nil {
		return nil, fmt.Errorf("receiver certificate: %w", err)
	}
	out, portFile := filepath.Join(dir, "received.log"), filepath.Join(dir, "imtcp.port")
	conf := filepath.Join(dir, "rsyslog.conf")
	// Only what imtcp receives goes to the file (its own ruleset), not
	// rsyslogd's internal messages.
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`global(workDirectory=%q
  DefaultNetstreamDriver="gtls"
  DefaultNetstreamDriverCAFile=%q
  DefaultNetstreamDriverCertFile=%q
  DefaultNetstreamDriverKeyFile=%q
  maxMessageSize="64k")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
template(name="raw" type="string" string="%%rawmsg%%\n")
ruleset(name="sinks") {
  action(type="omfile" file=%q template="raw")
}
input(type="imtcp" port="0" listenPortFileName=%q address="127.0.0.1" ruleset="sinks")
`, dir, ca.File, cert, key, out, portFile)), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command("rsyslogd", "-n", "-f", conf, "-i", filepath.Join(dir, "rsyslogd.pid"))
	cmd.Stdout, cmd.Stderr = opts.Stderr, opts.Stderr
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start rsyslogd: %w", err)
	}
	r := &Receiver{CAFile: ca.File, Out: out, cmd: cmd, done: make(chan error, 1)}
	go func() { r.done <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-r.done:
			r.done <- err
			return nil, fmt.Errorf("rsyslogd exited: %v", err)
		default:
		}
		if b, err := os.ReadFile(portFile); err == nil {
			if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && p > 0 {
				addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
				if c, err := net.Dial("tcp", addr); err == nil {
					c.Close()
					r.Addr = addr
					return r, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return nil, errors.Join(errors.New("rsyslogd does not listen after 10s"), r.Close())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Close stops rsyslogd (SIGTERM, then SIGKILL after 5 s).
func (r *Receiver) Close() error {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
		return nil
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
		return errors.New("rsyslogd ignored SIGTERM for 5s")
	}
}

// StartRsyslog starts a receiver for test t in a temporary directory
// (skipping t where rsyslogd is not installed) and stops it when t ends.
func StartRsyslog(t testing.TB) *Receiver {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip("skipped: " + err.Error())
	}
	r, err := Start(t.TempDir(), Options{Stderr: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// Received is what a receiver got from medmesh's sinks.
type Received struct {
	// Lines counts the messages; ByID is each event by its CEF externalId
	// (the sink's stable event id), Count how many lines carried it, and
	// Hosts how many lines each coordinator (HOSTNAME) sent.
	Lines int
	ByID  map[string]*CEF
	Count map[string]int
	Hosts map[string]int
}

// Duplicates counts the lines that repeated an id already received.
func (r *Received) Duplicates() int { return r.Lines - len(r.ByID) }

// Read parses the receiver's file so far (Received.Read of Out).
func (r *Receiver) Read() (*Received, error) { return ReadFile(r.Out) }

// ReadFile parses a receiver's file: every complete line an RFC 5424
// message whose header matches its CEF payload (facility 10, APP-NAME
// medmesh, HOSTNAME the sending coordinator, MSGID the event's category).
// It fails on a line that does not parse, or on two lines with one id that
// say different things (a resent event must be the same event: only the
// coordinator that sent it may differ). A missing file is nothing
// received yet.
func ReadFile(path string) (*Received, error) {
	rec := &Received{ByID: map[string]*CEF{}, Count: map[string]int{}, Hosts: map[string]int{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return nil, err
	}
	// A line is received once its newline is written: rsyslogd may be
	// writing the last one.
	b = b[:bytes.LastIndexByte(b, '\n')+1]
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSuffix(line, "\n")
		m, err := ParseSyslog(line)
		if err != nil {
			return nil, fmt.Errorf("syslog line %q: %w", line, err)
		}
		ev, err := ParseCEF(m.Msg)
		if err != nil {
			return nil, fmt.Errorf("CEF %q: %w", m.Msg, err)
		}
		if m.Pri/8 != 10 || m.App != "medmesh" || m.Host != ev.Ext["dvchost"] || m.MsgID != ev.Ext["cat"] {
			return nil, fmt.Errorf("header %+v does not match its CEF %v", m, ev.Ext)
		}
		id := ev.Ext["externalId"]
		if id == "" {
			return nil, fmt.Errorf("CEF %q: no externalId", m.Msg)
		}
		if prev, dup := rec.ByID[id]; dup && !sameEvent(prev, ev) {
			return nil, fmt.Errorf("id %s sent twice with different content: %+v vs %+v", id, prev, ev)
		}
		rec.ByID[id] = ev
		rec.Count[id]++
		rec.Hosts[m.Host]++
		rec.Lines++
	}
	return rec, nil
}

// sameEvent: everything but the sender's name (dvchost) is equal.
func sameEvent(a, b *CEF) bool {
	if a.Version != b.Version || a.Vendor != b.Vendor || a.Product != b.Product || a.DeviceVersion != b.DeviceVersion ||
		a.ClassID != b.ClassID || a.Name != b.Name || a.Severity != b.Severity || len(a.Ext) != len(b.Ext) {
		return false
	}
	for k, v := range a.Ext {
		if w, ok := b.Ext[k]; !ok || (k != "dvchost" && v != w) {
			return false
		}
	}
	return true
}
