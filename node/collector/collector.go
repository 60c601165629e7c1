// Package collector receives flow export from routers, VPN concentrators
// and gateways that see devices the sensor's own capture cannot (devices
// at home, at remote sites): IPFIX (RFC 7011) and NetFlow v9 (RFC 3954)
// over UDP. Messages are parsed by goflow2's decoder
// (github.com/netsampler/goflow2/v2/decoders/netflow); this package keeps
// a bounded, expiring template cache per exporter, follows sequence
// numbers, pairs one-way records into the project's bidirectional flow
// records and hands them to the engine at the same seam as captured flows
// (flow.Handler.HandleFlow), each tagged with its exporter's site.
//
// Flow records carry no payload, no link layer (usually) and no DHCP,
// DNS, HL7 or DICOM fields: what the engine learns from them is what
// addresses, ports, protocols, peers, packets and bytes show.
package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medmesh/medmesh/node/flow"
)

// Config configures a collector.
type Config struct {
	// Addr is the UDP listen address, host:port.
	Addr string
	// Sites names exporters by source address; an exporter not named
	// here is its own site, named by its address.
	Sites map[netip.Addr]string
	// MaxExporters bounds the exporters tracked at once; MaxTemplates the
	// templates (and observation domains) kept per exporter.
	MaxExporters, MaxTemplates int
	// TemplateTimeout is how long a template lives unless its exporter
	// resends it (RFC 7011 8.4 leaves it to the collector; exporters
	// resend every few minutes).
	TemplateTimeout time.Duration
	// PairWait is how long a one-way record waits for its reverse; 0
	// passes every record on alone.
	PairWait time.Duration
	// MaxPending bounds the one-way records waiting for their reverse.
	MaxPending int
}

// DefaultConfig returns a collector for up to 1024 exporters.
func DefaultConfig() Config {
	return Config{
		MaxExporters:    1024,
		MaxTemplates:    256,
		TemplateTimeout: 30 * time.Minute,
		PairWait:        2 * time.Second,
		MaxPending:      1 << 16,
	}
}

func (c Config) validate() error {
	var errs []error
	if c.MaxExporters <= 0 || c.MaxTemplates <= 0 || c.MaxPending <= 0 {
		errs = append(errs, errors.New("max exporters, templates and pending records must be positive"))
	}
	if c.TemplateTimeout <= 0 || c.PairWait < 0 {
		errs = append(errs, errors.New("template timeout must be positive, pair wait not negative"))
	}
	for a, n := range c.Sites {
		if n == "" || !a.IsValid() {
			errs = append(errs, fmt.Errorf("site of exporter %v: empty", a))
		}
	}
	return errors.Join(errs...)
}

func (c Config) site(a netip.Addr) string {
	if n, ok := c.Sites[a]; ok {
		return n
	}
	return a.String()
}

// ParseSite parses "ADDRESS=NAME", an exporter's site name.
func ParseSite(s string) (netip.Addr, string, error) {
	a, name, ok := strings.Cut(s, "=")
	addr, err := netip.ParseAddr(strings.TrimSpace(a))
	name = strings.TrimSpace(name)
	if !ok || err != nil || name == "" {
		return netip.Addr{}, "", fmt.Errorf("exporter site %q: want ADDRESS=NAME", s)
	}
	return addr.Unmap(), name, nil
}

// Sink receives the collected flow records (the engine).
type Sink interface {
	HandleFlow(*flow.Record)
}

// Collector listens for flow export on one UDP socket.
type Collector struct {
	cfg  Config
	log  *slog.Logger
	conn net.PacketConn

	mu  sync.Mutex
	dec *Decoder
	out uint64 // flow records handed on
}

// Listen binds the collector's socket. reg may be nil.
func Listen(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Collector, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("collector config: %w", err)
	}
	conn, err := net.ListenPacket("udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("collector: %w", err)
	}
	c := &Collector{cfg: cfg, log: log, conn: conn, dec: newDecoder(cfg)}
	if reg != nil {
		if err := c.register(reg); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *Collector) register(reg prometheus.Registerer) error {
	counter := func(name, help string, f func(Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "medmesh", Subsystem: "collector", Name: name, Help: help},
			func() float64 { return float64(f(c.Stats())) })
	}
	for _, m := range []prometheus.Collector{
		counter("messages_total", "Flow export messages received.", func(s Stats) uint64 { return s.Messages }),
		counter("malformed_total", "Flow export messages that did not decode.", func(s Stats) uint64 { return s.Malformed }),
		counter("unknown_template_total", "Messages with data of a template not (or no longer) known.", func(s Stats) uint64 { return s.Unknown }),
		counter("records_total", "One-way flow records decoded.", func(s Stats) uint64 { return s.Records }),
		counter("lost_total", "Data records (IPFIX) or export packets (NetFlow v9) the exporters' sequence numbers say were lost.", func(s Stats) uint64 { return s.Lost }),
		counter("templates_refused_total", "Templates not kept: cache full, a field of length 0, or too many fields.", func(s Stats) uint64 { return s.TemplatesRefused }),
		counter("exporters_refused_total", "Messages from exporters beyond the exporter limit.", func(s Stats) uint64 { return s.ExportersRefused }),
	} {
		if err := reg.Register(m); err != nil {
			return fmt.Errorf("collector metrics: %w", err)
		}
	}
	return nil
}

// Addr is the bound address.
func (c *Collector) Addr() net.Addr { return c.conn.LocalAddr() }

// Stats returns the decoder's counts so far.
func (c *Collector) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dec.Stats()
}

// Serve receives until ctx ends, handing flow records to sink, then
// closes the socket. Records still waiting for their reverse are handed
// on alone at the end.
func (c *Collector) Serve(ctx context.Context, sink Sink) error {
	stop := context.AfterFunc(ctx, func() { c.conn.SetReadDeadline(time.Now()) })
	defer stop()
	defer c.conn.Close()
	p := newPairer(c.cfg.PairWait, c.cfg.MaxPending)
	emit := func(r *flow.Record) {
		c.out++
		sink.HandleFlow(r)
	}
	tick := c.cfg.PairWait / 2
	if tick <= 0 {
		tick = time.Second
	}
	buf := make([]byte, 65535)
	var flushed time.Time
	for {
		if ctx.Err() != nil {
			p.flush(time.Time{}, emit)
			return nil
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(tick))
		n, from, err := c.conn.ReadFrom(buf)
		now := time.Now()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				p.flush(now, emit)
				continue
			}
			if ctx.Err() != nil {
				p.flush(time.Time{}, emit)
				return nil
			}
			return fmt.Errorf("collector: %w", err)
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		addr, _ := netip.AddrFromSlice(ua.IP)
		c.mu.Lock()
		recs, site, err := c.dec.Decode(addr, buf[:n], now)
		c.mu.Unlock()
		if err != nil {
			c.log.Debug("flow export message", "exporter", addr, "err", err)
		}
		for _, w := range recs {
			p.add(site, w, now, emit)
		}
		if now.Sub(flushed) >= tick {
			p.flush(now, emit)
			flushed = now
		}
	}
}
