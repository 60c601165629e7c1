// Package incident holds what the FSM needs to tell an incident's story
// that is not state: the one table mapping alert kinds to incident stages
// and MITRE ATT&CK tactics and techniques, and the order of stages on a
// timeline.
//
// The table is data, read top to bottom. ATT&CK for ICS
// (https://attack.mitre.org/matrices/ics/) is used where it has a tactic
// that fits; it has no Credential Access and no Exfiltration tactic, so
// those stages name ATT&CK Enterprise tactics and techniques, and say so
// (Matrix "enterprise"). A stage with no fitting technique names only its
// tactic; "policy violation" is not an adversary tactic at all and names
// none.
//
// The table is code, like the FSM's retention values: every coordinator
// must map the same kinds to the same stages, because the stages are part
// of the replicated incidents. Changing a row changes what new alerts fold
// into; incidents already stored keep the stages they were given.
package incident

import (
	"slices"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Matrices of ATT&CK.
const (
	ICS        = "ics"
	Enterprise = "enterprise"
)

// Mapping is one row of the table: the alert kinds it maps, the stage, and
// where the stage sits in ATT&CK.
type Mapping struct {
	Kinds  []string
	Stage  medmeshv1.IncidentStage
	Attack *medmeshv1.AttackReference // nil: no tactic fits
	// Note says why the row maps as it does, and where ICS has no
	// tactic or technique.
	Note string
}

func ics(tacticID, tactic, techniqueID, technique string) *medmeshv1.AttackReference {
	return &medmeshv1.AttackReference{Matrix: ICS, TacticId: tacticID, Tactic: tactic, TechniqueId: techniqueID, Technique: technique}
}

func enterprise(tacticID, tactic, techniqueID, technique string) *medmeshv1.AttackReference {
	return &medmeshv1.AttackReference{Matrix: Enterprise, TacticId: tacticID, Tactic: tactic, TechniqueId: techniqueID, Technique: technique}
}

// table is the mapping, in the order of Stages. The kinds are those the
// sensors emit: node/internal/score's factors and the detectors' kinds
// (scan, default_credentials, cleartext_credentials, failed_login_burst,
// cleartext_phi).
var table = []Mapping{
	{
		Kinds:  []string{"scan", "fan_out"}, // fan_out: what sensors before issue 17 named a scan
		Stage:  medmeshv1.IncidentStage_INCIDENT_STAGE_RECONNAISSANCE,
		Attack: ics("TA0102", "Discovery", "T0846", "Remote System Discovery"),
		Note: "a device reaching many peers or ports it never used: a horizontal sweep is T0846; ICS has no " +
			"technique of its own for a port scan of one host (Enterprise T1046 Network Service Discovery), T0846 is the nearest. " +
			"ICS has no Reconnaissance tactic: scanning from inside the network is its Discovery",
	},
	{
		Kinds:  []string{"failed_login_burst"},
		Stage:  medmeshv1.IncidentStage_INCIDENT_STAGE_CREDENTIAL_ACCESS,
		Attack: enterprise("TA0006", "Credential Access", "T1110", "Brute Force"),
		Note: "many failed logins in a short time. ATT&CK for ICS has no Credential Access tactic " +
			"(its T0806 Brute Force I/O is about process I/O, not logins): Enterprise",
	},
	{
		Kinds:  []string{"cleartext_credentials"},
		Stage:  medmeshv1.IncidentStage_INCIDENT_STAGE_CREDENTIAL_ACCESS,
		Attack: enterprise("TA0006", "Credential Access", "T1040", "Network Sniffing"),
		Note: "a login whose credentials crossed the network in clear: anyone on the path can capture them. " +
			"ICS has no Credential Access tactic (it lists Network Sniffing as T0842 under Discovery): Enterprise",
	},
	{
		Kinds:  []string{"default_credentials"},
		Stage:  medmeshv1.IncidentStage_INCIDENT_STAGE_LATERAL_MOVEMENT,
		Attack: ics("TA0109", "Lateral Movement", "T0812", "Default Credentials"),
		Note:   "a successful login with a manufacturer's default account: how an adversary moves to the next device",
	},
	{
		Kinds:  []string{"known_bad_destination"},
		Stage:  medmeshv1.IncidentStage_INCIDENT_STAGE_COMMAND_AND_CONTROL,
		Attack: ics("TA0101", "Command and Control", "", ""),
		Note: "a destination on the known-bad list, which lists adversaries' infrastructure; " +
			"the list names the peer, not how it is used, so no technique",
	},
	{
		Kinds:  []string{"cleartext_phi"},
		Stage:  medmeshv1.IncidentStage_INCIDENT_STAGE_EXFILTRATION,
		Attack: enterprise("TA0010", "Exfiltration", "T1048.003", "Exfiltration Over Unencrypted Non-C2 Protocol"),
		Note: "patient data (HL7, DICOM) in clear to a peer outside the baseline. ATT&CK for ICS has no " +
			"Exfiltration tactic (its nearest is T0882 Theft of Operational Information, under Impact): Enterprise",
	},
	{
		Kinds:  []string{"external_destination", "volume_anomaly"},
		Stage:  medmeshv1.IncidentStage_INCIDENT_STAGE_EXFILTRATION,
		Attack: enterprise("TA0010", "Exfiltration", "", ""),
		Note: "data to an internet address outside the baseline, or far more bytes than the baseline. " +
			"ATT&CK for ICS has no Exfiltration tactic: Enterprise. No technique: the alert does not tell " +
			"whether the data left over a C2 channel (T1041) or another protocol (T1048); it may also be " +
			"command and control, which the same first packet would show",
	},
	{
		Stage:  medmeshv1.IncidentStage_INCIDENT_STAGE_INHIBIT_RESPONSE_FUNCTION,
		Attack: ics("TA0107", "Inhibit Response Function", "", ""),
		Note: "no alert kind the sensors emit shows it yet (it would be, e.g., T0814 Denial of Service or " +
			"T0816 Device Restart/Shutdown against a monitor or pump)",
	},
	{
		Kinds: []string{"protocol_misuse", "new_peer", "new_port"},
		Stage: medmeshv1.IncidentStage_INCIDENT_STAGE_POLICY_VIOLATION,
		Note: "traffic outside the device's learned baseline, or a clinical protocol its class has no business " +
			"speaking: a deviation from policy, not an adversary tactic, so no ATT&CK reference",
	},
}

// unmapped is the row of a kind the table does not list.
var unmapped = Mapping{Stage: medmeshv1.IncidentStage_INCIDENT_STAGE_UNMAPPED, Note: "an alert kind this table does not know"}

var byKind = func() map[string]*Mapping {
	m := map[string]*Mapping{}
	for i := range table {
		for _, k := range table[i].Kinds {
			if m[k] != nil {
				panic("incident: alert kind " + k + " mapped twice")
			}
			m[k] = &table[i]
		}
	}
	return m
}()

// StageOf returns the row of the table an alert kind maps to. Callers
// must not change what it returns.
func StageOf(kind string) *Mapping {
	if m := byKind[kind]; m != nil {
		return m
	}
	return &unmapped
}

// Table returns a copy of the table, in stage order (for documentation
// and tests).
func Table() []Mapping { return slices.Clone(table) }

// Rank orders stages on a timeline when two begin at the same index: the
// order an attack usually unfolds in.
func Rank(s medmeshv1.IncidentStage) int {
	switch s {
	case medmeshv1.IncidentStage_INCIDENT_STAGE_RECONNAISSANCE:
		return 1
	case medmeshv1.IncidentStage_INCIDENT_STAGE_CREDENTIAL_ACCESS:
		return 2
	case medmeshv1.IncidentStage_INCIDENT_STAGE_LATERAL_MOVEMENT:
		return 3
	case medmeshv1.IncidentStage_INCIDENT_STAGE_COMMAND_AND_CONTROL:
		return 4
	case medmeshv1.IncidentStage_INCIDENT_STAGE_EXFILTRATION:
		return 5
	case medmeshv1.IncidentStage_INCIDENT_STAGE_INHIBIT_RESPONSE_FUNCTION:
		return 6
	case medmeshv1.IncidentStage_INCIDENT_STAGE_POLICY_VIOLATION:
		return 7
	default:
		return 8
	}
}
