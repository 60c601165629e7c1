package sink

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/medmesh/medmesh/internal/sinkcfg"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Webhook headers. The signature is HMAC-SHA256, keyed by the sink's key
// file, over the timestamp, a dot and the body ("TIMESTAMP.BODY"), hex
// encoded after "sha256=": a receiver recomputes it, compares in constant
// time and refuses timestamps too far from its clock (replays).
const (
	HeaderEventID   = "X-Medmesh-Event-Id"
	HeaderTimestamp = "X-Medmesh-Timestamp"
	HeaderSignature = "X-Medmesh-Signature"
)

// Sign is the X-Medmesh-Signature value of body sent at ts (unix seconds).
func Sign(key []byte, ts int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// sender delivers events to one sink. Send returns nil only once the
// receiver has the event as far as its protocol can tell: an HTTP 2xx, or
// the syslog frame written to the connection (syslog over TCP has no
// acknowledgement: a receiver that dies with unread data in its socket
// loses it, which RFC 5425 cannot detect).
type sender interface {
	Send(ctx context.Context, e Event) error
	Close()
}

// Timeouts of one delivery.
const (
	dialTimeout = 5 * time.Second
	sendTimeout = 10 * time.Second
)

// newSender builds the transport of s, reading its files (CA, client
// certificate, HMAC key) now. Errors name files, never their contents.
func newSender(s *medmeshv1.Sink, host, version string) (sender, error) {
	var tc *tls.Config
	var err error
	switch s.GetKind() {
	case medmeshv1.SinkKind_SINK_KIND_SYSLOG:
		if s.GetTls() {
			h, _, _ := net.SplitHostPort(s.GetAddress())
			if tc, err = tlsConfig(s, h); err != nil {
				return nil, err
			}
		}
		return &syslogSender{s: s, host: host, version: version, tls: tc}, nil
	case medmeshv1.SinkKind_SINK_KIND_WEBHOOK:
		u, err := url.Parse(s.GetUrl())
		if err != nil {
			return nil, fmt.Errorf("sink %s: url: %w", s.GetName(), err)
		}
		if u.Scheme == "https" {
			if tc, err = tlsConfig(s, u.Hostname()); err != nil {
				return nil, err
			}
		}
		var key []byte
		if f := s.GetHmacKeyFile(); f != "" {
			if key, err = os.ReadFile(f); err != nil {
				return nil, fmt.Errorf("sink %s: hmac key file %s: %w", s.GetName(), f, errors.Unwrap(err))
			}
			if key = bytes.TrimSpace(key); len(key) < 16 {
				return nil, fmt.Errorf("sink %s: hmac key file %s: want at least 16 bytes of key", s.GetName(), f)
			}
		}
		tr := &http.Transport{
			TLSClientConfig: tc, DialContext: (&net.Dialer{Timeout: dialTimeout}).DialContext,
			MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute, ResponseHeaderTimeout: sendTimeout,
			// Only the configured receiver: no proxy from the environment.
			Proxy: nil,
		}
		return &webhookSender{s: s, host: host, version: version, key: key, client: &http.Client{Transport: tr, Timeout: sendTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}, nil
	}
	return nil, fmt.Errorf("sink %s: unknown kind %v", s.GetName(), s.GetKind())
}

func tlsConfig(s *medmeshv1.Sink, host string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if n := s.GetServerName(); n != "" {
		tc.ServerName = n
	}
	if f := s.GetCaFile(); f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("sink %s: ca file: %w", s.GetName(), err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("sink %s: ca file %s holds no PEM certificate", s.GetName(), f)
		}
		tc.RootCAs = pool
	}
	if s.GetCertFile() != "" {
		c, err := tls.LoadX509KeyPair(s.GetCertFile(), s.GetKeyFile())
		if err != nil {
			// tls's errors quote no key material.
			return nil, fmt.Errorf("sink %s: client certificate %s / %s: %w", s.GetName(), s.GetCertFile(), s.GetKeyFile(), err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}

// syslogSender writes RFC 5424 messages over TCP, or TLS (RFC 5425), each
// framed by octet counting: "LEN SP SYSLOG-MSG".
type syslogSender struct {
	s             *medmeshv1.Sink
	host, version string
	tls           *tls.Config
	conn          net.Conn
}

// Syslog formats one RFC 5424 message: facility security/authorization
// (10), severity from the event's score, MSGID the event kind, no
// structured data, MSG the CEF line or the OCSF JSON.
func Syslog(s *medmeshv1.Sink, e Event, host, version string) ([]byte, error) {
	var msg []byte
	if sinkcfg.Format(s) == medmeshv1.SinkFormat_SINK_FORMAT_OCSF {
		b, err := OCSF(e, host, version)
		if err != nil {
			return nil, err
		}
		msg = b
	} else {
		msg = []byte(CEF(e, host, version))
	}
	app := s.GetAppName()
	if app == "" {
		app = "medmesh"
	}
	hdr := fmt.Sprintf("<%d>1 %s %s %s - %s - ", 10*8+e.syslogSeverity(),
		e.Time().UTC().Format("2006-01-02T15:04:05.000000Z07:00"), headerField(host, 255), app, e.Kind())
	return append([]byte(hdr), msg...), nil
}

// headerField keeps an RFC 5424 header field PRINTUSASCII and bounded.
func headerField(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 33 || r > 126 {
			return '_'
		}
		return r
	}, s)
	if s == "" {
		return "-"
	}
	return s[:min(len(s), n)]
}

func (x *syslogSender) Send(ctx context.Context, e Event) error {
	msg, err := Syslog(x.s, e, x.host, x.version)
	if err != nil {
		return err
	}
	if x.conn == nil {
		d := &net.Dialer{Timeout: dialTimeout}
		var c net.Conn
		if x.tls != nil {
			c, err = (&tls.Dialer{NetDialer: d, Config: x.tls}).DialContext(ctx, "tcp", x.s.GetAddress())
		} else {
			c, err = d.DialContext(ctx, "tcp", x.s.GetAddress())
		}
		if err != nil {
			return fmt.Errorf("connect %s: %w", x.s.GetAddress(), err)
		}
		x.conn = c
	}
	frame := append([]byte(strconv.Itoa(len(msg))+" "), msg...)
	x.conn.SetWriteDeadline(time.Now().Add(sendTimeout))
	if _, err := x.conn.Write(frame); err != nil {
		x.Close()
		return fmt.Errorf("write to %s: %w", x.s.GetAddress(), err)
	}
	return nil
}

func (x *syslogSender) Close() {
	if x.conn != nil {
		x.conn.Close()
		x.conn = nil
	}
}

// webhookSender POSTs one JSON event per request.
type webhookSender struct {
	s             *medmeshv1.Sink
	host, version string
	key           []byte
	client        *http.Client
}

// WebhookBody is the body a webhook sink sends for e.
func WebhookBody(s *medmeshv1.Sink, e Event, host, version string) ([]byte, error) {
	switch sinkcfg.Format(s) {
	case medmeshv1.SinkFormat_SINK_FORMAT_OCSF:
		return OCSF(e, host, version)
	case medmeshv1.SinkFormat_SINK_FORMAT_SERVICENOW:
		return ServiceNow(e, host)
	}
	return JSON(e, host)
}

func (x *webhookSender) Send(ctx context.Context, e Event) error {
	body, err := WebhookBody(x.s, e, x.host, x.version)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, x.s.GetUrl(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "medmesh/"+x.version)
	req.Header.Set(HeaderEventID, e.ID)
	if x.key != nil {
		ts := time.Now().Unix()
		req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
		req.Header.Set(HeaderSignature, Sign(x.key, ts, body))
	}
	resp, err := x.client.Do(req)
	if err != nil {
		return fmt.Errorf("post: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("post: receiver answered %s", resp.Status)
	}
	return nil
}

func (x *webhookSender) Close() { x.client.CloseIdleConnections() }
