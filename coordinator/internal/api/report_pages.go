package api

import (
	"container/list"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Compliance report pages. The report of a campus is one evaluation of
// the committed state; at 10,000 devices its per-device results are about
// 24 MB, more than one gRPC message may hold (16 MiB). GetReport therefore
// pages the devices: the first page evaluates and the leader holds that
// evaluation (each device's result marshalled, about the size of the
// report on the wire) under a random id that the page token carries, so
// every later page is a slice of the same evaluation however the state
// moves on. The evaluation is held reportHold after its last page, and at
// most reportsHeld at a time (the least recently read goes first); a
// token of one no longer held is ABORTED, and the client starts again.
const (
	reportPageDefault = 500
	reportPageMax     = 2000
	// reportPageBytes ends a page early: a page's device results stay
	// well inside the message limit whatever a device carries.
	reportPageBytes = 4 << 20
	reportHold      = 10 * time.Minute
	reportsHeld     = 4
	// maxWholeReport is the largest report sent unpaged (page_size 0), a
	// margin under the 16 MiB message limit (grpcx).
	maxWholeReport = 15 << 20
)

// heldReport is one evaluation served in pages.
type heldReport struct {
	id        string
	framework medmeshv1.ComplianceFramework
	// head is the report without its devices.
	head *medmeshv1.ComplianceReport
	// devices are the device results, each marshalled.
	devices [][]byte
	used    time.Time
	elem    *list.Element
}

// reportStore holds the evaluations being read in pages.
type reportStore struct {
	mu   sync.Mutex
	byID map[string]*heldReport
	lru  *list.List // front: most recently read
	now  func() time.Time
}

func newReportStore() *reportStore {
	return &reportStore{byID: map[string]*heldReport{}, lru: list.New(), now: time.Now}
}

// expireLocked drops what was not read for reportHold, and the least
// recently read beyond keep.
func (s *reportStore) expireLocked(keep int) {
	now := s.now()
	for e := s.lru.Back(); e != nil; {
		h := e.Value.(*heldReport)
		prev := e.Prev()
		if now.Sub(h.used) >= reportHold || s.lru.Len() > keep {
			s.lru.Remove(e)
			delete(s.byID, h.id)
		}
		e = prev
	}
}

// hold keeps r's evaluation and returns its id.
func (s *reportStore) hold(r *medmeshv1.ComplianceReport, devices [][]byte) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	h := &heldReport{id: hex.EncodeToString(b[:]), framework: r.GetFramework(), head: r, devices: devices}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(reportsHeld - 1)
	h.used = s.now()
	h.elem = s.lru.PushFront(h)
	s.byID[h.id] = h
	return h.id, nil
}

// get returns the held evaluation id, marking it read now.
func (s *reportStore) get(id string) (*heldReport, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(reportsHeld)
	h, ok := s.byID[id]
	if !ok {
		return nil, false
	}
	h.used = s.now()
	s.lru.MoveToFront(h.elem)
	return h, true
}

// reportToken is a page token: the held evaluation's id and the position
// of the page's first device.
func reportToken(id string, offset int) string {
	return encodeToken("r/" + id + "/" + strconv.Itoa(offset))
}

// decodeReportToken reads a page token; "" is the first page.
func decodeReportToken(tok string) (id string, offset int, err error) {
	k, err := decodeToken(tok)
	if err != nil || k == "" {
		return "", 0, err
	}
	rest, ok := strings.CutPrefix(k, "r/")
	if !ok {
		return "", 0, invalid("page_token", "malformed")
	}
	id, off, ok := strings.Cut(rest, "/")
	if !ok || len(id) != 32 || strings.ToLower(id) != id {
		return "", 0, invalid("page_token", "malformed")
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", 0, invalid("page_token", "malformed")
	}
	n, perr := strconv.ParseUint(off, 10, 31)
	if perr != nil || strconv.FormatUint(n, 10) != off {
		return "", 0, invalid("page_token", "malformed")
	}
	return id, int(n), nil
}

// reportPageSize is the devices a page holds at most.
func reportPageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, invalid("page_size", "must not be negative")
	case n == 0:
		return reportPageDefault, nil
	case n > reportPageMax:
		return reportPageMax, nil
	}
	return int(n), nil
}

// pageEnd is where the page from offset ends: at most n devices and, past
// its first device, at most reportPageBytes of them.
func pageEnd(devices [][]byte, offset, n int) int {
	end, size := offset, 0
	for end < len(devices) && end-offset < n {
		if end > offset && size+len(devices[end]) > reportPageBytes {
			break
		}
		size += len(devices[end])
		end++
	}
	return end
}

// firstReportPage answers a GetReport without a page token: r whole when
// pageSize is 0 (refused when over the message limit), otherwise its
// first page, holding the evaluation when more pages follow.
func (s *Server) firstReportPage(r *medmeshv1.ComplianceReport, pageSize int32) (*medmeshv1.GetReportResponse, error) {
	total := len(r.GetDevices())
	if pageSize == 0 {
		if n := proto.Size(r); n > maxWholeReport {
			return nil, status.Errorf(codes.ResourceExhausted,
				"the report of %d devices is %.1f MB, more than one message may hold: ask for it in pages (page_size; `medmesh compliance report` does)", total, float64(n)/1e6)
		}
		return &medmeshv1.GetReportResponse{Report: r, DeviceTotal: uint32(total)}, nil
	}
	n, err := reportPageSize(pageSize)
	if err != nil {
		return nil, err
	}
	devices := make([][]byte, total)
	for i, d := range r.GetDevices() {
		if devices[i], err = proto.Marshal(d); err != nil {
			return nil, status.Errorf(codes.Internal, "report device %s: %v", d.GetDeviceMac(), err)
		}
	}
	end := pageEnd(devices, 0, n)
	all := r.Devices
	r.Devices = nil
	resp := &medmeshv1.GetReportResponse{DeviceTotal: uint32(total)}
	if end < total {
		id, err := s.reports.hold(proto.CloneOf(r), devices)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "report id: %v", err)
		}
		resp.NextPageToken = reportToken(id, end)
	}
	r.Devices = all[:end]
	resp.Report = r
	return resp, nil
}

// nextReportPage answers a GetReport with a page token: the devices of
// the held evaluation from the token's position.
func (s *Server) nextReportPage(req *medmeshv1.GetReportRequest, id string, offset int) (*medmeshv1.GetReportResponse, error) {
	n, err := reportPageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	h, ok := s.reports.get(id)
	if !ok {
		return nil, status.Errorf(codes.Aborted,
			"page_token: this coordinator no longer holds report %s (a report is held %v after its last page read, %d at most, by the leader that evaluated it): ask for the first page again",
			id, reportHold, reportsHeld)
	}
	if h.framework != req.GetFramework() {
		return nil, invalid("page_token", "a page of the %s report, not of %s", h.framework, req.GetFramework())
	}
	if offset > len(h.devices) {
		return nil, invalid("page_token", "beyond the report's %d devices", len(h.devices))
	}
	end := pageEnd(h.devices, offset, n)
	r := &medmeshv1.ComplianceReport{
		GenerateTime: h.head.GetGenerateTime(), Framework: h.head.GetFramework(),
		BundleDate: h.head.GetBundleDate(), BundleDigest: h.head.GetBundleDigest(),
		RaftIndex: h.head.GetRaftIndex(), Coverage: h.head.GetCoverage(),
		Devices: make([]*medmeshv1.DeviceCompliance, 0, end-offset),
	}
	for _, b := range h.devices[offset:end] {
		d := &medmeshv1.DeviceCompliance{}
		if err := proto.Unmarshal(b, d); err != nil {
			return nil, status.Errorf(codes.Internal, "held report %s: %v", id, err)
		}
		r.Devices = append(r.Devices, d)
	}
	resp := &medmeshv1.GetReportResponse{Report: r, DeviceOffset: uint32(offset), DeviceTotal: uint32(len(h.devices))}
	if end < len(h.devices) {
		resp.NextPageToken = reportToken(id, end)
	}
	return resp, nil
}
