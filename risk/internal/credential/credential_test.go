package credential

import (
	"strings"
	"testing"
)

func TestShippedList(t *testing.T) {
	es := Defaults()
	if len(es) < 10 {
		t.Fatalf("%d shipped entries", len(es))
	}
	for _, e := range es {
		if !strings.HasPrefix(e.Source, "https://") {
			t.Errorf("%s %s: source %q is not a public URL", e.Vendor, e.User, e.Source)
		}
	}
	// The empty password (no password at all) is recognised by its hash.
	i := len(es) - 1
	if es[i].Vendor != "Hospira" || !es[i].Known("") || es[i].Known("root") || !es[i].MatchModel("LifeCare PCA5") {
		t.Fatalf("Hospira entry: %+v", es[i])
	}
}

func TestParseRefuses(t *testing.T) {
	ok := "password_sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n    source: https://example.org/a\n"
	for in, want := range map[string]string{
		"credentials:\n  - vendor: A\n    user: u\n    protocol: telnet\n    password: secret\n":   "line 2: a password in clear",
		"credentials:\n  - vendor: A\n    user: u\n    protocol: gopher\n    " + ok:                "protocol \"gopher\"",
		"credentials:\n  - vendor: A\n    user: u\n    protocol: ssh\n    password_sha256: abc\n":  "64 lower-case hex",
		"credentials:\n  - vendor: A\n    user: u\n    protocol: ssh\n    model: \"[\"\n    " + ok: "model pattern",
		"nothing: here\n": "no credentials",
	} {
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", in, err, want)
		}
	}
}
