package api

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func wireTestDecision(i int) *medmeshv1.Decision {
	const mac = "02:00:00:00:00:01"
	return &medmeshv1.Decision{
		Id: fmt.Sprintf("d-%d", i), Index: uint64(100 + i), DeviceMac: mac,
		Action: medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY,
		State:  medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE, CreateTime: timestamppb.Now(),
		Policy: &medmeshv1.Policy{Name: "device/" + mac, Subject: &medmeshv1.Policy_DeviceMac{DeviceMac: mac}, Mode: medmeshv1.PolicyMode_POLICY_MODE_ENFORCE,
			Rules: []*medmeshv1.Rule{{Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: "10.0.0.0/24"}, Protocol: 6, PortMin: 443, PortMax: 443}}},
	}
}

// TestDecisionWireDecodesAsTheResponse: what a watch stream sends from the
// cache decodes, in the enforcer, to the very response a marshal of the
// whole message gives, heartbeats' applied index included.
func TestDecisionWireDecodesAsTheResponse(t *testing.T) {
	w := newDecisionWire()
	d := wireTestDecision(1)
	for _, applied := range []uint64{101, 102, 1 << 40} {
		resp, err := w.response(d, applied)
		if err != nil {
			t.Fatal(err)
		}
		b, err := proto.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		var got medmeshv1.WatchDecisionsResponse
		if err := proto.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		want := &medmeshv1.WatchDecisionsResponse{Decision: d, AppliedIndex: applied, ResumeToken: indexToken(d.GetIndex())}
		if !proto.Equal(&got, want) {
			t.Fatalf("applied %d: decoded %v, want %v", applied, &got, want)
		}
		if len(got.ProtoReflect().GetUnknown()) != 0 {
			t.Fatalf("decoded response has unknown fields %x", got.ProtoReflect().GetUnknown())
		}
		if len(b) != proto.Size(want) {
			t.Fatalf("sent %d bytes, a marshal of the response is %d", len(b), proto.Size(want))
		}
	}
}

// TestDecisionWireEncodesOnceAndStaysBounded: the streams sending one
// decision share one encoding; a replaced decision (the FSM replaces, never
// changes, one it updates) gets its own; the cache holds at most
// decisionWireSize decisions and still encodes an evicted one correctly.
func TestDecisionWireEncodesOnceAndStaysBounded(t *testing.T) {
	w := newDecisionWire()
	d := wireTestDecision(1)
	a, _ := w.fields(d)
	b, _ := w.fields(d)
	if &a[0] != &b[0] {
		t.Fatal("a decision sent twice was encoded twice")
	}
	reviewed := proto.CloneOf(d)
	reviewed.State = medmeshv1.DecisionState_DECISION_STATE_APPROVED
	c, _ := w.fields(reviewed)
	var got medmeshv1.WatchDecisionsResponse
	if err := proto.Unmarshal(c, &got); err != nil || got.GetDecision().GetState() != medmeshv1.DecisionState_DECISION_STATE_APPROVED {
		t.Fatalf("the replaced decision decodes as %v (%v)", got.GetDecision(), err)
	}
	for i := range 3 * decisionWireSize {
		if _, err := w.fields(wireTestDecision(i)); err != nil {
			t.Fatal(err)
		}
	}
	if len(w.m) != decisionWireSize {
		t.Fatalf("cache holds %d decisions, want at most %d", len(w.m), decisionWireSize)
	}
	e, _ := w.fields(d)
	if err := proto.Unmarshal(e, &got); err != nil || !proto.Equal(got.GetDecision(), d) {
		t.Fatalf("an evicted decision encodes again as %v (%v)", got.GetDecision(), err)
	}
}
