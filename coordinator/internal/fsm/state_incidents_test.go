package fsm

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/coordinator/internal/response"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// The campus of the incident tests: a nurse-call box that turns bad, its
// floor (a workstation, a pump, a building controller) and a second
// scanner.
const (
	macNurse = "02:00:00:00:01:01"
	macWS    = "02:00:00:00:01:02"
	macPump  = "02:00:00:00:01:03"
	macBAS   = "02:00:00:00:01:04"
	macOther = "02:00:00:00:01:05"
	ipNurse  = "10.1.0.10"
	ipWS     = "10.1.0.11"
	ipPump   = "10.1.0.12"
	ipBAS    = "10.1.0.13"
	ipOther  = "10.1.0.14"
	internet = "203.0.113.9"
)

var (
	out = medmeshv1.Direction_DIRECTION_OUTBOUND
	in  = medmeshv1.Direction_DIRECTION_INBOUND
)

// incLog applies commands at leader times the test chooses.
type incLog struct {
	t   *testing.T
	f   *FSM
	idx uint64
	now time.Time
	log []*fsmpb.Command
}

func newIncLog(t *testing.T) *incLog {
	return &incLog{t: t, f: New(), now: t0}
}

func (l *incLog) at(d time.Duration, cmd *fsmpb.Command) *Result {
	l.t.Helper()
	l.now = l.now.Add(d)
	l.idx++
	cmd.Time = timestamppb.New(l.now)
	l.log = append(l.log, proto.CloneOf(cmd))
	r := l.f.ApplyCommand(l.idx, cmd)
	if r.Err != nil {
		l.t.Fatalf("apply %T at %d: %v", cmd.Command, l.idx, r.Err)
	}
	return r
}

func (l *incLog) campus() {
	l.t.Helper()
	l.at(0, seed())
	for _, d := range []*medmeshv1.Device{
		{Mac: macNurse, IpAddresses: []string{ipNurse}, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_NURSE_CALL},
		{Mac: macWS, IpAddresses: []string{ipWS}, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION},
		{Mac: macPump, IpAddresses: []string{ipPump}, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP},
		{Mac: macBAS, IpAddresses: []string{ipBAS}, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_BUILDING_AUTOMATION},
		{Mac: macOther, IpAddresses: []string{ipOther}, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION},
	} {
		l.at(0, upsert("s1", d))
	}
}

// batch is one sensor batch of alerts (many alerts, one index).
func batch(sensor string, seq uint64, alerts ...*medmeshv1.Alert) *fsmpb.Command {
	rep := &fsmpb.SensorReport{SensorId: sensor}
	for i, a := range alerts {
		rep.Records = append(rep.Records, &medmeshv1.SensorRecord{Seq: seq + uint64(i), Record: &medmeshv1.SensorRecord_Alert{Alert: a}})
	}
	return &fsmpb.Command{Command: &fsmpb.Command_SensorBatch{SensorBatch: &fsmpb.SensorBatch{Reports: []*fsmpb.SensorReport{rep}}}}
}

func al(id, mac, kind string, score uint32, dir medmeshv1.Direction, src, dst string, dport uint32, app string) *medmeshv1.Alert {
	return &medmeshv1.Alert{Id: id, DeviceMac: mac, Kind: kind, Direction: dir,
		Risk: &medmeshv1.RiskScore{Score: score, Factors: []*medmeshv1.RiskFactor{{Name: kind, Weight: float64(score)}}},
		Flow: &medmeshv1.FlowRef{Src: src, Dst: dst, Sport: 40000, Dport: dport, Proto: 6, App: app}}
}

// scanOf is a scan alert of mac (at src) that probed peers.
func scanOf(id, mac, src string, peers ...string) *medmeshv1.Alert {
	a := al(id, mac, "scan", 95, out, src, peers[len(peers)-1], 23, "")
	a.Peers, a.PeerCount = peers, uint32(len(peers))
	a.Services, a.ServiceCount = []*medmeshv1.Service{{Protocol: 6, Port: 22}, {Protocol: 6, Port: 23}}, 2
	return a
}

func (l *incLog) incidents() []*medmeshv1.Incident {
	page, _, _ := l.f.IncidentsChanged(0, "", 1<<20, func(*medmeshv1.Incident) bool { return true })
	return page
}

func (l *incLog) decisionsOf(incID string) []*medmeshv1.Decision {
	var out []*medmeshv1.Decision
	for _, d := range l.f.st.decisions {
		if d.GetIncidentId() == incID && d.GetTargetDecisionId() == "" {
			out = append(out, d)
		}
	}
	return out
}

func roles(inc *medmeshv1.Incident) map[string]medmeshv1.IncidentRole {
	m := map[string]medmeshv1.IncidentRole{}
	for _, d := range inc.GetDevices() {
		m[d.GetMac()] = d.GetRole()
	}
	return m
}

// TestIncidentTellsTheStory is issue 17's scenario through the FSM: a
// nurse-call box scans its floor, a probed pump reports the new peer, the
// box logs into the building controller with default credentials and
// sends data out. One incident about the box: the victims are affected
// devices, not attackers; the timeline runs scan -> login -> exfiltration
// with ATT&CK ids; one enforcement decision (the quarantine), the weaker
// rules that matched later recorded as not escalating.
func TestIncidentTellsTheStory(t *testing.T) {
	l := newIncLog(t)
	l.campus()
	l.at(time.Second, batch("s1", 1, scanOf("s1/1", macNurse, ipNurse, ipWS, ipPump, ipBAS)))
	l.at(10*time.Second, batch("s2", 1, al("s2/1", macPump, "new_peer", 50, in, ipNurse, ipPump, 22, "")))
	l.at(time.Minute, batch("s1", 2, al("s1/2", macBAS, "default_credentials", 80, in, ipNurse, ipBAS, 23, "telnet")))
	l.at(time.Minute, batch("s1", 3, al("s1/3", macNurse, "external_destination", 85, out, ipNurse, internet, 8443, "tls")))

	incs := l.incidents()
	if len(incs) != 1 {
		t.Fatalf("%d incidents, want one: %v", len(incs), incs)
	}
	inc := incs[0]
	if inc.GetDeviceMac() != macNurse || inc.GetState() != medmeshv1.IncidentState_INCIDENT_STATE_OPEN {
		t.Fatalf("incident about %s (%v), want the nurse-call box, open", inc.GetDeviceMac(), inc.GetState())
	}
	wantRoles := map[string]medmeshv1.IncidentRole{
		macNurse: medmeshv1.IncidentRole_INCIDENT_ROLE_SOURCE, macWS: medmeshv1.IncidentRole_INCIDENT_ROLE_AFFECTED,
		macPump: medmeshv1.IncidentRole_INCIDENT_ROLE_AFFECTED, macBAS: medmeshv1.IncidentRole_INCIDENT_ROLE_AFFECTED,
	}
	if got := roles(inc); !reflect.DeepEqual(got, wantRoles) {
		t.Fatalf("roles %v, want %v", got, wantRoles)
	}
	type step struct{ stage, technique string }
	var got []step
	for _, s := range inc.GetTimeline() {
		got = append(got, step{s.GetStage().String(), s.GetAttack().GetTacticId() + "/" + s.GetAttack().GetTechniqueId()})
	}
	want := []step{
		{"INCIDENT_STAGE_RECONNAISSANCE", "TA0102/T0846"},
		{"INCIDENT_STAGE_POLICY_VIOLATION", "/"},
		{"INCIDENT_STAGE_LATERAL_MOVEMENT", "TA0109/T0812"},
		{"INCIDENT_STAGE_EXFILTRATION", "TA0010/"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("timeline %v, want %v", got, want)
	}
	if m := inc.GetTimeline()[3].GetAttack().GetMatrix(); m != "enterprise" {
		t.Errorf("exfiltration names the %q matrix, want enterprise (ICS has no exfiltration tactic)", m)
	}
	if ids := inc.GetTimeline()[2].GetAlertIds(); !slices.Equal(ids, []string{"s1/2"}) {
		t.Errorf("lateral movement alerts %v", ids)
	}
	for _, id := range []string{"s1/1", "s2/1", "s1/2", "s1/3"} {
		if a := l.f.Alert(id); a.GetIncidentId() != inc.GetId() {
			t.Errorf("alert %s names incident %q, want %s", id, a.GetIncidentId(), inc.GetId())
		}
	}
	ev := inc.GetEvidence()
	if ev.GetAlertCount() != 4 || !slices.Equal(ev.GetPorts(), []string{"tcp/22", "tcp/23", "tcp/8443"}) ||
		!slices.Equal(ev.GetProtocols(), []string{"telnet", "tls"}) || !slices.Equal(ev.GetSensors(), []string{"s1", "s2"}) ||
		!slices.Contains(ev.GetPeers(), internet) || !slices.Contains(ev.GetPeers(), ipPump) {
		t.Errorf("evidence %v", ev)
	}
	if inc.GetScore() != 95 || inc.GetCombinedScore() != 100 {
		t.Errorf("score %d combined %d, want 95 and 100 (four stages)", inc.GetScore(), inc.GetCombinedScore())
	}

	// One decision per incident and rule: the notification and the
	// quarantine; the policy enforcement (default credentials) and the
	// peer block (external destination) are weaker than the quarantine.
	ds := l.decisionsOf(inc.GetId())
	var actions []string
	for _, d := range ds {
		actions = append(actions, d.GetRule())
		if d.GetId() != response.IncidentDecisionID(inc.GetId(), d.GetRule()) || d.GetAlertId() != "s1/1" {
			t.Errorf("decision %s (rule %s, alert %s): id not derived from incident and rule", d.GetId(), d.GetRule(), d.GetAlertId())
		}
	}
	if !slices.Equal(actions, []string{"quarantine-scanner", "notify-medium"}) {
		t.Fatalf("incident decisions by rule %v, want quarantine-scanner and notify-medium", actions)
	}
	if q := ds[0]; q.GetDeviceMac() != macNurse || q.GetState() != medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE {
		t.Fatalf("quarantine %v", q)
	}
	var notes []string
	for _, r := range inc.GetResponses() {
		if r.GetDecisionId() == "" {
			notes = append(notes, r.GetRule()+": "+r.GetNote())
		}
	}
	if len(notes) != 2 || !strings.HasPrefix(notes[0], "enforce-on-default-credentials: not stronger than the incident's quarantine") ||
		!strings.HasPrefix(notes[1], "block-suspicious-peer: not stronger") {
		t.Fatalf("matches without a decision: %q", notes)
	}
	if n := len(l.f.st.decisions); n != 2 {
		t.Fatalf("%d decisions in the log, want 2 for four alerts", n)
	}
}

// TestIncidentEscalatesOnlyWhenStronger: a block, then a quarantine (a
// stronger action) in the same incident; a rule never fires twice; on a
// life-critical device the decisions wait for approval, and one an
// operator rejected does not hold back the next.
func TestIncidentEscalatesOnlyWhenStronger(t *testing.T) {
	l := newIncLog(t)
	l.campus()
	l.at(time.Second, batch("s1", 1, al("s1/1", macWS, "external_destination", 85, out, ipWS, internet, 443, "")))
	l.at(time.Second, batch("s1", 2, al("s1/2", macWS, "external_destination", 90, out, ipWS, "198.51.100.7", 443, "")))
	// Another rule with an action as strong as the block: nothing.
	l.at(time.Second, batch("s1", 3, al("s1/3", macWS, "known_bad_destination", 90, out, ipWS, "192.0.2.66", 443, "")))
	l.at(time.Second, batch("s1", 4, scanOf("s1/4", macWS, ipWS, ipBAS)))
	inc := l.incidents()[0]
	if r := inc.GetResponses(); len(r) != 4 || r[2].GetRule() != "block-known-bad" || r[2].GetDecisionId() != "" || !strings.Contains(r[2].GetNote(), "not stronger than the incident's block-peer") {
		t.Fatalf("responses %v: want block-known-bad recorded without a decision", r)
	}
	var rules []string
	for _, d := range l.decisionsOf(inc.GetId()) {
		rules = append(rules, d.GetRule()+"="+d.GetAction().String())
	}
	want := []string{"block-suspicious-peer=DECISION_ACTION_BLOCK_PEER", "notify-medium=DECISION_ACTION_NOTIFY", "quarantine-scanner=DECISION_ACTION_QUARANTINE"}
	if !slices.Equal(rules, want) {
		t.Fatalf("decisions %v, want %v (the second external destination decides nothing)", rules, want)
	}

	// The pump scans: its quarantine waits for approval; an approver
	// rejects it; a later peer block is then the strongest standing
	// action, and waits too.
	l.at(time.Second, batch("s1", 5, scanOf("s1/5", macPump, ipPump, ipBAS)))
	pinc := l.f.Incident(l.f.Alert("s1/5").GetIncidentId())
	q := l.decisionsOf(pinc.GetId())[0]
	if q.GetAction() != medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE || q.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		t.Fatalf("pump quarantine %v, want pending approval", q)
	}
	l.at(time.Second, &fsmpb.Command{Command: &fsmpb.Command_DecisionReview{DecisionReview: &fsmpb.DecisionReview{
		TargetId: q.GetId(), Approve: false, Actor: "approver/dan", DecisionId: "d-reject", TwoPerson: true}}})
	l.at(time.Second, batch("s1", 6, al("s1/6", macPump, "external_destination", 85, out, ipPump, internet, 443, "")))
	ds := l.decisionsOf(pinc.GetId())
	last := ds[len(ds)-1]
	if last.GetAction() != medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER || last.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL ||
		last.GetPeerCidr() != internet+"/32" {
		t.Fatalf("after the rejected quarantine: %v, want a pending block of %s", last, internet)
	}
	// Enforcers' view: every decision is self-contained as before.
	if last.GetDeviceMac() != macPump || last.GetIndex() != l.idx || last.GetReason() == "" {
		t.Fatalf("decision not self-contained: %v", last)
	}
}

// TestIncidentWindow: an alert up to 30 minutes after the incident's last
// one joins it; the first entry more than 30 minutes after closes it; a
// later alert opens a new incident, which decides anew.
func TestIncidentWindow(t *testing.T) {
	l := newIncLog(t)
	l.campus()
	l.at(time.Second, batch("s1", 1, scanOf("s1/1", macWS, ipWS, ipBAS)))
	l.at(29*time.Minute, batch("s1", 2, al("s1/2", macWS, "new_port", 40, out, ipWS, ipBAS, 3389, "")))
	l.at(30*time.Minute, batch("s1", 3, al("s1/3", macWS, "new_port", 40, out, ipWS, ipBAS, 5900, "")))
	first := l.f.Incident(l.f.Alert("s1/1").GetIncidentId())
	if first.GetEvidence().GetAlertCount() != 3 || first.GetState() != medmeshv1.IncidentState_INCIDENT_STATE_OPEN {
		t.Fatalf("alerts 29 and 30 minutes apart: %d alerts, %v; want 3 in one open incident", first.GetEvidence().GetAlertCount(), first.GetState())
	}
	lastAlert := l.now
	// Any entry past the window closes it, at that entry's time and index.
	l.at(30*time.Minute+time.Second, &fsmpb.Command{Command: &fsmpb.Command_FlowSummaries{FlowSummaries: &fsmpb.FlowSummaries{}}})
	closed := l.f.Incident(first.GetId())
	if closed.GetState() != medmeshv1.IncidentState_INCIDENT_STATE_CLOSED || !closed.GetCloseTime().AsTime().Equal(lastAlert.Add(30*time.Minute+time.Second)) ||
		closed.GetIndex() != l.idx || !closed.GetUpdateTime().AsTime().Equal(lastAlert) {
		t.Fatalf("after the window: %v", closed)
	}
	l.at(time.Minute, batch("s1", 4, scanOf("s1/4", macWS, ipWS, ipBAS)))
	second := l.f.Incident(l.f.Alert("s1/4").GetIncidentId())
	if second.GetId() == first.GetId() || second.GetState() != medmeshv1.IncidentState_INCIDENT_STATE_OPEN {
		t.Fatalf("a scan after the window joined %s", second.GetId())
	}
	if n := len(l.decisionsOf(second.GetId())); n != 2 {
		t.Fatalf("the new incident made %d decisions, want notify and quarantine again", n)
	}
	if n := len(l.decisionsOf(first.GetId())); n != 2 {
		t.Fatalf("the first incident has %d decisions, want 2", n)
	}
}

// TestVictimIsNotAttacker: two devices scan the same victim: two
// incidents (a shared victim does not merge them), the victim affected in
// both and the target of no decision; an inbound alert at the victim from
// outside is an incident about the victim, not the scanners'; when the
// victim itself acts (after being scanned: perhaps lateral movement) that
// is its own story, with its own decisions, naming the incidents it was
// affected in.
func TestVictimIsNotAttacker(t *testing.T) {
	l := newIncLog(t)
	l.campus()
	l.at(time.Second, batch("s1", 1, scanOf("s1/1", macNurse, ipNurse, ipWS)))
	l.at(time.Second, batch("s1", 2, scanOf("s1/2", macOther, ipOther, ipWS)))
	a, b := l.f.Alert("s1/1").GetIncidentId(), l.f.Alert("s1/2").GetIncidentId()
	if a == b {
		t.Fatal("two scanners of one victim folded into one incident")
	}
	for _, id := range []string{a, b} {
		inc := l.f.Incident(id)
		if r := roles(inc)[macWS]; r != medmeshv1.IncidentRole_INCIDENT_ROLE_AFFECTED {
			t.Fatalf("victim's role in %s: %v", id, r)
		}
		if len(inc.GetDevices()) != 2 {
			t.Fatalf("incident %s devices %v", id, inc.GetDevices())
		}
	}
	// The scanned workstation gets no decision: only the scanners do.
	for _, d := range l.f.st.decisions {
		if d.GetDeviceMac() == macWS {
			t.Fatalf("a decision against the victim: %v", d)
		}
	}
	// A probe from the internet: the victim's own incident.
	l.at(time.Second, batch("s2", 1, al("s2/1", macWS, "new_peer", 30, in, "198.51.100.7", ipWS, 22, "")))
	own := l.f.Incident(l.f.Alert("s2/1").GetIncidentId())
	if own.GetId() == a || own.GetId() == b || own.GetDeviceMac() != macWS || roles(own)[macWS] != medmeshv1.IncidentRole_INCIDENT_ROLE_AFFECTED {
		t.Fatalf("inbound alert at the victim from outside: incident %v", own)
	}
	if rel := own.GetRelatedIncidentIds(); len(rel) != 2 || !slices.Contains(rel, a) || !slices.Contains(rel, b) {
		t.Fatalf("related incidents %v, want %s and %s", rel, a, b)
	}
	// The victim scans in turn: it joins the incident about itself as a
	// source, and is quarantined, although the quarantine-scanner rule
	// already quarantined the scanners.
	l.at(time.Second, batch("s2", 2, scanOf("s2/2", macWS, ipWS, ipBAS)))
	inc := l.f.Incident(l.f.Alert("s2/2").GetIncidentId())
	if inc.GetId() != own.GetId() || roles(inc)[macWS] != medmeshv1.IncidentRole_INCIDENT_ROLE_SOURCE || roles(inc)[macBAS] != medmeshv1.IncidentRole_INCIDENT_ROLE_AFFECTED {
		t.Fatalf("the victim acting: incident %s roles %v", inc.GetId(), roles(inc))
	}
	var quarantined bool
	for _, d := range l.decisionsOf(inc.GetId()) {
		quarantined = quarantined || (d.GetDeviceMac() == macWS && d.GetAction() == medmeshv1.DecisionAction_DECISION_ACTION_QUARANTINE)
	}
	if !quarantined {
		t.Fatalf("the victim turned scanner is not quarantined: %v", l.decisionsOf(inc.GetId()))
	}
	for _, id := range []string{a, b} {
		if r := roles(l.f.Incident(id))[macWS]; r != medmeshv1.IncidentRole_INCIDENT_ROLE_AFFECTED {
			t.Fatalf("the victim's role in the scanners' incident %s changed to %v", id, r)
		}
	}
}

// TestIncidentRetention: closed incidents are evicted by age and beyond
// the maximum, oldest closed first; an open one never.
func TestIncidentRetention(t *testing.T) {
	l := newIncLog(t)
	r := DefaultRetention()
	r.MaxIncidents, r.IncidentAge = 3, 10*24*time.Hour
	l.f.SetRetention(r)
	l.campus()
	var ids []string
	for i := range 5 {
		l.at(time.Hour, batch("s1", uint64(i+1), al(fmt.Sprintf("s1/%d", i+1), macWS, "new_peer", 30, out, ipWS, internet, 443, "")))
		ids = append(ids, l.f.Alert(fmt.Sprintf("s1/%d", i+1)).GetIncidentId())
	}
	l.at(time.Hour, &fsmpb.Command{Command: &fsmpb.Command_FlowSummaries{FlowSummaries: &fsmpb.FlowSummaries{}}})
	var kept []string
	for _, id := range ids {
		if l.f.Incident(id) != nil {
			kept = append(kept, id)
		}
	}
	if !slices.Equal(kept, ids[2:]) {
		t.Fatalf("kept %v of %v, want the 3 closed last", kept, ids)
	}
	// An incident open for 20 days (an alert every 20 minutes) stays; the
	// closed ones go after 10 days.
	l.at(time.Hour, batch("s1", 10, al("s1/10", macNurse, "new_peer", 30, out, ipNurse, internet, 443, "")))
	open := l.f.Alert("s1/10").GetIncidentId()
	for i := range 20 * 24 * 3 {
		l.at(20*time.Minute, batch("s1", uint64(11+i), al(fmt.Sprintf("s1/%d", 11+i), macNurse, "new_port", 30, out, ipNurse, internet, uint32(1000+i%100), "")))
	}
	if inc := l.f.Incident(open); inc == nil || inc.GetState() != medmeshv1.IncidentState_INCIDENT_STATE_OPEN || inc.GetEvidence().GetAlertCount() != 1441 {
		t.Fatalf("the open incident: %v", inc)
	}
	for _, id := range ids {
		if l.f.Incident(id) != nil {
			t.Fatalf("closed incident %s kept past 10 days", id)
		}
	}
	// Its lists stay bounded however many alerts it takes.
	inc := l.f.Incident(open)
	if st := inc.GetTimeline()[0]; len(st.GetAlertIds()) != maxStepAlerts || st.GetAlertCount() != 1441 {
		t.Fatalf("timeline step keeps %d ids of %d alerts", len(st.GetAlertIds()), st.GetAlertCount())
	}
	if ev := inc.GetEvidence(); len(ev.GetPorts()) != maxIncidentItems || !ev.GetMorePorts() {
		t.Fatalf("%d ports listed (more: %v) of 101 seen", len(ev.GetPorts()), ev.GetMorePorts())
	}
}

// incidentLog is a pseudo-random campus log: devices, rules, alerts of
// every kind and direction in batches, gaps around the window, a leader
// clock stepping back, and reviews (approve or reject) of pending
// decisions, picked by applying the log to a scratch FSM as it grows.
func incidentLog(rs uint64, n int) []*fsmpb.Command {
	rnd := rand.New(rand.NewPCG(rs, 17))
	kinds := []string{"scan", "fan_out", "new_peer", "new_port", "default_credentials", "cleartext_credentials",
		"failed_login_burst", "cleartext_phi", "external_destination", "volume_anomaly", "known_bad_destination", "protocol_misuse", "odd"}
	classes := []medmeshv1.DeviceClass{medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION,
		medmeshv1.DeviceClass_DEVICE_CLASS_NURSE_CALL, medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED}
	const devices = 12
	mac := func(i int) string { return fmt.Sprintf("02:00:00:00:02:%02x", i) }
	ip := func(i int) string { return fmt.Sprintf("10.2.0.%d", i) }
	now := t0
	scratch := New()
	var cmds []*fsmpb.Command
	add := func(c *fsmpb.Command) {
		c.Time = timestamppb.New(now)
		cmds = append(cmds, c)
		scratch.ApplyCommand(uint64(len(cmds)), proto.CloneOf(c))
	}
	add(seed())
	for i := range devices {
		add(upsert("s1", &medmeshv1.Device{Mac: mac(i), IpAddresses: []string{ip(i)}, DeviceClass: classes[i%len(classes)]}))
	}
	seq := map[string]uint64{}
	for len(cmds) < n {
		switch g := rnd.IntN(10); {
		case g < 6:
			now = now.Add(time.Duration(rnd.IntN(120)) * time.Second)
		case g < 9:
			now = now.Add(time.Duration(25+rnd.IntN(10)) * time.Minute)
		default:
			now = now.Add(-time.Duration(rnd.IntN(3)) * time.Second) // a new leader's clock a little behind
		}
		if rnd.IntN(8) == 0 {
			pending, _, _ := scratch.ListDecisions(0, 1<<20, func(d *medmeshv1.Decision) bool {
				return d.GetState() == medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL
			})
			if len(pending) > 0 {
				add(&fsmpb.Command{Command: &fsmpb.Command_DecisionReview{DecisionReview: &fsmpb.DecisionReview{
					TargetId: pending[rnd.IntN(len(pending))].GetId(), Approve: rnd.IntN(2) == 0, Actor: "approver/x", DecisionId: fmt.Sprintf("rev-%d", len(cmds))}}})
				continue
			}
		}
		var reps []*fsmpb.SensorReport
		for _, sensor := range []string{"s1", "s2"} {
			rep := &fsmpb.SensorReport{SensorId: sensor}
			for range rnd.IntN(4) {
				seq[sensor]++
				d, p := rnd.IntN(devices+1), rnd.IntN(devices+2)
				dev, src, dst := "", "198.51.100.1", "198.51.100.2"
				if d < devices {
					dev = mac(d)
					src = ip(d)
				}
				if p < devices {
					dst = ip(p)
				}
				dir := medmeshv1.Direction(rnd.IntN(3))
				if dir == in {
					src, dst = dst, src
				}
				a := al("", dev, kinds[rnd.IntN(len(kinds))], uint32(rnd.IntN(101)), dir, src, dst, uint32(rnd.IntN(1024)), []string{"", "telnet", "http"}[rnd.IntN(3)])
				for range rnd.IntN(3) {
					a.Peers = append(a.Peers, ip(rnd.IntN(devices)))
				}
				rep.Records = append(rep.Records, &medmeshv1.SensorRecord{Seq: seq[sensor], Record: &medmeshv1.SensorRecord_Alert{Alert: a}})
			}
			reps = append(reps, rep)
		}
		add(&fsmpb.Command{Command: &fsmpb.Command_SensorBatch{SensorBatch: &fsmpb.SensorBatch{Reports: reps}}})
	}
	return cmds
}

func marshalIncidents(t *testing.T, f *FSM) []byte {
	t.Helper()
	page, _, _ := f.IncidentsChanged(0, "", 1<<30, func(*medmeshv1.Incident) bool { return true })
	slices.SortFunc(page, func(a, b *medmeshv1.Incident) int { return strings.Compare(a.GetId(), b.GetId()) })
	var buf bytes.Buffer
	for _, inc := range page {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(inc)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
	}
	return buf.Bytes()
}

// TestIncidentsDeterministic replays one log into three fresh FSMs:
// byte-identical incidents (and decisions); and a replica restored from a
// snapshot in the middle folds the rest of the log identically, with the
// same derived indexes as one that applied it all.
func TestIncidentsDeterministic(t *testing.T) {
	cmds := incidentLog(42, 2000)
	var want []byte
	var wantHash [32]byte
	var replicas []*FSM
	for r := range 3 {
		f := New()
		for i, c := range cmds {
			f.ApplyCommand(uint64(i+1), proto.CloneOf(c))
		}
		got := marshalIncidents(t, f)
		h, _ := f.Hash()
		if r == 0 {
			want, wantHash = got, h
			n := len(f.st.inc.byID)
			open := len(f.st.inc.open)
			if n < 50 || open == 0 || open == n {
				t.Fatalf("the log made %d incidents, %d open: not a useful test", n, open)
			}
			t.Logf("%d commands: %d incidents (%d open), %d decisions, %d bytes", len(cmds), n, open, len(f.st.decisions), len(want))
		} else if !bytes.Equal(got, want) || h != wantHash {
			t.Fatalf("replica %d: incidents differ (%d bytes, want %d) or state hash differs", r, len(got), len(want))
		}
		replicas = append(replicas, f)
	}

	// Snapshot from the middle on, when incidents are open, restore,
	// apply the rest.
	f := New()
	mid := 0
	for ; mid < len(cmds) && (mid < len(cmds)/2 || len(f.st.inc.open) < 2); mid++ {
		f.ApplyCommand(uint64(mid+1), proto.CloneOf(cmds[mid]))
	}
	if len(f.st.inc.open) < 2 || len(f.st.inc.member) == 0 {
		t.Fatal("no open incidents to snapshot")
	}
	var buf bytes.Buffer
	if err := f.st.write(&buf); err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(g.st.inc.open, f.st.inc.open) || !slices.Equal(g.st.inc.closed, f.st.inc.closed) ||
		!reflect.DeepEqual(g.st.inc.member, f.st.inc.member) || !reflect.DeepEqual(g.st.deviceIPs, f.st.deviceIPs) {
		t.Fatal("indexes rebuilt on restore differ from those kept while applying")
	}
	for i, c := range cmds[mid:] {
		g.ApplyCommand(uint64(mid+i+1), proto.CloneOf(c))
	}
	if got := marshalIncidents(t, g); !bytes.Equal(got, want) {
		t.Fatal("a replica restored from a snapshot folds the rest of the log differently")
	}
	if h, _ := g.Hash(); h != wantHash {
		t.Fatal("restored replica's state differs")
	}
	// The watch order is the same on both.
	pa, _, _ := replicas[0].IncidentsChanged(0, "", 1<<30, func(*medmeshv1.Incident) bool { return true })
	pb, _, _ := g.IncidentsChanged(0, "", 1<<30, func(*medmeshv1.Incident) bool { return true })
	if len(pa) != len(pb) {
		t.Fatalf("watch order: %d vs %d incidents", len(pa), len(pb))
	}
	for i := range pa {
		if pa[i].GetId() != pb[i].GetId() {
			t.Fatalf("watch order differs at %d", i)
		}
	}
}

// TestIncidentsChangedPages: the (index, id) order pages without gaps or
// repeats, and an incident appears once, at its latest change.
func TestIncidentsChangedPages(t *testing.T) {
	f := New()
	for i, c := range incidentLog(9, 800) {
		f.ApplyCommand(uint64(i+1), c)
	}
	all, more, _ := f.IncidentsChanged(0, "", 1<<30, func(*medmeshv1.Incident) bool { return true })
	if more || len(all) != len(f.st.inc.byID) {
		t.Fatalf("%d incidents listed of %d", len(all), len(f.st.inc.byID))
	}
	for i := 1; i < len(all); i++ {
		a, b := all[i-1], all[i]
		if a.GetIndex() > b.GetIndex() || (a.GetIndex() == b.GetIndex() && a.GetId() >= b.GetId()) {
			t.Fatalf("not in (index, id) order at %d", i)
		}
	}
	var paged []*medmeshv1.Incident
	var ai uint64
	aid := ""
	for {
		page, more, _ := f.IncidentsChanged(ai, aid, 7, func(*medmeshv1.Incident) bool { return true })
		paged = append(paged, page...)
		if !more {
			break
		}
		ai, aid = page[len(page)-1].GetIndex(), page[len(page)-1].GetId()
	}
	if len(paged) != len(all) {
		t.Fatalf("pages of 7 gave %d incidents, want %d", len(paged), len(all))
	}
	for i := range all {
		if paged[i] != all[i] {
			t.Fatalf("page order differs at %d", i)
		}
	}
}

// TestDefaultRulesLoginBurstAndCleartextPHI: the default rules block the
// other end of a burst of refused logins and the peer of cleartext PHI
// scored 70 or more; against the pump (life-critical) the same rules only
// propose, and the block waits for approval.
func TestDefaultRulesLoginBurstAndCleartextPHI(t *testing.T) {
	l := newIncLog(t)
	l.campus()
	burst := al("s1/1", macWS, "failed_login_burst", 50, out, ipWS, ipBAS, 22, "ssh")
	burst.Login = &medmeshv1.LoginEvidence{Protocol: "ssh", Outcome: "refused", Attempts: 12, Accounts: []string{"root", "admin"}, WindowSeconds: 60}
	l.at(time.Second, batch("s1", 1, burst))
	phi := al("s1/2", macOther, "cleartext_phi", 95, out, ipOther, internet, 2575, "hl7")
	l.at(time.Second, batch("s1", 2, phi))
	l.at(time.Second, batch("s1", 3, al("s1/3", macPump, "cleartext_phi", 95, out, ipPump, internet, 2575, "hl7")))
	l.at(time.Second, batch("s1", 4, al("s1/4", macPump, "failed_login_burst", 50, in, "198.51.100.7", ipPump, 23, "telnet")))

	for _, c := range []struct {
		alert, rule, peer string
		state             medmeshv1.DecisionState
	}{
		{"s1/1", "block-login-burst", ipBAS + "/32", medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE},
		{"s1/2", "block-cleartext-phi-peer", internet + "/32", medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE},
		{"s1/3", "block-cleartext-phi-peer", internet + "/32", medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL},
	} {
		inc := l.f.Alert(c.alert).GetIncidentId()
		var block *medmeshv1.Decision
		for _, d := range l.decisionsOf(inc) {
			if d.GetAction() == medmeshv1.DecisionAction_DECISION_ACTION_BLOCK_PEER {
				block = d
			}
		}
		if block == nil || block.GetRule() != c.rule || block.GetPeerCidr() != c.peer || block.GetState() != c.state {
			t.Errorf("alert %s: block %v, want rule %s of %s, %v", c.alert, block, c.rule, c.peer, c.state)
		}
	}
	// The pump's login burst joins its incident, whose block is already
	// standing (pending): a block is not stronger, so nothing new, and
	// nothing of the pump's is effective before an approver says so.
	for _, d := range l.decisionsOf(l.f.Alert("s1/4").GetIncidentId()) {
		if d.GetAction() != medmeshv1.DecisionAction_DECISION_ACTION_NOTIFY && d.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
			t.Errorf("pump decision %v effective without approval", d)
		}
	}
}
