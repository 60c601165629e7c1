package gossip

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// DialFunc opens a TCP connection for memberlist's stream traffic (joins,
// push/pull, TCP fallback pings). Tests use it to dial from inside a
// network namespace.
type DialFunc func(addr string, timeout time.Duration) (net.Conn, error)

// countingTransport wraps memberlist's NetTransport and counts every byte
// this member sends and receives, on UDP packets and TCP streams alike, so
// that gossip cost per node can be measured without go-metrics globals.
type countingTransport struct {
	inner *memberlist.NetTransport
	dial  DialFunc

	sent, recv atomic.Uint64

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	done     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
}

var _ memberlist.NodeAwareTransport = (*countingTransport)(nil)

func newCountingTransport(inner *memberlist.NetTransport, dial DialFunc) *countingTransport {
	t := &countingTransport{
		inner:    inner,
		dial:     dial,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		done:     make(chan struct{}),
	}
	t.wg.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	return t
}

func (t *countingTransport) forwardPackets() {
	defer t.wg.Done()
	for {
		select {
		case p := <-t.inner.PacketCh():
			t.recv.Add(uint64(len(p.Buf)))
			select {
			case t.packetCh <- p:
			case <-t.done:
				return
			}
		case <-t.done:
			return
		}
	}
}

func (t *countingTransport) forwardStreams() {
	defer t.wg.Done()
	for {
		select {
		case c := <-t.inner.StreamCh():
			select {
			case t.streamCh <- &countingConn{Conn: c, t: t}:
			case <-t.done:
				c.Close()
				return
			}
		case <-t.done:
			return
		}
	}
}

func (t *countingTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	t.sent.Add(uint64(len(b)))
	return t.inner.WriteTo(b, addr)
}

func (t *countingTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	t.sent.Add(uint64(len(b)))
	return t.inner.WriteToAddress(b, a)
}

func (t *countingTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }
func (t *countingTransport) StreamCh() <-chan net.Conn           { return t.streamCh }

func (t *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	var err error
	if t.dial != nil {
		c, err = t.dial(addr, timeout)
	} else {
		c, err = t.inner.DialTimeout(addr, timeout)
	}
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, t: t}, nil
}

func (t *countingTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *countingTransport) Shutdown() error {
	err := t.inner.Shutdown()
	t.once.Do(func() { close(t.done) })
	t.wg.Wait()
	return err
}

type countingConn struct {
	net.Conn
	t *countingTransport
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.t.recv.Add(uint64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.t.sent.Add(uint64(n))
	return n, err
}
