package doctor

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/medmesh/medmesh/internal/testutil"
)

// TestCleanOnThisMachine: no check fails on this machine once it is set
// up as a systemd host is (bpffs mounted on /sys/fs/bpf at boot). Ports
// are free ones (the lab may hold 7400-7405 while this runs); warnings
// that are true of this machine (no NTP daemon, lo's 64 KiB MTU) are
// logged. A machine fresh from boot without systemd has no bpffs until
// something mounts it (the enforcer tests' datapaths do, in whatever order
// `go test ./...` runs them), so the test mounts it first, the doctor's
// own fix.
func TestCleanOnThisMachine(t *testing.T) {
	testutil.RequireRoot(t) // loading the probe XDP program needs CAP_BPF
	if r := bpffs("/proc/self/mountinfo"); r.Status != OK {
		if err := unix.Mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700"); err != nil {
			t.Fatalf("%s; mounting it as the fix says: %v", r.Detail, err)
		}
		t.Logf("mounted bpffs on /sys/fs/bpf (%s)", r.Detail)
	}
	cfg := DefaultConfig()
	cfg.Interface = "lo"
	cfg.Ports = []int{testutil.FreePort(t), testutil.FreePort(t)}
	for _, r := range Run(cfg) {
		switch r.Status {
		case Fail:
			t.Errorf("%s: %s (fix: %s)", r.Check, r.Detail, r.Fix)
		case Warn:
			t.Logf("warning true of this machine: %s: %s", r.Check, r.Detail)
		default:
			t.Logf("ok: %s: %s", r.Check, r.Detail)
		}
	}
}

// TestNoBpffsNamesTheFix runs the bpffs check in a fresh mount namespace
// (unshare(CLONE_NEWNS) on a re-executed test binary) where /sys/fs/bpf
// has been unmounted: it fails and says how to mount it. The host's mount
// is untouched.
func TestNoBpffsNamesTheFix(t *testing.T) {
	if os.Getenv("MEDMESH_DOCTOR_CHILD") == "1" {
		return
	}
	testutil.RequireRoot(t)
	if r := bpffs("/proc/self/mountinfo"); r.Status != OK {
		t.Skipf("bpffs is not mounted on this host to begin with: %s", r.Detail)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBpffsChild$", "-test.v")
	cmd.Env = append(os.Environ(), "MEDMESH_DOCTOR_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS} // Go makes / private first
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	i := strings.Index(string(out), "RESULT ")
	if i < 0 {
		t.Fatalf("child printed no result:\n%s", out)
	}
	var r Result
	line, _, _ := strings.Cut(string(out[i+len("RESULT "):]), "\n")
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatal(err)
	}
	if r.Status != Fail || !strings.Contains(r.Fix, "mount -t bpf bpf /sys/fs/bpf") {
		t.Errorf("without bpffs: %+v", r)
	}
	t.Logf("without bpffs: %s; fix: %s", r.Detail, r.Fix)
	if h := bpffs("/proc/self/mountinfo"); h.Status != OK {
		t.Errorf("the host lost its bpffs: %+v", h)
	}
}

// TestBpffsChild is the child of TestNoBpffsNamesTheFix.
func TestBpffsChild(t *testing.T) {
	if os.Getenv("MEDMESH_DOCTOR_CHILD") != "1" {
		t.Skip("runs only as TestNoBpffsNamesTheFix's child")
	}
	if err := unix.Unmount("/sys/fs/bpf", unix.MNT_DETACH); err != nil {
		t.Fatalf("umount /sys/fs/bpf in the new mount namespace: %v", err)
	}
	b, _ := json.Marshal(bpffs("/proc/self/mountinfo"))
	os.Stdout.WriteString("RESULT " + string(b) + "\n")
}

func TestKernelRelease(t *testing.T) {
	for rel, want := range map[string][2]int{"6.1.0-18-amd64": {6, 1}, "5.10.0": {5, 10}, "6.18.44-fc-v1272": {6, 18}, "5.9-rc1": {5, 9}} {
		maj, min, ok := parseRelease(rel)
		if !ok || maj != want[0] || min != want[1] {
			t.Errorf("%s: %d.%d %v", rel, maj, min, ok)
		}
	}
	if _, _, ok := parseRelease("weird"); ok {
		t.Error("parsed weird")
	}
}

func TestPortInUse(t *testing.T) {
	p := testutil.FreePort(t)
	rs := ports([]int{p})
	if rs[0].Status != OK {
		t.Fatalf("free port %d: %+v", p, rs[0])
	}
	l, err := listenTCP(p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if rs := ports([]int{p}); rs[0].Status != Fail || !strings.Contains(rs[0].Fix, "ss -ltnp") {
		t.Errorf("busy port %d: %+v", p, rs[0])
	}
}

// TestCertificates: valid, expiring within 30 days, expired, and signed
// by another CA.
func TestCertificates(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	caKey, caCert := makeCA(t)
	otherKey, otherCert := makeCA(t)
	caFile := writePEM(t, dir, "ca.pem", caCert.Raw)
	for _, tc := range []struct {
		name      string
		notAfter  time.Time
		signer    *ecdsa.PrivateKey
		signerCrt *x509.Certificate
		want      Status
		wantText  string
	}{
		{"valid", now.Add(90 * 24 * time.Hour), caKey, caCert, OK, "valid until"},
		{"expiring", now.Add(10 * 24 * time.Hour), caKey, caCert, Fail, "in 9 days"},
		{"expired", now.Add(-time.Hour), caKey, caCert, Fail, "expired"},
		{"other CA", now.Add(90 * 24 * time.Hour), otherKey, otherCert, Fail, "not signed by"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			tpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "s1"},
				NotBefore: now.Add(-48 * time.Hour), NotAfter: tc.notAfter,
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
			der, err := x509.CreateCertificate(rand.Reader, tpl, tc.signerCrt, &key.PublicKey, tc.signer)
			if err != nil {
				t.Fatal(err)
			}
			r := cert(writePEM(t, dir, tc.name+".pem", der), caFile, 30*24*time.Hour, now)
			if r.Status != tc.want || !strings.Contains(r.Detail, tc.wantText) {
				t.Errorf("%+v, want %s with %q", r, tc.want, tc.wantText)
			}
		})
	}
}

func makeCA(t *testing.T) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(3650 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return key, c
}

func writePEM(t *testing.T, dir, name string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
