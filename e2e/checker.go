// Package e2e is the chaos harness: it runs the campus lab (deploy/lab),
// injects one fault per history through a Nemesis, and checks what must
// survive. The checkers (this file) and the report (report.go) need no
// lab and build everywhere; the nemeses, workloads and the history runner
// build with the `e2e` tag on Linux.
package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// OpKind is a policy-register operation of the workload.
type OpKind string

const (
	OpGet OpKind = "get"
	OpPut OpKind = "put"
	OpCAS OpKind = "cas"
)

// Op is one operation of a policy workload history: a policy name is a
// register holding (version, description).
type Op struct {
	Client   int    `json:"client"`
	Kind     OpKind `json:"kind"`
	Key      string `json:"key"`
	Value    string `json:"value,omitempty"`    // put/cas: the description written
	Expected uint64 `json:"expected,omitempty"` // cas: the required stored version (0 = absent)
	// Results. OK: get found the policy, put/cas applied.
	OK      bool   `json:"ok"`
	Version uint64 `json:"version"`
	Read    string `json:"read,omitempty"` // get: the description read
	// Unknown: a write whose outcome is not known (timeout, lost
	// connection); it may take effect at any time after Call.
	Unknown bool   `json:"unknown,omitempty"`
	Call    int64  `json:"call_ns"`
	Return  int64  `json:"return_ns"`
	Server  string `json:"server,omitempty"`
	Err     string `json:"err,omitempty"`
	// RequestID is a write's client request id; Attempts how many times
	// it was sent with it (retries of unknown outcomes).
	RequestID string `json:"request_id,omitempty"`
	Attempts  int    `json:"attempts,omitempty"`
}

type regState struct {
	version uint64
	value   string
}

// RegisterModel is the porcupine model of the policy store: one register
// per policy name; every applied put or CAS bumps the version by one.
var RegisterModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(Op).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return regState{} },
	Step: func(state, input, _ any) (bool, any) {
		st, op := state.(regState), input.(Op)
		next := regState{version: st.version + 1, value: op.Value}
		switch op.Kind {
		case OpGet:
			if !op.OK {
				return st.version == 0, st
			}
			return op.Version == st.version && op.Read == st.value, st
		case OpPut:
			if op.Unknown {
				return true, next
			}
			return op.Version == next.version, next
		default: // CAS
			match := st.version == op.Expected
			if op.Unknown {
				if match {
					return true, next
				}
				return true, st
			}
			if op.OK {
				return match && op.Version == next.version, next
			}
			return !match, st
		}
	},
	DescribeOperation: func(input, _ any) string {
		op := input.(Op)
		switch op.Kind {
		case OpGet:
			return fmt.Sprintf("c%d get(%s) -> found=%v v%d %q", op.Client, op.Key, op.OK, op.Version, op.Read)
		case OpPut:
			return fmt.Sprintf("c%d put(%s, %q) -> v%d unknown=%v", op.Client, op.Key, op.Value, op.Version, op.Unknown)
		default:
			return fmt.Sprintf("c%d cas(%s, v%d, %q) -> ok=%v v%d unknown=%v", op.Client, op.Key, op.Expected, op.Value, op.OK, op.Version, op.Unknown)
		}
	},
}

// unknownReturn is the return time of an ambiguous write: it may take
// effect at any time after its call.
const unknownReturn = int64(1) << 62

// CheckLinearizable runs porcupine over ops. It returns nil when the
// history is linearizable, an error naming the violation otherwise (or
// when the check timed out).
func CheckLinearizable(ops []Op, timeout time.Duration) error {
	hist := make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		ret := op.Return
		if op.Unknown {
			ret = unknownReturn
		}
		hist = append(hist, porcupine.Operation{ClientId: op.Client, Input: op, Output: nil, Call: op.Call, Return: ret})
	}
	switch porcupine.CheckOperationsTimeout(RegisterModel, hist, timeout) {
	case porcupine.Ok:
		return nil
	case porcupine.Illegal:
		return fmt.Errorf("porcupine: history of %d operations is not linearizable", len(ops))
	default:
		return fmt.Errorf("porcupine: check of %d operations timed out after %s", len(ops), timeout)
	}
}

// CheckAcknowledged checks the final read of every key against the writes:
// every acknowledged write is present (the final version counts at least
// the acknowledged writes, at most those plus the ambiguous ones), and the
// final value is one some write wrote.
func CheckAcknowledged(ops []Op, final map[string]Op) []string {
	acked, unknown := map[string]uint64{}, map[string]uint64{}
	written := map[string]map[string]bool{}
	keys := map[string]bool{}
	for _, op := range ops {
		keys[op.Key] = true
		if op.Kind == OpGet {
			continue
		}
		if written[op.Key] == nil {
			written[op.Key] = map[string]bool{}
		}
		switch {
		case op.OK:
			acked[op.Key]++
			written[op.Key][op.Value] = true
		case op.Unknown:
			unknown[op.Key]++
			written[op.Key][op.Value] = true
		}
	}
	var v []string
	for _, k := range sortedKeys(keys) {
		f, ok := final[k]
		if !ok {
			v = append(v, fmt.Sprintf("%s: no final read", k))
			continue
		}
		if f.Version < acked[k] {
			v = append(v, fmt.Sprintf("%s: final version %d < %d acknowledged writes: an acknowledged write was lost", k, f.Version, acked[k]))
		}
		if f.Version > acked[k]+unknown[k] {
			v = append(v, fmt.Sprintf("%s: final version %d > %d acknowledged + %d ambiguous writes", k, f.Version, acked[k], unknown[k]))
		}
		if f.Version > 0 && !written[k][f.Read] {
			v = append(v, fmt.Sprintf("%s: final value %q was never written", k, f.Read))
		}
	}
	return v
}

// AuditedWrite is one policy.put audit record of a workload key.
type AuditedWrite struct {
	Key       string `json:"key"`
	RequestID string `json:"request_id"`
	Index     uint64 `json:"index"`
}

// CheckNoDuplicatedEffects checks, from the audit trail of the workload's
// keys, that every write took effect at most once however often it was
// retried: no request id is audited twice, an acknowledged write is audited
// exactly once and a write known to have failed not at all, every audited
// put is a workload request, and each key's final version counts its
// audited puts (a put applied without its audit record, or twice, shows).
func CheckNoDuplicatedEffects(ops []Op, audit []AuditedWrite, final map[string]Op) []string {
	byID := map[string][]AuditedWrite{}
	perKey := map[string]uint64{}
	var v []string
	for _, a := range audit {
		perKey[a.Key]++
		if a.RequestID == "" {
			v = append(v, fmt.Sprintf("%s: put at index %d has no request id, but every workload write has one", a.Key, a.Index))
			continue
		}
		byID[a.RequestID] = append(byID[a.RequestID], a)
	}
	writes := map[string]Op{}
	for _, op := range ops {
		if op.Kind == OpGet || op.RequestID == "" {
			continue
		}
		writes[op.RequestID] = op
		n := len(byID[op.RequestID])
		switch {
		case n > 1:
			idx := make([]string, 0, n)
			for _, a := range byID[op.RequestID] {
				idx = append(idx, fmt.Sprint(a.Index))
			}
			v = append(v, fmt.Sprintf("%s: request %s (%s, %d attempts) took effect %d times, at indexes %s", op.Key, op.RequestID, outcome(op), op.Attempts, n, strings.Join(idx, ", ")))
		case op.OK && n == 0:
			v = append(v, fmt.Sprintf("%s: acknowledged request %s has no audit record", op.Key, op.RequestID))
		case !op.OK && !op.Unknown && n > 0:
			v = append(v, fmt.Sprintf("%s: request %s failed (%s) but took effect at index %d", op.Key, op.RequestID, op.Err, byID[op.RequestID][0].Index))
		}
	}
	for _, id := range sortedKeys(byID) {
		if _, ok := writes[id]; !ok {
			v = append(v, fmt.Sprintf("%s: audited request %s is no write of the workload", byID[id][0].Key, id))
		}
	}
	for _, k := range sortedKeys(final) {
		if f := final[k]; f.Version != perKey[k] {
			v = append(v, fmt.Sprintf("%s: final version %d but %d audited puts", k, f.Version, perKey[k]))
		}
	}
	return v
}

func outcome(op Op) string {
	switch {
	case op.OK:
		return "acknowledged"
	case op.Unknown:
		return "unknown"
	default:
		return "failed"
	}
}

// IndexSample is one observation of an enforcer's applied index.
type IndexSample struct {
	At       int64  `json:"at_ns"`
	Enforcer string `json:"enforcer"`
	Index    uint64 `json:"index"`
	// Incarnation counts the enforcer's restarts before the sample: a
	// restarted process reports its persisted decision index until the
	// stream's first heartbeat, so the index is monotonic per incarnation.
	Incarnation int `json:"incarnation,omitempty"`
}

// CheckMonotonic reports every sample where an enforcer's applied index went
// backwards within one incarnation. Samples must be in observation order.
func CheckMonotonic(samples []IndexSample) []string {
	type proc struct {
		name string
		inc  int
	}
	last := map[proc]uint64{}
	var v []string
	for _, s := range samples {
		p := proc{s.Enforcer, s.Incarnation}
		if prev, ok := last[p]; ok && s.Index < prev {
			v = append(v, fmt.Sprintf("enforcer %s applied index went backwards: %d -> %d at %.3fs", s.Enforcer, prev, s.Index, float64(s.At)/1e9))
		}
		if s.Index > last[p] {
			last[p] = s.Index
		}
	}
	return v
}

// CheckCaughtUp reports the enforcers whose applied index is below the last
// committed decision index.
func CheckCaughtUp(applied map[string]uint64, lastDecision uint64, enforcers []string) []string {
	var v []string
	for _, e := range enforcers {
		got, ok := applied[e]
		switch {
		case !ok:
			v = append(v, fmt.Sprintf("enforcer %s is not in the cluster status", e))
		case got < lastDecision:
			v = append(v, fmt.Sprintf("enforcer %s applied index %d < last committed decision %d", e, got, lastDecision))
		}
	}
	return v
}

// CheckReplicasEqual compares a digest of each replica's state (serialized
// policies and decisions read with stale consistency from each replica).
func CheckReplicasEqual(states map[string][]byte) []string {
	names := sortedKeys(states)
	if len(names) < 2 {
		return nil
	}
	ref := sha256.Sum256(states[names[0]])
	var v []string
	for _, n := range names[1:] {
		if h := sha256.Sum256(states[n]); !bytes.Equal(h[:], ref[:]) {
			v = append(v, fmt.Sprintf("replica %s state %x differs from %s state %x", n, h[:6], names[0], ref[:6]))
		}
	}
	return v
}

// CheckUniqueIDs reports ids that appear more than once (alerts must reach
// the coordinators exactly once).
func CheckUniqueIDs(kind string, ids []string) []string {
	seen := map[string]int{}
	for _, id := range ids {
		seen[id]++
	}
	var v []string
	for _, id := range sortedKeys(seen) {
		if seen[id] > 1 {
			v = append(v, fmt.Sprintf("%s %s stored %d times", kind, id, seen[id]))
		}
	}
	return v
}

// DeviceTraffic is a device's enforcer counters (lab.Traffic, copied so the
// checker builds without the lab).
type DeviceTraffic struct {
	Device       string `json:"device"`
	LifeCritical bool   `json:"life_critical"`
	ToEnforcer   uint64 `json:"to_enforcer"`
	Dropped      uint64 `json:"dropped"`
	// Approved: a second person approved an enforcing decision on the
	// device (the two-person rule), so its enforcer may drop its traffic.
	Approved bool `json:"approved,omitempty"`
}

// CheckLifeCritical reports life-critical devices whose traffic an enforcer
// dropped without an approved decision: nothing automatic may drop them.
func CheckLifeCritical(tr []DeviceTraffic) []string {
	var v []string
	for _, t := range tr {
		if t.LifeCritical && t.Dropped > 0 && !t.Approved {
			v = append(v, fmt.Sprintf("life-critical %s: %d of %d packets dropped by its enforcer", t.Device, t.Dropped, t.ToEnforcer))
		}
	}
	return v
}

// FailoverTime is the time from a fault's injection to the first write
// called after it and acknowledged; -1 if there was none.
func FailoverTime(ops []Op, injected int64) time.Duration {
	best := int64(-1)
	for _, op := range ops {
		if op.Kind == OpGet || !op.OK || op.Call < injected {
			continue
		}
		if best < 0 || op.Return < best {
			best = op.Return
		}
	}
	if best < 0 {
		return -1
	}
	return time.Duration(best - injected)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// CheckAlertsDelivered: every alert a sensor raised (its ids, from the
// sensors' logs) is stored by the coordinators; uniqueness is
// CheckUniqueIDs's.
func CheckAlertsDelivered(raised, stored []string) []string {
	have := map[string]bool{}
	for _, id := range stored {
		have[id] = true
	}
	var v []string
	for _, id := range raised {
		if !have[id] {
			v = append(v, fmt.Sprintf("alert %s raised by its sensor never reached the coordinators", id))
		}
	}
	return v
}

// CheckAdoptsLastPolicy: an enforcer never runs without its last committed
// policy. Its scraped applied index (the decision index held in its pinned
// maps) after a restart starts at least where the previous incarnation
// left it: the new process adopted the pinned state instead of starting
// empty. Samples must be in observation order.
func CheckAdoptsLastPolicy(samples []IndexSample) []string {
	type state struct {
		inc     int
		max     uint64
		checked bool
	}
	last := map[string]*state{}
	var v []string
	for _, s := range samples {
		st := last[s.Enforcer]
		switch {
		case st == nil:
			last[s.Enforcer] = &state{inc: s.Incarnation, max: s.Index}
		case s.Incarnation != st.inc:
			if s.Index < st.max {
				v = append(v, fmt.Sprintf("enforcer %s restarted at index %d below the %d it had applied: it ran without its last committed policy", s.Enforcer, s.Index, st.max))
			}
			st.inc, st.max = s.Incarnation, s.Index
		case s.Index > st.max:
			st.max = s.Index
		}
	}
	return v
}
