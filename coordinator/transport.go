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

	mu       sync.Mutex
	isolated bool
	conns    map[*trackedConn]struct{}
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func newStreamLayer(bind string) (*streamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	return &streamLayer{ln: ln, advertise: ln.Addr(), conns: map[*trackedConn]struct{}{}}, nil
}

var errIsolated = errors.New("raft transport isolated")

func (s *streamLayer) Accept() (net.Conn, error) {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return nil, err
		}
		if tc := s.track(c); tc != nil {
			return tc, nil
		}
	}
}

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	s.mu.Lock()
	iso := s.isolated
	s.mu.Unlock()
	if iso {
		return nil, errIsolated
	}
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	if tc := s.track(c); tc != nil {
		return tc, nil
	}
	return nil, errIsolated
}

func (s *streamLayer) track(c net.Conn) *trackedConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isolated {
		c.Close()
		return nil
	}
	tc := &trackedConn{Conn: c, l: s}
	s.conns[tc] = struct{}{}
	return tc
}

// Close stops accepting and closes every open Raft connection: the
// transport does not close the connections it accepted, and a stopped node
// must not keep serving them.
func (s *streamLayer) Close() error {
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
