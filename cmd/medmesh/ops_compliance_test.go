package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	compreport "github.com/medmesh/medmesh/compliance/report"
	"github.com/medmesh/medmesh/coordinator"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestComplianceCLIAgainstACoordinator: the report from a coordinator
// with three devices as JSON, the same report rendered offline with
// --from has the same figures, and exceptions are accepted, listed and
// revoked through the CLI.
func TestComplianceCLIAgainstACoordinator(t *testing.T) {
	dir := t.TempDir()
	o := startCoordinator(t, coordinatorOptions{dev: true})
	addr := "--addr=" + o.api
	conn, err := grpc.NewClient(o.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rs, err := medmeshv1.NewSensorServiceClient(conn).Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &medmeshv1.ReportRequest{SensorId: "s1"}
	for i, d := range []*medmeshv1.Device{
		{Mac: "02:00:00:00:19:01", Hostname: "pump-1", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP},
		{Mac: "02:00:00:00:19:02", Hostname: "monitor-1", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_PATIENT_MONITOR},
		{Mac: "02:00:00:00:19:03", Hostname: "ws-1", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION},
	} {
		req.Records = append(req.Records, &medmeshv1.SensorRecord{Seq: uint64(i + 1), Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: d}}})
	}
	if err := rs.Send(req); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Recv(); err != nil {
		t.Fatal(err)
	}

	js := filepath.Join(dir, "r.json")
	if code, _, stderr := runCLI(t, "compliance", "report", addr, "--framework", "hipaa", "--format", "json", "--out", js); code != 0 {
		t.Fatalf("report json: %d %s", code, stderr)
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var r medmeshv1.ComplianceReport
	if err := protojson.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.GetCoverage().GetDevices() != 3 || r.GetRaftIndex() == 0 || r.GetFramework() != medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_HIPAA || len(r.GetControls()) == 0 {
		t.Fatalf("report: %d devices, index %d, framework %v, %d controls", r.GetCoverage().GetDevices(), r.GetRaftIndex(), r.GetFramework(), len(r.GetControls()))
	}
	code, page, stderr := runCLI(t, "compliance", "report", "--from", js)
	if code != 0 {
		t.Fatalf("report --from: %d %s", code, stderr)
	}
	got := map[string]string{}
	for _, m := range regexp.MustCompile(`data-figure="([a-z-]+)">([^<]*)<`).FindAllStringSubmatch(page, -1) {
		got[m[1]] = m[2]
	}
	for k, v := range compreport.Summary(&r) {
		if got[k] != v {
			t.Errorf("figure %s: page %q, JSON %q", k, got[k], v)
		}
	}

	code, out, stderr := runCLI(t, "compliance", "exceptions", "accept", "patch:Example/Pump@2.0", addr, "--owner", "biomed", "--reason", "vendor validation", "--expires", "48h")
	if code != 0 || !strings.Contains(out, "accepts patch:Example/Pump@2.0") {
		t.Fatalf("accept: %d %s %s", code, out, stderr)
	}
	id := strings.Fields(out)[0]
	if code, _, stderr := runCLI(t, "compliance", "exceptions", "accept", "x", addr, "--owner", "biomed", "--reason", "r", "--expires", "-1h"); code == 0 || !strings.Contains(stderr, "future") {
		t.Fatalf("a past expiry was accepted: %d %s", code, stderr)
	}
	code, out, _ = runCLI(t, "compliance", "exceptions", "list", addr, "--active")
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "biomed") {
		t.Fatalf("list: %d %s", code, out)
	}
	if code, _, stderr := runCLI(t, "compliance", "exceptions", "revoke", id, addr, "--reason", "patched"); code != 0 {
		t.Fatalf("revoke: %d %s", code, stderr)
	}
	code, out, _ = runCLI(t, "compliance", "exceptions", "list", addr, "--active")
	if code != 0 || strings.Contains(out, id) {
		t.Fatalf("revoked exception still in force: %s", out)
	}
	code, out, stderr = runCLI(t, "compliance", "mds2", "import", "../../compliance/internal/mds2/testdata/acme-infuser-3000.xlsx", addr, "--reason", "vendor MDS2")
	if code != 0 || !strings.Contains(out, "to Acme Medical Infuser 3000") {
		t.Fatalf("mds2 import: %d %s %s", code, out, stderr)
	}
	if code, out, _ := runCLI(t, "compliance", "mds2", "list", addr); code != 0 || !strings.Contains(out, "acme-infuser-3000.xlsx") {
		t.Fatalf("mds2 list: %d %s", code, out)
	}
	if code, out, _ := runCLI(t, "compliance", "trend", addr); code != 0 || !strings.Contains(out, "DAY") {
		t.Fatalf("trend: %d %s", code, out)
	}
}

// seedReportDevices reports devices from..to-1 as sensor "seed" (its
// sequence numbers are the device numbers + 1), 2,000 to a message.
func seedReportDevices(t *testing.T, conn *grpc.ClientConn, from, to int) {
	t.Helper()
	classes := []medmeshv1.DeviceClass{medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION, medmeshv1.DeviceClass_DEVICE_CLASS_PATIENT_MONITOR, medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP}
	for start := from; start < to; start += 2000 {
		req := &medmeshv1.ReportRequest{SensorId: "seed"}
		for i := start; i < min(start+2000, to); i++ {
			req.Records = append(req.Records, &medmeshv1.SensorRecord{Seq: uint64(i + 1), Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: &medmeshv1.Device{
				Mac: fmt.Sprintf("02:10:%02x:%02x:%02x:%02x", (i>>24)&0xff, (i>>16)&0xff, (i>>8)&0xff, i&0xff), DeviceClass: classes[i%len(classes)], ClassConfidence: 0.9,
				Vendor: []string{"Acme Medical", "Globex", "Initech"}[i%3], Model: fmt.Sprintf("M%d", i%40),
				IpAddresses: []string{fmt.Sprintf("10.%d.%d.%d", 20+(i>>16)&0xff, (i>>8)&0xff, i&0xff)},
				Location:    &medmeshv1.Location{Floor: fmt.Sprint(1 + i%8), Zone: []string{"icu", "ward", "er", "lab"}[i%4]}}}}})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		st, err := medmeshv1.NewSensorServiceClient(conn).Report(ctx)
		if err == nil {
			err = st.Send(req)
		}
		if err == nil {
			_, err = st.Recv()
		}
		cancel()
		if err != nil {
			t.Fatalf("seed devices %d-%d: %v", start, min(start+2000, to)-1, err)
		}
	}
}

// reportDevices is how many devices TestComplianceReportCLIAtHospitalSize
// seeds: a hospital campus's 10,000, or MEDMESH_REPORT_DEVICES.
func reportDevices() int {
	n := 10000
	if v := os.Getenv("MEDMESH_REPORT_DEVICES"); v != "" {
		fmt.Sscan(v, &n)
	}
	return n
}

// TestComplianceReportCLIAtHospitalSize: `medmesh compliance report` of a
// campus of 10,000 devices (24 MB of per-device results, more than one
// gRPC message may hold) fetches its pages and writes the report the
// coordinator evaluates directly at the same Raft index, as JSON and as
// HTML. The same report at 1,000 devices, first, is the baseline of the
// time and size it logs (docs/performance.md).
func TestComplianceReportCLIAtHospitalSize(t *testing.T) {
	nDev := reportDevices()
	var c *coordinator.Coordinator
	o := startCoordinator(t, coordinatorOptions{dev: true, started: func(x *coordinator.Coordinator) { c = x }})
	addr := "--addr=" + o.api
	conn, err := grpc.NewClient(o.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dir := t.TempDir()
	js := filepath.Join(dir, "r.json")
	type figure struct {
		devices   int
		wall      time.Duration
		jsonBytes int64
		wireBytes int
	}
	// cliReport runs the CLI until its report is of the state the
	// coordinator then evaluates (a trend point written in between moves
	// the index: again), and checks the two are equal.
	cliReport := func(want int) figure {
		t.Helper()
		for try := 0; ; try++ {
			start := time.Now()
			code, _, stderr := runCLI(t, "compliance", "report", addr, "--format", "json", "--out", js, "--timeout", "2m")
			wall := time.Since(start)
			if code != 0 {
				t.Fatalf("compliance report of %d devices: exit %d: %s", want, code, stderr)
			}
			b, err := os.ReadFile(js)
			if err != nil {
				t.Fatal(err)
			}
			var got medmeshv1.ComplianceReport
			if err := protojson.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			direct, idx, err := c.EvaluateCompliance(context.Background(), medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_UNSPECIFIED)
			if err != nil {
				t.Fatal(err)
			}
			if idx != got.GetRaftIndex() && try < 5 {
				continue
			}
			if len(got.GetDevices()) != want || got.GetCoverage().GetDevices() != uint32(want) {
				t.Fatalf("the CLI's report has %d devices (coverage %d), want %d", len(got.GetDevices()), got.GetCoverage().GetDevices(), want)
			}
			g, d := proto.CloneOf(&got), proto.CloneOf(direct)
			g.GenerateTime, d.GenerateTime = nil, nil
			if !proto.Equal(g, d) {
				t.Fatalf("the CLI's report of %d devices (index %d) is not the coordinator's own evaluation (index %d)", want, got.GetRaftIndex(), idx)
			}
			return figure{devices: want, wall: wall, jsonBytes: int64(len(b)), wireBytes: proto.Size(&got)}
		}
	}
	// The median of three runs (the machine is shared).
	median := func(want int) figure {
		t.Helper()
		runs := []figure{cliReport(want), cliReport(want), cliReport(want)}
		slices.SortFunc(runs, func(a, b figure) int { return cmp.Compare(a.wall, b.wall) })
		return runs[1]
	}
	base := min(1000, nDev)
	seedReportDevices(t, conn, 0, base)
	small := median(base)
	seedReportDevices(t, conn, base, nDev)
	big := median(nDev)
	// Unpaged, as a client older than paging asks, a report over the
	// message limit is refused with what to do.
	_, err = medmeshv1.NewComplianceServiceClient(conn).GetReport(context.Background(), &medmeshv1.GetReportRequest{})
	switch {
	case big.wireBytes > 15<<20 && (status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "page_size")):
		t.Fatalf("an unpaged report of %d bytes: %v, want RESOURCE_EXHAUSTED naming page_size", big.wireBytes, err)
	case big.wireBytes <= 15<<20 && err != nil:
		t.Fatalf("an unpaged report of %d bytes: %v", big.wireBytes, err)
	}

	// HTML of the whole campus: every device is in it.
	page := filepath.Join(dir, "r.html")
	if code, _, stderr := runCLI(t, "compliance", "report", addr, "--out", page, "--timeout", "2m"); code != 0 {
		t.Fatalf("html: %d %s", code, stderr)
	}
	h, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(h), fmt.Sprintf(`data-figure="devices">%d<`, nDev)) || strings.Count(string(h), "02:10:") < nDev {
		t.Fatalf("the HTML report does not show %d devices", nDev)
	}
	t.Logf("compliance report (CLI, json; median of 3): %d devices %.2f s, %.1f MB JSON, %.1f MB protobuf; %d devices %.2f s, %.1f MB JSON, %.1f MB protobuf; ratio time %.1fx, size %.1fx for %.0fx the devices",
		small.devices, small.wall.Seconds(), float64(small.jsonBytes)/1e6, float64(small.wireBytes)/1e6,
		big.devices, big.wall.Seconds(), float64(big.jsonBytes)/1e6, float64(big.wireBytes)/1e6,
		big.wall.Seconds()/small.wall.Seconds(), float64(big.jsonBytes)/float64(small.jsonBytes), float64(big.devices)/float64(small.devices))
}
