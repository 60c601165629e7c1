package api

import (
	"fmt"
	"strconv"
	"testing"
)

// FuzzRiskTokens: ListFindings page tokens and WatchFindings resume tokens
// come from clients; whatever they send is read back or refused, never a
// panic, and what a server wrote reads back as written.
func FuzzRiskTokens(f *testing.F) {
	f.Add(encodeToken("02:00:00:00:00:01#3"), "02:00:00:00:00:01", 3, uint64(42))
	f.Add("!!", "", 0, uint64(0))
	f.Add(encodeToken("#-1"), "x", 1<<40, uint64(1<<63))
	f.Fuzz(func(t *testing.T, tok, mac string, pos int, idx uint64) {
		if m, p, err := decodeFindingsToken(tok); err == nil && tok != "" && p < 0 {
			t.Fatalf("token %q read as %q position %d", tok, m, p)
		}
		_, _, _ = decodePostureToken(tok)
		if pos >= 0 && !containsHash(mac) { // a MAC never holds '#'
			m, p, err := decodeFindingsToken(encodeToken(mac + "#" + strconv.Itoa(pos)))
			if err != nil || p != pos || m != mac {
				t.Fatalf("findings token of (%q, %d) read back as (%q, %d, %v)", mac, pos, m, p, err)
			}
		}
		i, m, err := decodePostureToken(encodeToken(fmt.Sprintf("%d/%s", idx, mac)))
		if err != nil || i != idx || m != mac {
			t.Fatalf("posture token of (%d, %q) read back as (%d, %q, %v)", idx, mac, i, m, err)
		}
	})
}

func containsHash(s string) bool {
	for _, c := range s {
		if c == '#' {
			return true
		}
	}
	return false
}
