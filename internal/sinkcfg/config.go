// Package sinkcfg checks outbound sink configurations (medmesh.v1.Sink):
// the coordinators' FSM and API validate with it, and `medmesh sinks put`
// parses its file with it.
package sinkcfg

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// KindStuck is the alert kind a stuck sink raises.
const KindStuck = "sink_stuck"

// Event kinds a sink can select.
const (
	EventAlert = "alert"
	EventAudit = "audit"
	// EventFinding is a risk finding of a device's committed posture. A
	// sink listing no events takes alerts and audit records, as before
	// findings were events: findings (up to 256 per device, again at each
	// assessment) are taken only by sinks that ask for them.
	EventFinding = "finding"
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// MaxConfigSize bounds a sink configuration file.
const MaxConfigSize = 64 << 10

// Validate checks a sink's user fields. It never opens the files the sink
// names: they are paths on the coordinators, read by the leader when it
// delivers.
func Validate(s *medmeshv1.Sink) error {
	if s == nil {
		return errors.New("sink: required")
	}
	if !nameRE.MatchString(s.GetName()) {
		return fmt.Errorf("sink name %q: want 1-64 of [a-z0-9_.-], starting with a letter or digit", s.GetName())
	}
	for _, f := range []struct{ field, path string }{
		{"ca_file", s.GetCaFile()}, {"cert_file", s.GetCertFile()}, {"key_file", s.GetKeyFile()}, {"hmac_key_file", s.GetHmacKeyFile()},
	} {
		if f.path != "" && (!filepath.IsAbs(f.path) || filepath.Clean(f.path) != f.path || len(f.path) > 4096) {
			return fmt.Errorf("sink %s: %s %q: want a clean absolute path on the coordinators", s.GetName(), f.field, f.path)
		}
	}
	if (s.GetCertFile() == "") != (s.GetKeyFile() == "") {
		return fmt.Errorf("sink %s: cert_file and key_file go together (mutual TLS)", s.GetName())
	}
	if len(s.GetServerName()) > 253 || len(s.GetAppName()) > 48 {
		return fmt.Errorf("sink %s: server_name or app_name too long", s.GetName())
	}
	for _, r := range s.GetAppName() {
		if r < 33 || r > 126 { // RFC 5424 APP-NAME is PRINTUSASCII
			return fmt.Errorf("sink %s: app_name %q: want printable US-ASCII without spaces", s.GetName(), s.GetAppName())
		}
	}
	seen := map[string]bool{}
	for _, e := range s.GetEvents() {
		if e != EventAlert && e != EventAudit && e != EventFinding {
			return fmt.Errorf("sink %s: event %q: want %q, %q or %q", s.GetName(), e, EventAlert, EventAudit, EventFinding)
		}
		if seen[e] {
			return fmt.Errorf("sink %s: event %q listed twice", s.GetName(), e)
		}
		seen[e] = true
	}
	switch s.GetKind() {
	case medmeshv1.SinkKind_SINK_KIND_SYSLOG:
		if s.GetUrl() != "" || s.GetHmacKeyFile() != "" {
			return fmt.Errorf("sink %s: url and hmac_key_file are for webhooks", s.GetName())
		}
		host, port, err := net.SplitHostPort(s.GetAddress())
		if err != nil || host == "" {
			return fmt.Errorf("sink %s: address %q: want host:port", s.GetName(), s.GetAddress())
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			return fmt.Errorf("sink %s: address %q: bad port", s.GetName(), s.GetAddress())
		}
		if !s.GetTls() && (s.GetCaFile() != "" || s.GetCertFile() != "") {
			return fmt.Errorf("sink %s: ca_file and cert_file need tls", s.GetName())
		}
		if f := s.GetFormat(); f != medmeshv1.SinkFormat_SINK_FORMAT_UNSPECIFIED && f != medmeshv1.SinkFormat_SINK_FORMAT_CEF && f != medmeshv1.SinkFormat_SINK_FORMAT_OCSF {
			return fmt.Errorf("sink %s: a syslog sink sends CEF or OCSF, not %v", s.GetName(), f)
		}
	case medmeshv1.SinkKind_SINK_KIND_WEBHOOK:
		if s.GetAddress() != "" || s.GetTls() || s.GetAppName() != "" {
			return fmt.Errorf("sink %s: address, tls and app_name are for syslog sinks (a webhook uses TLS for an https url)", s.GetName())
		}
		u, err := url.Parse(s.GetUrl())
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Fragment != "" {
			return fmt.Errorf("sink %s: url %q: want http(s)://host[:port]/path without credentials", s.GetName(), s.GetUrl())
		}
		if u.Scheme == "http" && (s.GetCaFile() != "" || s.GetCertFile() != "") {
			return fmt.Errorf("sink %s: ca_file and cert_file need an https url", s.GetName())
		}
		if f := s.GetFormat(); f == medmeshv1.SinkFormat_SINK_FORMAT_CEF {
			return fmt.Errorf("sink %s: a webhook sends JSON, OCSF or SERVICENOW, not CEF", s.GetName())
		}
	default:
		return fmt.Errorf("sink %s: kind: want SYSLOG or WEBHOOK", s.GetName())
	}
	if s.GetFormat() < 0 || s.GetFormat() > medmeshv1.SinkFormat_SINK_FORMAT_SERVICENOW {
		return fmt.Errorf("sink %s: unknown format %d", s.GetName(), s.GetFormat())
	}
	return nil
}

// Format is the sink's effective payload format.
func Format(s *medmeshv1.Sink) medmeshv1.SinkFormat {
	if f := s.GetFormat(); f != medmeshv1.SinkFormat_SINK_FORMAT_UNSPECIFIED {
		return f
	}
	if s.GetKind() == medmeshv1.SinkKind_SINK_KIND_SYSLOG {
		return medmeshv1.SinkFormat_SINK_FORMAT_CEF
	}
	return medmeshv1.SinkFormat_SINK_FORMAT_JSON
}

// Wants reports whether the sink takes events of kind ev: the kinds it
// lists, or alerts and audit records when it lists none.
func Wants(s *medmeshv1.Sink, ev string) bool {
	if len(s.GetEvents()) == 0 {
		return ev == EventAlert || ev == EventAudit
	}
	return slices.Contains(s.GetEvents(), ev)
}

// ParseConfig reads a sink configuration file (the protojson form of
// medmesh.v1.Sink, as `medmesh sinks put --file` takes it): unknown fields
// and output-only fields are refused, and the result is validated.
func ParseConfig(data []byte) (*medmeshv1.Sink, error) {
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("sink config: %d bytes, more than %d", len(data), MaxConfigSize)
	}
	var s medmeshv1.Sink
	if err := (protojson.UnmarshalOptions{}).Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("sink config: %w", err)
	}
	if s.Version != 0 || s.Revision != 0 || s.UpdateTime != nil || s.UpdatedBy != "" || s.AlertPosition != 0 || s.AuditSeq != 0 || s.PostureIndex != 0 || s.PostureMac != "" {
		return nil, errors.New("sink config: version, revision, update_time, updated_by, alert_position, audit_seq, posture_index and posture_mac are output only")
	}
	if err := Validate(&s); err != nil {
		return nil, err
	}
	return proto.CloneOf(&s), nil
}
