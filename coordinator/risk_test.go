package coordinator

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"github.com/medmesh/medmesh/risk"
)

// The real public data (../shared/testdata/intel: CISA medical CSAF
// advisories, the KEV catalog, endoflife.date) and the format fixtures the
// risk package ships (openFDA recalls, GUDID, EPSS, CSAF VEX).
var testIntelDirs = []string{"../../shared/testdata/intel", "../risk/testdata/intel"}

// writeTestBundle builds a bundle from dirs and returns its path and digest.
func writeTestBundle(t *testing.T, dirs ...string) (string, string) {
	t.Helper()
	var buf bytes.Buffer
	if _, err := risk.WriteBundle(&buf, dirs, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), nil); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "intel.tar.gz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	in, err := risk.Load(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p, in.Digest()
}

// importBundle uploads a file through RiskService.ImportBundle in 64 KiB
// chunks, again (with the same request id) while the cluster answers
// UNAVAILABLE, as the CLI does: an election on the loaded test machine.
func importBundle(ctx context.Context, conn *grpc.ClientConn, path, requestID string) (*medmeshv1.ImportBundleResponse, error) {
	for end := time.Now().Add(10 * time.Second); ; {
		resp, err := importBundleOnce(ctx, conn, path, requestID)
		if status.Code(err) != codes.Unavailable || time.Now().After(end) {
			return resp, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func importBundleOnce(ctx context.Context, conn *grpc.ClientConn, path, requestID string) (*medmeshv1.ImportBundleResponse, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	st, err := medmeshv1.NewRiskServiceClient(conn).ImportBundle(ctx)
	if err != nil {
		return nil, err
	}
	hdr := &medmeshv1.ImportBundleHeader{Name: filepath.Base(path), Reason: "test", RequestId: requestID}
	for first := true; first || len(data) > 0; first = false {
		n := min(len(data), 64<<10)
		m := &medmeshv1.ImportBundleRequest{Chunk: data[:n]}
		if first {
			m.Header = hdr
		}
		if err := st.Send(m); err != nil {
			break // the server answered early; CloseAndRecv says why
		}
		data = data[n:]
	}
	return st.CloseAndRecv()
}

// riskDevices are three devices named as real advisories and fixtures name
// their products.
func riskDevices() []*medmeshv1.Device {
	return []*medmeshv1.Device{
		// ICSMA-17-215-01 (the product its CVEs name): CVE-2017-7269 is KEV-listed.
		{Mac: "02:00:00:00:18:01", Vendor: "Siemens", Model: "SPECT Workplaces/Symbia.net Windows XP-Based", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IMAGING_MODALITY,
			Services: []*medmeshv1.Service{{Protocol: 6, Port: 104, App: "dicom"}}},
		// ICSMA-17-017-02 / openFDA Z-fixture recall via GUDID UDI-DI.
		{Mac: "02:00:00:00:18:02", Vendor: "BD", Model: "Alaris 8015 PC unit", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP,
			Identifiers: &medmeshv1.Identifiers{Hl7Udis: []string{"(01)10885403801512(17)280101(10)A123"}}},
		// Cleartext HL7 only; nothing in the bundle names it.
		{Mac: "02:00:00:00:18:03", Vendor: "Acme", Model: "Bedside 1", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_PATIENT_MONITOR, Protocols: []string{"hl7"},
			IpAddresses: []string{"10.0.0.3"}},
	}
}

func findingIDs(p *medmeshv1.DevicePosture) []string {
	var ids []string
	for _, f := range p.GetFindings() {
		ids = append(ids, f.GetKind()+":"+f.GetId())
	}
	return ids
}

// waitPostures waits until every running node holds the same postures for
// the devices, each assessed against bundle, and returns the leader's.
func waitPostures(t *testing.T, cl *cluster, bundle string, macs ...string) map[string]*medmeshv1.DevicePosture {
	t.Helper()
	var out map[string]*medmeshv1.DevicePosture
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, func() bool {
		var ref []*medmeshv1.DevicePosture
		for i, n := range cl.nodes {
			if !n.up {
				continue
			}
			var ps []*medmeshv1.DevicePosture
			for _, m := range macs {
				p := n.c.FSM().Posture(m)
				if p == nil || p.GetBundleDigest() != bundle {
					return false
				}
				ps = append(ps, p)
			}
			if ref == nil {
				ref = ps
				continue
			}
			for j := range ps {
				if !proto.Equal(ps[j], ref[j]) {
					t.Logf("node %d differs on %s (yet)", i, macs[j])
					return false
				}
			}
		}
		out = map[string]*medmeshv1.DevicePosture{}
		for _, p := range ref {
			out[p.GetDeviceMac()] = p
		}
		return true
	}, "postures not committed and equal on every replica")
	return out
}

// TestRiskThreeCoordinators: a bundle imported through a follower is
// checked, kept and activated by the leader, fetched by digest by the
// other follower, and every replica commits the same findings; a corrupt
// bundle is refused and the previous stays; after the leader dies the new
// leader has the bundle and keeps assessing.
func TestRiskThreeCoordinators(t *testing.T) {
	cl := newCluster(t, 3, nil)
	leader := cl.leader()
	ctx := ctxT(t, 90*time.Second)
	devs := riskDevices()
	var macs []string
	for _, d := range devs {
		macs = append(macs, d.GetMac())
	}
	report(t, leader, "s1", 1, devs...)
	// The operator's CMDB knows the imaging system's OS.
	inv := medmeshv1.NewInventoryServiceClient(leader.conn)
	if _, err := inv.UpdateDevice(ctx, &medmeshv1.UpdateDeviceRequest{
		Device:     &medmeshv1.Device{Mac: macs[0], Labels: map[string]string{"os": "Windows XP Professional SP3", "version": "VA60B"}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"labels"}}, Reason: "CMDB",
	}); err != nil {
		t.Fatal(err)
	}
	// A sensor saw the pump talk outside the hospital.
	alert := &medmeshv1.Alert{DeviceMac: macs[1], Kind: "external_destination", PeerName: "exfil.example", Summary: "external",
		Flow: &medmeshv1.FlowRef{Src: "10.0.0.2", Dst: "203.0.113.9", Sport: 40000, Dport: 443, Proto: 6},
		Risk: &medmeshv1.RiskScore{Score: 60, Factors: []*medmeshv1.RiskFactor{{Name: "external_destination", Weight: 30}}}}
	stream, err := medmeshv1.NewSensorServiceClient(leader.conn).Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// And a telnet login into the monitor with its factory-default password.
	login := &medmeshv1.Alert{DeviceMac: macs[2], Kind: "default_credentials", Summary: `telnet server accepted user "admin" from 10.0.0.9 with a factory-default password`,
		Flow:  &medmeshv1.FlowRef{Src: "10.0.0.9", Dst: "10.0.0.3", Sport: 40001, Dport: 23, Proto: 6},
		Login: &medmeshv1.LoginEvidence{Protocol: "telnet", Account: "admin", DefaultPassword: true, Cleartext: true, Outcome: "accepted"},
		Risk:  &medmeshv1.RiskScore{Score: 60, Factors: []*medmeshv1.RiskFactor{{Name: "default_credentials", Weight: 60}}}}
	if err := stream.Send(&medmeshv1.ReportRequest{SensorId: "s1", Records: []*medmeshv1.SensorRecord{
		{Seq: 10, Record: &medmeshv1.SensorRecord_Alert{Alert: alert}},
		{Seq: 11, Record: &medmeshv1.SensorRecord_Alert{Alert: login}},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	_ = stream.CloseSend()

	// Before any bundle: postures from what the sensors saw only.
	pre := waitPostures(t, cl, "", macs...)
	if ids := findingIDs(pre[macs[2]]); !slices.Contains(ids, "cleartext_phi_protocol:cleartext:hl7") {
		t.Fatalf("monitor before any bundle: %v", ids)
	}
	// The login alert is read once committed: no bundle is needed for it.
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, func() bool {
		return slices.Contains(findingIDs(leader.c.FSM().Posture(macs[2])), "default_credentials:seen:telnet/23/admin")
	}, "the monitor's default credential, seen on the wire, is not in its posture before any bundle")

	path, digest := writeTestBundle(t, testIntelDirs...)
	via := cl.followers()[0]
	resp, err := importBundle(ctx, via.conn, path, "import-1")
	if err != nil {
		t.Fatalf("import through follower %s: %v", via.cfg.ID, err)
	}
	if resp.GetBundle().GetDigest() != digest || resp.GetBundle().GetActivatedBy() == "" {
		t.Fatalf("import answered %v, want digest %s", resp, digest)
	}
	// Every replica holds it, by digest, in its data directory.
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, func() bool {
		for _, n := range cl.nodes {
			if _, ok := n.c.BlobPath(blobBundle, digest); !ok {
				return false
			}
		}
		return true
	}, "a replica lacks the bundle")
	ps := waitPostures(t, cl, digest, macs...)
	t.Logf("postures: %d devices, scores %d %d %d", len(ps), ps[macs[0]].GetScore().GetScore(), ps[macs[1]].GetScore().GetScore(), ps[macs[2]].GetScore().GetScore())

	// What each device must show, and why.
	imaging := ps[macs[0]]
	var kev *medmeshv1.Finding
	for _, f := range imaging.GetFindings() {
		if f.GetKev() && f.GetId() == "CVE-2017-7269" {
			kev = f
		}
	}
	if kev == nil || (kev.GetConfidence() != "range" && kev.GetConfidence() != "exact") {
		t.Fatalf("imaging system: no KEV-listed CVE-2017-7269 at exact/range: %v", imaging.GetFindings())
	}
	if !slices.ContainsFunc(imaging.GetFindings(), func(f *medmeshv1.Finding) bool { return f.GetKind() == "end_of_life" }) {
		t.Errorf("imaging system on Windows XP: no end_of_life: %v", findingIDs(imaging))
	}
	if !slices.ContainsFunc(imaging.GetFindings(), func(f *medmeshv1.Finding) bool { return f.GetId() == "cleartext:dicom" }) {
		t.Errorf("imaging system serving DICOM: no cleartext finding: %v", findingIDs(imaging))
	}
	if imaging.GetScore().GetFactors()[0].GetName() != "kev" {
		t.Errorf("imaging system's first factor is %v, want kev", imaging.GetScore().GetFactors()[0])
	}
	pump := ps[macs[1]]
	if !slices.ContainsFunc(pump.GetFindings(), func(f *medmeshv1.Finding) bool {
		return f.GetKind() == "recall" && f.GetConfidence() == "exact"
	}) {
		t.Errorf("pump with a GUDID UDI: no exact recall: %v", findingIDs(pump))
	}
	if !slices.ContainsFunc(pump.GetFindings(), func(f *medmeshv1.Finding) bool {
		return f.GetKind() == "external_communication" && slices.ContainsFunc(f.GetEvidence(), func(e string) bool { return strings.Contains(e, "203.0.113.9 (exfil.example) tcp/443") })
	}) {
		t.Errorf("pump: no external communication to 203.0.113.9: %v", pump.GetFindings())
	}
	// The default credential seen on the wire, explained by its alert.
	mon := ps[macs[2]]
	if !slices.ContainsFunc(mon.GetFindings(), func(f *medmeshv1.Finding) bool {
		return f.GetKind() == "default_credentials" && f.GetConfidence() == "observed" && f.GetAccount() == "admin" &&
			strings.HasPrefix(f.GetSource(), "sensor alert s1/") && strings.Contains(f.GetSummary(), "accepted account \"admin\"")
	}) || !slices.ContainsFunc(mon.GetScore().GetFactors(), func(f *medmeshv1.RiskFactor) bool { return f.GetName() == "default_credentials" }) {
		t.Errorf("monitor: no default credential explained by its alert: %v %v", mon.GetFindings(), mon.GetScore())
	}
	if pump.GetIdentity().GetUdiDi() != "10885403801512" {
		t.Errorf("pump identity %v: UDI-DI not read from the HL7 UDI", pump.GetIdentity())
	}

	// The same request id again: applied once, the same answer.
	again, err := importBundle(ctx, leader.conn, path, "import-1")
	if err != nil || again.GetIndex() != resp.GetIndex() {
		t.Fatalf("retried import: %v, %v; want index %d", again, err, resp.GetIndex())
	}

	// A truncated archive is refused with the reason; the bundle stays.
	raw, _ := os.ReadFile(path)
	bad := filepath.Join(t.TempDir(), "truncated.tar.gz")
	if err := os.WriteFile(bad, raw[:len(raw)*2/3], 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = importBundle(ctx, cl.followers()[0].conn, bad, "")
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "truncated") || !strings.Contains(err.Error(), "active bundle is unchanged") {
		t.Fatalf("truncated bundle: %v", err)
	}
	for _, n := range cl.nodes {
		if got := n.c.FSM().ActiveIntel().GetDigest(); got != digest {
			t.Fatalf("%s: active bundle %s after a refused import, want %s", n.cfg.ID, got, digest)
		}
	}

	// The leader dies; the new leader has the bundle and assesses a change.
	leader.stop(true)
	nl := cl.leader()
	st, err := medmeshv1.NewRiskServiceClient(nl.conn).IntelStatus(ctx, &medmeshv1.IntelStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetBundle().GetDigest() != digest || len(st.GetSources()) == 0 {
		t.Fatalf("intel status on the new leader: %v", st)
	}
	t.Logf("intel status on %s: %d sources, %d stale past %d days, %d devices, %d findings", nl.cfg.ID, len(st.GetSources()), st.GetStale(), st.GetMaxAgeDays(), st.GetAssessedDevices(), st.GetFindings())
	if _, err := medmeshv1.NewInventoryServiceClient(nl.conn).UpdateDevice(ctx, &medmeshv1.UpdateDeviceRequest{
		Device:     &medmeshv1.Device{Mac: macs[2], Labels: map[string]string{"os": "Windows 7 SP1"}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"labels"}}, Reason: "CMDB",
	}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, func() bool {
		p := nl.c.FSM().Posture(macs[2])
		return slices.Contains(findingIDs(p), "end_of_life:eol:windows/7-sp1")
	}, "the new leader did not assess the monitor's new OS")
	waitPostures(t, cl, digest, macs...)
}
