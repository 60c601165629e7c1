package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

const (
	digestA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func activateIntel(digest string) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_IntelActivate{IntelActivate: &fsmpb.IntelActivate{
		Bundle: &medmeshv1.IntelBundle{Digest: digest, Name: "b.tar.gz", Files: 3}, Actor: "operator/alice", Reason: "monthly bundle",
	}}}
}

func findingsPut(ps ...*medmeshv1.DevicePosture) *fsmpb.Command {
	return &fsmpb.Command{Command: &fsmpb.Command_FindingsPut{FindingsPut: &fsmpb.FindingsPut{Postures: ps}}}
}

func postureOf(mac, bundle string, n int) *medmeshv1.DevicePosture {
	p := &medmeshv1.DevicePosture{DeviceMac: mac, BundleDigest: bundle, Score: &medmeshv1.RiskScore{Score: uint32(n)}}
	for i := range n {
		p.Findings = append(p.Findings, &medmeshv1.Finding{Kind: "vulnerability", Id: fmt.Sprintf("CVE-2026-%04d", i)})
	}
	return p
}

func TestRiskStateApply(t *testing.T) {
	l := newLog(t)
	l.ok(upsert("s1", pump("00:00:00:00:00:01")))
	l.ok(upsert("s1", pump("00:00:00:00:00:02")))
	macs, all := l.f.TakeRiskChanges()
	if len(macs) != 2 || all {
		t.Fatalf("after two upserts: changes %v all=%v", macs, all)
	}
	if r := l.apply(activateIntel("not-a-digest")); !errors.Is(r.Err, ErrInvalid) {
		t.Fatalf("bad digest: %v", r.Err)
	}
	r := l.ok(activateIntel(digestA))
	if r.Intel.GetDigest() != digestA || r.Intel.GetActivatedBy() != "operator/alice" || r.Intel.GetIndex() != r.Index {
		t.Fatalf("activate result %v", r.Intel)
	}
	if _, all := l.f.TakeRiskChanges(); !all {
		t.Fatal("a new bundle must make every device be assessed again")
	}
	recs, _, _, _ := l.f.ListAudit(0, 100, "intel/"+digestA)
	if len(recs) != 1 || recs[0].GetAction() != "intel.activate" || !strings.Contains(recs[0].GetComment(), "previous none") {
		t.Fatalf("activation audit: %v", recs)
	}

	// Postures: stored wholesale and bounded; a stale bundle's or an
	// unknown device's are skipped.
	l.ok(findingsPut(postureOf("00:00:00:00:00:01", digestA, MaxFindingsPerDevice+10), postureOf("00:00:00:00:00:09", digestA, 1), postureOf("00:00:00:00:00:02", digestB, 1)))
	p := l.f.Posture("00:00:00:00:00:01")
	if len(p.GetFindings()) != MaxFindingsPerDevice || p.GetTruncated() != 10 || p.GetIndex() != l.idx {
		t.Fatalf("posture kept %d findings, truncated %d, index %d", len(p.GetFindings()), p.GetTruncated(), p.GetIndex())
	}
	if l.f.Posture("00:00:00:00:00:09") != nil || l.f.Posture("00:00:00:00:00:02") != nil {
		t.Fatal("a posture of an unknown device or of another bundle was stored")
	}
	l.ok(findingsPut(postureOf("00:00:00:00:00:01", digestA, 2)))
	if n := len(l.f.Posture("00:00:00:00:00:01").GetFindings()); n != 2 {
		t.Fatalf("findings not replaced wholesale: %d", n)
	}

	// SBOMs: by vendor, model and version, case-folded; the versionless
	// one covers other versions.
	att := func(version, digest string) *fsmpb.Command {
		return &fsmpb.Command{Command: &fsmpb.Command_SbomAttach{SbomAttach: &fsmpb.SBOMAttach{Actor: "operator/alice",
			Attachment: &medmeshv1.SBOMAttachment{Vendor: "B. Braun", Model: "Space  Pump", Version: version, Digest: digest, Format: "cyclonedx-json 1.5", Components: 3}}}}
	}
	l.ok(att("", digestA))
	l.ok(att("1.2.5", digestB))
	if a := l.f.SBOMFor("b. braun", "space pump", "1.2.5"); a.GetDigest() != digestB {
		t.Fatalf("exact version: %v", a)
	}
	if a := l.f.SBOMFor("B. Braun", "Space Pump", "9"); a.GetDigest() != digestA {
		t.Fatalf("other version: %v", a)
	}
	if r := l.apply(&fsmpb.Command{Command: &fsmpb.Command_SbomAttach{SbomAttach: &fsmpb.SBOMAttach{Attachment: &medmeshv1.SBOMAttachment{Model: "x", Digest: digestA}}}}); !errors.Is(r.Err, ErrInvalid) {
		t.Fatalf("attachment without a vendor: %v", r.Err)
	}

	// A retried activation with the same request id is answered, not
	// applied again.
	cmd := activateIntel(digestB)
	cmd.Request = &fsmpb.ClientRequest{Identity: "operator/alice", Id: "r1"}
	first := l.ok(cmd)
	again := l.ok(proto.CloneOf(cmd))
	if !again.Duplicate || again.Intel.GetIndex() != first.Index {
		t.Fatalf("retry: duplicate=%v intel %v", again.Duplicate, again.Intel)
	}

	// Snapshot and restore keep all of it; the restored FSM asks for a
	// full assessment.
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
	if h1 != h2 {
		t.Fatal("restored risk state differs")
	}
	if g.ActiveIntel().GetDigest() != digestB || len(g.SBOMs()) != 2 || !proto.Equal(g.Posture("00:00:00:00:00:01"), l.f.Posture("00:00:00:00:00:01")) {
		t.Fatal("restored risk state lost something")
	}
	if _, all := g.TakeRiskChanges(); !all {
		t.Fatal("restore must ask for a full assessment")
	}
	// The dedup entry survives too.
	cmd2 := proto.CloneOf(cmd)
	if r := g.ApplyCommand(l.idx+1, cmd2); !r.Duplicate || r.Intel.GetDigest() != digestB {
		t.Fatalf("retry after restore: %v", r)
	}
}
