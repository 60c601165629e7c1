package testutil

import (
	"net"
	"strconv"
	"testing"
)

// TestFreePortBelowEphemeralRange: the port is bindable, outside the
// range the kernel hands to outgoing connections and port-0 listeners, and
// never handed out twice (ports picked before any is bound stay distinct).
func TestFreePortBelowEphemeralRange(t *testing.T) {
	lo := ephemeralLow()
	seen := map[int]bool{}
	for range 500 {
		p := FreePort(t)
		if p < freePortMin || p >= lo {
			t.Fatalf("port %d outside [%d, %d)", p, freePortMin, lo)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d not bindable: %v", p, err)
		}
		l.Close()
	}
}
