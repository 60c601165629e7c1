package api

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestForwardErrorRetriesAreAmbiguous: a forwarded write whose last
// attempt could not connect is UNAVAILABLE (clients retry it) only when no
// earlier attempt may have reached the leader.
func TestForwardErrorRetriesAreAmbiguous(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want codes.Code
	}{
		{"connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused\"", codes.Unavailable},
		{"coordinator: not the leader", codes.Unavailable},
		{"max retries exhausted: failed after 4 attempts: connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused\"", codes.Unknown},
		{"error reading from server: EOF", codes.Unknown},
	} {
		got := status.Code(forwardError(kindWrite, status.Error(codes.Unavailable, tc.msg)))
		if got != tc.want {
			t.Errorf("%q: %v, want %v", tc.msg, got, tc.want)
		}
		if got := status.Code(forwardError(kindRead, status.Error(codes.Unavailable, tc.msg))); got != codes.Unavailable {
			t.Errorf("read %q: %v, want Unavailable", tc.msg, got)
		}
	}
}
