package lab

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/medmesh/medmesh/deploy/lab/sim"
)

// Lab builds, supervises and removes one campus lab.
type Lab struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg.
func New(cfg Config, log *slog.Logger) (*Lab, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("lab config: %w", err)
	}
	return &Lab{cfg: cfg, log: log}, nil
}

// Config returns the lab's configuration.
func (l *Lab) Config() Config { return l.cfg }

// ErrNotRoot is returned when the lab is driven without root.
var ErrNotRoot = errors.New("the lab needs root (network namespaces, veth, tc, nftables)")

// EnvMarker is set (as EnvMarker=PREFIX) in the environment of every process
// the lab starts, so Down finds them even without a state file.
const EnvMarker = "MEDMESH_LAB"

// Proc is a process the lab started.
type Proc struct {
	Name  string   `json:"name"`
	Role  string   `json:"role"` // "coordinator", "sensor", "enforcer", "service", "device"
	Netns string   `json:"netns,omitempty"`
	PID   int      `json:"pid"`
	Start uint64   `json:"start"` // /proc/PID/stat starttime, against PID reuse
	Args  []string `json:"args"`
	Log   string   `json:"log"`
}

// ProcStatus is a started process and whether it still runs.
type ProcStatus struct {
	Proc
	Alive bool `json:"alive"`
}

// Status is the state of a lab as `medmesh-lab status` shows it.
type Status struct {
	Up         bool              `json:"up"`
	Complete   bool              `json:"complete"`
	StateFile  string            `json:"state_file"`
	API        string            `json:"api,omitempty"`
	Namespaces int               `json:"namespaces"`
	Missing    []string          `json:"missing_namespaces,omitempty"`
	Procs      []ProcStatus      `json:"processes"`
	Skipped    map[string]string `json:"skipped,omitempty"`
	Devices    []DeviceInfo      `json:"devices,omitempty"`
	// Traffic is each device's packets through its enforcer (root only).
	Traffic []Traffic `json:"traffic,omitempty"`
	// Console is the web console's URL on the host (coordinator c1's;
	// c2's and c3's are on 127.0.0.2 and .3), and ConsoleAccounts the
	// file of its accounts' passwords; empty when the coordinators serve
	// no console.
	Console         string `json:"console,omitempty"`
	ConsoleAccounts string `json:"console_accounts,omitempty"`
}

// Traffic is what a device sent towards its enforcer, and what of it the
// enforcer's XDP program let through, counted by tc filters on both sides.
type Traffic struct {
	Device       string `json:"device"`
	Floor        int    `json:"floor"`
	LifeCritical bool   `json:"life_critical"`
	ToEnforcer   uint64 `json:"to_enforcer"`
	Passed       uint64 `json:"passed"`
	Dropped      uint64 `json:"dropped"`
}

// The lab's scenarios.
const (
	// ScenarioCompromisedDevice: the configured device (a nurse call
	// station) scans its floor, logs into a console with default
	// credentials and exfiltrates; the default rules quarantine it at once.
	// Then a class policy for IT workstations, in enforce mode, drops a
	// workstation's denied packets while its allowed traffic passes.
	ScenarioCompromisedDevice = "compromised-device"
	// ScenarioCompromisedPump: an infusion pump (life-critical) does the
	// same; its decisions wait for approval and nothing of it is dropped
	// until the lab's approver, a second identity, approves; then its
	// packets are dropped.
	ScenarioCompromisedPump = "compromised-pump"
)

// Scenarios lists the scenarios `medmesh-lab run` knows.
func Scenarios() []string { return []string{ScenarioCompromisedDevice, ScenarioCompromisedPump} }

// ScenarioOptions tunes a scenario run.
type ScenarioOptions struct {
	// BaselineTimeout bounds the wait for the compromised device's baseline
	// to freeze; 0 skips the wait.
	BaselineTimeout time.Duration
	// ExfilFor is how long the device keeps sending to the internet.
	ExfilFor time.Duration
	// Settle is how long to keep polling for alerts and decisions after the
	// attack ends.
	Settle time.Duration
	// Progress, if set, gets a snapshot about every second.
	Progress func(Snapshot)
}

// DefaultScenarioOptions suit the demo.
func DefaultScenarioOptions() ScenarioOptions {
	return ScenarioOptions{BaselineTimeout: 3 * time.Minute, ExfilFor: 10 * time.Second, Settle: 5 * time.Second}
}

// ScenarioOutcome is what `medmesh-lab run -o json` prints.
type ScenarioOutcome struct {
	Scenario       string         `json:"scenario"`
	Device         string         `json:"device"`
	MAC            string         `json:"mac"`
	IP             string         `json:"ip"`
	BaselineFrozen bool           `json:"baseline_frozen"`
	BaselineWaitMs int64          `json:"baseline_wait_ms"`
	Attack         sim.Outcome    `json:"attack"`
	DevicesFound   []DeviceView   `json:"devices_found"`
	Alerts         []AlertView    `json:"alerts"`
	Decisions      []DecisionView `json:"decisions"`
	Incidents      []IncidentView `json:"incidents"`
	// Per device, during the scenario: packets sent towards its enforcer,
	// let through, dropped.
	Traffic []Traffic `json:"traffic"`
	// Totals sum the lists above, for scripts: jq .totals.enforcer_drops.
	Totals Totals `json:"totals"`
	// First external packet of the compromised device to the first packet
	// its enforcer dropped (tc counters polled every 10 ms); -1 if none.
	DetectionToDropMs float64 `json:"detection_to_drop_ms"`
	// First external packet of the compromised device to the moment its
	// floor's enforcer put the first enforcing decision about it into the
	// datapath (the enforcer's clock, its GET /applied; the lab's processes
	// share one clock): from then on every packet of the device meets the
	// decision. The drop above can come later: it also waits for the
	// device's next packet, and the simulated device uploads 64 KiB every
	// 100 ms. -1 if none.
	DetectionToEnforceMs float64 `json:"detection_to_enforce_ms"`
	// ClassPolicy is the class-policy phase of compromised-device.
	ClassPolicy *ClassPolicyOutcome `json:"class_policy,omitempty"`
	// Pump is the approval phase of compromised-pump.
	Pump  *PumpOutcome `json:"pump,omitempty"`
	Notes []string     `json:"notes,omitempty"`
}

// ClassPolicyOutcome is what a class policy in enforce mode did at a
// workstation's enforcer: denied datagrams sent and dropped (the
// enforcer's per-device counters), an allowed connection made.
type ClassPolicyOutcome struct {
	Policy      string `json:"policy"`
	Class       string `json:"class"`
	Device      string `json:"device"`
	DeviceClass string `json:"device_class"` // as the coordinators classified it
	Decisions   int    `json:"decisions"`    // one per device of the class
	// Denied: datagrams the device sent to a peer the policy does not
	// allow, and how many of its packets the enforcer dropped meanwhile.
	DeniedTarget string `json:"denied_target"`
	DeniedSent   int    `json:"denied_sent"`
	Dropped      uint64 `json:"dropped"`
	// Allowed: a TCP connection to a peer the policy allows, and the
	// device's packets the enforcer let through meanwhile.
	AllowedTarget string `json:"allowed_target"`
	AllowedOK     bool   `json:"allowed_ok"`
	Passed        uint64 `json:"passed"`
	// ActivationToDropMs: from the activation's commit to the first denied
	// datagram dropped (probes every 50 ms).
	ActivationToDropMs float64 `json:"activation_to_drop_ms"`
	// Later are the decisions about the device committed after the
	// activation, and ClassAfter its class at the end of the phase: what
	// could have lifted the enforcement when fewer datagrams were dropped
	// than sent.
	Later      []DecisionView `json:"later_decisions,omitempty"`
	ClassAfter string         `json:"class_after"`
}

// PumpOutcome is the approval phase of compromised-pump.
type PumpOutcome struct {
	// Pending are the pump's enforcing decisions that waited for approval.
	Pending []DecisionView `json:"pending"`
	// DroppedWhilePending: the pump's packets its enforcer dropped from the
	// start of the attack until the approval (must be 0).
	DroppedWhilePending uint64 `json:"dropped_while_pending"`
	// Approver is the identity that approved; the decisions' causes (the
	// response engine and the sensor that alerted) may not.
	Approver string `json:"approver"`
	// Approved are the approvals, new decisions that target the pending ones.
	Approved []DecisionView `json:"approved"`
	// After approval the pump attacks again: its packets dropped then.
	DroppedAfterApproval uint64  `json:"dropped_after_approval"`
	ApprovalToDropMs     float64 `json:"approval_to_drop_ms"`
}

// Totals are a scenario's counts: what the coordinators found and decided,
// and the packets every enforcer dropped during it, of them those of
// life-critical devices (which must stay 0).
type Totals struct {
	DevicesFound      int    `json:"devices_found"`
	Alerts            int    `json:"alerts"`
	Decisions         int    `json:"decisions"`
	Incidents         int    `json:"incidents"`
	EnforcerDrops     uint64 `json:"enforcer_drops"`
	LifeCriticalDrops uint64 `json:"life_critical_drops"`
}

// Open is New with the configuration of the lab already up in
// cfg.StateDir, if there is one (its layout may differ from cfg's after a
// Roam).
func Open(cfg Config, log *slog.Logger) (*Lab, error) {
	st, err := ReadState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	if st != nil {
		cfg = st.Config
	}
	return New(cfg, log)
}
