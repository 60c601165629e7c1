//go:build e2e && linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/medmesh/medmesh/deploy/lab"
	"github.com/medmesh/medmesh/deploy/lab/sim"
	"github.com/medmesh/medmesh/internal/consoletest"
	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
	"github.com/medmesh/medmesh/internal/safety"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestConsoleLab drives the web console of the campus lab in real
// headless Chromium (issue 21's acceptance, against the lab): the console
// accounts `medmesh-lab up` made log in over HTTPS with the coordinators'
// certificates of the lab's CA; the compromised device attacks (the
// compromised-device scenario's attack, in its namespace) and its alert
// appears live on the alerts page; a policy is generated, simulated,
// monitored and enforced on a device that is not life-critical, and
// takes effect at once; enforcing the infusion pump's policy waits for
// approval and is refused to the approver who caused it (two-person
// rule), to the viewer and to the operator, and approved by the second
// approver; the operator acknowledges the live alert; the compliance
// page and its download equal GetReport. No console error, no request off
// the console's origin. Screenshots of each page go to
// MEDMESH_SCREENSHOTS (default bin/console-screenshots); `make demo` runs
// it on the lab it leaves up, `make e2e` on a lab of its own.
func TestConsoleLab(t *testing.T) {
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Skip("chromium is not installed (deploy/deps.txt has it: make deps)")
	}
	l, _ := campus(t)
	cfg := l.Config()
	accts, err := cfg.ReadConsoleAccounts()
	if err != nil {
		t.Fatal(err)
	}
	var approvers []lab.ConsoleAccount
	who := map[pki.Role]lab.ConsoleAccount{}
	for _, a := range accts {
		if a.Role == pki.RoleApprover {
			approvers = append(approvers, a)
		}
		if _, ok := who[a.Role]; !ok {
			who[a.Role] = a
		}
	}
	if len(approvers) < 2 || who[pki.RoleOperator].Name == "" || who[pki.RoleViewer].Name == "" {
		t.Fatalf("the lab's console accounts %v: want two approvers, an operator and a viewer", accts)
	}
	causer, second, operator, viewer := approvers[0], approvers[1], who[pki.RoleOperator], who[pki.RoleViewer]

	cc := grpcx.DefaultClientConfig()
	cc.TLS = cfg.TLSFiles(lab.ViewerName)
	conn, err := grpcx.Dial(cfg.CoordinatorTargets(), cc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	inv := medmeshv1.NewInventoryServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	// The devices: the compromised one, the infusion pump (life-critical)
	// and a device to enforce a policy on at once: not life-critical, not
	// the compromised one, not under the scenario's class policy (the
	// workstations), not the one whose default credentials a response
	// rule acts on (a service console).
	compromised, ok := cfg.Device(cfg.Compromised)
	if !ok {
		t.Fatalf("no compromised device %q in the lab", cfg.Compromised)
	}
	var pump, target lab.DeviceInfo
	for _, d := range cfg.Devices() {
		switch {
		case d.Kind == sim.KindPump && d.LifeCritical && pump.Name == "":
			pump = d
		case !d.LifeCritical && !d.Console && d.Kind != sim.KindWorkstation && d.Name != compromised.Name:
			target = d
		}
	}
	if pump.Name == "" || target.Name == "" {
		t.Fatalf("the lab has no infusion pump (%q) or no device to enforce on (%q)", pump.Name, target.Name)
	}
	// Each with a frozen baseline (policies are generated from it), and
	// only the pump life-critical as the coordinators hold them
	// (internal/safety decides; an unclassified device counts as
	// life-critical until the sensors classify it).
	obs := lab.NewObserver(l, conn)
	for _, d := range []lab.DeviceInfo{compromised, pump, target} {
		for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
			frozen, _ := obs.BaselineFrozen(ctx, d.MAC)
			r, err := inv.GetDevice(ctx, &medmeshv1.GetDeviceRequest{Mac: d.MAC})
			dev := r.GetDevice()
			lc := safety.LifeCritical(dev.GetTier(), dev.GetDeviceClass())
			if frozen && err == nil && lc == (d.Name == pump.Name) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s (%s) after 3 minutes: baseline frozen %v, held as %v %v (life-critical %v), err %v", d.Name, d.MAC, frozen, dev.GetTier(), dev.GetDeviceClass(), lc, err)
			}
		}
	}
	t.Logf("compromised %s, pump %s, policy on %s", compromised.Name, pump.Name, target.Name)

	shots := os.Getenv("MEDMESH_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join("..", "bin", "console-screenshots")
	}
	origin := strings.TrimSuffix(cfg.ConsoleURL(1), "/")
	trust := []string{cfg.TLSFiles(lab.ViewerName).CAFile}
	for i := 1; i <= 3; i++ {
		trust = append(trust, cfg.TLSFiles(fmt.Sprintf("c%d", i)).CertFile)
	}
	b := consoletest.Start(t, consoletest.Options{Origin: origin, Shots: shots, Timeout: 6 * time.Minute, TrustCerts: trust})
	run, get, shot := b.Run, b.Get, b.Shot
	poll, ready, css := consoletest.Poll, consoletest.Ready, consoletest.CSS
	login := func(a lab.ConsoleAccount) consoletest.Step { return b.Login(a.Name, a.Password) }
	logout := consoletest.Logout()

	run("open and log in", chromedp.Navigate(origin+"/"), ready("login"), shot("01-login"), login(viewer), ready("overview"), shot("02-overview"))
	for try := 1; ; try++ {
		diffs := b.Overview(conn)
		if len(diffs) == 0 {
			break
		}
		if try == 3 {
			t.Errorf("overview: %s", strings.Join(diffs, "; "))
			break
		}
		run("overview again", chromedp.Navigate(origin+"/#/alerts"), ready("alerts"), chromedp.Navigate(origin+"/#/overview"), ready("overview"))
	}
	all, err := inv.ListDevices(ctx, &medmeshv1.ListDevicesRequest{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	run("inventory", chromedp.Navigate(origin+"/#/inventory"), ready("inventory"), shot("03-inventory"))
	if count := get("count", chromedp.Text(css("#result-count"))); !strings.HasPrefix(count, fmt.Sprint(all.GetTotalSize())+" ") {
		t.Errorf("inventory says %q, ListDevices %d devices", count, all.GetTotalSize())
	}
	before := b.Num("renders", `window.medmeshRenders`)
	run("search", chromedp.SetValue(css(`input[name="query"]`), pump.MAC), consoletest.Eval(`document.querySelector("form.filters button").click()`),
		poll(fmt.Sprintf(`window.medmeshRenders > %v`, before)), shot("04-search"))
	if count := get("count", chromedp.Text(css("#result-count"))); !strings.HasPrefix(count, "1 ") {
		t.Errorf("search for %s: %q", pump.MAC, count)
	}

	// The compromised device attacks while the alerts page is open: its
	// alert appears live (a row the watch stream added, not the first list).
	run("alerts page", chromedp.Navigate(origin+"/#/alerts"), ready("alerts"))
	attack := make(chan error, 1)
	go func() {
		out, err := l.RunCompromised(ctx, 10*time.Second)
		if err == nil {
			t.Logf("%s attacked: %d probes (%d open), default-credential login %v, %d exfil attempts", compromised.Name, out.Probes, out.OpenPorts, out.LoginOK, out.ExfilAttempts)
		}
		attack <- err
	}()
	liveRow := fmt.Sprintf(`[...document.querySelectorAll("#alert-rows tr.new")].find((r) => (r.querySelector("a[href^='#/device']") || {}).textContent === %q)`, compromised.MAC)
	if err := b.Try(consoletest.PollFor(liveRow+` !== undefined`, 2*time.Minute)); err != nil {
		_ = b.Try(shot("05-alert-live-failed"))
		t.Fatalf("no alert of %s appeared live: %v (attack: %v); page: %s", compromised.Name, err, <-attack,
			get("page", chromedp.Evaluate[string](`document.getElementById("status").textContent + " | " + window.medmeshStreamError`)))
	}
	run("live alert", shot("05-alert-live"))
	alertID := strings.TrimPrefix(get("alert id", chromedp.Evaluate[string](liveRow+`.id`)), "alert-")
	alert, err := medmeshv1.NewAlertServiceClient(conn).GetAlert(ctx, &medmeshv1.GetAlertRequest{Id: alertID})
	if err != nil || alert.GetAlert().GetDeviceMac() != compromised.MAC {
		t.Fatalf("the live alert %q: %v, %v", alertID, alert.GetAlert(), err)
	}
	t.Logf("live alert %s: %s %s (sensor %s): %s", alertID, alert.GetAlert().GetKind(), compromised.Name, alert.GetAlert().GetSensorId(), alert.GetAlert().GetSummary())
	if err := <-attack; err != nil {
		t.Fatalf("the attack of %s: %v", compromised.Name, err)
	}
	run("log out", logout)

	// Generate, simulate, monitor and enforce a policy on a device that is
	// not life-critical: effective at once.
	decision := func(id string) *medmeshv1.Decision {
		t.Helper()
		ds, err := listDecisions(ctx, medmeshv1.NewDecisionServiceClient(conn), medmeshv1.ReadConsistency_READ_CONSISTENCY_LINEARIZABLE)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			if d.GetId() == id {
				return d
			}
		}
		t.Fatalf("no decision %q", id)
		return nil
	}
	run("log in "+causer.Name, login(causer))
	sim, id := b.PolicyFlow(target.MAC, "06-policy")
	if !strings.Contains(sim, "would be dropped") {
		t.Errorf("%s: simulation shown: %q", target.Name, sim)
	}
	if d := decision(id); d.GetState() != medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE || d.GetActor() != "approver/"+causer.Name {
		t.Fatalf("enforcing %s's policy: decision %v, want effective, by approver/%s", target.Name, d, causer.Name)
	}
	pol, err := medmeshv1.NewPolicyServiceClient(conn).GetPolicy(ctx, &medmeshv1.GetPolicyRequest{Name: "device/" + target.MAC})
	if err != nil || pol.GetPolicy().GetMode() != medmeshv1.PolicyMode_POLICY_MODE_ENFORCE || !pol.GetPolicy().GetActive() {
		t.Fatalf("%s's policy after enforce: %v, %v", target.Name, pol.GetPolicy(), err)
	}
	t.Logf("%s: policy %s enforced by %s (decision %s, %d rules); the page showed: %s", target.Name, pol.GetPolicy().GetName(), causer.Name, id, len(pol.GetPolicy().GetRules()), sim)

	// The pump's policy: enforcement of a life-critical device waits for
	// a second approver; its cause, the viewer and the operator are refused.
	_, id = b.PolicyFlow(pump.MAC, "07-pending")
	if d := decision(id); d.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL || d.GetActor() != "approver/"+causer.Name {
		t.Fatalf("enforcing the life-critical %s's policy: decision %v, want pending approval, caused by approver/%s", pump.Name, d, causer.Name)
	}
	for _, r := range []struct {
		a    lab.ConsoleAccount
		want string // what the refusal says
	}{{causer, "two-person rule"}, {viewer, "may not call"}, {operator, "may not call"}} {
		if r.a != causer {
			run("log in "+r.a.Name, logout, login(r.a))
		}
		if result := b.Approve(id, "08-refused-"+string(r.a.Role)); !strings.HasPrefix(result, "Refused:") || !strings.Contains(result, r.want) {
			t.Fatalf("%s (%s) approving %s: %q, want refused (%s)", r.a.Name, r.a.Role, id, result, r.want)
		}
	}
	// The operator acknowledges the live alert: audited as its identity.
	run("acknowledge", chromedp.Navigate(origin+"/#/alerts"), ready("alerts"),
		chromedp.Click(css(fmt.Sprintf(`button[aria-label="Acknowledge alert %s"]`, alertID))),
		poll(fmt.Sprintf(`document.getElementById(%q).textContent.includes("acknowledged")`, "alert-"+alertID)), shot("09-acknowledged"))
	if a, err := medmeshv1.NewAlertServiceClient(conn).GetAlert(ctx, &medmeshv1.GetAlertRequest{Id: alertID}); err != nil || a.GetAlert().GetAcknowledgedBy() != "operator/"+operator.Name {
		t.Fatalf("alert %s acknowledged by %q (%v), want operator/%s", alertID, a.GetAlert().GetAcknowledgedBy(), err, operator.Name)
	}
	run("log in "+second.Name, logout, login(second))
	if result := b.Approve(id, "10-approved"); !strings.Contains(result, "approved") {
		t.Fatalf("%s approving %s: %q", second.Name, id, result)
	}
	if d := decision(id); d.GetState() != medmeshv1.DecisionState_DECISION_STATE_APPROVED || d.GetReviewedBy() != "approver/"+second.Name {
		t.Fatalf("%s's decision after %s approved: %v", pump.Name, second.Name, d)
	}
	run("audit and policies", chromedp.Navigate(origin+"/#/audit"), ready("audit"), shot("11-audit"),
		chromedp.Navigate(origin+"/#/policies"), ready("policies"), shot("12-policies"))
	b.Compliance(conn, "13-compliance")
	run("overview at the end", chromedp.Navigate(origin+"/#/overview"), ready("overview"), shot("14-overview-end"))
	b.CheckClean()
}
