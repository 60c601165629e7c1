package coordinator

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is the Raft TCP stream layer. It can cut this node off from
// every Raft peer (a network partition), which the fault-injection tests
// use.
type streamLayer struct {
	ln        net.Listener
	advertise net.Addr
	// local is the address outgoing Raft connections come from: the bound
	// IP, so that a peer (and a firewall rule) sees the same address this
	// node listens on. nil when bound to a wildcard address.
	local *net.TCPAddr

	mu       sync.Mutex
	isolated bool
	closed   bool // set by Close: no connection is accepted or dialed after it
	conns    map[*trackedConn]struct{}
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func newStreamLayer(bind string) (*streamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	s := &streamLayer{ln: ln, advertise: ln.Addr(), conns: map[*trackedConn]struct{}{}}
	if a, ok := ln.Addr().(*net.TCPAddr); ok && !a.IP.IsUnspecified() {
		s.local = &net.TCPAddr{IP: a.IP}
	}
	return s, nil
}

var errIsolated = errors.New("raft transport isolated")

// Accept returns the next inbound connection. After Close it fails with
// net.ErrClosed, even for a connection the listener accepted while Close
// ran (track refuses it), so the transport never serves a connection that
// nothing would close.
func (s *streamLayer) Accept() (net.Conn, error) {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return nil, err
		}
		if tc := s.track(c); tc != nil {
			return tc, nil
		}
		if s.isClosed() {
			return nil, net.ErrClosed
		}
	}
}

func (s *streamLayer) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	s.mu.Lock()
	iso, closed := s.isolated, s.closed
	s.mu.Unlock()
	switch {
	case closed:
		return nil, net.ErrClosed
	case iso:
		return nil, errIsolated
	}
	d := net.Dialer{Timeout: timeout}
	if s.local != nil {
		d.LocalAddr = s.local
	}
	c, err := d.Dial("tcp", string(addr))
	if err != nil {
		return nil, err
	}
	if tc := s.track(c); tc != nil {
		return tc, nil
	}
	if s.isClosed() {
		return nil, net.ErrClosed
	}
	return nil, errIsolated
}

func (s *streamLayer) track(c net.Conn) *trackedConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isolated || s.closed {
		c.Close()
		return nil
	}
	tc := &trackedConn{Conn: c, l: s}
	s.conns[tc] = struct{}{}
	return tc
}

// Close stops accepting and dialing and closes every open Raft connection:
// the transport does not close the connections it accepted, and a stopped
// node must not keep serving them. Idempotent.
func (s *streamLayer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	err := s.ln.Close()
	s.mu.Lock()
	cs := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	return err
}
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// setIsolated cuts (or restores) every Raft connection of this node.
func (s *streamLayer) setIsolated(iso bool) {
	s.mu.Lock()
	s.isolated = iso
	var cs []*trackedConn
	if iso {
		for c := range s.conns {
			cs = append(cs, c)
		}
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

type trackedConn struct {
	net.Conn
	l    *streamLayer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// noPipelineTransport is the NetworkTransport with pipeline replication
// turned off, so Raft replicates with one AppendEntries RPC at a time, each
// bounded by the transport timeout. hashicorp/raft v1.7.3's pipeline can
// deadlock: when pipelineDecode returns (a follower answers with a newer
// term, as after a leadership transfer, or with Success=false) nothing reads
// the pipeline's unbuffered done channel any more, so its decoder parks
// there, and the next pipelineSend parks on the in-progress channel;
// pipeline.Close is deferred in that same goroutine, so neither ever
// returns. The follower gets no entry again, and Raft's Shutdown waits on
// the replication goroutine forever (grafana/pyroscope#5518 hit the same
// deadlock and also turned pipelining off; hashicorp/raft#612 is the
// symptom).
type noPipelineTransport struct{ *raft.NetworkTransport }

func (noPipelineTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}
