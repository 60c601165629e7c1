package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/testutil"
)

// TestDaemonAdminDefaults: coordinator, sensor and enforcer each default to
// their own admin address (all three fit on one host), and each has
// --pprof, off by default.
func TestDaemonAdminDefaults(t *testing.T) {
	want := map[string]string{"coordinator": "127.0.0.1:7403", "node": "127.0.0.1:7404", "enforcer": "127.0.0.1:7405"}
	root := newRootCmd()
	for name, addr := range want {
		c, _, err := root.Find([]string{name})
		if err != nil || c.Name() != name {
			t.Fatalf("%s: %v", name, err)
		}
		if f := c.Flags().Lookup("admin"); f == nil || f.DefValue != addr {
			t.Errorf("%s --admin default %v, want %s", name, f, addr)
		}
		if f := c.Flags().Lookup("pprof"); f == nil || f.DefValue != "false" {
			t.Errorf("%s --pprof: %v, want a flag defaulting to false", name, f)
		}
	}
}

// TestCoordinatorAdminEndpoints runs a --dev coordinator with and without
// --pprof: /metrics, /healthz and /readyz always, pprof only when asked.
func TestCoordinatorAdminEndpoints(t *testing.T) {
	for _, pprof := range []bool{false, true} {
		t.Run(fmt.Sprintf("pprof=%v", pprof), func(t *testing.T) {
			o := startCoordinator(t, coordinatorOptions{dev: true, pprof: pprof})
			get := func(path string) (int, string) {
				c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
				resp, err := c.Get("http://" + o.admin + path)
				if err != nil {
					t.Fatalf("GET %s: %v", path, err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
				t.Errorf("/metrics = %d", code)
			}
			if code, body := get("/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
				t.Errorf("/healthz = %d %q", code, body)
			}
			testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, func() bool {
				code, _ := get("/readyz")
				return code == 200
			}, "/readyz never 200")
			wantPprof := http.StatusNotFound
			if pprof {
				wantPprof = 200
			}
			if code, _ := get("/debug/pprof/"); code != wantPprof {
				t.Errorf("/debug/pprof/ = %d, want %d", code, wantPprof)
			}
		})
	}
}
