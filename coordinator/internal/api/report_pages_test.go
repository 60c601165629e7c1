package api

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// FuzzReportToken: a compliance report page token comes from a client;
// whatever it sends decodes to a held-report id and a position that
// encode back to the same token, or is INVALID_ARGUMENT naming the field,
// never a panic or a negative position.
func FuzzReportToken(f *testing.F) {
	f.Add(reportToken("0123456789abcdef0123456789abcdef", 500))
	f.Add(reportToken("0123456789abcdef0123456789abcdef", 0))
	f.Add(encodeToken("r/0123456789ABCDEF0123456789ABCDEF/1"))
	f.Add(encodeToken("r/0123456789abcdef0123456789abcdef/-1"))
	f.Add(encodeToken("r/0123456789abcdef0123456789abcdef/0500"))
	f.Add(encodeToken("r/0123456789abcdef0123456789abcdef/99999999999999999999"))
	f.Add(encodeToken("r//1"))
	f.Add(encodeToken("17/inc-1"))
	f.Add("!!")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		id, off, err := decodeReportToken(tok)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "page_token") {
				t.Fatalf("token %q: %v, want INVALID_ARGUMENT naming page_token", tok, err)
			}
			return
		}
		if tok == "" {
			if id != "" || off != 0 {
				t.Fatalf("empty token decoded to %q/%d", id, off)
			}
			return
		}
		if off < 0 || len(id) != 32 {
			t.Fatalf("token %q decoded to %q/%d", tok, id, off)
		}
		if again := reportToken(id, off); again != tok {
			t.Fatalf("token %q decoded to %q/%d, which encodes as %q", tok, id, off, again)
		}
	})
}

// device is a device result of about size bytes on the wire.
func device(i, size int) *medmeshv1.DeviceCompliance {
	return &medmeshv1.DeviceCompliance{DeviceMac: fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff), Hostname: strings.Repeat("h", size)}
}

// TestReportPagesOneEvaluation: the pages of a held report are slices of
// the one evaluation, in order, each marked with its position, and
// together they are the report; a page is cut short before 4 MiB of
// device results; a token of another framework or past the end is
// refused, one of a report no longer held is ABORTED.
func TestReportPagesOneEvaluation(t *testing.T) {
	s := &Server{reports: newReportStore()}
	r := &medmeshv1.ComplianceReport{
		GenerateTime: timestamppb.New(time.Unix(1_700_000_000, 0)), Framework: medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_HIPAA,
		RaftIndex: 42, BundleDigest: "sha256:ab", Coverage: &medmeshv1.ComplianceCoverage{Devices: 1234},
		Controls: []*medmeshv1.ControlSummary{{Met: 3}}, Plan: &medmeshv1.RemediationPlan{CampusRisk: 7},
	}
	for i := range 1234 {
		r.Devices = append(r.Devices, device(i, 10))
	}
	want := proto.CloneOf(r)

	first, err := s.firstReportPage(proto.CloneOf(r), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.GetReport().GetDevices()) != 100 || first.GetDeviceTotal() != 1234 || first.GetNextPageToken() == "" ||
		first.GetReport().GetPlan().GetCampusRisk() != 7 || len(first.GetReport().GetControls()) != 1 {
		t.Fatalf("first page: %d devices of %d, token %q, plan %v", len(first.GetReport().GetDevices()), first.GetDeviceTotal(), first.GetNextPageToken(), first.GetReport().GetPlan())
	}
	got := first.GetReport()
	req := &medmeshv1.GetReportRequest{Framework: r.GetFramework(), PageSize: 300}
	pages := 1
	for tok := first.GetNextPageToken(); tok != ""; pages++ {
		id, off, err := decodeReportToken(tok)
		if err != nil {
			t.Fatal(err)
		}
		page, err := s.nextReportPage(req, id, off)
		if err != nil {
			t.Fatal(err)
		}
		p := page.GetReport()
		if int(page.GetDeviceOffset()) != len(got.GetDevices()) || p.GetRaftIndex() != 42 || !proto.Equal(p.GetGenerateTime(), r.GetGenerateTime()) ||
			p.GetPlan() != nil || len(p.GetControls()) != 0 || p.GetCoverage().GetDevices() != 1234 {
			t.Fatalf("page at %d (after %d devices): %v", page.GetDeviceOffset(), len(got.GetDevices()), p)
		}
		got.Devices = append(got.Devices, p.GetDevices()...)
		tok = page.GetNextPageToken()
	}
	if !proto.Equal(got, want) {
		t.Fatal("the pages together are not the report")
	}
	if pages != 5 { // 100, then 300 at a time: to 400, 700, 1000, 1234
		t.Fatalf("%d pages, want 5", pages)
	}

	id, _, _ := decodeReportToken(first.GetNextPageToken())
	if _, err := s.nextReportPage(&medmeshv1.GetReportRequest{Framework: medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_HICP}, id, 100); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a page of another framework: %v", err)
	}
	if _, err := s.nextReportPage(req, id, 1235); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a page past the end: %v", err)
	}
	if _, err := s.nextReportPage(req, strings.Repeat("0", 32), 100); status.Code(err) != codes.Aborted {
		t.Fatalf("a report never held: %v", err)
	}

	// A page ends before 4 MiB of device results, but holds one device
	// whatever its size.
	big := &medmeshv1.ComplianceReport{Framework: r.GetFramework()}
	for i := range 20 {
		big.Devices = append(big.Devices, device(i, 1<<20))
	}
	bp, err := s.firstReportPage(proto.CloneOf(big), 2000)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(bp.GetReport().GetDevices()); n != 3 {
		t.Fatalf("a page of 1 MiB devices holds %d, want 3", n)
	}
	huge := &medmeshv1.ComplianceReport{Devices: []*medmeshv1.DeviceCompliance{device(0, 5<<20), device(1, 10)}}
	if hp, err := s.firstReportPage(huge, 10); err != nil || len(hp.GetReport().GetDevices()) != 1 || hp.GetNextPageToken() == "" {
		t.Fatalf("a 5 MiB device: %v %v", hp, err)
	}

	// Unpaged (page_size 0), a report over the message limit is refused
	// with what to do; one that fits is sent whole.
	if _, err := s.firstReportPage(big, 0); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "page_size") {
		t.Fatalf("an unpaged report of 20 MiB: %v", err)
	}
	if whole, err := s.firstReportPage(proto.CloneOf(want), 0); err != nil || !proto.Equal(whole.GetReport(), want) || whole.GetNextPageToken() != "" {
		t.Fatalf("an unpaged report that fits: %v", err)
	}
}

// TestReportStoreExpiry: a held report goes reportHold after its last
// page was read, and beyond reportsHeld the least recently read goes
// first.
func TestReportStoreExpiry(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	st := newReportStore()
	st.now = func() time.Time { return now }
	r := &medmeshv1.ComplianceReport{}
	var ids []string
	for range reportsHeld {
		id, err := st.hold(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		now = now.Add(time.Minute)
	}
	// Reading the oldest makes the second the least recently read.
	if _, ok := st.get(ids[0]); !ok {
		t.Fatal("the oldest is not held")
	}
	extra, _ := st.hold(r, nil)
	if _, ok := st.get(ids[1]); ok {
		t.Fatal("the least recently read is still held beyond the limit")
	}
	for _, id := range []string{ids[0], ids[2], ids[3], extra} {
		if _, ok := st.get(id); !ok {
			t.Fatalf("%s dropped", id)
		}
	}
	now = now.Add(reportHold - time.Second)
	if _, ok := st.get(extra); !ok {
		t.Fatal("dropped before its time")
	}
	now = now.Add(reportHold)
	if _, ok := st.get(extra); ok {
		t.Fatal("held after reportHold unread")
	}
	if len(st.byID) != 0 || st.lru.Len() != 0 {
		t.Fatalf("%d held after every hold expired", len(st.byID))
	}
}
