//go:build e2e && linux

package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/deploy/lab"
	"github.com/medmesh/medmesh/internal/names"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// reportDir is where every run writes its report (gitignored).
const reportDir = "reports"

// campus opens the campus lab: the one already running (left as it is), or
// a new one brought up for the test and removed after it.
func campus(t *testing.T) (*lab.Lab, bool) {
	t.Helper()
	testutil.RequireRoot(t)
	cfg := lab.DefaultConfig()
	cfg.Binary, cfg.LabBinary = medmeshBin, labBin
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	l, err := lab.Open(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := l.Status(); err == nil && st.Up && st.Complete && l.Check() == nil {
		t.Logf("using the running lab in %s", l.Config().StateDir)
		return l, true
	}
	if l, err = lab.New(cfg, log); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		if os.Getenv("MEDMESH_E2E_KEEP") != "" {
			return
		}
		if err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	if _, err := l.Up(ctx); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return l, false
}

func seed(t *testing.T) uint64 {
	if s := os.Getenv("MEDMESH_E2E_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("MEDMESH_E2E_SEED=%q: %v", s, err)
		}
		return v
	}
	return uint64(time.Now().UnixNano() % 1e9)
}

// nemeses is the bounded set: every nemesis at least once, one fault per
// history. fault scales the fault durations (chaos runs vary it).
func nemeses(r *Runner, fault func(time.Duration) time.Duration) []History {
	cfg := r.Lab.Config()
	raftPort := cfg.APIPort + 1
	coords := "{ 127.0.0.1, 127.0.0.2, 127.0.0.3 }"
	return []History{
		{Name: "kill-leader", Nemesis: &Kill{Lab: r.Lab, Target: r.LeaderTarget(), Restart: true},
			Before: 2 * time.Second, Fault: fault(3 * time.Second), After: 3 * time.Second, Failover: true},
		// Coordinators dial their Raft peers from their own address, so the
		// rules cut the leader off both ways and the majority elects anew.
		{Name: "partition-leader", Nemesis: &LeaderPartition{Cfg: cfg, Leader: r.LeaderTarget()},
			Before: 2 * time.Second, Fault: fault(4 * time.Second), After: 4 * time.Second, Failover: true},
		// A minority: c3 alone (a follower, or the leader, which then
		// steps down); the majority keeps serving.
		{Name: "partition-minority", Nemesis: CoordinatorPartition(cfg, 3),
			Before: 2 * time.Second, Fault: fault(3 * time.Second), After: 3 * time.Second},
		// A sensor cut from the coordinators and the other sensor: it keeps
		// detecting and spools; gossip marks it dead; nothing is enforced
		// because of that.
		{Name: "partition-sensor", Nemesis: SensorPartition(cfg, 1),
			Before: 2 * time.Second, Fault: fault(3 * time.Second), After: 3 * time.Second},
		// Longer than the 1 s election timeout.
		{Name: "pause-follower", Nemesis: &Pause{Lab: r.Lab, Target: r.FollowerTarget()},
			Before: 2 * time.Second, Fault: fault(3 * time.Second), After: 3 * time.Second},
		{Name: "pause-leader", Nemesis: &Pause{Lab: r.Lab, Target: r.LeaderTarget()},
			Before: 2 * time.Second, Fault: fault(3 * time.Second), After: 4 * time.Second, Failover: true},
		{Name: "kill-enforcer", Nemesis: &Kill{Lab: r.Lab, Target: Fixed("e1"), Restart: true},
			Before: 2 * time.Second, Fault: fault(2 * time.Second), After: 3 * time.Second},
		{Name: "partition-enforcer", Nemesis: EnforcerPartition(cfg, 2),
			Before: 2 * time.Second, Fault: fault(3 * time.Second), After: 3 * time.Second},
		{Name: "kill-sensor", Nemesis: &Kill{Lab: r.Lab, Target: Fixed("s2"), Restart: true},
			Before: 2 * time.Second, Fault: fault(2 * time.Second), After: 3 * time.Second},
		// 30% of the Raft traffic between the coordinators (host loopback,
		// Raft port only, so nothing else on the host is touched).
		{Name: "loss-raft", Nemesis: &Loss{Table: "mm_e2e_loss_raft", Iface: "lo", Percent: 30, Matches: []string{
			fmt.Sprintf("ip saddr %s ip daddr %s tcp dport %d", coords, coords, raftPort),
			fmt.Sprintf("ip saddr %s ip daddr %s tcp sport %d", coords, coords, raftPort)}},
			Before: 2 * time.Second, Fault: fault(4 * time.Second), After: 3 * time.Second},
		{Name: "loss-enforcer-uplink", Nemesis: &Loss{Netns: cfg.EnforcerNS(1), Table: "mm_e2e_loss_up", Iface: "up0", Percent: 30},
			Before: 2 * time.Second, Fault: fault(3 * time.Second), After: 3 * time.Second},
		{Name: "roam-monitor2", Nemesis: &Roam{Lab: r.Lab, Device: "monitor2", To: 1},
			Before: 2 * time.Second, Fault: fault(4 * time.Second), After: 3 * time.Second},
	}
}

func newRun(t *testing.T) (*lab.Lab, *Runner, *Report) {
	l, reused := campus(t)
	s := seed(t)
	t.Logf("seed %d (reproduce with MEDMESH_E2E_SEED=%d)", s, s)
	r, err := NewRunner(l, s, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	rep := &Report{Seed: s, Start: time.Now(), DetectionToDropMs: -1, DetectionToEnforceMs: -1}
	if reused {
		rep.Notes = append(rep.Notes, "ran on the lab that was already up")
	}
	return l, r, rep
}

func finish(t *testing.T, rep *Report) {
	rep.Duration = time.Since(rep.Start).Round(time.Second).String()
	j, txt, err := rep.Write(reportDir)
	if err != nil {
		t.Errorf("report: %v", err)
	} else {
		b, _ := os.ReadFile(txt)
		_ = os.WriteFile(filepath.Join(reportDir, "latest.txt"), b, 0o644)
		_ = os.WriteFile(filepath.Join(reportDir, "latest.json"), mustRead(j), 0o644)
		t.Logf("report: %s, %s", j, txt)
	}
	var s strings.Builder
	rep.WriteSummary(&s)
	t.Log("\n" + s.String())
	for _, v := range rep.Violations() {
		t.Errorf("violation: %s", v)
	}
}

func mustRead(p string) []byte {
	b, _ := os.ReadFile(p)
	return b
}

// scenario runs the compromised-device scenario once: alerts, decisions,
// and the detection-to-drop latency.
func scenario(t *testing.T, l *lab.Lab, r *Runner, rep *Report) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := r.Healthy(ctx, time.Minute); err != nil {
		t.Fatalf("lab unhealthy before the scenario: %v", err)
	}
	if d, ok := l.Config().Device(l.Config().Compromised); ok {
		ds, err := listDecisions(ctx, medmeshv1.NewDecisionServiceClient(r.Conn(0)), medmeshv1.ReadConsistency_READ_CONSISTENCY_LINEARIZABLE)
		if err != nil {
			t.Fatalf("decisions before the scenario: %v", err)
		}
		for _, x := range ds {
			if strings.EqualFold(x.GetDeviceMac(), d.MAC) && x.GetAction() == medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE {
				rep.Notes = append(rep.Notes, d.Name+" was already quarantined before the scenario: detection-to-drop is not a first detection")
				break
			}
		}
	}
	opts := lab.DefaultScenarioOptions()
	opts.BaselineTimeout = 2 * time.Minute
	out, err := l.RunScenario(ctx, lab.ScenarioCompromisedDevice, lab.NewObserver(l, r.Conn(0)), opts)
	if err != nil {
		t.Errorf("scenario: %v", err)
		rep.Notes = append(rep.Notes, "scenario failed: "+err.Error())
		return
	}
	rep.DetectionToDropMs, rep.DetectionToEnforceMs = out.DetectionToDropMs, out.DetectionToEnforceMs
	rep.ScenarioAlerts, rep.ScenarioDecisions, rep.ScenarioIncidents = out.Totals.Alerts, out.Totals.Decisions, out.Totals.Incidents
	rep.Notes = append(rep.Notes, out.Notes...)
	if out.Totals.LifeCriticalDrops > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("scenario: %d life-critical packets dropped", out.Totals.LifeCriticalDrops))
		t.Errorf("scenario dropped %d life-critical packets", out.Totals.LifeCriticalDrops)
	}
	if len(out.Decisions) == 0 {
		t.Errorf("scenario: no decision committed")
	}
	scenarioDecisions(t, l.Config(), &out, rep)
	scenarioIncident(t, &out, rep)
	scenarioClassPolicy(t, &out, rep)
	t.Logf("scenario: %d alerts, %d decisions, detection-to-drop %.0f ms", len(out.Alerts), len(out.Decisions), out.DetectionToDropMs)
}

// scenarioClassPolicy checks the class-policy phase (issue 16: a class
// policy drops a packet at an enforcer): the IT workstation class policy,
// in enforce mode, became a decision for each workstation; every denied
// datagram of the workstation was dropped at its enforcer (its per-device
// counters), and its allowed HTTPS connection passed.
func scenarioClassPolicy(t *testing.T, out *lab.ScenarioOutcome, rep *Report) {
	t.Helper()
	c := out.ClassPolicy
	if c == nil {
		t.Errorf("scenario: no class-policy phase")
		return
	}
	rep.ClassPolicy = fmt.Sprintf("%s (enforce) on %s: %d decisions; %s sent %d denied datagrams to %s, %d packets dropped at its enforcer; allowed tcp to %s connected=%v, %d packets passed; first drop %.0f ms after activation",
		c.Policy, c.Class, c.Decisions, c.Device, c.DeniedSent, c.DeniedTarget, c.Dropped, c.AllowedTarget, c.AllowedOK, c.Passed, c.ActivationToDropMs)
	t.Logf("class policy: %s", rep.ClassPolicy)
	var bad []string
	if c.Decisions < 1 {
		bad = append(bad, "no decision at the activation")
	}
	if c.DeniedSent == 0 || c.Dropped < uint64(c.DeniedSent) {
		why := fmt.Sprintf("%s's class at the end %q", c.Device, c.ClassAfter)
		for _, d := range c.Later {
			why += fmt.Sprintf("; later decision %d %s %s by %s (%s)", d.Index, d.Action, d.State, d.Actor, d.Reason)
		}
		bad = append(bad, fmt.Sprintf("%d of %d denied datagrams dropped (%s)", c.Dropped, c.DeniedSent, why))
	}
	if !c.AllowedOK || c.Passed == 0 {
		bad = append(bad, fmt.Sprintf("allowed traffic did not pass (connected=%v, %d passed)", c.AllowedOK, c.Passed))
	}
	for _, b := range bad {
		rep.Notes = append(rep.Notes, "class policy: "+b)
		t.Errorf("scenario: class policy %s: %s", c.Policy, b)
	}
}

// pumpScenario runs compromised-pump (issue 17 point 6): an infusion pump
// attacks; its enforcing decisions wait for approval and no packet of it
// is dropped meanwhile; the lab's approver, not their cause, approves; its
// packets are dropped after. No other life-critical device loses a packet.
func pumpScenario(t *testing.T, l *lab.Lab, r *Runner, rep *Report) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := r.Healthy(ctx, time.Minute); err != nil {
		t.Errorf("lab unhealthy before the pump scenario: %v", err)
		return
	}
	opts := lab.DefaultScenarioOptions()
	opts.BaselineTimeout = 2 * time.Minute
	out, err := l.RunScenario(ctx, lab.ScenarioCompromisedPump, lab.NewObserver(l, r.Conn(0)), opts)
	if err != nil {
		t.Errorf("pump scenario: %v", err)
		rep.Notes = append(rep.Notes, "pump scenario failed: "+err.Error())
		return
	}
	rep.Notes = append(rep.Notes, out.Notes...)
	p := out.Pump
	if p == nil {
		t.Errorf("pump scenario: no approval phase")
		return
	}
	var pending []string
	for _, d := range p.Pending {
		pending = append(pending, d.Action+" ("+d.Rule+")")
	}
	rep.PumpScenario = fmt.Sprintf("%s: %d decisions pending [%s], %d packets dropped while pending; approved by %s; then %d packets dropped, the first %s after approval",
		out.Device, len(p.Pending), strings.Join(pending, ", "), p.DroppedWhilePending, p.Approver, p.DroppedAfterApproval, ms(p.ApprovalToDropMs))
	t.Logf("pump scenario: %s", rep.PumpScenario)
	var bad []string
	if len(p.Pending) == 0 {
		bad = append(bad, "no decision waited for approval")
	}
	if p.DroppedWhilePending != 0 {
		bad = append(bad, fmt.Sprintf("%d packets dropped before approval", p.DroppedWhilePending))
	}
	for _, d := range p.Pending {
		if d.Actor == p.Approver {
			bad = append(bad, "approved by its own cause "+d.Actor)
		}
	}
	if len(p.Approved) != len(p.Pending) {
		bad = append(bad, fmt.Sprintf("%d of %d pending decisions approved", len(p.Approved), len(p.Pending)))
	}
	if p.DroppedAfterApproval == 0 {
		bad = append(bad, "no packet dropped after approval")
	}
	for _, x := range out.Traffic {
		if x.LifeCritical && x.Device != out.Device && x.Dropped > 0 {
			bad = append(bad, fmt.Sprintf("life-critical %s: %d packets dropped", x.Device, x.Dropped))
		}
	}
	for _, b := range bad {
		rep.Notes = append(rep.Notes, "pump scenario: "+b)
		t.Errorf("pump scenario: %s", b)
	}
}

// TestBoundedChaos is `make e2e`: the compromised-device scenario (with
// its class policy), then one history per nemesis, every checker after
// each, then the compromised-pump scenario.

// riskPosture checks what `make demo` shows with `medmesh risk top`: the
// lab's devices, matched against the bundle lab up imported, have a
// KEV-listed vulnerability, an end-of-life OS, a recall and default
// credentials, each a factor of its device's score with its explanation,
// and every replica commits the same postures.
func riskPosture(t *testing.T, l *lab.Lab, r *Runner, rep *Report) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	want := map[string]string{"kev": "", "end_of_life": "", "recall": "", "default_credentials": ""}
	var top *medmeshv1.TopResponse
	deadline := time.Now().Add(90 * time.Second)
	for {
		var err error
		top, err = medmeshv1.NewRiskServiceClient(r.Conn(0)).Top(ctx, &medmeshv1.TopRequest{N: 100})
		for k := range want {
			want[k] = ""
		}
		if err == nil {
			for _, p := range top.GetPostures() {
				for _, f := range p.GetScore().GetFactors() {
					if _, ok := want[f.GetName()]; ok && f.GetWeight() > 0 && f.GetDetail() != "" && want[f.GetName()] == "" {
						want[f.GetName()] = p.GetHostname() + " " + p.GetDeviceMac() + ": " + f.GetDetail()
					}
				}
			}
		}
		missing := []string{}
		for k, v := range want {
			if v == "" {
				missing = append(missing, k)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("risk top after %s lacks %v (err %v): %v", 90*time.Second, missing, err, top)
			rep.Notes = append(rep.Notes, "risk posture: missing "+strings.Join(missing, ", "))
			return
		}
		time.Sleep(time.Second)
	}
	for _, k := range []string{"kev", "end_of_life", "recall", "default_credentials"} {
		t.Logf("risk top: %s: %s", k, want[k])
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("risk top: %d devices scored; KEV, end of life, recall and default credentials each explained", len(top.GetPostures())))
	// Every coordinator serves the same postures from its own state (a
	// follower may lag by an entry for a moment).
	same := func() (bool, string) {
		var ref []*medmeshv1.DevicePosture
		for i := range 3 {
			resp, err := medmeshv1.NewRiskServiceClient(r.Conn(i)).Top(ctx, &medmeshv1.TopRequest{N: 100, Consistency: medmeshv1.ReadConsistency_READ_CONSISTENCY_STALE})
			if err != nil {
				return false, fmt.Sprintf("coordinator %d: %v", i+1, err)
			}
			if i == 0 {
				ref = resp.GetPostures()
				continue
			}
			if !slices.EqualFunc(ref, resp.GetPostures(), func(a, b *medmeshv1.DevicePosture) bool { return proto.Equal(a, b) }) {
				return false, fmt.Sprintf("coordinator %d differs from coordinator 1", i+1)
			}
		}
		return true, ""
	}
	for end := time.Now().Add(15 * time.Second); ; {
		ok, why := same()
		if ok {
			break
		}
		if time.Now().After(end) {
			t.Errorf("risk postures: %s", why)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestBoundedChaos is `make e2e`: the compromised-device scenario, then
// one history per nemesis, every checker after each, then the SIEM step
// (the scenario's alerts and the histories' audit trail delivered to
// rsyslogd across a leader kill), then the compromised-pump scenario.
func TestBoundedChaos(t *testing.T) {
	l, r, rep := newRun(t)
	defer finish(t, rep)
	// Debugging: a subset of histories, no scenario ("siem" is the SIEM
	// step, on the alerts the lab has).
	only := os.Getenv("MEDMESH_E2E_ONLY")
	if only == "" {
		riskPosture(t, l, r, rep)
		scenario(t, l, r, rep)
	}
	ctx := context.Background()
	for _, h := range nemeses(r, func(d time.Duration) time.Duration { return d }) {
		if only != "" && !strings.Contains(","+only+",", ","+h.Name+",") {
			continue
		}
		hr := r.Run(ctx, h)
		t.Logf("%s: %d ops (%d ok, %d unknown), failover %s, catch-up %s, %d violations",
			hr.Name, hr.Ops, hr.OpsOK, hr.OpsUnknown, ms(hr.FailoverMs), ms(hr.CatchUpMs), len(hr.Violations))
		rep.Histories = append(rep.Histories, hr)
	}
	// After the histories, the sink's backlog is thousands of events: the
	// kill lands while they are being sent.
	if only == "" || strings.Contains(","+only+",", ",siem,") {
		siemAcrossLeaderKill(t, l, r, rep, only == "")
	}
	// Last: once the pump is approved for quarantine its packets are
	// dropped, and the histories above run on the lab as it was.
	if only == "" {
		pumpScenario(t, l, r, rep)
	}
}

// TestChaos is `make chaos`: random faults from the same set, with random
// durations, for MEDMESH_CHAOS_DURATION.
func TestChaos(t *testing.T) {
	ds := os.Getenv("MEDMESH_CHAOS_DURATION")
	if ds == "" {
		t.Skip("set MEDMESH_CHAOS_DURATION (make chaos DURATION=5m SEED=...)")
	}
	dur, err := time.ParseDuration(ds)
	if err != nil {
		t.Fatalf("MEDMESH_CHAOS_DURATION=%q: %v", ds, err)
	}
	_, r, rep := newRun(t)
	defer finish(t, rep)
	rnd := rand.New(rand.NewPCG(rep.Seed, 0xc4a05))
	scale := func(d time.Duration) time.Duration { return d/2 + time.Duration(rnd.Int64N(int64(2*d))) }
	ctx := context.Background()
	end := time.Now().Add(dur)
	for time.Now().Before(end) {
		set := nemeses(r, scale)
		h := set[rnd.IntN(len(set))]
		h.Name = fmt.Sprintf("%02d-%s", len(rep.Histories)+1, h.Name)
		hr := r.Run(ctx, h)
		t.Logf("%s: %d ops, failover %s, %d violations", hr.Name, hr.Ops, ms(hr.FailoverMs), len(hr.Violations))
		rep.Histories = append(rep.Histories, hr)
	}
}

// scenarioDecisions checks the default response rules on the scenario
// (issue 16 acceptance): the scanning device is quarantined by rule
// quarantine-scanner, effective at once, and no life-critical device has
// an effective block or quarantine: its decisions wait for approval.
func scenarioDecisions(t *testing.T, cfg lab.Config, out *lab.ScenarioOutcome, rep *Report) {
	t.Helper()
	quarantine := names.Enum(medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE)
	block := names.Enum(medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER)
	effective := names.Enum(medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE)
	lifeCritical := map[string]bool{}
	for _, d := range cfg.Devices() {
		lifeCritical[d.Name] = d.LifeCritical
	}
	quarantined := false
	for _, d := range out.Decisions {
		if d.Device == out.Device && d.Action == quarantine && d.Rule == "quarantine-scanner" && d.State == effective {
			quarantined = true
		}
		if lifeCritical[d.Device] && (d.Action == quarantine || d.Action == block) && d.State == effective {
			rep.Notes = append(rep.Notes, fmt.Sprintf("scenario: life-critical %s got an effective %s (rule %q)", d.Device, d.Action, d.Rule))
			t.Errorf("scenario: life-critical %s got an effective %s by rule %q, want it pending approval", d.Device, d.Action, d.Rule)
		}
	}
	if !quarantined {
		rep.Notes = append(rep.Notes, "scenario: "+out.Device+" not quarantined by quarantine-scanner")
		t.Errorf("scenario: the scanning device %s has no effective quarantine from rule quarantine-scanner: %+v", out.Device, out.Decisions)
	}
}

// scenarioIncident checks that the scan is told as an incident (issue 17
// point 1): an incident about the scanning device with a reconnaissance
// stage (ATT&CK for ICS T0846) whose rules decided a quarantine. It
// records the incident's stages and decisions in the report; how many
// enforcement decisions it has is reported, not asserted (the issue's
// "one" also depends on the detectors).
func scenarioIncident(t *testing.T, out *lab.ScenarioOutcome, rep *Report) {
	t.Helper()
	quarantine := names.Enum(medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE)
	var story *lab.IncidentView
	for i, inc := range out.Incidents {
		if inc.Device == out.Device && slices.Contains(inc.Stages, "reconnaissance (T0846)") {
			story = &out.Incidents[i]
		}
	}
	if story == nil {
		rep.Notes = append(rep.Notes, "scenario: no incident about "+out.Device+" with a reconnaissance stage")
		t.Errorf("scenario: no incident about %s with a reconnaissance (T0846) stage: %+v", out.Device, out.Incidents)
		return
	}
	enforcing := 0
	for _, d := range story.Decisions {
		if d != names.Enum(medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY) {
			enforcing++
		}
	}
	rep.ScenarioStory = fmt.Sprintf("%s about %s: %s; %d alerts; decided %s (%d enforcing)",
		story.ID, story.Device, strings.Join(story.Stages, " > "), story.Alerts, strings.Join(story.Decisions, ", "), enforcing)
	t.Logf("scenario incident: %s", rep.ScenarioStory)
	if !slices.Contains(story.Decisions, quarantine) {
		t.Errorf("scenario: the incident about %s decided %v, want a quarantine", out.Device, story.Decisions)
	}
}
