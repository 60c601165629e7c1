package sinkcfg

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func TestParseConfig(t *testing.T) {
	good := []string{
		`{"name":"siem","kind":"SINK_KIND_SYSLOG","address":"127.0.0.1:6514","tls":true,"caFile":"/etc/medmesh/siem-ca.pem"}`,
		`{"name":"siem-ocsf","kind":"SINK_KIND_SYSLOG","format":"SINK_FORMAT_OCSF","address":"siem.example:601","events":["alert"]}`,
		`{"name":"vulns","kind":"SINK_KIND_SYSLOG","address":"siem.example:601","events":["finding","alert"]}`,
		`{"name":"tickets","kind":"SINK_KIND_WEBHOOK","url":"https://snow.example/api/now/import/u_medmesh","format":"SINK_FORMAT_SERVICENOW","hmacKeyFile":"/etc/medmesh/hmac.key","certFile":"/etc/medmesh/c.pem","keyFile":"/etc/medmesh/c.key"}`,
	}
	for _, g := range good {
		s, err := ParseConfig([]byte(g))
		if err != nil {
			t.Errorf("%s: %v", g, err)
			continue
		}
		if s.GetName() == "" {
			t.Errorf("%s: parsed without a name", g)
		}
	}
	bad := map[string]string{
		`{"name":"Bad","kind":"SINK_KIND_SYSLOG","address":"h:1"}`:                               "name",
		`{"name":"s","kind":"SINK_KIND_SYSLOG","address":"h"}`:                                   "host:port",
		`{"name":"s","kind":"SINK_KIND_SYSLOG","address":"h:0"}`:                                 "port",
		`{"name":"s","kind":"SINK_KIND_SYSLOG","address":"h:1","caFile":"/ca"}`:                  "need tls",
		`{"name":"s","kind":"SINK_KIND_SYSLOG","address":"h:1","tls":true,"caFile":"ca.pem"}`:    "absolute",
		`{"name":"s","kind":"SINK_KIND_WEBHOOK","url":"ftp://h/x"}`:                              "http",
		`{"name":"s","kind":"SINK_KIND_WEBHOOK","url":"https://u:p@h/x"}`:                        "credentials",
		`{"name":"s","kind":"SINK_KIND_WEBHOOK","url":"https://h/x","format":"SINK_FORMAT_CEF"}`: "not CEF",
		`{"name":"s","kind":"SINK_KIND_WEBHOOK","url":"https://h/x","certFile":"/c"}`:            "go together",
		`{"name":"s","kind":"SINK_KIND_SYSLOG","address":"h:1","events":["flows"]}`:              "event",
		`{"name":"s","kind":"SINK_KIND_SYSLOG","address":"h:1","version":"3"}`:                   "output only",
		`{"name":"s","kind":"SINK_KIND_SYSLOG","address":"h:1","postureIndex":"3"}`:              "output only",
		`{"name":"s","kind":"SINK_KIND_SYSLOG","address":"h:1","events":["finding","finding"]}`:  "twice",
		`{"name":"s","kind":"SINK_KIND_SYSLOG","address":"h:1","hmacKey":"secret"}`:              "unknown field",
		`{"name":"s","address":"h:1"}`:                                                           "kind",
		`{"name":"s","kind":"SINK_KIND_SYSLOG","address":"h:1","appName":"a b"}`:                 "app_name",
		`{"name":"s","kind":"SINK_KIND_SYSLOG","address":"h:1","hmacKeyFile":"/etc/medmesh/k"}`:  "webhooks",
	}
	for in, want := range bad {
		_, err := ParseConfig([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error about %q", in, err, want)
		}
	}
}

// FuzzParseConfig: a sink file is outside input (medmesh sinks put --file,
// and PutSink's request): it never panics, and what it accepts validates
// and survives a round trip through its own JSON.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"name":"siem","kind":"SINK_KIND_SYSLOG","address":"127.0.0.1:6514","tls":true,"caFile":"/etc/ca.pem"}`))
	f.Add([]byte(`{"name":"t","kind":"SINK_KIND_WEBHOOK","url":"https://h/x","format":"SINK_FORMAT_SERVICENOW","hmacKeyFile":"/k"}`))
	f.Add([]byte(`{"name":"x","kind":2,"url":"http://[::1]:8/","events":["alert","audit"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseConfig(data)
		if err != nil {
			return
		}
		if err := Validate(s); err != nil {
			t.Fatalf("accepted %q but it does not validate: %v", data, err)
		}
		out, err := protojson.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseConfig(out)
		if err != nil || !proto.Equal(back, s) {
			t.Fatalf("round trip of %q: %v", data, err)
		}
	})
}

// TestWantsDefault: a sink listing no events takes alerts and audit
// records, as before findings were events; findings only when listed.
func TestWantsDefault(t *testing.T) {
	all := &medmeshv1.Sink{}
	if !Wants(all, EventAlert) || !Wants(all, EventAudit) || Wants(all, EventFinding) {
		t.Error("default events: want alert and audit, not finding")
	}
	f := &medmeshv1.Sink{Events: []string{EventFinding}}
	if !Wants(f, EventFinding) || Wants(f, EventAlert) || Wants(f, EventAudit) {
		t.Error("events [finding]: want findings only")
	}
}
