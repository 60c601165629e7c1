package passwd

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
)

func TestHashVerify(t *testing.T) {
	h, err := Hash("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q does not state the parameters", h)
	}
	if strings.Contains(h, "correct horse") {
		t.Fatal("hash contains the password")
	}
	if err := Verify(h, "correct horse battery"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if err := Verify(h, "correct horse batterz"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("wrong password: %v", err)
	}
	h2, _ := Hash("correct horse battery")
	if h2 == h {
		t.Fatal("two hashes of one password share a salt")
	}
	if _, err := Hash("short"); err == nil {
		t.Fatal("a 5-byte password was accepted")
	}
}

// The RFC 9106 reference: argon2id of a known password and salt, so the
// key derivation is the standard one (and not, say, argon2i).
func TestKnownVector(t *testing.T) {
	salt := []byte("somesaltsomesalt")
	key := argon2.IDKey([]byte("password"), salt, 2, 64, 1, 32)
	h := "$argon2id$v=19$m=64,t=2,p=1$" + b64.EncodeToString(salt) + "$" + b64.EncodeToString(key)
	if err := Verify(h, "password"); err != nil {
		t.Fatal(err)
	}
}

func TestParseRefusesCostlyOrBrokenHashes(t *testing.T) {
	for _, h := range []string{
		"",
		"$argon2i$v=19$m=64,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=16$m=64,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=64,t=1000,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=64,t=2,p=0$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=64,t=2,p=1$!!$AAAAAAAAAAAAAAAAAAAAAA",
	} {
		if _, err := Parse(h); err == nil {
			t.Errorf("Parse(%q) accepted", h)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("$argon2id$v=19$m=64,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAA")
	f.Add("$argon2id$v=19$m=19456,t=2,p=1$$")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		if p.Memory > MaxMemoryKiB || p.Time > MaxTime || p.Threads > MaxThreads || len(p.Key) > 64 {
			t.Fatalf("Parse(%q) accepted out-of-bounds parameters %+v", s, p)
		}
	})
}
