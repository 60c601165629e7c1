package fsm

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// referenceIndex is the index of active policies computed the slow way, in
// one pass over every policy by name: the MACs with an active policy of
// their own, and each class's class policy in force (the first by name).
func referenceIndex(s *state) (own map[string]bool, inForce map[medmeshv1.DeviceClass]string) {
	own, inForce = map[string]bool{}, map[medmeshv1.DeviceClass]string{}
	for _, name := range sortedKeys(s.policies) {
		p := s.policies[name]
		switch {
		case !p.GetActive():
		case p.GetDeviceMac() != "":
			own[p.GetDeviceMac()] = true
		case classPolicy(p):
			if _, ok := inForce[p.GetDeviceClass()]; !ok {
				inForce[p.GetDeviceClass()] = name
			}
		}
	}
	return own, inForce
}

// checkIndex fails t unless s's index of active policies answers as the
// reference does for every device and class.
func checkIndex(t *testing.T, s *state, step string) {
	t.Helper()
	own, inForce := referenceIndex(s)
	gotOwn := map[string]bool{}
	for mac := range s.active.own {
		if s.hasOwnPolicy(mac) {
			gotOwn[mac] = true
		}
	}
	if !reflect.DeepEqual(gotOwn, own) {
		t.Fatalf("%s: devices with an own active policy %v, want %v", step, gotOwn, own)
	}
	for c := range medmeshv1.DeviceClass_name {
		class := medmeshv1.DeviceClass(c)
		if got, want := s.classPolicyInForce(class).GetName(), inForce[class]; got != want {
			t.Fatalf("%s: class %s policy in force %q, want %q", step, class, got, want)
		}
	}
}

// TestActivePolicyIndexFollowsPolicies: after every command of a random
// mix of device classifications, device and class policy puts,
// activations and deletions, and after a snapshot restore, the index of
// active policies agrees with a pass over every policy.
func TestActivePolicyIndexFollowsPolicies(t *testing.T) {
	classes := []medmeshv1.DeviceClass{itClass, medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, medmeshv1.DeviceClass_DEVICE_CLASS_PACS}
	rng := rand.New(rand.NewPCG(7, 16))
	l := newLog(t)
	name := func() string {
		if rng.IntN(2) == 0 {
			return fmt.Sprintf("device/%d", rng.IntN(6))
		}
		return fmt.Sprintf("class/%d", rng.IntN(6))
	}
	for step := range 2000 {
		var cmd *fsmpb.Command
		switch rng.IntN(4) {
		case 0:
			cmd = upsert("s1", &medmeshv1.Device{Mac: wsMAC(rng.IntN(8)), DeviceClass: classes[rng.IntN(len(classes))]})
		case 1:
			n := name()
			var p *medmeshv1.Policy
			if n[0] == 'd' {
				p = policy(n, wsMAC(rng.IntN(8)))
			} else {
				p = classPol(n, classes[rng.IntN(len(classes))], medmeshv1.PolicyMode_POLICY_MODE_MONITOR)
			}
			cmd = putPolicy(p, nil)
		case 2:
			cmd = activateAs(name(), fmt.Sprintf("d-%d", step))
		case 3:
			cmd = &fsmpb.Command{Command: &fsmpb.Command_PolicyDelete{PolicyDelete: &fsmpb.PolicyDelete{Name: name(), Actor: "approver/alice"}}}
		}
		l.apply(cmd) // not-found and the like are part of the mix
		checkIndex(t, l.f.st, fmt.Sprintf("step %d (%T)", step, cmd.Command))
	}
	if len(l.f.st.active.own) == 0 || len(l.f.st.active.byClass) == 0 {
		t.Fatalf("the mix left no active policy to check: %+v", l.f.st.active)
	}
	var buf bytes.Buffer
	if err := l.f.st.write(&buf); err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, g.st, "restored")
	if !reflect.DeepEqual(g.st.active, l.f.st.active) {
		t.Fatalf("restored index %+v, want %+v", g.st.active, l.f.st.active)
	}
}

// BenchmarkPolicyPut is the FSM's apply of a policy put (what `medmesh
// bench write` and make bench-coordinator write: a class policy, monitor
// mode, not active) with 20,000 policies stored, 500 of them active
// device policies, and 2,000 devices of the class.
func BenchmarkPolicyPut(b *testing.B) {
	f := New()
	idx := uint64(0)
	apply := func(cmd *fsmpb.Command) {
		idx++
		if r := f.ApplyCommand(idx, cmd); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	for i := range 2000 {
		apply(upsert("s1", &medmeshv1.Device{Mac: fmt.Sprintf("02:00:00:00:%02x:%02x", i/256, i%256), DeviceClass: itClass}))
	}
	for i := range 500 {
		n := fmt.Sprintf("device/%d", i)
		apply(putPolicy(policy(n, fmt.Sprintf("02:00:00:00:%02x:%02x", i/256, i%256)), nil))
		apply(activateAs(n, fmt.Sprintf("d-a-%d", i)))
	}
	for i := range 19500 {
		apply(putPolicy(classPol(fmt.Sprintf("bench/%d", i), itClass, medmeshv1.PolicyMode_POLICY_MODE_MONITOR), nil))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		apply(putPolicy(classPol(fmt.Sprintf("bench/%d", i%19500), itClass, medmeshv1.PolicyMode_POLICY_MODE_MONITOR), nil))
		i++
	}
}
