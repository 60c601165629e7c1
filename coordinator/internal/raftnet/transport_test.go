package raftnet

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestStreamLayerClose checks the stream layer's shutdown contract: Close
// unblocks a pending Accept, closes the connections it handed out, and no
// connection is accepted or dialed afterwards.
func TestStreamLayerClose(t *testing.T) {
	s, err := NewStreamLayer("127.0.0.1:0", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	acceptErr := make(chan error, 1)
	go func() {
		for {
			c, err := s.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			accepted <- c
		}
	}()
	out, err := s.Dial(raft.ServerAddress(s.Addr().String()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	in := <-accepted
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	select {
	case err := <-acceptErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("accept after close: %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Accept still blocked after Close")
	}
	for _, c := range []net.Conn{in, out} {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a connection after Close: %v, want net.ErrClosed", err)
		}
	}
	if _, err := s.Dial(raft.ServerAddress(s.Addr().String()), time.Second); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("dial after close: %v, want net.ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}
