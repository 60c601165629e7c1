package creds

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func hashOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestBuiltin(t *testing.T) {
	l, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	if l.Len() < 20 {
		t.Fatalf("builtin list has %d entries", l.Len())
	}
	for _, c := range []struct {
		protocol, account, password string
		want                        bool
	}{
		{"telnet", "admin", "admin", true},
		{"http", "admin", "admin", true},
		{"mqtt", "admin", "password", true},
		{"ftp", "root", "", true},
		{"http", "admin", "Admin", false}, // passwords are case-sensitive
		{"http", "Admin", "admin", false}, // and so are accounts
		{"http", "alice", "admin", false},
		{"snmp", "", "public", true},
		{"snmp", "", "private", true},
		{"snmp", "", "public2c", false},
		{"snmp", "admin", "admin", false}, // "*" covers the protocols with accounts only
		{"telnet", "", "cisco", true},
		{"http", "", "cisco", false},
		{"ftp", "anonymous", "NcFTP@", true}, // any password
		{"http", "anonymous", "x", false},
		{"ssh", "pi", "raspberry", false}, // banner entries never match a password
		{"vnc", "", "password", false},
	} {
		if got := l.Password(c.protocol, c.account, []byte(c.password)); got != c.want {
			t.Errorf("Password(%s, %q, %q) = %v, want %v", c.protocol, c.account, c.password, got, c.want)
		}
	}
	for _, c := range []struct{ banner, account string }{
		{"SSH-2.0-OpenSSH_7.9p1 Raspbian-10+deb10u2", "pi"},
		{"SSH-2.0-openssh_7.4p1 raspbian-10", "pi"},
		{"SSH-2.0-Cisco-1.25", "cisco"},
		{"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13", ""},
	} {
		got, ok := l.Banner("ssh", c.banner)
		if got != c.account || ok != (c.account != "") {
			t.Errorf("Banner(ssh, %q) = %q, %v, want %q", c.banner, got, ok, c.account)
		}
	}
	if _, ok := l.Banner("telnet", "SSH-2.0-Cisco-1.25"); ok {
		t.Error("an ssh banner entry matched telnet")
	}
}

// TestBuiltinHoldsNoPassword: the shipped file carries hashes, never a
// password in clear (not even in a comment; "password" itself is a word
// the format description needs).
func TestBuiltinHoldsNoPassword(t *testing.T) {
	for _, p := range []string{"raspberry", "toor", "admin123", "12345", "public", "private"} {
		if strings.Contains(string(builtin), p) {
			t.Errorf("defaults.txt holds the password %q in clear", p)
		}
	}
}

func TestParseNamesTheBadLine(t *testing.T) {
	good := "# comment\n\nhttp admin " + hashOf("x") + "\n"
	for _, c := range []struct{ text, want string }{
		{good + "http admin\n", "site.txt:4: want PROTOCOL"},
		{good + "gopher admin " + hashOf("x") + "\n", "site.txt:4: protocol \"gopher\""},
		{good + "http admin admin\n", "site.txt:4: password \"admin\""},
		{good + "http admin " + strings.ToUpper(hashOf("x")) + "\n", "site.txt:4: password"},
		{good + "http admin " + hashOf("x")[:63] + "z\n", "site.txt:4: password"},
		{good + "http admin " + hashOf("x") + " banner=x\n", "site.txt:4: banner= applies to ssh"},
		{good + "ssh root " + hashOf("x") + "\n", "site.txt:4: an ssh entry needs banner"},
		{good + "ssh root " + hashOf("x") + " model=x\n", "site.txt:4: fourth field"},
		{good + "snmp public " + hashOf("x") + "\n", "site.txt:4: snmp community strings have no account"},
		{good + strings.Repeat("a", 2000) + "\n", "site.txt:4: line longer"},
	} {
		_, err := Parse(strings.NewReader(c.text), "site.txt")
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("Parse(%q...) error %v, want prefix %q", c.text[len(good):min(len(c.text), len(good)+40)], err, c.want)
		}
	}
	l, err := Parse(strings.NewReader(good+"ssh root "+hashOf("calvin")+" banner=iDRAC # a comment\n"), "site.txt")
	if err != nil {
		t.Fatal(err)
	}
	if e := l.Entries(); len(e) != 2 || e[1].Line != 4 || e[1].Banner != "iDRAC" || e[1].Account != "root" {
		t.Fatalf("entries %+v", e)
	}
	if !l.Password("http", "admin", []byte("x")) || l.Password("http", "admin", []byte("y")) {
		t.Error("site list does not match its own entry")
	}
}

func TestNilList(t *testing.T) {
	var l *List
	if l.Password("http", "admin", []byte("admin")) {
		t.Error("nil list matched")
	}
	if _, ok := l.Banner("ssh", "x"); ok {
		t.Error("nil list matched a banner")
	}
}

// FuzzParse: any input parses or fails with an error naming a line; a
// parsed list answers without panicking.
func FuzzParse(f *testing.F) {
	f.Add(string(builtin))
	f.Add("http admin " + hashOf("x") + "\n")
	f.Add("ssh pi " + hashOf("x") + " banner=Raspbian\n")
	f.Add("ftp anonymous *\nsnmp - " + hashOf("public"))
	f.Fuzz(func(t *testing.T, s string) {
		l, err := Parse(strings.NewReader(s), "f.txt")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.txt") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		for _, e := range l.Entries() {
			if e.Line <= 0 || e.Protocol == "" {
				t.Fatalf("entry %+v", e)
			}
		}
		l.Password("http", "admin", []byte(s))
		l.Banner("ssh", s)
	})
}
