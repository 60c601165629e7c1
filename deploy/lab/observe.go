package lab

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"google.golang.org/grpc"
)

// DeviceView is a device as the coordinators know it, with its lab name.
type DeviceView struct {
	MAC    string `json:"mac"`
	Name   string `json:"name,omitempty"` // lab device name, "" if not a lab device
	IPs    string `json:"ips"`
	Vendor string `json:"vendor,omitempty"`
	Class  string `json:"class"`
	Tier   string `json:"tier"`
	Floor  string `json:"floor,omitempty"`
	Risk   uint32 `json:"risk"`
}

// AlertView is an alert as the scenario report shows it.
type AlertView struct {
	Index   uint64 `json:"index"`
	Device  string `json:"device"`
	Kind    string `json:"kind"`
	Score   uint32 `json:"score"`
	Summary string `json:"summary"`
	Detect  int64  `json:"detect_ns,omitempty"`
}

// DecisionView is a decision with the Raft index that committed it.
type DecisionView struct {
	ID     string `json:"id"`
	Index  uint64 `json:"index"`
	Device string `json:"device"`
	Action string `json:"action"`
	State  string `json:"state"`
	Rule   string `json:"rule,omitempty"` // the response rule that decided, "" for an operator's
	Actor  string `json:"actor"`
	Reason string `json:"reason"`
	Create int64  `json:"create_ns,omitempty"`
	// Target is the decision an approval or rejection reviews; ReviewedBy
	// who reviewed this one.
	Target     string `json:"target,omitempty"`
	ReviewedBy string `json:"reviewed_by,omitempty"`
}

// IncidentView is an incident: a device's alerts folded into one story.
type IncidentView struct {
	ID      string `json:"id"`
	Index   uint64 `json:"index"` // Raft index of its last change
	Device  string `json:"device"`
	State   string `json:"state"`
	Devices int    `json:"devices"`
	// Stages in the order they began, with their ATT&CK technique (or
	// tactic) ids: "reconnaissance (T0846)".
	Stages    []string `json:"stages"`
	Alerts    uint32   `json:"alerts"`
	Score     uint32   `json:"score"`
	Decisions []string `json:"decisions"` // the actions its rules decided, e.g. "quarantine"
}

// MemberView is a cluster member.
type MemberView struct {
	ID      string `json:"id"`
	Role    string `json:"role"`
	State   string `json:"state"`
	Applied uint64 `json:"applied_index"`
	Health  string `json:"health,omitempty"`
}

// Snapshot is one poll of the API and of the enforcers' counters.
type Snapshot struct {
	Time      time.Time      `json:"time"`
	Phase     string         `json:"phase,omitempty"`
	Leader    string         `json:"leader,omitempty"`
	Commit    uint64         `json:"commit_index,omitempty"`
	Members   []MemberView   `json:"members,omitempty"`
	Devices   []DeviceView   `json:"devices"`
	Alerts    []AlertView    `json:"alerts"`
	Decisions []DecisionView `json:"decisions"`
	Incidents []IncidentView `json:"incidents"`
	Traffic   []Traffic      `json:"traffic"`
	APIError  string         `json:"api_error,omitempty"`
}

// Observer polls the coordinators' API with the generated clients.
type Observer struct {
	lab  *Lab
	cs   medmeshv1.ClusterServiceClient
	inv  medmeshv1.InventoryServiceClient
	al   medmeshv1.AlertServiceClient
	dec  medmeshv1.DecisionServiceClient
	inc  medmeshv1.IncidentServiceClient
	sens medmeshv1.SensorServiceClient
	pol  medmeshv1.PolicyServiceClient
	// names maps lab MACs to device names.
	names map[string]string
}

// NewObserver observes the lab through conn (nil: counters only).
func NewObserver(l *Lab, conn grpc.ClientConnInterface) *Observer {
	o := &Observer{lab: l, names: map[string]string{}}
	for _, d := range l.cfg.Devices() {
		o.names[strings.ToLower(d.MAC)] = d.Name
	}
	if conn != nil {
		o.cs = medmeshv1.NewClusterServiceClient(conn)
		o.inv = medmeshv1.NewInventoryServiceClient(conn)
		o.al = medmeshv1.NewAlertServiceClient(conn)
		o.dec = medmeshv1.NewDecisionServiceClient(conn)
		o.inc = medmeshv1.NewIncidentServiceClient(conn)
		o.sens = medmeshv1.NewSensorServiceClient(conn)
		o.pol = medmeshv1.NewPolicyServiceClient(conn)
	}
	return o
}

func (o *Observer) decisionView(d *medmeshv1.Decision) DecisionView {
	return DecisionView{ID: d.GetId(), Index: d.GetIndex(), Device: o.name(d.GetDeviceMac()), Action: names.Enum(d.GetAction()),
		State: names.Enum(d.GetState()), Rule: d.GetRule(), Actor: d.GetActor(), Reason: d.GetReason(), Create: d.GetCreateTime().AsTime().UnixNano(),
		Target: d.GetTargetDecisionId(), ReviewedBy: d.GetReviewedBy()}
}

func (o *Observer) name(mac string) string {
	if n, ok := o.names[strings.ToLower(mac)]; ok {
		return n
	}
	return mac
}

// Snapshot polls everything once. API errors are reported in the snapshot,
// not returned: the view keeps going while coordinators fail over.
func (o *Observer) Snapshot(ctx context.Context) Snapshot {
	s := Snapshot{Time: time.Now()}
	if tr, err := o.lab.Traffic(); err == nil {
		s.Traffic = tr
	} else {
		s.APIError = "counters: " + err.Error()
	}
	if o.cs == nil {
		return s
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := o.poll(ctx, &s); err != nil {
		s.APIError = err.Error()
	}
	return s
}

func (o *Observer) poll(ctx context.Context, s *Snapshot) error {
	cst, err := o.cs.GetClusterStatus(ctx, &medmeshv1.GetClusterStatusRequest{})
	if err != nil {
		return fmt.Errorf("cluster status: %w", err)
	}
	s.Leader, s.Commit = cst.GetLeader(), cst.GetCommitIndex()
	for _, m := range cst.GetMembers() {
		s.Members = append(s.Members, MemberView{ID: m.GetId(), Role: m.GetRole(), State: m.GetState(), Applied: m.GetAppliedIndex(), Health: m.GetHealth()})
	}
	devs, err := o.inv.ListDevices(ctx, &medmeshv1.ListDevicesRequest{PageSize: 1000})
	if err != nil {
		return fmt.Errorf("list devices: %w", err)
	}
	for _, d := range devs.GetDevices() {
		v := DeviceView{MAC: d.GetMac(), IPs: strings.Join(d.GetIpAddresses(), ","), Vendor: d.GetVendor(),
			Class: names.Enum(d.GetDeviceClass()), Tier: names.Enum(d.GetTier()), Floor: d.GetLocation().GetFloor(), Risk: d.GetRisk().GetScore()}
		if n, ok := o.names[strings.ToLower(d.GetMac())]; ok {
			v.Name = n
		}
		s.Devices = append(s.Devices, v)
	}
	als, err := o.al.ListAlerts(ctx, &medmeshv1.ListAlertsRequest{PageSize: 1000})
	if err != nil {
		return fmt.Errorf("list alerts: %w", err)
	}
	for _, a := range als.GetAlerts() {
		s.Alerts = append(s.Alerts, AlertView{Index: a.GetIndex(), Device: o.name(a.GetDeviceMac()), Kind: a.GetKind(),
			Score: a.GetRisk().GetScore(), Summary: a.GetSummary(), Detect: a.GetDetectTime().AsTime().UnixNano()})
	}
	ds, err := o.dec.ListDecisions(ctx, &medmeshv1.ListDecisionsRequest{PageSize: 1000})
	if err != nil {
		return fmt.Errorf("list decisions: %w", err)
	}
	for _, d := range ds.GetDecisions() {
		s.Decisions = append(s.Decisions, o.decisionView(d))
	}
	incs, err := o.inc.ListIncidents(ctx, &medmeshv1.ListIncidentsRequest{PageSize: 1000})
	if err != nil {
		return fmt.Errorf("list incidents: %w", err)
	}
	for _, inc := range incs.GetIncidents() {
		v := IncidentView{ID: inc.GetId(), Index: inc.GetIndex(), Device: o.name(inc.GetDeviceMac()), State: names.Enum(inc.GetState()),
			Devices: len(inc.GetDevices()), Alerts: inc.GetEvidence().GetAlertCount(), Score: inc.GetScore()}
		for _, st := range inc.GetTimeline() {
			id := st.GetAttack().GetTechniqueId()
			if id == "" {
				id = st.GetAttack().GetTacticId()
			}
			if id != "" {
				id = " (" + id + ")"
			}
			v.Stages = append(v.Stages, names.Enum(st.GetStage())+id)
		}
		for _, r := range inc.GetResponses() {
			if r.GetDecisionId() != "" {
				v.Decisions = append(v.Decisions, names.Enum(r.GetAction()))
			}
		}
		s.Incidents = append(s.Incidents, v)
	}
	sort.Slice(s.Alerts, func(i, j int) bool { return s.Alerts[i].Index < s.Alerts[j].Index })
	sort.Slice(s.Decisions, func(i, j int) bool { return s.Decisions[i].Index < s.Decisions[j].Index })
	return nil
}

// BaselineFrozen reports whether the device with mac has a frozen baseline.
func (o *Observer) BaselineFrozen(ctx context.Context, mac string) (bool, error) {
	if o.sens == nil {
		return false, fmt.Errorf("no coordinator connection")
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	r, err := o.sens.GetBaseline(ctx, &medmeshv1.GetBaselineRequest{DeviceMac: strings.ToLower(mac)})
	if err != nil {
		return false, err
	}
	return !r.GetClassBaseline() && r.GetBaseline().GetFreezeTime() != nil, nil
}

// record fills in what the scenario did: each device's traffic between the
// counter reads before and after it, what the API showed at the end, and
// the totals of both.
func (out *ScenarioOutcome) record(before, after []Traffic, snap Snapshot) {
	out.Traffic = trafficBetween(before, after)
	if snap.APIError != "" {
		out.Notes = append(out.Notes, "api: "+snap.APIError)
	}
	out.DevicesFound, out.Alerts, out.Decisions, out.Incidents = snap.Devices, snap.Alerts, snap.Decisions, snap.Incidents
	out.Totals = Totals{DevicesFound: len(snap.Devices), Alerts: len(snap.Alerts), Decisions: len(snap.Decisions), Incidents: len(snap.Incidents)}
	for _, t := range out.Traffic {
		out.Totals.EnforcerDrops += t.Dropped
		if t.LifeCritical {
			out.Totals.LifeCriticalDrops += t.Dropped
		}
	}
}

// trafficBetween is each device's traffic between two reads of the
// counters, matched by device (a device missing from before started at 0;
// counters that went backwards, after a restart, count from 0).
func trafficBetween(before, after []Traffic) []Traffic {
	prev := make(map[string]Traffic, len(before))
	for _, b := range before {
		prev[b.Device] = b
	}
	out := make([]Traffic, 0, len(after))
	for _, a := range after {
		b := prev[a.Device]
		if a.ToEnforcer < b.ToEnforcer || a.Passed < b.Passed {
			b = Traffic{}
		}
		t := Traffic{Device: a.Device, Floor: a.Floor, LifeCritical: a.LifeCritical,
			ToEnforcer: a.ToEnforcer - b.ToEnforcer, Passed: a.Passed - b.Passed}
		if t.ToEnforcer > t.Passed {
			t.Dropped = t.ToEnforcer - t.Passed
		}
		out = append(out, t)
	}
	return out
}

// Render writes a terminal view of s: devices with their classes, alerts
// with reasons, incidents with their stages, decisions with their indexes,
// what each enforcer dropped.
func Render(w io.Writer, s Snapshot, title string) {
	fmt.Fprintf(w, "\033[H\033[2J%s   %s\n", title, s.Time.Format(time.TimeOnly))
	if s.Phase != "" {
		fmt.Fprintf(w, "%s\n", s.Phase)
	}
	if s.APIError != "" {
		fmt.Fprintf(w, "  API: %s\n", s.APIError)
	}
	if s.Leader != "" {
		fmt.Fprintf(w, "cluster: leader %s, commit index %d;", s.Leader, s.Commit)
		for _, m := range s.Members {
			fmt.Fprintf(w, " %s(%s %s #%d)", m.ID, m.Role, m.State, m.Applied)
		}
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nDEVICES (%d)\tMAC\tCLASS\tTIER\tRISK\tFLOOR\n", len(s.Devices))
	for _, d := range s.Devices {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%s\n", orDash(d.Name), d.MAC, orDash(d.Class), orDash(d.Tier), d.Risk, orDash(d.Floor))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nALERTS (%d)\n", len(s.Alerts))
	for _, a := range last(s.Alerts, 8) {
		fmt.Fprintf(w, "  #%-6d %-12s %-22s score %3d  %s\n", a.Index, a.Device, a.Kind, a.Score, a.Summary)
	}
	fmt.Fprintf(w, "\nINCIDENTS (%d)\n", len(s.Incidents))
	for _, inc := range last(s.Incidents, 4) {
		fmt.Fprintf(w, "  %s %-12s %-6s %3d alerts, score %3d: %s; decided: %s\n", inc.ID, inc.Device, inc.State, inc.Alerts, inc.Score,
			strings.Join(inc.Stages, " > "), orDash(strings.Join(inc.Decisions, ", ")))
	}
	fmt.Fprintf(w, "\nDECISIONS (%d)\n", len(s.Decisions))
	for _, d := range last(s.Decisions, 8) {
		fmt.Fprintf(w, "  #%-6d %-12s %-16s %-16s by %s: %s\n", d.Index, d.Device, d.Action, d.State, d.Actor, d.Reason)
	}
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nENFORCERS\tDEVICE\tTO ENFORCER\tPASSED\tDROPPED\n")
	for _, t := range s.Traffic {
		mark := ""
		if t.LifeCritical {
			mark = " (life-critical)"
		}
		fmt.Fprintf(tw, "  e%d\t%s%s\t%d\t%d\t%d\n", t.Floor, t.Device, mark, t.ToEnforcer, t.Passed, t.Dropped)
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func last[T any](s []T, n int) []T {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
