package api

import (
	"context"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// incidentToken is the position after an incident in (index, id) order:
// "INDEX/ID", opaque to clients.
func incidentToken(inc *medmeshv1.Incident) string {
	return encodeToken(strconv.FormatUint(inc.GetIndex(), 10) + "/" + inc.GetId())
}

func decodeIncidentToken(field, tok string) (uint64, string, error) {
	k, err := decodeToken(tok)
	if err != nil || k == "" {
		return 0, "", err
	}
	i, id, ok := strings.Cut(k, "/")
	n, perr := strconv.ParseUint(i, 10, 64)
	if !ok || perr != nil {
		return 0, "", invalid(field, "malformed")
	}
	return n, id, nil
}

// ListIncidents lists incidents in (last change index, id) order.
func (s *Server) ListIncidents(ctx context.Context, req *medmeshv1.ListIncidentsRequest) (*medmeshv1.ListIncidentsResponse, error) {
	n, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	afterIndex, afterID, err := decodeIncidentToken("page_token", req.GetPageToken())
	if err != nil {
		return nil, err
	}
	mac := ""
	if req.GetDeviceMac() != "" {
		if mac, err = normalizeMAC("device_mac", req.GetDeviceMac()); err != nil {
			return nil, err
		}
	}
	if err := checkEnum("state", req.GetState()); err != nil {
		return nil, err
	}
	var since time.Time
	if ts := req.GetSince(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, invalid("since", "%v", err)
		}
		since = ts.AsTime()
	}
	if resp, done, err := route(ctx, s, medmeshv1.IncidentService_ListIncidents_FullMethodName, kindRead, req, &medmeshv1.ListIncidentsResponse{}); done {
		return resp, err
	}
	keep := func(inc *medmeshv1.Incident) bool {
		if req.GetState() != 0 && inc.GetState() != req.GetState() {
			return false
		}
		if !since.IsZero() && inc.GetUpdateTime().AsTime().Before(since) {
			return false
		}
		if mac == "" || inc.GetDeviceMac() == mac {
			return true
		}
		for _, d := range inc.GetDevices() {
			if d.GetMac() == mac {
				return true
			}
		}
		return false
	}
	page, more, idx := s.b.FSM().IncidentsChanged(afterIndex, afterID, n, keep)
	resp := &medmeshv1.ListIncidentsResponse{Incidents: page, ReadInfo: s.readInfo(req, idx)}
	if more {
		resp.NextPageToken = incidentToken(page[len(page)-1])
	}
	return resp, nil
}

// GetIncident returns one incident and its decisions as they stand.
func (s *Server) GetIncident(ctx context.Context, req *medmeshv1.GetIncidentRequest) (*medmeshv1.GetIncidentResponse, error) {
	if err := required("id", req.GetId()); err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.IncidentService_GetIncident_FullMethodName, kindRead, req, &medmeshv1.GetIncidentResponse{}); done {
		return resp, err
	}
	f := s.b.FSM()
	idx := f.AppliedIndex()
	inc := f.Incident(req.GetId())
	if inc == nil {
		return nil, status.Errorf(codes.NotFound, "id: incident %q not found", req.GetId())
	}
	resp := &medmeshv1.GetIncidentResponse{Incident: inc, ReadInfo: s.readInfo(req, idx)}
	for _, r := range inc.GetResponses() {
		if r.GetDecisionId() == "" {
			continue
		}
		if d := f.Decision(r.GetDecisionId()); d != nil {
			resp.Decisions = append(resp.Decisions, d)
		}
	}
	return resp, nil
}

// WatchIncidents streams incidents as they change, each as of its latest
// change, in (index, id) order; the resume token is that position.
func (s *Server) WatchIncidents(req *medmeshv1.WatchIncidentsRequest, stream medmeshv1.IncidentService_WatchIncidentsServer) error {
	// "\xff" sorts after every id: all of that index was sent.
	afterIndex, afterID := req.GetFromIndex(), "\xff"
	if tok := req.GetResumeToken(); tok != "" {
		var err error
		if afterIndex, afterID, err = decodeIncidentToken("resume_token", tok); err != nil {
			return err
		}
		if afterID == "" {
			afterID = "\xff" // a heartbeat's token
		}
	}
	f := s.b.FSM()
	ctx := stream.Context()
	tick := time.NewTicker(s.cfg.WatchHeartbeat)
	defer tick.Stop()
	// A heartbeat token covers the last index whose changes were all sent.
	heartbeat := func(applied uint64) error {
		covered := afterIndex
		if applied > covered {
			covered = applied
		}
		tok := encodeToken(strconv.FormatUint(covered, 10) + "/")
		return stream.Send(&medmeshv1.WatchIncidentsResponse{AppliedIndex: applied, ResumeToken: tok})
	}
	first := true
	all := func(*medmeshv1.Incident) bool { return true }
	for {
		changed := f.Changed()
		var applied uint64
		for {
			page, more, idx := f.IncidentsChanged(afterIndex, afterID, 256, all)
			applied = idx
			for _, inc := range page {
				afterIndex, afterID = inc.GetIndex(), inc.GetId()
				if err := stream.Send(&medmeshv1.WatchIncidentsResponse{Incident: inc, AppliedIndex: idx, ResumeToken: incidentToken(inc)}); err != nil {
					return err
				}
			}
			if !more {
				break
			}
		}
		// Every change up to applied has been sent.
		if applied > afterIndex {
			afterIndex, afterID = applied, "\xff"
		}
		if first {
			first = false
			if err := heartbeat(applied); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-tick.C:
			if err := heartbeat(afterIndex); err != nil {
				return err
			}
		}
	}
}
