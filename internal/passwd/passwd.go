// Package passwd hashes and checks console passwords with argon2id
// (RFC 9106), stored as PHC strings:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt, base64>$<key, base64>
//
// The parameters are OWASP's minimum for argon2id (19 MiB, two passes, one
// lane), chosen for coordinators that share small machines with the Raft
// log; a stored hash carries its own parameters, so raising them later
// keeps old hashes valid. Checking a hash costs the memory it names, so
// Verify refuses parameters beyond MaxMemoryKiB and MaxTime, and callers
// bound how many checks run at once.
package passwd

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// The parameters of new hashes.
const (
	MemoryKiB = 19 * 1024
	Time      = 2
	Threads   = 1
	SaltLen   = 16
	KeyLen    = 32
)

// Bounds of a stored hash's parameters: beyond them Verify refuses the
// hash rather than spend the memory.
const (
	MaxMemoryKiB = 256 * 1024
	MaxTime      = 16
	MaxThreads   = 16
)

// Bounds of a password, in bytes.
const (
	MinLen = 12
	MaxLen = 256
)

var b64 = base64.RawStdEncoding

// ErrMismatch: the password does not match the hash.
var ErrMismatch = errors.New("password does not match")

// Check says why a password may not be set, or nil.
func Check(pw string) error {
	if len(pw) < MinLen || len(pw) > MaxLen {
		return fmt.Errorf("a password is %d to %d bytes", MinLen, MaxLen)
	}
	if !utf8.ValidString(pw) {
		return errors.New("a password is UTF-8 text")
	}
	return nil
}

// Hash returns the PHC string of pw with a fresh random salt.
func Hash(pw string) (string, error) {
	if err := Check(pw); err != nil {
		return "", err
	}
	salt := make([]byte, SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(pw), salt, Time, MemoryKiB, Threads, KeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, MemoryKiB, Time, Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Params are a parsed hash.
type Params struct {
	Memory  uint32
	Time    uint32
	Threads uint8
	Salt    []byte
	Key     []byte
}

// Parse reads a PHC argon2id string.
func Parse(s string) (Params, error) {
	var p Params
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, errors.New("not an argon2id PHC string")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, fmt.Errorf("argon2 version %q: want v=%d", parts[2], argon2.Version)
	}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return p, fmt.Errorf("parameter %q: want k=v", kv)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return p, fmt.Errorf("parameter %q: %v", kv, err)
		}
		switch k {
		case "m":
			p.Memory = uint32(n)
		case "t":
			p.Time = uint32(n)
		case "p":
			if n > 255 {
				return p, fmt.Errorf("parameter %q: too many lanes", kv)
			}
			p.Threads = uint8(n)
		default:
			return p, fmt.Errorf("unknown parameter %q", k)
		}
	}
	if p.Time < 1 || p.Time > MaxTime || p.Threads < 1 || p.Threads > MaxThreads || p.Memory < 8*uint32(p.Threads) || p.Memory > MaxMemoryKiB {
		return p, fmt.Errorf("parameters m=%d,t=%d,p=%d out of bounds", p.Memory, p.Time, p.Threads)
	}
	var err error
	if p.Salt, err = b64.DecodeString(parts[4]); err != nil || len(p.Salt) < 8 || len(p.Salt) > 64 {
		return p, errors.New("salt: want 8-64 bytes of unpadded base64")
	}
	if p.Key, err = b64.DecodeString(parts[5]); err != nil || len(p.Key) < 16 || len(p.Key) > 64 {
		return p, errors.New("key: want 16-64 bytes of unpadded base64")
	}
	return p, nil
}

// Verify checks pw against the PHC string hash: nil, ErrMismatch, or why
// the hash cannot be used.
func Verify(hash, pw string) error {
	p, err := Parse(hash)
	if err != nil {
		return err
	}
	if len(pw) > MaxLen {
		return ErrMismatch
	}
	key := argon2.IDKey([]byte(pw), p.Salt, p.Time, p.Memory, p.Threads, uint32(len(p.Key)))
	if subtle.ConstantTimeCompare(key, p.Key) != 1 {
		return ErrMismatch
	}
	return nil
}
