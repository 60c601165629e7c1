package siem

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Syslog is an RFC 5424 message: HEADER SP STRUCTURED-DATA [SP MSG].
type Syslog struct {
	Pri                               int
	Time                              time.Time
	Host, App, ProcID, MsgID, SD, Msg string
}

// ParseSyslog parses one RFC 5424 message without structured data (the
// sinks send none: "-").
func ParseSyslog(line string) (*Syslog, error) {
	if !strings.HasPrefix(line, "<") {
		return nil, errors.New("no PRI")
	}
	end := strings.IndexByte(line, '>')
	if end < 2 || end > 4 {
		return nil, errors.New("bad PRI")
	}
	pri, err := strconv.Atoi(line[1:end])
	if err != nil || pri > 191 {
		return nil, fmt.Errorf("PRI %q", line[1:end])
	}
	parts := strings.SplitN(line[end+1:], " ", 8)
	if len(parts) < 7 || parts[0] != "1" {
		return nil, fmt.Errorf("header: %q", line)
	}
	ts, err := time.Parse(time.RFC3339Nano, parts[1])
	if err != nil {
		return nil, fmt.Errorf("timestamp: %w", err)
	}
	for _, f := range parts[2:6] {
		if f == "" || strings.ContainsFunc(f, func(r rune) bool { return r < 33 || r > 126 }) {
			return nil, fmt.Errorf("header field %q", f)
		}
	}
	m := &Syslog{Pri: pri, Time: ts, Host: parts[2], App: parts[3], ProcID: parts[4], MsgID: parts[5], SD: parts[6]}
	if m.SD != "-" {
		return nil, fmt.Errorf("structured data %q, want -", m.SD)
	}
	if len(parts) == 8 {
		m.Msg = parts[7]
	}
	return m, nil
}
