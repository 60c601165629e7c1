package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/medmesh/medmesh/deploy/lab/sim"
)

// RunCompromised makes the configured compromised device scan its floor, log
// into a neighbour's console with default credentials and send data to the
// internet host for exfilFor, in its own namespace, and returns what the
// device saw.
func (l *Lab) RunCompromised(ctx context.Context, exfilFor time.Duration) (sim.Outcome, error) {
	d, ok := l.cfg.Device(l.cfg.Compromised)
	if !ok {
		return sim.Outcome{}, fmt.Errorf("compromised device %q is not in the lab", l.cfg.Compromised)
	}
	return l.runAttack(ctx, d, exfilFor)
}

// runAttack runs the attack generator in device d's namespace.
func (l *Lab) runAttack(ctx context.Context, d DeviceInfo, exfilFor time.Duration) (sim.Outcome, error) {
	b, err := json.Marshal(l.CompromisedConfig(d, exfilFor))
	if err != nil {
		return sim.Outcome{}, err
	}
	cmd := exec.CommandContext(ctx, l.cfg.LabBinary, "sim", "--config", string(b))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(append(os.Environ(), EnvMarker+"="+l.cfg.Prefix), l.cfg.Env...)
	if err := inNS(d.Namespace, cmd.Start); err != nil {
		return sim.Outcome{}, fmt.Errorf("start compromised %s: %w", d.Name, err)
	}
	if err := cmd.Wait(); err != nil {
		return sim.Outcome{}, fmt.Errorf("compromised %s: %w: %s", d.Name, err, lastLine(stderr.String()))
	}
	var out sim.Outcome
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return sim.Outcome{}, fmt.Errorf("compromised %s printed no outcome: %w", d.Name, err)
	}
	return out, nil
}

func lastLine(s string) string {
	s = string(bytes.TrimSpace([]byte(s)))
	if i := bytes.LastIndexByte([]byte(s), '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// RunScenario runs a scenario on the running lab and reports its outcome.
func (l *Lab) RunScenario(ctx context.Context, name string, obs *Observer, opts ScenarioOptions) (ScenarioOutcome, error) {
	if !slices.Contains(Scenarios(), name) {
		return ScenarioOutcome{}, fmt.Errorf("unknown scenario %q (known: %s)", name, strings.Join(Scenarios(), ", "))
	}
	st, err := ReadState(l.cfg.StateDir)
	if err != nil {
		return ScenarioOutcome{}, err
	}
	if st == nil || !st.Complete {
		return ScenarioOutcome{}, fmt.Errorf("the lab is not up (no complete state in %s): run `medmesh-lab up`", l.cfg.StateDir)
	}
	d, ok := l.cfg.Device(l.cfg.Compromised)
	if name == ScenarioCompromisedPump {
		d, ok = l.cfg.pump()
	}
	if !ok {
		return ScenarioOutcome{}, fmt.Errorf("scenario %s: its device is not in the lab", name)
	}
	out := ScenarioOutcome{Scenario: name, Device: d.Name, MAC: strings.ToLower(d.MAC), IP: d.IP, DetectionToDropMs: -1, DetectionToEnforceMs: -1}
	for role, why := range st.Skipped {
		out.Notes = append(out.Notes, role+": "+why)
	}
	var phase atomic.Value
	phase.Store("")
	progress := func() {
		if opts.Progress != nil {
			s := obs.Snapshot(ctx)
			s.Phase = phase.Load().(string)
			opts.Progress(s)
		}
	}

	// 1. Wait for the baseline to freeze.
	start := time.Now()
	if opts.BaselineTimeout > 0 {
		deadline := start.Add(opts.BaselineTimeout)
		var lastErr error
		for time.Now().Before(deadline) {
			frozen, err := obs.BaselineFrozen(ctx, d.MAC)
			if frozen {
				out.BaselineFrozen = true
				break
			}
			lastErr = err
			phase.Store(fmt.Sprintf("phase 1/3: waiting for %s's baseline to freeze (%s of at most %s)",
				d.Name, time.Since(start).Round(time.Second), opts.BaselineTimeout))
			progress()
			select {
			case <-ctx.Done():
				return out, ctx.Err()
			case <-time.After(time.Second):
			}
		}
		if !out.BaselineFrozen {
			out.Notes = append(out.Notes, fmt.Sprintf("baseline of %s not frozen after %s (last error: %v); attacking anyway", d.Name, opts.BaselineTimeout, lastErr))
		}
	}
	out.BaselineWaitMs = time.Since(start).Milliseconds()

	// 2. Attack, watching the enforcer counters for the first drop.
	before, err := l.Traffic()
	if err != nil {
		return out, err
	}
	var firstDrop time.Time
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		base := dropsOf(before, d.Name)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		lastProgress := time.Now()
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-tick.C:
			}
			if firstDrop.IsZero() {
				// Stamp the drop when the raw counters first show it, then
				// confirm it is not a packet in flight between them.
				if tr, err := l.traffic(false); err == nil && dropsOf(tr, d.Name) > base {
					seen := time.Now()
					if tr, err := l.Traffic(); err == nil && dropsOf(tr, d.Name) > base {
						firstDrop = seen
					}
				}
			}
			if time.Since(lastProgress) > time.Second {
				progress()
				lastProgress = time.Now()
			}
		}
	}()
	phase.Store(fmt.Sprintf("phase 2/3: %s scans floor %d, logs in with admin/admin, sends data to %s for %s",
		d.Name, d.Floor, InternetIP, opts.ExfilFor))
	out.Attack, err = l.runAttack(ctx, d, opts.ExfilFor)
	phase.Store("phase 3/3: waiting for alerts and decisions to settle")
	// 3. Let alerts and decisions arrive.
	if err == nil && opts.Settle > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(opts.Settle):
		}
	}
	stopWatch()
	<-watchDone
	if err != nil {
		return out, err
	}
	if !firstDrop.IsZero() && out.Attack.FirstExternalNs > 0 {
		out.DetectionToDropMs = float64(firstDrop.UnixNano()-out.Attack.FirstExternalNs) / 1e6
	}
	if name == ScenarioCompromisedDevice && out.Attack.FirstExternalNs > 0 {
		switch at, err := l.cfg.appliedAt(d.Floor, d.MAC); {
		case err != nil:
			out.Notes = append(out.Notes, "detection-to-enforce: "+err.Error())
		case !at.IsZero():
			out.DetectionToEnforceMs = float64(at.UnixNano()-out.Attack.FirstExternalNs) / 1e6
		}
	}

	after, err := l.Traffic()
	if err != nil {
		return out, err
	}
	snap := obs.Snapshot(ctx)
	out.record(before, after, snap)
	switch name {
	case ScenarioCompromisedDevice:
		phase.Store("phase 4/4: a class policy for IT workstations, in enforce mode, drops a workstation's denied packets")
		progress()
		cp, err := l.classPolicy(ctx, obs)
		out.ClassPolicy = &cp
		if err != nil {
			out.Notes = append(out.Notes, "class policy: "+err.Error())
		}
	case ScenarioCompromisedPump:
		// Nothing of the pump may be dropped while its decisions wait.
		pc := PumpOutcome{ApprovalToDropMs: -1}
		phase.Store("phase 4/4: " + d.Name + " is life-critical: its decisions wait for a second person; the lab's approver approves")
		progress()
		err := l.approvePump(ctx, d, obs, opts, before, &pc)
		out.Pump = &pc
		if err != nil {
			out.Notes = append(out.Notes, "pump: "+err.Error())
		}
		snap = obs.Snapshot(ctx)
		out.DevicesFound, out.Alerts, out.Decisions, out.Incidents = snap.Devices, snap.Alerts, snap.Decisions, snap.Incidents
		out.Totals.Alerts, out.Totals.Decisions, out.Totals.Incidents = len(snap.Alerts), len(snap.Decisions), len(snap.Incidents)
	}
	if opts.Progress != nil {
		snap.Phase = "done"
		opts.Progress(snap)
	}
	return out, nil
}

func dropsOf(tr []Traffic, dev string) uint64 {
	for _, t := range tr {
		if t.Device == dev {
			return t.Dropped
		}
	}
	return 0
}
