// Package siem is the test SIEM of the outbound sink tests: Debian's
// rsyslogd started as a TLS syslog receiver (RFC 5425) on loopback, and
// parsers of what it receives written from the published specifications,
// RFC 5424 and ArcSight CEF (Implementing ArcSight CEF, revision 25), not
// from the code that writes medmesh's events: it never imports the sink
// package. Test code only.
package siem

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// CEF is a CEF record as the ArcSight CEF specification (Implementing
// ArcSight CEF, revision 25) defines it:
//
//	CEF:Version|Device Vendor|Device Product|Device Version|Device Event Class ID|Name|Severity|[Extension]
//
// In the header a pipe is escaped as \| and a backslash as \\. The
// extension is space-separated key=value pairs; in values an equal sign is
// escaped as \=, a backslash as \\, and newlines are \n or \r; a value
// runs to the space before the next key= (spaces inside values are
// literal).
type CEF struct {
	Version, Vendor, Product, DeviceVersion, ClassID, Name string
	Severity                                               int
	Ext                                                    map[string]string
}

var cefKey = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// ParseCEF parses one CEF line.
func ParseCEF(line string) (*CEF, error) {
	rest, ok := strings.CutPrefix(line, "CEF:")
	if !ok {
		return nil, errors.New("no CEF: prefix")
	}
	// Seven header fields, each ended by an unescaped pipe.
	var fields []string
	var cur strings.Builder
	i := 0
	for ; i < len(rest) && len(fields) < 7; i++ {
		switch c := rest[i]; c {
		case '\\':
			if i+1 >= len(rest) || (rest[i+1] != '\\' && rest[i+1] != '|') {
				return nil, fmt.Errorf("header: bad escape at %d", i)
			}
			cur.WriteByte(rest[i+1])
			i++
		case '|':
			fields = append(fields, cur.String())
			cur.Reset()
		case '\n', '\r':
			return nil, errors.New("header: raw newline")
		default:
			cur.WriteByte(c)
		}
	}
	if len(fields) != 7 {
		return nil, fmt.Errorf("header: %d fields, want 7", len(fields))
	}
	sev, err := strconv.Atoi(fields[6])
	if err != nil || sev < 0 || sev > 10 {
		return nil, fmt.Errorf("severity %q: want 0-10", fields[6])
	}
	ev := &CEF{Version: fields[0], Vendor: fields[1], Product: fields[2], DeviceVersion: fields[3], ClassID: fields[4], Name: fields[5], Severity: sev, Ext: map[string]string{}}
	ext := rest[i:]
	if strings.ContainsAny(ext, "\r\n") {
		return nil, errors.New("extension: raw newline")
	}
	// Split at unescaped '=': each one ends a key, which is the last
	// space-separated token before it; the value before that key belongs
	// to the previous key.
	var eqs []int
	for j := 0; j < len(ext); j++ {
		if ext[j] == '\\' {
			j++
			continue
		}
		if ext[j] == '=' {
			eqs = append(eqs, j)
		}
	}
	keyStart := func(at int) int {
		k := strings.LastIndexByte(ext[:at], ' ')
		return k + 1
	}
	for n, at := range eqs {
		ks := keyStart(at)
		key := ext[ks:at]
		if !cefKey.MatchString(key) {
			return nil, fmt.Errorf("extension: bad key %q", key)
		}
		end := len(ext)
		if n+1 < len(eqs) {
			end = keyStart(eqs[n+1]) - 1
			if end < at+1 {
				return nil, fmt.Errorf("extension: empty value of %s", key)
			}
		}
		raw := ext[at+1 : end]
		var v strings.Builder
		for j := 0; j < len(raw); j++ {
			if raw[j] != '\\' {
				v.WriteByte(raw[j])
				continue
			}
			if j+1 == len(raw) {
				return nil, fmt.Errorf("extension %s: dangling backslash", key)
			}
			j++
			switch raw[j] {
			case '\\', '=':
				v.WriteByte(raw[j])
			case 'n':
				v.WriteByte('\n')
			case 'r':
				v.WriteByte('\r')
			default:
				return nil, fmt.Errorf("extension %s: bad escape \\%c", key, raw[j])
			}
		}
		if _, dup := ev.Ext[key]; dup {
			return nil, fmt.Errorf("extension: key %s twice", key)
		}
		ev.Ext[key] = v.String()
	}
	return ev, nil
}
