package lab

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/medmesh/medmesh/internal/grpcx"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// SinkDemoResult is what the demo's receivers got for the compromised
// device: the first SIEM line (RFC 5424 with a CEF payload) and the first
// webhook body, with its verified signature.
type SinkDemoResult struct {
	Device     string `json:"device"`
	MAC        string `json:"mac"`
	SyslogLine string `json:"syslog_line"`
	Webhook    string `json:"webhook"`
	Signature  string `json:"signature"`
}

// SinkDemo shows the outbound sinks on the running lab: it starts a syslog
// receiver (TCP, octet-counted frames) and a webhook receiver on loopback,
// where the coordinators run, has the lab's approver add a CEF syslog sink
// and a signed webhook sink from the start of the retained history, waits
// for an alert of the compromised device on both, and removes the sinks.
func (c Config) SinkDemo(ctx context.Context, timeout time.Duration) (SinkDemoResult, error) {
	d, ok := c.Device(c.Compromised)
	if !ok {
		return SinkDemoResult{}, fmt.Errorf("compromised device %q is not in the lab", c.Compromised)
	}
	res := SinkDemoResult{Device: d.Name, MAC: d.MAC}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	key := make([]byte, 32)
	rand.Read(key)
	keyFile := filepath.Join(c.StateDir, "sink-demo-hmac.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key)), 0o600); err != nil {
		return res, err
	}
	defer os.Remove(keyFile)
	key = []byte(hex.EncodeToString(key)) // the key is the file's contents

	lines := make(chan string, 1024)
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	defer sl.Close()
	go func() {
		for {
			conn, err := sl.Accept()
			if err != nil {
				return
			}
			go readFrames(conn, lines)
		}
	}()
	hooks := make(chan [2]string, 1024)
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		ts := r.Header.Get("X-Medmesh-Timestamp")
		m := hmac.New(sha256.New, key)
		m.Write([]byte(ts + "."))
		m.Write(body)
		sig := r.Header.Get("X-Medmesh-Signature")
		if !hmac.Equal([]byte(sig), []byte("sha256="+hex.EncodeToString(m.Sum(nil)))) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		select {
		case hooks <- [2]string{string(body), sig}:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	go srv.Serve(hl)
	defer srv.Close()

	cc := grpcx.DefaultClientConfig()
	cc.TLS = c.TLSFiles(ApproverName)
	conn, err := grpcx.Dial(c.CoordinatorTargets(), cc, nil)
	if err != nil {
		return res, err
	}
	defer conn.Close()
	sinks := medmeshv1.NewSinkServiceClient(conn)
	put := []*medmeshv1.Sink{
		{Name: "lab-siem", Kind: medmeshv1.SinkKind_SINK_KIND_SYSLOG, Address: sl.Addr().String(), Events: []string{"alert"}},
		{Name: "lab-tickets", Kind: medmeshv1.SinkKind_SINK_KIND_WEBHOOK, Url: "http://" + hl.Addr().String() + "/events", HmacKeyFile: keyFile, Events: []string{"alert"}},
	}
	for _, s := range put {
		if _, err := sinks.PutSink(ctx, &medmeshv1.PutSinkRequest{Sink: s, StartAtBeginning: true, Reason: "make demo: show a SIEM line and a webhook", RequestId: sinkRequestID()}); err != nil {
			return res, fmt.Errorf("put sink %s: %w", s.Name, err)
		}
		defer func(name string) {
			dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer dcancel()
			sinks.DeleteSink(dctx, &medmeshv1.DeleteSinkRequest{Name: name, Reason: "make demo: done", RequestId: sinkRequestID()})
		}(s.Name)
	}
	mac := strings.ToLower(d.MAC)
	for res.SyslogLine == "" || res.Webhook == "" {
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("no alert of %s (%s) reached the receivers (syslog %t, webhook %t): %w", d.Name, d.MAC, res.SyslogLine != "", res.Webhook != "", ctx.Err())
		case l := <-lines:
			if res.SyslogLine == "" && strings.Contains(strings.ToLower(l), "smac="+mac) {
				res.SyslogLine = l
			}
		case h := <-hooks:
			var ev struct {
				Alert struct {
					DeviceMac string `json:"deviceMac"`
				} `json:"alert"`
			}
			if res.Webhook == "" && json.Unmarshal([]byte(h[0]), &ev) == nil && strings.EqualFold(ev.Alert.DeviceMac, mac) {
				res.Webhook, res.Signature = h[0], h[1]
			}
		}
	}
	return res, nil
}

// readFrames reads RFC 6587 octet-counted frames ("LEN SP MSG").
func readFrames(conn net.Conn, out chan<- string) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	for {
		n, err := r.ReadString(' ')
		if err != nil {
			return
		}
		size, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil || size <= 0 || size > 1<<20 {
			return
		}
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			return
		}
		select {
		case out <- string(buf):
		default:
		}
	}
}

func sinkRequestID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
