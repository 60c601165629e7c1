package incident

import (
	"regexp"
	"strings"
	"testing"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// sensorKinds are the alert kinds the sensors emit: node/internal/score's
// factors and the detectors' kinds (issue 17 point 2).
var sensorKinds = []string{
	"known_bad_destination", "default_credentials", "cleartext_credentials", "protocol_misuse",
	"external_destination", "new_peer", "new_port", "volume_anomaly",
	"scan", "failed_login_burst", "cleartext_phi",
}

var (
	tacticRE    = regexp.MustCompile(`^TA\d{4}$`)
	techniqueRE = regexp.MustCompile(`^T\d{4}(\.\d{3})?$`)
)

// TestEveryKindHasAStage: every kind the sensors emit maps to a stage; an
// unknown kind is unmapped, not dropped.
func TestEveryKindHasAStage(t *testing.T) {
	for _, k := range sensorKinds {
		if m := StageOf(k); m.Stage == medmeshv1.IncidentStage_INCIDENT_STAGE_UNMAPPED || m.Stage == medmeshv1.IncidentStage_INCIDENT_STAGE_UNSPECIFIED {
			t.Errorf("alert kind %s maps to %v", k, m.Stage)
		}
	}
	if m := StageOf("no_such_kind"); m.Stage != medmeshv1.IncidentStage_INCIDENT_STAGE_UNMAPPED || m.Attack != nil {
		t.Errorf("unknown kind: %+v", m)
	}
}

// TestTableSaysWhereICSHasNoTactic: the ids are well formed, ICS tactics
// are ICS ids (TA01xx) and ICS techniques T08xx; a row that uses the
// Enterprise matrix says ICS has none, a row without a technique or
// tactic says why; the rows come in timeline order and every stage of
// the enum has a row.
func TestTableSaysWhereICSHasNoTactic(t *testing.T) {
	stages := map[medmeshv1.IncidentStage]bool{}
	prev := 0
	for _, m := range Table() {
		stages[m.Stage] = true
		if Rank(m.Stage) < prev {
			t.Errorf("row %v out of timeline order", m.Stage)
		}
		prev = Rank(m.Stage)
		if m.Note == "" {
			t.Errorf("row %v has no note", m.Stage)
		}
		a := m.Attack
		if a == nil {
			if m.Stage != medmeshv1.IncidentStage_INCIDENT_STAGE_POLICY_VIOLATION {
				t.Errorf("stage %v has no ATT&CK tactic", m.Stage)
			}
			continue
		}
		if !tacticRE.MatchString(a.TacticId) || a.Tactic == "" {
			t.Errorf("stage %v: tactic %q %q", m.Stage, a.TacticId, a.Tactic)
		}
		if a.TechniqueId != "" && (!techniqueRE.MatchString(a.TechniqueId) || a.Technique == "") {
			t.Errorf("stage %v: technique %q %q", m.Stage, a.TechniqueId, a.Technique)
		}
		if a.TechniqueId == "" && !strings.Contains(m.Note, "no technique") && !strings.Contains(m.Note, "No technique") && len(m.Kinds) > 0 {
			t.Errorf("stage %v names no technique and does not say why: %q", m.Stage, m.Note)
		}
		switch a.Matrix {
		case ICS:
			if !strings.HasPrefix(a.TacticId, "TA01") || (a.TechniqueId != "" && !strings.HasPrefix(a.TechniqueId, "T08")) {
				t.Errorf("stage %v: %s/%s are not ATT&CK for ICS ids", m.Stage, a.TacticId, a.TechniqueId)
			}
		case Enterprise:
			if !strings.Contains(m.Note, "ICS has no") {
				t.Errorf("stage %v uses ATT&CK Enterprise without saying ICS has no fitting tactic: %q", m.Stage, m.Note)
			}
		default:
			t.Errorf("stage %v: matrix %q", m.Stage, a.Matrix)
		}
	}
	for n := range medmeshv1.IncidentStage_name {
		s := medmeshv1.IncidentStage(n)
		if s != medmeshv1.IncidentStage_INCIDENT_STAGE_UNSPECIFIED && s != medmeshv1.IncidentStage_INCIDENT_STAGE_UNMAPPED && !stages[s] {
			t.Errorf("stage %v has no row", s)
		}
	}
}

// TestIssueExamples pins the mappings issue 17 names.
func TestIssueExamples(t *testing.T) {
	for kind, want := range map[string]string{
		"scan":                "ics TA0102 T0846",
		"default_credentials": "ics TA0109 T0812",
		"volume_anomaly":      "enterprise TA0010 ",
		"cleartext_phi":       "enterprise TA0010 T1048.003",
	} {
		a := StageOf(kind).Attack
		if got := a.GetMatrix() + " " + a.GetTacticId() + " " + a.GetTechniqueId(); got != want {
			t.Errorf("%s maps to %q, want %q", kind, got, want)
		}
	}
}
