package sim

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ServerStats counts the exchanges a service answered.
type ServerStats struct {
	HL7Acks      atomic.Int64
	DICOMAssocs  atomic.Int64
	DICOMBytes   atomic.Int64
	DHCPOffers   atomic.Int64
	DNSAnswers   atomic.Int64
	NTPAnswers   atomic.Int64
	NurseCalls   atomic.Int64
	HTTPRequests atomic.Int64
	SinkBytes    atomic.Int64
}

// Server is a running core or internet service.
type Server struct {
	cfg   Config
	log   *slog.Logger
	Stats ServerStats

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	addrs   map[string]net.Addr
	closers []io.Closer
	https   []*http.Server
}

// StartServer binds every listener of cfg's service kind and serves in the
// background until Close.
func StartServer(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if !cfg.Kind.IsService() {
		return nil, fmt.Errorf("%s is not a service", cfg.Kind)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, log: log.With("service", cfg.ID), ctx: ctx, cancel: cancel, addrs: map[string]net.Addr{}}
	var err error
	switch cfg.Kind {
	case KindHL7Engine:
		err = s.tcp("hl7", PortHL7Engine, s.serveMLLP)
	case KindCentral:
		err = errors.Join(s.tcp("mllp", PortMLLP, s.serveMLLP), s.udp("nursecall", PortNurseCall, s.answerNurseCall))
	case KindPACS:
		err = s.tcp("dicom", PortDICOM, s.servePACS)
	case KindDHCPDNS:
		err = errors.Join(s.udp("dns", PortDNS, s.answerDNS), s.udp("dhcp", PortDHCP, s.answerDHCP))
	case KindNTP:
		err = s.udp("ntp", PortNTP, s.answerNTP)
	case KindInternet:
		err = errors.Join(s.web("http", PortHTTP, false), s.web("https", PortHTTPS, true), s.tcp("sink", 8443, s.sink))
	}
	if err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

// Addr returns the bound address of the named listener ("hl7", "mllp",
// "nursecall", "dicom", "dns", "dhcp", "ntp", "http", "https", "sink").
func (s *Server) Addr(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.addrs[name]; ok {
		return a.String()
	}
	return ""
}

// Close stops every listener and waits for the handlers.
func (s *Server) Close() error {
	s.cancel()
	s.mu.Lock()
	var errs []error
	for _, c := range s.closers {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for _, h := range s.https {
		if err := h.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.closers, s.https = nil, nil
	s.mu.Unlock()
	s.wg.Wait()
	return errors.Join(errs...)
}

func (s *Server) hostPort(name string, def int) string {
	return net.JoinHostPort(s.cfg.Listen, strconv.Itoa(s.cfg.port(name, def)))
}

func (s *Server) track(name string, c io.Closer, a net.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addrs[name] = a
	s.closers = append(s.closers, c)
}

func (s *Server) tcp(name string, def int, handle func(net.Conn) error) error {
	ln, err := net.Listen("tcp", s.hostPort(name, def))
	if err != nil {
		return fmt.Errorf("listen %s: %w", name, err)
	}
	s.track(name, ln, ln.Addr())
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() {
				defer c.Close()
				stop := context.AfterFunc(s.ctx, func() { c.Close() })
				defer stop()
				_ = c.SetDeadline(time.Now().Add(time.Minute))
				if err := handle(c); err != nil && !errors.Is(err, io.EOF) && s.ctx.Err() == nil {
					s.log.Debug("connection ended", "listener", name, "peer", c.RemoteAddr().String(), "err", err)
				}
			})
		}
	})
	return nil
}

func (s *Server) udp(name string, def int, answer func(req []byte, from *net.UDPAddr) []byte) error {
	pc, err := net.ListenPacket("udp4", s.hostPort(name, def))
	if err != nil {
		return fmt.Errorf("listen %s: %w", name, err)
	}
	s.track(name, pc, pc.LocalAddr())
	s.wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := answer(buf[:n], from.(*net.UDPAddr)); resp != nil {
				_, _ = pc.WriteTo(resp, from)
			}
		}
	})
	return nil
}

func (s *Server) serveMLLP(c net.Conn) error {
	r := bufio.NewReader(c)
	for {
		msg, err := readMLLP(r)
		if err != nil {
			return err
		}
		app := s.cfg.HL7App
		if app == "" {
			app = string(s.cfg.Kind)
		}
		if err := writeMLLP(c, ackFor(msg, app, s.cfg.HL7Software, time.Now())); err != nil {
			return err
		}
		s.Stats.HL7Acks.Add(1)
	}
}

func (s *Server) servePACS(c net.Conn) error {
	n, err := serveDICOM(c)
	s.Stats.DICOMBytes.Add(int64(n))
	if err == nil {
		s.Stats.DICOMAssocs.Add(1)
	}
	return err
}

func (s *Server) sink(c net.Conn) error {
	n, err := io.Copy(io.Discard, c)
	s.Stats.SinkBytes.Add(n)
	return err
}

func (s *Server) answerNurseCall(req []byte, _ *net.UDPAddr) []byte {
	s.Stats.NurseCalls.Add(1)
	return []byte("ACK")
}

func (s *Server) answerDNS(req []byte, _ *net.UDPAddr) []byte {
	_, name, end, err := dnsQuestion(req)
	if err != nil {
		return nil
	}
	var ip net.IP
	if v, ok := s.cfg.Records[name]; ok {
		ip = net.ParseIP(v)
	}
	s.Stats.DNSAnswers.Add(1)
	return dnsAnswer(req, end, ip)
}

func (s *Server) answerDHCP(req []byte, from *net.UDPAddr) []byte {
	opts, err := dhcpOptions(req)
	if err != nil || req[0] != 1 || len(opts[53]) != 1 || opts[53][0] != 1 {
		return nil
	}
	server := net.ParseIP(s.cfg.Listen)
	router := routerFor(from.IP)
	s.Stats.DHCPOffers.Add(1)
	var ntp net.IP
	if h, _, err := net.SplitHostPort(s.cfg.NTP); err == nil {
		ntp = net.ParseIP(h)
	}
	return dhcpOffer(req, from.IP, server, router, server, ntp)
}

// routerFor guesses the gateway of a lab /24: its .1 address.
func routerFor(ip net.IP) net.IP {
	v4 := ip.To4()
	if v4 == nil {
		return net.IPv4zero
	}
	return net.IPv4(v4[0], v4[1], v4[2], 1)
}

func (s *Server) answerNTP(req []byte, _ *net.UDPAddr) []byte {
	recv := time.Now()
	resp, err := ntpResponse(req, recv, time.Now())
	if err != nil {
		return nil
	}
	s.Stats.NTPAnswers.Add(1)
	return resp
}

func (s *Server) web(name string, def int, useTLS bool) error {
	ln, err := net.Listen("tcp", s.hostPort(name, def))
	if err != nil {
		return fmt.Errorf("listen %s: %w", name, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.Stats.HTTPRequests.Add(1)
		n, _ := io.Copy(io.Discard, r.Body)
		s.Stats.SinkBytes.Add(n)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	h := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	if useTLS {
		cert, err := selfSigned(s.cfg.ID)
		if err != nil {
			ln.Close()
			return err
		}
		h.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, h.TLSConfig)
	}
	s.mu.Lock()
	s.addrs[name] = ln.Addr()
	s.https = append(s.https, h)
	s.mu.Unlock()
	s.wg.Go(func() { _ = h.Serve(ln) })
	return nil
}

// selfSigned makes a throwaway certificate for the lab's internet host.
func selfSigned(name string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
