package e2e

import (
	"strings"
	"testing"
	"time"
)

// A correct history: two clients, a put, a CAS and reads that see them.
func goodHistory() []Op {
	return []Op{
		{Client: 0, Kind: OpPut, Key: "k", Value: "a", OK: true, Version: 1, Call: 0, Return: 10},
		{Client: 1, Kind: OpGet, Key: "k", OK: true, Version: 1, Read: "a", Call: 11, Return: 20},
		{Client: 0, Kind: OpCAS, Key: "k", Value: "b", Expected: 1, OK: true, Version: 2, Call: 21, Return: 30},
		{Client: 1, Kind: OpCAS, Key: "k", Value: "c", Expected: 1, OK: false, Call: 31, Return: 40},
		{Client: 1, Kind: OpGet, Key: "k", OK: true, Version: 2, Read: "b", Call: 41, Return: 50},
		{Client: 0, Kind: OpPut, Key: "k", Value: "d", Unknown: true, Call: 51, Return: 60},
		{Client: 1, Kind: OpGet, Key: "j", OK: false, Call: 0, Return: 5},
	}
}

func TestLinearizabilityCheckerAcceptsAGoodHistory(t *testing.T) {
	if err := CheckLinearizable(goodHistory(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	final := map[string]Op{"k": {Kind: OpGet, Key: "k", OK: true, Version: 3, Read: "d"}, "j": {Kind: OpGet, Key: "j"}}
	if v := CheckAcknowledged(goodHistory(), final); len(v) > 0 {
		t.Fatal(v)
	}
}

// The broken guarantees: each history violates one property and its checker
// must say so.
func TestLinearizabilityCheckerCatchesViolations(t *testing.T) {
	for name, mutate := range map[string]func([]Op) []Op{
		"read of a value never written": func(h []Op) []Op {
			h[1].Read = "zzz"
			return h
		},
		"stale read after an acknowledged write": func(h []Op) []Op {
			h[4].Version, h[4].Read = 1, "a"
			return h
		},
		"write acknowledged before commit (lost, later read misses it)": func(h []Op) []Op {
			return append(h, Op{Client: 2, Kind: OpGet, Key: "k", OK: true, Version: 1, Read: "a", Call: 45, Return: 46})
		},
		"two CAS with the same expected version both succeed": func(h []Op) []Op {
			h[3].OK, h[3].Version = true, 3
			return h
		},
	} {
		t.Run(name, func(t *testing.T) {
			err := CheckLinearizable(mutate(goodHistory()), 5*time.Second)
			if err == nil || !strings.Contains(err.Error(), "not linearizable") {
				t.Fatalf("checker missed the violation: %v", err)
			}
		})
	}
}

func TestAcknowledgedWriteChecker(t *testing.T) {
	// The store lost the acknowledged CAS: its final version is 1.
	lost := map[string]Op{"k": {Kind: OpGet, Key: "k", OK: true, Version: 1, Read: "a"}, "j": {Kind: OpGet, Key: "j"}}
	v := CheckAcknowledged(goodHistory(), lost)
	if len(v) != 1 || !strings.Contains(v[0], "acknowledged write was lost") {
		t.Fatalf("lost write not reported: %v", v)
	}
	// A value nobody wrote.
	bogus := map[string]Op{"k": {Kind: OpGet, Key: "k", OK: true, Version: 2, Read: "x"}, "j": {Kind: OpGet, Key: "j"}}
	if v := CheckAcknowledged(goodHistory(), bogus); len(v) != 1 || !strings.Contains(v[0], "never written") {
		t.Fatalf("unwritten value not reported: %v", v)
	}
	// More versions than writes.
	extra := map[string]Op{"k": {Kind: OpGet, Key: "k", OK: true, Version: 4, Read: "d"}, "j": {Kind: OpGet, Key: "j"}}
	if v := CheckAcknowledged(goodHistory(), extra); len(v) != 1 {
		t.Fatalf("phantom write not reported: %v", v)
	}
}

func TestMonotonicIndexChecker(t *testing.T) {
	ok := []IndexSample{{1, "e1", 10, 0}, {2, "e2", 9, 0}, {3, "e1", 10, 0}, {4, "e1", 12, 0}, {5, "e2", 12, 0}}
	if v := CheckMonotonic(ok); len(v) > 0 {
		t.Fatal(v)
	}
	// An enforcer that accepts an older index.
	bad := append(ok, IndexSample{6, "e1", 11, 0})
	v := CheckMonotonic(bad)
	if len(v) != 1 || !strings.Contains(v[0], "e1 applied index went backwards: 12 -> 11") {
		t.Fatalf("backwards index not reported: %v", v)
	}
	// A restarted enforcer (new incarnation) may start lower.
	restarted := append(ok, IndexSample{At: 6, Enforcer: "e1", Index: 11, Incarnation: 1}, IndexSample{At: 7, Enforcer: "e1", Index: 13, Incarnation: 1})
	if v := CheckMonotonic(restarted); len(v) > 0 {
		t.Fatal(v)
	}
	if v := CheckMonotonic(append(restarted, IndexSample{At: 8, Enforcer: "e1", Index: 12, Incarnation: 1})); len(v) != 1 {
		t.Fatalf("backwards index in the second incarnation not reported: %v", v)
	}
	if v := CheckCaughtUp(map[string]uint64{"e1": 20, "e2": 19}, 20, []string{"e1", "e2", "e3"}); len(v) != 2 {
		t.Fatalf("caught-up checker: %v", v)
	}
}

func TestStateCheckers(t *testing.T) {
	if v := CheckReplicasEqual(map[string][]byte{"c1": []byte("x"), "c2": []byte("x"), "c3": []byte("x")}); len(v) > 0 {
		t.Fatal(v)
	}
	if v := CheckReplicasEqual(map[string][]byte{"c1": []byte("x"), "c2": []byte("x"), "c3": []byte("y")}); len(v) != 1 || !strings.Contains(v[0], "c3") {
		t.Fatalf("diverged replica not reported: %v", v)
	}
	if v := CheckUniqueIDs("alert", []string{"a", "b", "a"}); len(v) != 1 || !strings.Contains(v[0], "alert a stored 2 times") {
		t.Fatalf("duplicate alert not reported: %v", v)
	}
	tr := []DeviceTraffic{{Device: "pump1", LifeCritical: true, ToEnforcer: 10}, {Device: "ws1", ToEnforcer: 10, Dropped: 3}}
	if v := CheckLifeCritical(tr); len(v) > 0 {
		t.Fatal(v)
	}
	tr[0].Dropped = 1
	if v := CheckLifeCritical(tr); len(v) != 1 || !strings.Contains(v[0], "pump1") {
		t.Fatalf("life-critical drop not reported: %v", v)
	}
	// After a second person approved its quarantine, its drops are no violation.
	tr[0].Approved = true
	if v := CheckLifeCritical(tr); len(v) != 0 {
		t.Fatalf("approved life-critical drop reported: %v", v)
	}
}

func TestFailoverTime(t *testing.T) {
	h := []Op{
		{Kind: OpPut, OK: true, Call: 50, Return: 120}, // called before the fault
		{Kind: OpGet, OK: true, Call: 150, Return: 160},
		{Kind: OpPut, Unknown: true, Call: 110, Return: 900},
		{Kind: OpCAS, OK: true, Call: 200, Return: 400},
		{Kind: OpPut, OK: true, Call: 300, Return: 350},
	}
	if got := FailoverTime(h, 100); got != 250 {
		t.Fatalf("failover %v, want 250ns", got)
	}
	if got := FailoverTime(h, 1000); got != -1 {
		t.Fatalf("failover %v, want -1", got)
	}
}

func TestCheckAlertsDeliveredCatchesLoss(t *testing.T) {
	if v := CheckAlertsDelivered([]string{"s1/1", "s1/2"}, []string{"s1/1", "s1/2", "s2/9"}); len(v) != 0 {
		t.Fatalf("delivered alerts flagged: %v", v)
	}
	if v := CheckAlertsDelivered([]string{"s1/1", "s1/2"}, []string{"s1/1"}); len(v) != 1 {
		t.Fatalf("a lost alert went unnoticed: %v", v)
	}
}

func TestCheckAdoptsLastPolicyCatchesEmptyRestart(t *testing.T) {
	ok := []IndexSample{{Enforcer: "e1", Index: 5}, {Enforcer: "e1", Index: 9}, {Enforcer: "e1", Index: 9, Incarnation: 1}, {Enforcer: "e1", Index: 12, Incarnation: 1}}
	if v := CheckAdoptsLastPolicy(ok); len(v) != 0 {
		t.Fatalf("adopting restart flagged: %v", v)
	}
	bad := []IndexSample{{Enforcer: "e1", Index: 9}, {Enforcer: "e1", Index: 0, Incarnation: 1}}
	if v := CheckAdoptsLastPolicy(bad); len(v) != 1 {
		t.Fatalf("a restart with empty state went unnoticed: %v", v)
	}
}

// Each write of goodHistory with a request id, and its audit trail.
func auditedHistory() ([]Op, []AuditedWrite, map[string]Op) {
	h := goodHistory()
	ids := map[int]string{0: "r-a", 2: "r-b", 3: "r-c", 5: "r-d"}
	for i, id := range ids {
		h[i].RequestID, h[i].Attempts = id, 1
	}
	h[5].Attempts = 4 // retried, never settled: it took effect (version 3)
	audit := []AuditedWrite{{Key: "k", RequestID: "r-a", Index: 5}, {Key: "k", RequestID: "r-b", Index: 9}, {Key: "k", RequestID: "r-d", Index: 14}}
	final := map[string]Op{"k": {Kind: OpGet, Key: "k", OK: true, Version: 3, Read: "d"}, "j": {Kind: OpGet, Key: "j"}}
	return h, audit, final
}

func TestNoDuplicatedEffects(t *testing.T) {
	h, audit, final := auditedHistory()
	if v := CheckNoDuplicatedEffects(h, audit, final); len(v) > 0 {
		t.Fatalf("a correct history: %v", v)
	}
	// An unknown write that did not take effect is fine too.
	f2 := map[string]Op{"k": {Kind: OpGet, Key: "k", OK: true, Version: 2, Read: "b"}, "j": {Kind: OpGet, Key: "j"}}
	if v := CheckNoDuplicatedEffects(h, audit[:2], f2); len(v) > 0 {
		t.Fatalf("an unknown write that never applied: %v", v)
	}
	for name, tc := range map[string]struct {
		mutate func(h []Op, a []AuditedWrite, f map[string]Op) ([]Op, []AuditedWrite, map[string]Op)
		want   string
	}{
		"a retried write applied twice": {func(h []Op, a []AuditedWrite, f map[string]Op) ([]Op, []AuditedWrite, map[string]Op) {
			f["k"] = Op{Kind: OpGet, Key: "k", OK: true, Version: 4, Read: "d"}
			return h, append(a, AuditedWrite{Key: "k", RequestID: "r-d", Index: 15}), f
		}, "took effect 2 times, at indexes 14, 15"},
		"an acknowledged write without its audit record": {func(h []Op, a []AuditedWrite, f map[string]Op) ([]Op, []AuditedWrite, map[string]Op) {
			return h, a[1:], f
		}, "acknowledged request r-a has no audit record"},
		"a failed CAS that took effect": {func(h []Op, a []AuditedWrite, f map[string]Op) ([]Op, []AuditedWrite, map[string]Op) {
			h[3].Err = "Aborted"
			return h, append(a, AuditedWrite{Key: "k", RequestID: "r-c", Index: 11}), f
		}, "request r-c failed (Aborted) but took effect"},
		"a put applied without a request id": {func(h []Op, a []AuditedWrite, f map[string]Op) ([]Op, []AuditedWrite, map[string]Op) {
			return h, append(a, AuditedWrite{Key: "k", Index: 20}), f
		}, "has no request id"},
		"a version bump without an audited put": {func(h []Op, a []AuditedWrite, f map[string]Op) ([]Op, []AuditedWrite, map[string]Op) {
			f["k"] = Op{Kind: OpGet, Key: "k", OK: true, Version: 4, Read: "d"}
			return h, a, f
		}, "final version 4 but 3 audited puts"},
	} {
		t.Run(name, func(t *testing.T) {
			h, a, f := auditedHistory()
			h, a, f = tc.mutate(h, a, f)
			v := CheckNoDuplicatedEffects(h, a, f)
			if !strings.Contains(strings.Join(v, "; "), tc.want) {
				t.Fatalf("violations %q, want one with %q", v, tc.want)
			}
		})
	}
}
