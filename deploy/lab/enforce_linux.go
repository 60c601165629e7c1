package lab

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/medmesh/medmesh/deploy/lab/sim"
	"github.com/medmesh/medmesh/internal/admin"
	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// pump is the first infusion pump of the lab (life-critical).
func (c Config) pump() (DeviceInfo, bool) {
	for _, d := range c.Devices() {
		if d.Kind == sim.KindPump && d.LifeCritical {
			return d, true
		}
	}
	return DeviceInfo{}, false
}

// requestID is a random request id for the coordinators' dedup.
func requestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

const labActor = "medmesh lab"

// ClassPolicyName is the class policy the compromised-device scenario
// activates for the lab's IT workstations.
const ClassPolicyName = "class/it-workstation"

// classPolicy stores and activates, in enforce mode, a policy for every IT
// workstation that allows what the lab's workstations do (DNS to the
// hospital's server, HTTP and HTTPS to the internet host), then has the
// first workstation send datagrams to the PACS, which the policy does not
// allow, and connect to the internet host over HTTPS, which it does. The
// drops are read from the enforcer's per-device counters.
func (l *Lab) classPolicy(ctx context.Context, obs *Observer) (ClassPolicyOutcome, error) {
	cls := medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION
	out := ClassPolicyOutcome{Policy: ClassPolicyName, Class: names.Enum(cls), ActivationToDropMs: -1}
	var ws DeviceInfo
	for _, d := range l.cfg.Devices() {
		if d.Kind == sim.KindWorkstation {
			ws = d
			break
		}
	}
	if ws.Name == "" {
		return out, errors.New("the lab has no workstation")
	}
	out.Device = ws.Name
	if obs.pol == nil {
		return out, errors.New("no coordinator connection")
	}
	for _, v := range obs.Snapshot(ctx).Devices {
		if v.Name == ws.Name {
			out.DeviceClass = v.Class
		}
	}
	if out.DeviceClass != out.Class {
		return out, fmt.Errorf("the coordinators classify %s as %q, not %s", ws.Name, out.DeviceClass, out.Class)
	}

	rule := func(name, ip string, proto, port uint32) *medmeshv1.Rule {
		return &medmeshv1.Rule{Name: name, Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: ip + "/32"}, Protocol: proto,
			PortMin: port, PortMax: port, Direction: medmeshv1.Direction_DIRECTION_OUTBOUND}
	}
	dns := l.cfg.ServiceIP(2).String()
	inet := InternetIP.String()
	pol := &medmeshv1.Policy{
		Name: ClassPolicyName, Subject: &medmeshv1.Policy_DeviceClass{DeviceClass: cls}, Mode: medmeshv1.PolicyMode_POLICY_MODE_ENFORCE,
		Rules: []*medmeshv1.Rule{rule("dns", dns, 17, sim.PortDNS), rule("http", inet, 6, sim.PortHTTP), rule("https", inet, 6, sim.PortHTTPS)},
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := obs.pol.PutPolicy(cctx, &medmeshv1.PutPolicyRequest{Policy: pol, Actor: labActor,
		Reason: "lab scenario: IT workstations may only resolve names and browse", RequestId: requestID()}); err != nil {
		return out, fmt.Errorf("put %s: %w", ClassPolicyName, err)
	}
	act, err := obs.pol.ActivatePolicy(cctx, &medmeshv1.ActivatePolicyRequest{Name: ClassPolicyName, Mode: medmeshv1.PolicyMode_POLICY_MODE_ENFORCE,
		Actor: labActor, Reason: "lab scenario: enforce the IT workstation class policy", RequestId: requestID()})
	if err != nil {
		return out, fmt.Errorf("activate %s: %w", ClassPolicyName, err)
	}
	activated := time.Now()
	ds, err := listDecisions(cctx, obs.dec)
	if err != nil {
		return out, err
	}
	for _, d := range ds {
		if d.GetIndex() == act.GetDecisionIndex() {
			out.Decisions++
		}
	}

	// The denied peer: the PACS, on a port nothing listens on. The socket
	// is made in the workstation's namespace and used from here.
	out.DeniedTarget = net.JoinHostPort(l.cfg.ServiceIP(1).String(), "9999")
	out.AllowedTarget = net.JoinHostPort(inet, strconv.Itoa(sim.PortHTTPS))
	var udp net.Conn
	if err := inNS(ws.Namespace, func() (err error) {
		udp, err = net.Dial("udp4", out.DeniedTarget)
		return err
	}); err != nil {
		return out, err
	}
	defer udp.Close()
	probe := []byte("medmesh lab class-policy probe")

	// Wait for the activation to reach the enforcer: the first probe dropped.
	tr, err := l.Traffic()
	if err != nil {
		return out, err
	}
	base := dropsOf(tr, ws.Name)
	for deadline := time.Now().Add(15 * time.Second); ; {
		_, _ = udp.Write(probe)
		time.Sleep(50 * time.Millisecond)
		if tr, err := l.Traffic(); err == nil && dropsOf(tr, ws.Name) > base {
			out.ActivationToDropMs = float64(time.Since(activated).Microseconds()) / 1e3
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return out, fmt.Errorf("no packet of %s dropped within 15 s of activating %s", ws.Name, ClassPolicyName)
		}
	}

	// Measure: denied datagrams, then an allowed connection.
	before, err := l.Traffic()
	if err != nil {
		return out, err
	}
	const n = 20
	for range n {
		if _, err := udp.Write(probe); err == nil {
			out.DeniedSent++
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := inNS(ws.Namespace, func() error {
		c, err := net.DialTimeout("tcp4", out.AllowedTarget, 3*time.Second)
		if err == nil {
			out.AllowedOK = true
			c.Close()
		}
		return nil
	}); err != nil {
		return out, err
	}
	time.Sleep(300 * time.Millisecond)
	after, err := l.Traffic()
	if err != nil {
		return out, err
	}
	for _, t := range trafficBetween(before, after) {
		if t.Device == ws.Name {
			out.Dropped, out.Passed = t.Dropped, t.Passed
		}
	}
	// What could have lifted the enforcement: every later decision about
	// the workstation, and the class the coordinators give it now.
	if ds, err := listDecisions(cctx, obs.dec); err == nil {
		for _, d := range ds {
			if strings.EqualFold(d.GetDeviceMac(), ws.MAC) && d.GetIndex() > act.GetDecisionIndex() {
				out.Later = append(out.Later, obs.decisionView(d))
			}
		}
	}
	for _, v := range obs.Snapshot(ctx).Devices {
		if v.Name == ws.Name {
			out.ClassAfter = v.Class
		}
	}
	return out, nil
}

// approvePump waits for the response rules' enforcing decisions about the
// pump to be pending,
// checks that nothing of the pump was dropped since start, approves them
// as the identity of obs's connection (the lab's approver, not their
// cause), then has the pump attack again and measures the drops.
func (l *Lab) approvePump(ctx context.Context, d DeviceInfo, obs *Observer, opts ScenarioOptions, start []Traffic, pc *PumpOutcome) error {
	if obs.dec == nil {
		return errors.New("no coordinator connection")
	}
	mac := strings.ToLower(d.MAC)
	notify := medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY
	var pending []*medmeshv1.Decision
	for deadline := time.Now().Add(15 * time.Second); ; {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		ds, err := listDecisions(cctx, obs.dec)
		cancel()
		pending = pending[:0]
		for _, x := range ds {
			// The response rules' decisions: others pending about the
			// pump (an operator's, e.g. e2e's workload as the approver)
			// are not the scenario's, and their author may not review them.
			if strings.EqualFold(x.GetDeviceMac(), mac) && x.GetAction() != notify && x.GetRule() != "" &&
				x.GetState() == medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
				pending = append(pending, x)
			}
		}
		if err == nil && len(pending) > 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, x := range pending {
		pc.Pending = append(pc.Pending, obs.decisionView(x))
	}
	if len(pending) == 0 {
		return fmt.Errorf("no enforcing decision about %s waits for approval", d.Name)
	}
	// Still nothing of the pump dropped, right before the approval.
	now, err := l.Traffic()
	if err != nil {
		return err
	}
	for _, t := range trafficBetween(start, now) {
		if t.Device == d.Name {
			pc.DroppedWhilePending = t.Dropped
		}
	}
	base := dropsOf(now, d.Name)

	for _, x := range pending {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := obs.dec.ApproveDecision(cctx, &medmeshv1.ApproveDecisionRequest{Id: x.GetId(), Actor: labActor,
			Reason: "lab scenario: " + d.Name + " is compromised; a second person approves its " + names.Enum(x.GetAction()), RequestId: requestID()})
		cancel()
		if err != nil {
			return fmt.Errorf("approve %s: %w", x.GetId(), err)
		}
		pc.Approved = append(pc.Approved, obs.decisionView(resp.GetDecision()))
		pc.Approver = resp.GetDecision().GetActor()
	}
	approved := time.Now()

	// The pump goes on attacking; its enforcer now drops it.
	exfil := opts.ExfilFor / 2
	if exfil <= 0 {
		exfil = 3 * time.Second
	}
	attack := make(chan error, 1)
	go func() {
		_, err := l.runAttack(ctx, d, exfil)
		attack <- err
	}()
	for deadline := time.Now().Add(exfil + 10*time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if tr, err := l.Traffic(); err == nil && dropsOf(tr, d.Name) > base {
			pc.ApprovalToDropMs = float64(time.Since(approved).Microseconds()) / 1e3
			break
		}
	}
	if err := <-attack; err != nil {
		return err
	}
	after, err := l.Traffic()
	if err != nil {
		return err
	}
	if a := dropsOf(after, d.Name); a > base {
		pc.DroppedAfterApproval = a - base
	}
	return nil
}

// listDecisions reads every decision, page by page.
func listDecisions(ctx context.Context, dc medmeshv1.DecisionServiceClient) ([]*medmeshv1.Decision, error) {
	var out []*medmeshv1.Decision
	token := ""
	for {
		resp, err := dc.ListDecisions(ctx, &medmeshv1.ListDecisionsRequest{PageSize: 500, PageToken: token})
		if err != nil {
			return nil, err
		}
		out = append(out, resp.GetDecisions()...)
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

// EnforcerAdmin GETs path from the admin listener of floor n's enforcer,
// inside its namespace (the enforcer's default admin address: the lab
// does not override it).
func (c Config) EnforcerAdmin(n int, path string) ([]byte, error) {
	var conn net.Conn
	if err := inNS(c.nsEnforcer(n), func() (err error) {
		conn, err = net.DialTimeout("tcp", admin.EnforcerAddr, 500*time.Millisecond)
		return err
	}); err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: enforcer\r\n\r\n", path); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("enforcer %d %s: %s", n, path, resp.Status)
	}
	return body, nil
}

// appliedAt is when floor n's enforcer put the first decision about mac
// with an enforcing action (not notify) into its datapath, from its
// GET /applied; zero if it has none.
func (c Config) appliedAt(n int, mac string) (time.Time, error) {
	b, err := c.EnforcerAdmin(n, "/applied")
	if err != nil {
		return time.Time{}, err
	}
	var applied []struct {
		DeviceMAC string    `json:"device_mac"`
		Action    string    `json:"action"`
		Applied   time.Time `json:"applied"`
	}
	if err := json.Unmarshal(b, &applied); err != nil {
		return time.Time{}, fmt.Errorf("enforcer %d /applied: %w", n, err)
	}
	notify := names.Enum(medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY)
	for _, a := range applied {
		if strings.EqualFold(a.DeviceMAC, mac) && a.Action != notify {
			return a.Applied, nil
		}
	}
	return time.Time{}, nil
}
