package api

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestForwardError: a forwarded write that never reached the leader, or
// that the leader refused before proposing, is UNAVAILABLE (clients retry
// it); one whose connection broke after it was sent is UNKNOWN. Earlier
// attempts of a retried forward sent nothing (sentOnce), so the last
// attempt's error decides.
func TestForwardError(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want codes.Code
	}{
		{"connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused\"", codes.Unavailable},
		{"coordinator: not the leader", codes.Unavailable},
		{"max retries exhausted: failed after 4 attempts: connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused\"", codes.Unavailable},
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
