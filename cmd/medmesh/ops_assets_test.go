package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/medmesh/medmesh/integrations/fhir"
	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

const (
	fixtureCSV   = "../../integrations/assetfile/testdata/biomed.csv"
	fixtureJSONL = "../../integrations/assetfile/testdata/cmdb.jsonl"
	pumpMAC      = "00:1b:44:11:3a:b7"
	wsMAC        = "00:00:00:00:00:02"
)

// assetCampus is a TLS coordinator with the FHIR endpoint on, two devices a
// sensor reported, and certificates of every role.
type assetCampus struct {
	t     *testing.T
	o     coordinatorOptions
	issue func(pki.Role, string) grpcx.TLSFiles
}

func newAssetCampus(t *testing.T) *assetCampus {
	dir := t.TempDir()
	ca, err := pki.CreateCA(dir, "test campus", 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, pki.CAFile)
	issue := func(role pki.Role, name string) grpcx.TLSFiles {
		c, k, err := ca.IssueFiles(dir, name, pki.CertRequest{Identity: pki.Identity{Role: role, Name: name}, Days: 1})
		if err != nil {
			t.Fatal(err)
		}
		return grpcx.TLSFiles{CAFile: caFile, CertFile: c, KeyFile: k}
	}
	srv := issue(pki.RoleCoordinator, "dev")
	o := startCoordinator(t, coordinatorOptions{dev: true, tls: srv, fhirAddr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))})

	tc, err := pki.ClientConfig(issue(pki.RoleSensor, "s-icu"), pki.RoleCoordinator)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(o.api, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := medmeshv1.NewSensorServiceClient(conn).Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	devs := []*medmeshv1.Device{
		{Mac: pumpMAC, IpAddresses: []string{"10.1.0.5"}, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, Vendor: "B. Braun",
			Model: "Perfusor Compact", Firmware: "F.3", Location: &medmeshv1.Location{Floor: "3", Zone: "picu"},
			Identifiers: &medmeshv1.Identifiers{Hl7Udis: []string{"(01)04046964001234(21)PS-20931"}}},
		{Mac: wsMAC, IpAddresses: []string{"10.1.0.9"}, DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION, Hostname: "ws-nurses-3"},
	}
	for i, d := range devs {
		if err := rs.Send(&medmeshv1.ReportRequest{SensorId: "s-icu", Records: []*medmeshv1.SensorRecord{{Seq: uint64(i + 1),
			Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: d}}}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := rs.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	rs.CloseSend()
	return &assetCampus{t: t, o: o, issue: issue}
}

func (c *assetCampus) args(f grpcx.TLSFiles, a ...string) []string {
	return append(a, "--addr", c.o.api, "--tls-ca", f.CAFile, "--tls-cert", f.CertFile, "--tls-key", f.KeyFile)
}

func (c *assetCampus) cli(f grpcx.TLSFiles, a ...string) string {
	c.t.Helper()
	code, stdout, stderr := runCLI(c.t, c.args(f, a...)...)
	if code != 0 {
		c.t.Fatalf("medmesh %s: exit %d\n%s%s", strings.Join(a, " "), code, stdout, stderr)
	}
	return stdout
}

// devicesJSON is the inventory as JSON, without the read's metadata.
func (c *assetCampus) devicesJSON(f grpcx.TLSFiles) string {
	var page struct {
		Devices json.RawMessage `json:"devices"`
	}
	out := c.cli(f, "devices", "list", "-o", "json")
	if err := json.Unmarshal([]byte(out), &page); err != nil || len(page.Devices) == 0 {
		c.t.Fatalf("devices list: %v\n%s", err, out)
	}
	return string(page.Devices)
}

// TestDevicesImportCSVAndJSONL: a dry run shows the diff and changes
// nothing; the import applies what the network does not contradict,
// reports the rest as conflicts, raises a tier, audits each device; the
// JSON Lines export of the same register changes nothing more. A viewer
// may not import.
func TestDevicesImportCSVAndJSONL(t *testing.T) {
	c := newAssetCampus(t)
	alice, viewer := c.issue(pki.RoleOperator, "alice"), c.issue(pki.RoleViewer, "vic")
	before := c.devicesJSON(alice)

	out := c.cli(alice, "devices", "import", fixtureCSV, "--dry-run")
	t.Logf("dry run:\n%s", out)
	for _, want := range []string{"3 records: would change 2 devices", "asset.serial", "PS-20931", "location.campus", "north",
		"CONFLICTS (not applied)", "asset.model", "Perfusor Compact", "location.zone", "picu",
		"TIER_NON_CLINICAL", "TIER_CLINICAL", "UNMATCHED", "00:00:00:00:00:99"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q", want)
		}
	}
	if after := c.devicesJSON(alice); after != before {
		t.Fatalf("a dry run changed the inventory:\n%s\n%s", before, after)
	}

	if code, _, stderr := runCLI(t, c.args(viewer, "devices", "import", fixtureCSV)...); code != exitFailure || !strings.Contains(stderr, "PermissionDenied") {
		t.Fatalf("viewer imports: exit %d %s", code, stderr)
	}

	out = c.cli(alice, "devices", "import", fixtureCSV, "--reason", "biomed register 2026-12", "-o", "json", "--request-id", "cmdb-2026-12")
	var resp struct {
		Changes        []map[string]any `json:"changes"`
		Conflicts      []map[string]any `json:"conflicts"`
		DevicesChanged int              `json:"devices_changed"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if resp.DevicesChanged != 2 || len(resp.Conflicts) != 2 {
		t.Fatalf("import: %s", out)
	}
	pump := c.cli(alice, "devices", "get", pumpMAC, "-o", "json")
	for _, want := range []string{`"model": "Perfusor Compact"`, `"serial": "PS-20931"`, `"owner": "Biomedical Engineering"`, `"zone": "picu"`, `"campus": "north"`, `"record_id": "BM-0042"`} {
		if !strings.Contains(pump, want) {
			t.Errorf("pump after import lacks %s:\n%s", want, pump)
		}
	}
	if strings.Contains(pump, `"model": "Perfusor Space"`) {
		t.Errorf("the register's model overwrote the network's:\n%s", pump)
	}
	ws := c.cli(alice, "devices", "get", wsMAC, "-o", "json")
	if !strings.Contains(ws, `"tier": "TIER_CLINICAL"`) || !strings.Contains(ws, `"serial": "WS-0009"`) {
		t.Errorf("workstation after import:\n%s", ws)
	}
	for _, mac := range []string{pumpMAC, wsMAC} {
		audit := c.cli(alice, "policies", "audit", "--resource", "device/"+mac, "-o", "json")
		if !strings.Contains(audit, `"action": "device.import"`) || !strings.Contains(audit, `"actor": "operator/alice"`) ||
			!strings.Contains(audit, "biomed register 2026-12") || !strings.Contains(audit, "biomed.csv (csv)") {
			t.Errorf("audit of %s:\n%s", mac, audit)
		}
	}

	// A retry of the same invocation (its request id) gets the first
	// answer and applies nothing again.
	audited := c.cli(alice, "policies", "audit", "-o", "json")
	again := c.cli(alice, "devices", "import", fixtureCSV, "--reason", "biomed register 2026-12", "-o", "json", "--request-id", "cmdb-2026-12")
	if again != out {
		t.Errorf("retry answered differently:\n%s\n%s", out, again)
	}
	if now := c.cli(alice, "policies", "audit", "-o", "json"); now != audited {
		t.Errorf("a retried import was audited again")
	}

	// The CMDB's JSON Lines export says the same: nothing more changes.
	mid := c.devicesJSON(alice)
	out = c.cli(alice, "devices", "import", fixtureJSONL)
	if !strings.Contains(out, "2 records: changed 0 devices (0 fields)") {
		t.Fatalf("JSON Lines of the same register:\n%s", out)
	}
	if after := c.devicesJSON(alice); after != mid {
		t.Fatalf("an import without changes changed the inventory")
	}
}

// TestFHIRExportImportRoundTrip: export, import the Bundle, export again:
// equal, and the import reports no changes.
func TestFHIRExportImportRoundTrip(t *testing.T) {
	c := newAssetCampus(t)
	alice := c.issue(pki.RoleOperator, "alice")
	c.cli(alice, "devices", "import", fixtureCSV)
	dir := t.TempDir()
	first, second := filepath.Join(dir, "1.json"), filepath.Join(dir, "2.json")
	c.cli(alice, "devices", "export", "--format", "fhir", "--out", first)
	b1, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	devs, err := fhir.ParseBundle(b1)
	if err != nil || len(devs) != 2 {
		t.Fatalf("export does not validate: %v (%d devices)\n%s", err, len(devs), b1)
	}
	out := c.cli(alice, "devices", "import", first)
	if !strings.Contains(out, "2 records: changed 0 devices (0 fields), 0 conflicts, 0 unmatched") {
		t.Fatalf("importing the export:\n%s", out)
	}
	c.cli(alice, "devices", "export", "--format", "fhir", "--out", second)
	b2, _ := os.ReadFile(second)
	if string(b1) != string(b2) {
		t.Fatalf("export -> import -> export differs:\n%s\n%s", b1, b2)
	}
}

// TestFHIREndpoint: search by identifier and udi-di and read by id with a
// viewer certificate; sensor and enforcer certificates are refused, and a
// client without a certificate does not get through the handshake.
func TestFHIREndpoint(t *testing.T) {
	c := newAssetCampus(t)
	c.cli(c.issue(pki.RoleOperator, "alice"), "devices", "import", fixtureCSV)
	client := func(f *grpcx.TLSFiles) *http.Client {
		var tc *tls.Config
		var err error
		if f != nil {
			tc, err = pki.ClientConfig(*f, pki.RoleCoordinator)
		} else {
			tc, err = pki.ClientConfig(c.o.tls, pki.RoleCoordinator)
			tc.GetClientCertificate = nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	}
	base := "https://" + c.o.fhirAddr + "/fhir"
	get := func(cl *http.Client, path string) (int, string, http.Header) {
		t.Helper()
		resp, err := cl.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	viewerFiles := c.issue(pki.RoleViewer, "vic")
	viewer := client(&viewerFiles)

	code, body, h := get(viewer, "/Device")
	if code != 200 || h.Get("Content-Type") != "application/fhir+json; charset=utf-8" || !strings.Contains(body, `"total":2`) {
		t.Fatalf("all devices: %d %s %s", code, h.Get("Content-Type"), body)
	}
	if devs, err := fhir.ParseBundle([]byte(body)); err != nil || len(devs) != 2 {
		t.Fatalf("search bundle does not validate: %v", err)
	}
	for _, q := range []string{"?identifier=00-1B-44-11-3A-B7", "?identifier=urn:medmesh:mac|00:1b:44:11:3a:b7", "?identifier=urn:medmesh:asset-record|BM-0042",
		"?udi-di=04046964001234", "?identifier=10.1.0.5,10.9.9.9"} {
		code, body, _ := get(viewer, "/Device"+q)
		if code != 200 || !strings.Contains(body, `"total":1`) || !strings.Contains(body, `"id":"00-1b-44-11-3a-b7"`) {
			t.Errorf("search %s: %d %s", q, code, body)
		}
	}
	if code, body, _ := get(viewer, "/Device?identifier=urn:medmesh:ip|10.1.0.5&udi-di=999"); code != 200 || !strings.Contains(body, `"total":0`) {
		t.Errorf("ANDed parameters: %d %s", code, body)
	}
	code, body, _ = get(viewer, "/Device/00-1b-44-11-3a-b7")
	if code != 200 {
		t.Fatalf("read: %d %s", code, body)
	}
	if d, err := fhir.ParseDevice([]byte(body)); err != nil || *d.SerialNumber != "PS-20931" || *d.Safety[0].Coding[0].Code != "life-critical" {
		t.Fatalf("read device: %v %s", err, body)
	}
	for path, want := range map[string]int{"/Device/00-00-00-00-00-42": 404, "/Device/nonsense": 404, "/Device?name=x": 400, "/Patient": 404} {
		code, body, _ := get(viewer, path)
		if code != want || !strings.Contains(body, `"resourceType":"OperationOutcome"`) {
			t.Errorf("%s: %d %s, want %d with an OperationOutcome", path, code, body, want)
		}
	}
	resp, err := viewer.Post(base+"/Device", fhir.ContentType, strings.NewReader("{}"))
	if err != nil || resp.StatusCode != 405 {
		t.Errorf("POST: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}

	for _, r := range []pki.Role{pki.RoleSensor, pki.RoleEnforcer} {
		f := c.issue(r, "m-"+string(r))
		code, body, _ := get(client(&f), "/Device")
		if code != 403 || !strings.Contains(body, "OperationOutcome") || strings.Contains(body, pumpMAC) {
			t.Errorf("%s certificate: %d %s", r, code, body)
		}
	}
	if _, err := client(nil).Get(base + "/Device"); err == nil {
		t.Error("a client without a certificate got an answer")
	} else {
		t.Logf("no client certificate: %v", err)
	}
}
