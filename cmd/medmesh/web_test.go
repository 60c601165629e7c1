package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/pki"
	"github.com/medmesh/medmesh/internal/testutil"
)

// TestCoordinatorWebConsoleTLS runs `medmesh coordinator --web-addr` with
// certificates: the console is HTTPS with the coordinator's certificate,
// an approver creates an account with `medmesh accounts add` (the
// password from a file), and that person logs in over HTTPS and gets a
// Secure, HttpOnly, SameSite=Strict session cookie. Without certificates
// a --web-addr off loopback is refused.
func TestCoordinatorWebConsoleTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.CreateCA(dir, "test campus", 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	issue := func(role pki.Role, name string) (string, string) {
		c, k, err := ca.IssueFiles(dir, name, pki.CertRequest{Identity: pki.Identity{Role: role, Name: name}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Days: 1})
		if err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	caFile := filepath.Join(dir, pki.CAFile)
	srvCert, srvKey := issue(pki.RoleCoordinator, "c1")
	admCert, admKey := issue(pki.RoleApprover, "ann")
	o := coordinatorOptions{
		id: "c1", dataDir: filepath.Join(dir, "c1"), bootstrapExpect: 1,
		api:  fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
		raft: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
		tls:  pki.Files{CAFile: caFile, CertFile: srvCert, KeyFile: srvKey}, logLevel: "warn",
		webAddr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- runCoordinator(ctx, o, io.Discard, ready) }()
	defer func() { cancel(); <-done }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("coordinator exited: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("coordinator not ready")
	}

	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("a password of some length\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "accounts", "add", "nurse.manager", "--role", "approver", "--password-file", pwFile,
		"--addr", o.api, "--tls-ca", caFile, "--tls-cert", admCert, "--tls-key", admKey)
	if code != 0 || !strings.Contains(stdout, "acts as approver/nurse.manager") || strings.Contains(stdout+stderr, "a password of some length") {
		t.Fatalf("accounts add: exit %d, %q %q", code, stdout, stderr)
	}

	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	origin := "https://" + o.webAddr
	req, _ := http.NewRequest(http.MethodPost, origin+"/api/login", strings.NewReader(`{"name":"nurse.manager","password":"a password of some length"}`))
	req.Header.Set("Origin", origin)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login over HTTPS: %d", resp.StatusCode)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "medmesh_session" {
			cookie = c
		}
	}
	if cookie == nil || !cookie.Secure || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie: %+v", cookie)
	}
	page, err := hc.Get(origin + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(page.Body)
	page.Body.Close()
	if !strings.Contains(string(body), `<script type="module" src="app.js">`) || page.Header.Get("Strict-Transport-Security") == "" {
		t.Fatalf("console page: %d %q", page.StatusCode, page.Header)
	}

	bad := o
	bad.tls, bad.webAddr, bad.dataDir = pki.Files{}, "0.0.0.0:0", ""
	bad.dev = true
	if err := runCoordinator(context.Background(), bad, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "not loopback") {
		t.Fatalf("plaintext console off loopback: %v", err)
	}
}
