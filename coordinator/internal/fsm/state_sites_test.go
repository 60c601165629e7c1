package fsm

import (
	"bytes"
	"io"
	"testing"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// A device seen through flow export keeps its site and advisory mark
// across observations, decisions about it are advisory, safety rules
// still hold, and the state hash and snapshots cover all of it.
func TestFlowExportDevicesAreAdvisory(t *testing.T) {
	l := newLog(t)
	const home, homePump, campus = "ip:10.8.0.5", "ip:10.8.0.6", "00:00:00:00:00:02"
	l.ok(upsert("s1", &medmeshv1.Device{Mac: campus, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION}))
	before, _ := l.f.Hash()
	l.ok(upsert("s1", &medmeshv1.Device{Mac: home, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION,
		Site: "home-dialysis", Advisory: true, AbsentEvidence: []string{"mac", "oui", "payload"}}))
	l.ok(upsert("s1", &medmeshv1.Device{Mac: homePump, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP,
		Site: "home-dialysis", Advisory: true}))
	if after, _ := l.f.Hash(); after == before {
		t.Fatal("state hash did not change with a new device")
	}
	// A later observation without the mark does not clear it.
	d := l.ok(upsert("s2", &medmeshv1.Device{Mac: home, IpAddresses: []string{"10.8.0.5"}})).Device
	if d.GetSite() != "home-dialysis" || !d.GetAdvisory() || len(d.GetAbsentEvidence()) != 3 {
		t.Fatalf("home device after a plain observation: site %q advisory %v absent %v", d.GetSite(), d.GetAdvisory(), d.GetAbsentEvidence())
	}
	h1, _ := l.f.Hash()
	l.ok(upsert("s2", &medmeshv1.Device{Mac: home, Site: "clinic-2", Advisory: true}))
	if h2, _ := l.f.Hash(); h2 == h1 {
		t.Fatal("state hash does not cover a device's site")
	}

	dh := l.ok(createDecision("auto-home", home, true)).Decision
	if !dh.GetAdvisory() || dh.GetSite() != "clinic-2" || dh.GetState() != medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE {
		t.Fatalf("decision about a flow-export device: advisory %v site %q state %v", dh.GetAdvisory(), dh.GetSite(), dh.GetState())
	}
	if dc := l.ok(createDecision("auto-campus", campus, true)).Decision; dc.GetAdvisory() || dc.GetSite() != "" {
		t.Fatalf("decision about a campus device: advisory %v site %q", dc.GetAdvisory(), dc.GetSite())
	}
	// Advisory does not relax safety: a life-critical device still waits.
	if dp := l.ok(createDecision("auto-home-pump", homePump, true)).Decision; !dp.GetAdvisory() ||
		dp.GetState() != medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL {
		t.Fatalf("automatic quarantine of a home pump: advisory %v state %v", dp.GetAdvisory(), dp.GetState())
	}

	snap, err := l.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{failAfter: -1}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	want, _ := l.f.Hash()
	if got, _ := g.Hash(); got != want {
		t.Fatal("restored state differs")
	}
	if dev := g.st.devices[home]; dev.GetSite() != "clinic-2" || !dev.GetAdvisory() {
		t.Fatalf("restored home device: %v", dev)
	}
}
