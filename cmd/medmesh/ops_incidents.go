package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func newIncidentsCmd(o *opFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "incidents",
		Short: "List, show and watch incidents: a device's alerts folded into one story",
		Long: "The coordinators fold the alerts about one device (as source or target) that come\n" +
			"within 30 minutes of each other into one incident: the devices involved and their\n" +
			"role, a timeline of stages mapped to MITRE ATT&CK for ICS (or ATT&CK Enterprise where\n" +
			"ICS has no tactic), the evidence, a score, and its decisions (one per response rule).\n" +
			"The alerts stay available underneath: 'medmesh alerts list'.",
	}
	var (
		device, state, since string
		limit                int
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List incidents, the most recently changed last",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := parseEnum(medmeshv1.IncidentState(0).Descriptor(), "state", state)
			if err != nil {
				return err
			}
			var from *timestamppb.Timestamp
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				from = timestamppb.New(t)
			}
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				cl := medmeshv1.NewIncidentServiceClient(conn)
				var last *medmeshv1.ListIncidentsResponse
				incs, next, err := listAll(limit, func(token string, size int32) ([]*medmeshv1.Incident, string, error) {
					resp, err := cl.ListIncidents(ctx, &medmeshv1.ListIncidentsRequest{PageSize: size, PageToken: token,
						DeviceMac: device, State: medmeshv1.IncidentState(n), Since: from, Consistency: o.consistency()})
					last = resp
					return resp.GetIncidents(), resp.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, &medmeshv1.ListIncidentsResponse{Incidents: incs, NextPageToken: next, ReadInfo: last.GetReadInfo()})
				}
				t := incidentTable(w)
				for _, inc := range incs {
					incidentRow(t, inc)
				}
				return t.flush()
			})
		},
	}
	list.Flags().StringVar(&device, "device", "", "only incidents involving this device (as source or affected)")
	list.Flags().StringVar(&state, "state", "", "only this state (open, closed)")
	list.Flags().StringVar(&since, "since", "", "only incidents with an alert since this time (RFC 3339) or this long ago (e.g. 2h)")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many incidents (0: all)")

	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show an incident: its timeline with ATT&CK ids, devices, evidence and decisions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewIncidentServiceClient(conn).GetIncident(ctx,
					&medmeshv1.GetIncidentRequest{Id: args[0], Consistency: o.consistency()})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				return printIncident(w, resp)
			})
		},
	}

	var from uint64
	watchCmd := &cobra.Command{
		Use:   "watch",
		Short: "Stream incidents as they change (a new alert, a decision, closing), until Ctrl-C",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			var t *table
			if !o.json() {
				t = incidentTable(w)
				if err := t.flush(); err != nil {
					return err
				}
			}
			open := func(ctx context.Context, conn *grpc.ClientConn, from uint64, token string) (func() (watchEvent[*medmeshv1.Incident], error), error) {
				s, err := medmeshv1.NewIncidentServiceClient(conn).WatchIncidents(ctx, &medmeshv1.WatchIncidentsRequest{FromIndex: from, ResumeToken: token})
				if err != nil {
					return nil, err
				}
				return func() (watchEvent[*medmeshv1.Incident], error) {
					m, err := s.Recv()
					if err != nil {
						return watchEvent[*medmeshv1.Incident]{}, err
					}
					inc := m.GetIncident()
					return watchEvent[*medmeshv1.Incident]{item: inc, index: inc.GetIndex(), applied: m.GetAppliedIndex(), token: m.GetResumeToken(), isItem: inc != nil}, nil
				}, nil
			}
			return watch(cmd, o, from, open, func(inc *medmeshv1.Incident) error {
				if o.json() {
					return printLine(w, inc)
				}
				incidentRow(t, inc)
				return t.flush()
			})
		},
	}
	watchCmd.Flags().Uint64Var(&from, "from-index", 0, "stream incidents whose last change has a Raft index above this (0: from the beginning)")

	c.AddCommand(list, get, watchCmd)
	return c
}

// parseSince reads --since: an RFC 3339 time, or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, usagef("invalid --since %q: a duration must not be negative", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, usagef("invalid --since %q: want an RFC 3339 time (2026-03-01T08:00:00Z) or a duration (2h)", s)
	}
	return t, nil
}

func incidentTable(w io.Writer) *table {
	return newTable(w, "INDEX", "ID", "STATE", "DEVICE", "DEVICES", "STAGES", "ALERTS", "SCORE", "DECISIONS", "UPDATED")
}

func incidentRow(t *table, inc *medmeshv1.Incident) {
	t.row(inc.GetIndex(), inc.GetId(), names.Enum(inc.GetState()), inc.GetDeviceMac(), len(inc.GetDevices()),
		truncate(stagesOf(inc), 60), inc.GetEvidence().GetAlertCount(), inc.GetScore(), decidedOf(inc), ts(inc.GetUpdateTime()))
}

// stagesOf is "reconnaissance > lateral-movement > exfiltration": each
// stage once, in the order it began.
func stagesOf(inc *medmeshv1.Incident) string {
	var out []string
	for _, st := range inc.GetTimeline() {
		if s := names.Enum(st.GetStage()); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return strings.Join(out, " > ")
}

// decidedOf lists the actions the incident's rules decided: "quarantine, notify".
func decidedOf(inc *medmeshv1.Incident) string {
	var out []string
	for _, r := range inc.GetResponses() {
		if r.GetDecisionId() != "" {
			out = append(out, names.Enum(r.GetAction()))
		}
	}
	return strings.Join(out, ", ")
}

// attackOf is "ICS TA0102 Discovery / T0846 Remote System Discovery".
func attackOf(a *medmeshv1.AttackReference) string {
	if a.GetTacticId() == "" {
		return ""
	}
	s := strings.ToUpper(a.GetMatrix()) + " " + a.GetTacticId() + " " + a.GetTactic()
	if a.GetMatrix() == "enterprise" {
		s = "Enterprise " + a.GetTacticId() + " " + a.GetTactic()
	}
	if a.GetTechniqueId() != "" {
		s += " / " + a.GetTechniqueId() + " " + a.GetTechnique()
	}
	return s
}

// printIncident writes one incident for people: what it is about, its
// timeline, devices, evidence, and decisions with their approval state.
func printIncident(w io.Writer, resp *medmeshv1.GetIncidentResponse) error {
	inc := resp.GetIncident()
	ev := inc.GetEvidence()
	fmt.Fprintf(w, "INCIDENT %s  %s  device %s\n", inc.GetId(), names.Enum(inc.GetState()), inc.GetDeviceMac())
	fmt.Fprintf(w, "opened %s  last alert %s", ts(inc.GetOpenTime()), ts(inc.GetUpdateTime()))
	if inc.GetCloseTime() != nil {
		fmt.Fprintf(w, "  closed %s", ts(inc.GetCloseTime()))
	}
	fmt.Fprintf(w, "\nscore %d (combined over stages %d), %d alerts: %s\n", inc.GetScore(), inc.GetCombinedScore(), ev.GetAlertCount(), stagesOf(inc))

	fmt.Fprintln(w, "\nTIMELINE")
	t := newTable(w, "STAGE", "ATT&CK", "FIRST", "LAST", "ALERTS", "SCORE", "KINDS", "ALERT IDS")
	for _, st := range inc.GetTimeline() {
		ids := strings.Join(st.GetAlertIds(), " ")
		if n := int(st.GetAlertCount()) - len(st.GetAlertIds()); n > 0 {
			ids += fmt.Sprintf(" (+%d)", n)
		}
		t.row(names.Enum(st.GetStage()), attackOf(st.GetAttack()), ts(st.GetFirstTime()), ts(st.GetLastTime()),
			st.GetAlertCount(), st.GetMaxScore(), strings.Join(st.GetKinds(), ","), truncate(ids, 80))
	}
	if err := t.flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nDEVICES")
	t = newTable(w, "MAC", "ROLE", "CLASS", "TIER", "ALERTS", "SINCE")
	for _, d := range inc.GetDevices() {
		t.row(d.GetMac(), names.Enum(d.GetRole()), names.Enum(d.GetDeviceClass()), names.Enum(d.GetTier()), d.GetAlertCount(), ts(d.GetFirstTime()))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if inc.GetMoreDevices() {
		fmt.Fprintln(w, "(more devices than listed)")
	}

	fmt.Fprintln(w, "\nEVIDENCE")
	var kinds []string
	for _, k := range ev.GetKinds() {
		kinds = append(kinds, fmt.Sprintf("%s %d", k.GetKind(), k.GetCount()))
	}
	more := func(b bool) string {
		if b {
			return ", …"
		}
		return ""
	}
	fmt.Fprintf(w, "alerts:    %s\n", strings.Join(kinds, ", "))
	fmt.Fprintf(w, "peers:     %s%s\n", strings.Join(ev.GetPeers(), ", "), more(ev.GetMorePeers()))
	fmt.Fprintf(w, "ports:     %s%s\n", strings.Join(ev.GetPorts(), ", "), more(ev.GetMorePorts()))
	fmt.Fprintf(w, "protocols: %s\n", strings.Join(ev.GetProtocols(), ", "))
	fmt.Fprintf(w, "sensors:   %s\n", strings.Join(ev.GetSensors(), ", "))

	fmt.Fprintln(w, "\nDECISIONS")
	byID := map[string]*medmeshv1.Decision{}
	for _, d := range resp.GetDecisions() {
		byID[d.GetId()] = d
	}
	t = newTable(w, "RULE", "ACTION", "DECISION", "STATE", "DEVICE", "ALERT", "REVIEWED BY", "NOTE")
	for _, r := range inc.GetResponses() {
		d := byID[r.GetDecisionId()]
		st, dev, note := "", "", r.GetNote()
		if d != nil {
			st, dev = names.Enum(d.GetState()), d.GetDeviceMac()
			if d.GetState() == medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
				note = "medmesh decisions approve " + d.GetId() + " --reason ..."
			}
		} else if r.GetDecisionId() != "" {
			note = "no longer in the decision log (retention)"
		}
		t.row(r.GetRule(), names.Enum(r.GetAction()), r.GetDecisionId(), st, dev, r.GetAlertId(), d.GetReviewedBy(), note)
	}
	return t.flush()
}
