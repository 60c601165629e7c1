package siem

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The examples of "Implementing ArcSight CEF" (revision 25), character
// encoding section, parse as the specification says they read.
func TestParseCEFSpecExamples(t *testing.T) {
	for _, tc := range []struct {
		line, name string
		ext        map[string]string
	}{
		{`CEF:0|Security|threatmanager|1.0|100|worm successfully stopped|10|src=10.0.0.1 dst=2.1.2.2 spt=1232`,
			"worm successfully stopped", map[string]string{"src": "10.0.0.1", "dst": "2.1.2.2", "spt": "1232"}},
		{`CEF:0|security|threatmanager|1.0|100|detected a \| in message|10|src=10.0.0.1 act=blocked a | dst=1.1.1.1`,
			"detected a | in message", map[string]string{"src": "10.0.0.1", "act": "blocked a |", "dst": "1.1.1.1"}},
		{`CEF:0|security|threatmanager|1.0|100|detected a \\ in packet|10|src=10.0.0.1 act=blocked a \\ dst=1.1.1.1`,
			`detected a \ in packet`, map[string]string{"src": "10.0.0.1", "act": `blocked a \`, "dst": "1.1.1.1"}},
		{`CEF:0|security|threatmanager|1.0|100|detected a = in message|10|src=10.0.0.1 act=blocked a \= dst=1.1.1.1`,
			"detected a = in message", map[string]string{"src": "10.0.0.1", "act": "blocked a =", "dst": "1.1.1.1"}},
		{`CEF:0|security|threatmanager|1.0|100|Detected a threat. No action needed.|10|src=10.0.0.1 msg=Detected a threat.\n No action needed.`,
			"Detected a threat. No action needed.", map[string]string{"src": "10.0.0.1", "msg": "Detected a threat.\n No action needed."}},
	} {
		ev, err := ParseCEF(tc.line)
		if err != nil {
			t.Errorf("%s: %v", tc.line, err)
			continue
		}
		if ev.Version != "0" || ev.Product != "threatmanager" || ev.ClassID != "100" || ev.Severity != 10 || ev.Name != tc.name {
			t.Errorf("%s: header %+v", tc.line, ev)
		}
		if len(ev.Ext) != len(tc.ext) {
			t.Errorf("%s: extension %q, want %q", tc.line, ev.Ext, tc.ext)
		}
		for k, v := range tc.ext {
			if ev.Ext[k] != v {
				t.Errorf("%s: %s = %q, want %q", tc.line, k, ev.Ext[k], v)
			}
		}
	}
	for _, bad := range []string{
		`CEF:0|a|b|1|c|d|11|x=1`,           // severity beyond 10
		`CEF:0|a|b|1|c|d`,                  // six header fields
		`CEF:0|a|b|1|c|d|5|x=1 x=2`,        // a key twice
		`CEF:0|a|b|1|c|d|5|x=a\q`,          // an escape the spec does not have
		"CEF:0|a|b|1|c|d|5|msg=two\nlines", // a raw newline
		`LEEF:1.0|a|b|1|c|`,                // another format
	} {
		if ev, err := ParseCEF(bad); err == nil {
			t.Errorf("%q parsed: %+v", bad, ev)
		}
	}
}

// RFC 5424's example 2 (section 6.5) parses, and a message with
// structured data is refused (the sinks send none).
func TestParseSyslog(t *testing.T) {
	m, err := ParseSyslog(`<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.`)
	if err != nil {
		t.Fatal(err)
	}
	if m.Pri != 165 || m.Host != "192.0.2.1" || m.App != "myproc" || m.ProcID != "8710" || m.MsgID != "-" || m.Msg != "%% It's time to make the do-nuts." ||
		m.Time.UTC().Format("15:04:05.000000") != "12:14:15.000003" {
		t.Errorf("%+v", m)
	}
	if _, err := ParseSyslog(`<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3"] msg`); err == nil {
		t.Error("structured data accepted")
	}
}

// ReadFile takes a resent event from another coordinator as the same
// event, and refuses one id that says two things.
func TestReadFile(t *testing.T) {
	line := func(host, msg string) string {
		return "<84>1 2026-12-05T08:00:00.000000Z " + host + " medmesh - alert - CEF:0|medmesh|medmesh|dev|scan|" + msg +
			"|9|externalId=alert/s1/7 dvchost=" + host + " cat=alert msg=" + msg
	}
	path := filepath.Join(t.TempDir(), "received.log")
	write := func(lines ...string) {
		if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(line("c1", "scan of ward 3"), line("c2", "scan of ward 3"))
	rec, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Lines != 2 || len(rec.ByID) != 1 || rec.Count["alert/s1/7"] != 2 || rec.Duplicates() != 1 || rec.Hosts["c1"] != 1 || rec.Hosts["c2"] != 1 {
		t.Errorf("%d lines, %d ids, %v", rec.Lines, len(rec.ByID), rec.Count)
	}
	write(line("c1", "scan of ward 3"), line("c2", "scan of ward 4"))
	if _, err := ReadFile(path); err == nil {
		t.Error("one id with two contents accepted")
	}
	// rsyslogd is still writing the last line: it is not received yet.
	if err := os.WriteFile(path, []byte(line("c1", "scan of ward 3")+"\n"+line("c2", "scan of")[:40]), 0o600); err != nil {
		t.Fatal(err)
	}
	if rec, err := ReadFile(path); err != nil || rec.Lines != 1 {
		t.Errorf("a partial last line: %v, %+v", err, rec)
	}
	if rec, err := ReadFile(filepath.Join(t.TempDir(), "absent")); err != nil || rec.Lines != 0 {
		t.Errorf("absent file: %v, %+v", err, rec)
	}
}
