package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "medmesh_test_things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Add(3)
	var notReady atomic.Pointer[error]
	s := New("127.0.0.1:0", reg, func() error {
		if e := notReady.Load(); e != nil {
			return *e
		}
		return nil
	}, nil)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	base := "http://" + s.Addr().String()

	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "medmesh_test_things_total 3") {
		t.Fatalf("/metrics = %d %q", code, body)
	}
	if code, body := get(t, base+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/readyz ready = %d %q", code, body)
	}
	e := errors.New("raft: no leader")
	notReady.Store(&e)
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || strings.TrimSpace(body) != "raft: no leader" {
		t.Fatalf("/readyz not ready = %d %q", code, body)
	}
	// Liveness does not depend on readiness.
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz while not ready = %d", code)
	}
	// pprof is off unless enabled.
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
		if code, _ := get(t, base+p); code != http.StatusNotFound {
			t.Fatalf("%s without EnablePprof = %d, want 404", p, code)
		}
	}
	if code, _ := get(t, base+"/nope"); code != 404 {
		t.Fatalf("/nope = %d, want 404", code)
	}
	if err := s.Start(); err == nil {
		t.Fatal("second Start succeeded")
	}
}

func TestPprofWhenEnabled(t *testing.T) {
	s := New("127.0.0.1:0", nil, nil, nil)
	s.EnablePprof()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	base := "http://" + s.Addr().String()
	if code, body := get(t, base+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("/debug/pprof/ = %d", code)
	}
	if code, body := get(t, base+"/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile") {
		t.Fatalf("/debug/pprof/goroutine = %d", code)
	}
}

func TestDefaultAddrsDiffer(t *testing.T) {
	seen := map[string]bool{}
	for _, a := range []string{DefaultAddr, SensorAddr, EnforcerAddr} {
		if seen[a] {
			t.Fatalf("two daemons default to admin address %s", a)
		}
		seen[a] = true
	}
}

func TestStartBusyPort(t *testing.T) {
	a := New("127.0.0.1:0", nil, nil, nil)
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	b := New(a.Addr().String(), nil, nil, nil)
	if err := b.Start(); err == nil {
		b.Close(context.Background())
		t.Fatal("second listener on a busy port started")
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatalf("Close of an unstarted server: %v", err)
	}
}
