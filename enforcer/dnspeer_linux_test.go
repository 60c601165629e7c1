//go:build linux

package enforcer_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/medmesh/medmesh/enforcer"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestDNSNamedPeerFollowsAnswers: a real coordinator, a real XDP enforcer
// on the lab's device link and a real DNS server. The Cisco luminaire's
// MUD file (RFC 8520), imported for the lab device and enforced, allows
// tcp/443 to fw-update.luminaire.example.com only. The enforcer resolves
// the name and installs its address: https to it passes, to the other
// server it is dropped. When the record moves to the other server, the
// allow entry follows once the TTL runs out: the old address is dropped.
// While DNS fails, and across an enforcer restart with DNS still failing,
// the last answer stays installed (fail static). `policies get` shows
// what the enforcer installed.
func TestDNSNamedPeerFollowsAnswers(t *testing.T) {
	l := newLab(t)
	mud, err := os.ReadFile(filepath.Join("..", "..", "shared", "testdata", "mud", "cisco-luminaire-rfc8520.json"))
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("skipped: third-party MUD file ../shared/testdata/mud/cisco-luminaire-rfc8520.json absent")
	}
	if err != nil {
		t.Fatal(err)
	}
	// A second server address behind the enforcer; both serve :443.
	sh(t, "ip", "-n", l.srv, "addr", "add", "10.2.0.3/24", "dev", "s0")
	const name = "fw-update.luminaire.example.com"
	const srvA, srvB = "10.2.0.2", "10.2.0.3"
	zone := testutil.StartDNSZone(t)
	zone.SetA(t, name, 1, srvA)

	mac := devMAC(t, l)
	_, apis := startCoordinators(t, 1)
	conn, err := grpc.NewClient(apis[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	logf, err := os.Create(filepath.Join(t.TempDir(), "enforcer.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("enforcer.log:\n%s", b)
		}
	}()
	cfg := enforcer.DefaultConfig()
	cfg.ID, cfg.Interface, cfg.Coordinators, cfg.PinDir = "e1", "e0", apis, l.pinDir
	cfg.MaxDevices, cfg.ReportInterval = 64, 100*time.Millisecond
	cfg.Resolvers = []string{zone.Addr}
	cfg.DNS.MinTTL, cfg.DNS.RetryMin = 500*time.Millisecond, 100*time.Millisecond
	start := func() (stop func()) {
		var e *enforcer.Enforcer
		var err error
		inNS(t, l.enf, func() {
			e, err = enforcer.New(cfg, slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelDebug})), prometheus.NewRegistry())
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		return func() {
			cancel()
			if err := errors.Join(<-done, e.Close()); err != nil && !errors.Is(err, context.Canceled) {
				t.Error(err)
			}
		}
	}
	stop := start()
	defer func() { stop() }()

	reportDevices(t, conn, 1, mac)
	pc := medmeshv1.NewPolicyServiceClient(conn)
	imp, err := pc.ImportPolicyMud(testCtx(t), &medmeshv1.ImportPolicyMudRequest{DeviceMac: mac, MudJson: string(mud)})
	if err != nil {
		t.Fatal(err)
	}
	pol := imp.GetPolicy()
	if len(pol.GetRules()) != 1 || pol.GetRules()[0].GetPeerDnsName() != name {
		t.Fatalf("imported policy %v", pol)
	}
	pol.Mode = medmeshv1.PolicyMode_POLICY_MODE_ENFORCE
	if _, err := pc.PutPolicy(testCtx(t), &medmeshv1.PutPolicyRequest{Policy: pol, Reason: "MUD file of the luminaire"}); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.ActivatePolicy(testCtx(t), &medmeshv1.ActivatePolicyRequest{Name: pol.GetName(), Reason: "enforce the MUD policy"}); err != nil {
		t.Fatal(err)
	}

	shown := func() *medmeshv1.ResolvedPeer {
		got, err := pc.GetPolicy(testCtx(t), &medmeshv1.GetPolicyRequest{Name: pol.GetName()})
		if err != nil || len(got.GetResolvedPeers()) != 1 {
			return nil
		}
		return got.GetResolvedPeers()[0]
	}
	// The enforcer reports the name's address installed ...
	var rp *medmeshv1.ResolvedPeer
	testutil.Eventually(t, 10*time.Second, 50*time.Millisecond, func() bool {
		rp = shown()
		return rp != nil && slices.Equal(rp.GetAddresses(), []string{srvA})
	}, "policies get shows %s", srvA)
	if rp.GetEnforcerId() != "e1" || rp.GetDnsName() != name || rp.GetTtlSeconds() != 1 || rp.GetDevices() != 1 || rp.GetResolveTime() == nil || rp.GetRefreshTime() == nil {
		t.Fatalf("shown %v", rp)
	}
	// ... and it passes; the other server, and other ports, do not.
	if !l.tcpOK(t, srvA+":443") {
		t.Fatalf("https to %s (%s) dropped", name, srvA)
	}
	if l.tcpOK(t, srvB+":443") || l.tcpOK(t, srvA+":22") {
		t.Fatal("the policy lets through more than its one name and port")
	}

	// The record moves: after the TTL the new address passes, the old one
	// is dropped.
	zone.SetA(t, name, 1, srvB)
	moved := time.Now()
	testutil.Eventually(t, 10*time.Second, 50*time.Millisecond, func() bool { return l.tcpOK(t, srvB+":443") }, "https to the new address passes")
	if l.tcpOK(t, srvA+":443") {
		t.Fatal("the old address still passes after the record moved")
	}
	t.Logf("allow entry followed the record %s after it moved (TTL 1 s)", time.Since(moved).Round(10*time.Millisecond))
	if v := pinnedVerdicts(t, l.pinDir); v["drop_denied"] == 0 || v["pass_allowed"] == 0 {
		t.Fatalf("verdicts %v", v)
	}

	// DNS fails: the last answer stays, and policies get says why.
	zone.SetFail(name, true)
	testutil.Eventually(t, 5*time.Second, 50*time.Millisecond, func() bool {
		rp = shown()
		return rp != nil && rp.GetError() != ""
	}, "the failure is shown")
	if !slices.Equal(rp.GetAddresses(), []string{srvB}) {
		t.Fatalf("addresses while DNS fails: %v", rp)
	}
	time.Sleep(1500 * time.Millisecond) // well past the TTL and several retries
	if !l.tcpOK(t, srvB+":443") {
		t.Fatal("DNS failing removed the allow entry")
	}

	// A restarted enforcer adopts the installed address from its pinned
	// maps and keeps it while DNS is down.
	stop()
	zone.SetDown(true)
	stop = start()
	time.Sleep(time.Second)
	if !l.tcpOK(t, srvB+":443") || l.tcpOK(t, srvA+":443") {
		t.Fatal("after a restart with DNS down, the adopted entry is not what was installed")
	}
	testutil.Eventually(t, 5*time.Second, 50*time.Millisecond, func() bool {
		rp = shown()
		return rp != nil && rp.GetError() != "" && slices.Equal(rp.GetAddresses(), []string{srvB})
	}, "the restarted enforcer reports the adopted address and the failure")
	// DNS answers again, with the first address: the adopted entry is
	// replaced.
	zone.SetDown(false)
	zone.SetFail(name, false)
	zone.SetA(t, name, 1, srvA)
	testutil.Eventually(t, 10*time.Second, 50*time.Millisecond, func() bool { return l.tcpOK(t, srvA+":443") && !l.tcpOK(t, srvB+":443") }, "after the restart the entry follows the record again")
}
