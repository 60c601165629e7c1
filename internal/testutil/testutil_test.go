package testutil

import (
	"net"
	"strconv"
	"testing"
)

// TestFreePortBelowEphemeralRange: the port is bindable and outside the
// range the kernel hands to outgoing connections and port-0 listeners.
func TestFreePortBelowEphemeralRange(t *testing.T) {
	lo := ephemeralLow()
	for range 20 {
		p := FreePort(t)
		if p < freePortMin || p >= lo {
			t.Fatalf("port %d outside [%d, %d)", p, freePortMin, lo)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d not bindable: %v", p, err)
		}
		l.Close()
	}
}
