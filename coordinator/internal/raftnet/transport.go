// Package raftnet is how a coordinator's Raft talks to its peers: the TCP
// stream layer (mutual TLS between coordinators, and a switch that cuts a
// node off for fault-injection tests), the NetworkTransport without
// pipelining, commit notices that tell followers of a commit at once, and
// early appends that replicate entries while the leader writes them.
package raftnet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/medmesh/medmesh/internal/pki"
)

// StreamLayer is the Raft TCP stream layer, mutual TLS between coordinators
// when the coordinator has certificates. It can cut this node off from
// every Raft peer (a network partition), which the fault-injection tests
// use.
type StreamLayer struct {
	ln        net.Listener // a *tlsListener with TLS
	advertise net.Addr
	// client is the TLS configuration of outgoing connections; nil means
	// plaintext (loopback or --dev only).
	client *tls.Config
	// local is the address outgoing Raft connections come from: the bound
	// IP, so that a peer (and a firewall rule) sees the same address this
	// node listens on. nil when bound to a wildcard address.
	local *net.TCPAddr

	mu       sync.Mutex
	isolated bool
	closed   bool // set by Close: no connection is accepted or dialed after it
	conns    map[*trackedConn]struct{}
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

// TLS is the TLS of the Raft transport: both ends must hold a
// coordinator certificate of the campus CA.
type TLS struct {
	server, client *tls.Config
}

// NewTLS builds the Raft transport's TLS from the coordinator's files.
func NewTLS(files pki.Files) (*TLS, error) {
	srv, err := pki.ServerConfig(files, pki.ServerOptions{RequireClientCert: true, Roles: []pki.Role{pki.RoleCoordinator}})
	if err != nil {
		return nil, fmt.Errorf("raft tls: %w", err)
	}
	cli, err := pki.ClientConfig(files, pki.RoleCoordinator)
	if err != nil {
		return nil, fmt.Errorf("raft tls: %w", err)
	}
	return &TLS{server: srv, client: cli}, nil
}

// handshakeTimeout bounds the TLS handshake of an accepted Raft connection,
// so a peer that connects and says nothing holds nothing for long.
const handshakeTimeout = 5 * time.Second

// NewStreamLayer listens on bind; with tl, every connection in and out is
// mutual TLS. log (may be nil) hears of refused handshakes.
func NewStreamLayer(bind string, tl *TLS, log *slog.Logger) (*StreamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	s := &StreamLayer{ln: ln, advertise: ln.Addr(), conns: map[*trackedConn]struct{}{}}
	if a, ok := ln.Addr().(*net.TCPAddr); ok && !a.IP.IsUnspecified() {
		s.local = &net.TCPAddr{IP: a.IP}
	}
	if tl != nil {
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		s.ln = newTLSListener(ln, tl.server, handshakeTimeout, log)
		s.client = tl.client
	}
	return s, nil
}

var errIsolated = errors.New("raft transport isolated")

// Accept returns the next inbound connection. After Close it fails with
// net.ErrClosed, even for a connection the listener accepted while Close
// ran (track refuses it), so the transport never serves a connection that
// nothing would close.
func (s *StreamLayer) Accept() (net.Conn, error) {
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

func (s *StreamLayer) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *StreamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	s.mu.Lock()
	iso, closed := s.isolated, s.closed
	s.mu.Unlock()
	switch {
	case closed:
		return nil, net.ErrClosed
	case iso:
		return nil, errIsolated
	}
	// One deadline for the TCP connect and the TLS handshake: a peer that
	// accepts and then says nothing cannot hold Raft's dialer.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := net.Dialer{}
	if s.local != nil {
		d.LocalAddr = s.local
	}
	c, err := d.DialContext(ctx, "tcp", string(addr))
	if err != nil {
		return nil, err
	}
	if s.client != nil {
		tc := tls.Client(c, s.client)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("raft tls handshake with %s: %w", addr, err)
		}
		c = tc
	}
	if tc := s.track(c); tc != nil {
		return tc, nil
	}
	if s.isClosed() {
		return nil, net.ErrClosed
	}
	return nil, errIsolated
}

func (s *StreamLayer) track(c net.Conn) *trackedConn {
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
func (s *StreamLayer) Close() error {
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
func (s *StreamLayer) Addr() net.Addr { return s.advertise }

// SetIsolated cuts (or restores) every Raft connection of this node.
func (s *StreamLayer) SetIsolated(iso bool) {
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

// tlsListener hands out only connections whose TLS handshake succeeded.
// Handshakes run concurrently, each bounded by timeout, so a silent or
// slow client delays no other; Close aborts those in progress.
type tlsListener struct {
	net.Listener
	cfg     *tls.Config
	timeout time.Duration
	log     *slog.Logger

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	ready  chan net.Conn
	failed chan struct{} // closed when the accept loop stopped; err says why
	err    error
	wg     sync.WaitGroup
	once   sync.Once
}

func newTLSListener(ln net.Listener, cfg *tls.Config, timeout time.Duration, log *slog.Logger) *tlsListener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &tlsListener{Listener: ln, cfg: cfg, timeout: timeout, log: log,
		ctx: ctx, cancel: cancel, ready: make(chan net.Conn), failed: make(chan struct{})}
	l.wg.Add(1)
	go l.loop()
	return l
}

func (l *tlsListener) loop() {
	defer l.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				l.err = net.ErrClosed
				close(l.failed)
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			select {
			case <-time.After(backoff):
			case <-l.ctx.Done():
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		l.wg.Add(1)
		go l.handshake(c)
	}
}

func (l *tlsListener) handshake(c net.Conn) {
	defer l.wg.Done()
	tc := tls.Server(c, l.cfg)
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		c.Close()
		if l.ctx.Err() == nil {
			l.log.Warn("raft: refused a connection", "remote", c.RemoteAddr().String(), "err", err)
		}
		return
	}
	select {
	case l.ready <- tc:
	case <-l.ctx.Done():
		tc.Close()
	}
}

// Accept returns the next connection that completed its handshake.
func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.failed:
		return nil, l.err
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops accepting, aborts handshakes in progress and waits for them.
func (l *tlsListener) Close() error {
	var err error
	l.once.Do(func() {
		l.cancel()
		err = l.Listener.Close()
		l.wg.Wait()
	})
	return err
}

type trackedConn struct {
	net.Conn
	l    *StreamLayer
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
