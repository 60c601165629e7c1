// Package creds holds the factory-default credentials a sensor recognises
// in cleartext logins. The list is data (defaults.txt, embedded; the
// format is described at its top): passwords are kept as SHA-256 only, and
// a password seen on the wire is matched by hashing it in memory.
package creds

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
)

//go:embed defaults.txt
var builtin []byte

// Protocols an entry may name ("*" stands for the cleartext ones with an
// account: telnet, ftp, http, mqtt).
var protocols = []string{"telnet", "ftp", "http", "mqtt", "snmp", "vnc", "ssh"}

// wildcardProtocols are the protocols "*" covers.
var wildcardProtocols = []string{"telnet", "ftp", "http", "mqtt"}

// Entry is one default login.
type Entry struct {
	Protocol string // a name of protocols, or "*"
	Account  string // "" for logins without an account
	// AnyPassword: every password matches (anonymous FTP); Hash is unset.
	AnyPassword bool
	Hash        [sha256.Size]byte
	// Banner, for SSH entries: a server whose banner contains it (ASCII
	// case ignored) is the model the entry is about.
	Banner string
	Line   int
}

// List is a parsed default-credential list. It is read-only once parsed
// and safe for concurrent use.
type List struct {
	entries []Entry
}

// maxLine bounds a line of the file.
const maxLine = 1024

// Parse reads a list in the defaults.txt format; name prefixes errors,
// which give the line number ("site.txt:12: ...").
func Parse(r io.Reader, name string) (*List, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256), maxLine)
	l := &List{}
	n := 0
	for sc.Scan() {
		n++
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		e, err := parseEntry(f)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		e.Line = n
		l.entries = append(l.entries, e)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%s:%d: line longer than %d bytes", name, n+1, maxLine)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return l, nil
}

func parseEntry(f []string) (Entry, error) {
	var e Entry
	if len(f) < 3 || len(f) > 4 {
		return e, fmt.Errorf("want PROTOCOL ACCOUNT PASSWORD-SHA256 [banner=TEXT], got %d fields", len(f))
	}
	e.Protocol = f[0]
	if e.Protocol != "*" && !contains(protocols, e.Protocol) {
		return e, fmt.Errorf("protocol %q: want one of %s or *", e.Protocol, strings.Join(protocols, ", "))
	}
	if f[1] != "-" {
		e.Account = f[1]
	}
	switch {
	case f[2] == "*":
		e.AnyPassword = true
	case len(f[2]) == 2*sha256.Size && strings.ToLower(f[2]) == f[2]:
		if _, err := hex.Decode(e.Hash[:], []byte(f[2])); err != nil {
			return e, fmt.Errorf("password %q: not lower-case hex SHA-256", f[2])
		}
	default:
		return e, fmt.Errorf("password %q: want the lower-case hex SHA-256 of the password (64 digits) or *", f[2])
	}
	if len(f) == 4 {
		b, ok := strings.CutPrefix(f[3], "banner=")
		if !ok || b == "" {
			return e, fmt.Errorf("fourth field %q: want banner=TEXT", f[3])
		}
		if e.Protocol != "ssh" {
			return e, fmt.Errorf("banner= applies to ssh entries only, not %s", e.Protocol)
		}
		e.Banner = b
	}
	if e.Protocol == "ssh" && e.Banner == "" {
		return e, errors.New("an ssh entry needs banner=TEXT: an SSH login is encrypted, only the banner can be matched")
	}
	if e.Protocol == "snmp" && e.Account != "" {
		return e, fmt.Errorf("snmp community strings have no account: want -, got %q", e.Account)
	}
	return e, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Builtin parses the list shipped with medmesh.
func Builtin() (*List, error) { return Parse(bytes.NewReader(builtin), "defaults.txt") }

// Len is the number of entries.
func (l *List) Len() int { return len(l.entries) }

// Entries returns a copy of the entries.
func (l *List) Entries() []Entry { return append([]Entry(nil), l.entries...) }

func (e *Entry) covers(protocol string) bool {
	return e.Protocol == protocol || e.Protocol == "*" && contains(wildcardProtocols, protocol)
}

// Password reports whether secret is a factory-default password of account
// for protocol. It hashes secret and keeps no copy of it or of the hash;
// the caller wipes its own copy.
func (l *List) Password(protocol, account string, secret []byte) bool {
	if l == nil {
		return false
	}
	sum := sha256.Sum256(secret)
	found := false
	for i := range l.entries {
		e := &l.entries[i]
		if e.Banner != "" || e.Account != account || !e.covers(protocol) {
			continue
		}
		if e.AnyPassword || subtle.ConstantTimeCompare(sum[:], e.Hash[:]) == 1 {
			found = true
			break
		}
	}
	clear(sum[:])
	return found
}

// Banner returns the default account of the model a server's banner names,
// for protocols whose login a sensor cannot see (SSH).
func (l *List) Banner(protocol, banner string) (string, bool) {
	if l == nil || banner == "" {
		return "", false
	}
	for i := range l.entries {
		e := &l.entries[i]
		if e.Banner != "" && e.covers(protocol) && containsFold(banner, e.Banner) {
			return e.Account, true
		}
	}
	return "", false
}

// containsFold reports whether s contains sub, ASCII case ignored.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}
