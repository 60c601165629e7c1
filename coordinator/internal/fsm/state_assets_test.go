package fsm

import (
	"bytes"
	"io"
	"testing"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func importCmd(recs ...*medmeshv1.AssetRecord) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_DeviceImport{DeviceImport: &fsmpb.DeviceImport{
		Records: recs, Actor: "operator/bob", Reason: "biomed register", Source: "cmdb.csv",
	}}}
}

func fields[T interface{ GetField() string }](xs []T) []string {
	var out []string
	for _, x := range xs {
		out = append(out, x.GetField())
	}
	return out
}

// TestImportMergesWithoutOverwritingTheNetwork walks the merge rules: the
// register fills what the network does not show, conflicts are reported and
// change nothing, a criticality raises a tier and never lowers it, unknown
// devices are reported, and every changed device gets one audit record.
func TestImportMergesWithoutOverwritingTheNetwork(t *testing.T) {
	l := newLog(t)
	p := pump(mac1)
	p.Model, p.Location = "Infusomat Space", &medmeshv1.Location{Floor: "3"}
	l.ok(upsert("s1", p))
	ws := &medmeshv1.Device{Mac: "00:00:00:00:00:02", IpAddresses: []string{"10.1.0.9"}, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION}
	l.ok(upsert("s1", ws))
	before, _ := l.f.Hash()

	recs := []*medmeshv1.AssetRecord{
		{Line: 2, Mac: mac1, Location: "north/b1/4/icu", Asset: &medmeshv1.Asset{
			Manufacturer: "b. braun ", Model: "Perfusor", Serial: "SN-1", Owner: "Biomed", UdiDi: "04046964",
			Criticality: medmeshv1.Tier_TIER_NON_CLINICAL,
		}},
		{Line: 3, Ip: "10.1.0.9", Asset: &medmeshv1.Asset{Serial: "WS-9", Criticality: medmeshv1.Tier_TIER_CLINICAL}},
		{Line: 4, Mac: "00:00:00:00:00:99", Asset: &medmeshv1.Asset{Serial: "X"}},
	}
	dry, idx := l.f.PlanImport(recs)
	if after, _ := l.f.Hash(); after != before || idx != l.idx {
		t.Fatal("a dry run changed the state")
	}
	if !dry.GetDryRun() {
		t.Error("dry run not marked")
	}
	r := l.ok(importCmd(recs...))
	got := r.Import
	// The dry run reported exactly what the import did.
	if d := fields(dry.GetChanges()); len(d) != len(got.GetChanges()) || dry.GetDevicesChanged() != got.GetDevicesChanged() {
		t.Fatalf("dry run %v, import %v", d, fields(got.GetChanges()))
	}
	wantChanges := []string{"asset.udi_di", "asset.serial", "asset.owner", "location.campus", "location.building", "location.zone",
		"asset.serial", "asset.criticality", "tier"}
	if g := fields(got.GetChanges()); len(g) != len(wantChanges) {
		t.Fatalf("changes %v, want %v", g, wantChanges)
	} else {
		for i := range g {
			if g[i] != wantChanges[i] {
				t.Fatalf("changes %v, want %v", g, wantChanges)
			}
		}
	}
	wantConflicts := []string{"asset.model", "location.floor", "tier"}
	if g := fields(got.GetConflicts()); len(g) != len(wantConflicts) || g[0] != wantConflicts[0] || g[1] != wantConflicts[1] || g[2] != wantConflicts[2] {
		t.Fatalf("conflicts %v, want %v", g, wantConflicts)
	}
	if len(got.GetUnmatched()) != 1 || got.GetUnmatched()[0].GetLine() != 4 {
		t.Fatalf("unmatched %v", got.GetUnmatched())
	}
	if got.GetDevicesChanged() != 2 {
		t.Fatalf("devices changed %d", got.GetDevicesChanged())
	}

	d := l.f.Device(mac1)
	if d.GetModel() != "Infusomat Space" || d.GetAsset().GetModel() != "" || d.GetLocation().GetFloor() != "3" || d.GetLocation().GetZone() != "icu" {
		t.Fatalf("network values overwritten or register not merged: %v", d)
	}
	if d.GetVendor() != "B. Braun" || d.GetAsset().GetManufacturer() != "" {
		t.Fatalf("an equal manufacturer is stored: %v", d.GetAsset())
	}
	if d.GetTier() != medmeshv1.Tier_TIER_LIFE_CRITICAL || d.GetAsset().GetCriticality() != medmeshv1.Tier_TIER_UNSPECIFIED {
		t.Fatalf("an import lowered a pump's tier: %v %v", d.GetTier(), d.GetAsset())
	}
	w := l.f.Device(ws.Mac)
	if w.GetTier() != medmeshv1.Tier_TIER_CLINICAL || w.GetAsset().GetSerial() != "WS-9" {
		t.Fatalf("workstation by IP: tier %v asset %v", w.GetTier(), w.GetAsset())
	}
	// The raised tier is a floor: a sensor observation keeps it.
	l.ok(upsert("s1", ws))
	if w := l.f.Device(ws.Mac); w.GetTier() != medmeshv1.Tier_TIER_CLINICAL {
		t.Fatalf("a sensor observation dropped the register's tier: %v", w.GetTier())
	}
	// So does an operator's update of other fields, and removing an
	// operator override.
	l.ok(&fsmpb.Command{Command: &fsmpb.Command_DeviceUpdate{DeviceUpdate: &fsmpb.DeviceUpdate{
		Device: &medmeshv1.Device{Mac: ws.Mac}, Paths: []string{"tier"}, Actor: "operator/alice",
	}}})
	if w := l.f.Device(ws.Mac); w.GetTier() != medmeshv1.Tier_TIER_CLINICAL {
		t.Fatalf("clearing the override dropped the register's tier: %v", w.GetTier())
	}

	for _, m := range []string{mac1, ws.Mac} {
		page, _, _, _ := l.f.ListAudit(0, 10, "device/"+m)
		n := 0
		for _, a := range page {
			if a.GetAction() == "device.import" {
				n++
				if a.GetActor() != "operator/bob" || a.GetReason() != "biomed register" {
					t.Errorf("audit record %v", a)
				}
			}
		}
		if n != 1 {
			t.Errorf("%s: %d import audit records, want 1", m, n)
		}
	}

	// The same import again changes nothing and audits nothing.
	head := l.f.AuditHead()
	r = l.ok(importCmd(recs...))
	if len(r.Import.GetChanges()) != 0 || r.Import.GetDevicesChanged() != 0 || len(r.Import.GetConflicts()) != 3 {
		t.Fatalf("second import: %v", r.Import)
	}
	if l.f.AuditHead() != head {
		t.Fatal("an import that changed nothing was audited")
	}
}

// TestImportRetryAndSnapshot: an import with a request id applies once, and
// a snapshot carries asset records and the remembered result.
func TestImportRetryAndSnapshot(t *testing.T) {
	l := newLog(t)
	l.ok(upsert("s1", pump(mac1)))
	cmd := func() *fsmpb.Command {
		c := importCmd(&medmeshv1.AssetRecord{Mac: mac1, Asset: &medmeshv1.Asset{Serial: "SN-7"}})
		c.Request = &fsmpb.ClientRequest{Identity: "operator/bob", Id: "imp-1"}
		return c
	}
	first := l.ok(cmd())
	again := l.ok(cmd())
	if !again.Duplicate || again.Index != first.Index || len(again.Import.GetChanges()) != 1 {
		t.Fatalf("retry: duplicate=%v index %d/%d import %v", again.Duplicate, again.Index, first.Index, again.Import)
	}
	snap, err := l.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{failAfter: -1}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	h1, _ := l.f.Hash()
	h2, _ := g.Hash()
	if h1 != h2 || g.Device(mac1).GetAsset().GetSerial() != "SN-7" {
		t.Fatalf("restored state differs: %v", g.Device(mac1).GetAsset())
	}
	res := g.ApplyCommand(l.idx+1, cmd())
	if !res.Duplicate || len(res.Import.GetChanges()) != 1 {
		t.Fatalf("retry after restore: %v %v", res.Duplicate, res.Import)
	}
	// The asset record is part of the state hash.
	l.ok(importCmd(&medmeshv1.AssetRecord{Mac: mac1, Asset: &medmeshv1.Asset{Owner: "ICU"}}))
	if h3, _ := l.f.Hash(); h3 == h1 {
		t.Fatal("an asset change did not change the state hash")
	}
}
