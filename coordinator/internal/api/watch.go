package api

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// follow drives a watch stream from applied state: it sends every item with
// an index in (from, applied] in index order via emit (which returns the
// index it covered), then waits for more, sending heartbeats with the
// applied index when idle. Index order, no gap, no duplicate, never
// backwards: the cursor only moves forward, over indexes already sent.
func (s *Server) follow(ctx context.Context, from uint64,
	emit func(after uint64) (sentUpTo uint64, applied uint64, err error),
	heartbeat func(applied uint64) error,
) error {
	f := s.b.FSM()
	cursor := from
	tick := time.NewTicker(s.cfg.WatchHeartbeat)
	defer tick.Stop()
	first := true
	for {
		changed := f.Changed() // taken before reading, so no apply is missed
		sent, applied, err := emit(cursor)
		if err != nil {
			return err
		}
		if sent > cursor {
			cursor = sent
		}
		if applied > cursor {
			// Everything up to applied has been sent: heartbeats say so.
			cursor = applied
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
			// The cursor, not f.AppliedIndex(): entries applied since emit
			// have not been sent, and a heartbeat (and its resume token)
			// must never claim they were, or a resuming watcher skips them.
			if err := heartbeat(cursor); err != nil {
				return err
			}
		}
	}
}

func watchFrom(field string, from uint64, token string) (uint64, error) {
	if token == "" {
		return from, nil
	}
	return decodeIndexToken(field, token)
}

// WatchDecisions streams the decision log from an index.
func (s *Server) WatchDecisions(req *medmeshv1.WatchDecisionsRequest, stream medmeshv1.DecisionService_WatchDecisionsServer) error {
	from, err := watchFrom("resume_token", req.GetFromIndex(), req.GetResumeToken())
	if err != nil {
		return err
	}
	f := s.b.FSM()
	shared := shareable(stream.Context())
	return s.follow(stream.Context(), from,
		func(after uint64) (uint64, uint64, error) {
			last := after
			for {
				page, more, applied := f.ListDecisions(last, 256, func(*medmeshv1.Decision) bool { return true })
				for _, d := range page {
					if err := s.wire.send(stream, shared, d, applied); err != nil {
						return last, applied, err
					}
					last = d.GetIndex()
				}
				if !more {
					return last, applied, nil
				}
			}
		},
		func(applied uint64) error {
			return stream.Send(&medmeshv1.WatchDecisionsResponse{AppliedIndex: applied, ResumeToken: indexToken(applied)})
		})
}

// WatchAlerts streams alerts committed after a resume point. Many alerts
// can share a Raft index (one sensor batch), so the resume token names the
// alert's position in the append-only alert log, not only its index.
func (s *Server) WatchAlerts(req *medmeshv1.WatchAlertsRequest, stream medmeshv1.AlertService_WatchAlertsServer) error {
	f := s.b.FSM()
	pos := f.AlertPosition(req.GetFromIndex())
	if tok := req.GetResumeToken(); tok != "" {
		k, err := decodeToken(tok)
		if err != nil {
			return err
		}
		if _, err := fmt.Sscanf(k, "p%d", &pos); err != nil {
			return invalid("resume_token", "malformed")
		}
	}
	ctx := stream.Context()
	tick := time.NewTicker(s.cfg.WatchHeartbeat)
	defer tick.Stop()
	heartbeat := func() error {
		return stream.Send(&medmeshv1.WatchAlertsResponse{AppliedIndex: f.AppliedIndex(), ResumeToken: encodeToken(fmt.Sprintf("p%d", pos))})
	}
	first := true
	for {
		changed := f.Changed()
		for {
			page, first, applied := f.AlertsFrom(pos, 256)
			pos = first // past alerts evicted by retention
			for _, a := range page {
				pos++
				if err := stream.Send(&medmeshv1.WatchAlertsResponse{Alert: a, AppliedIndex: applied, ResumeToken: encodeToken(fmt.Sprintf("p%d", pos))}); err != nil {
					return err
				}
			}
			if len(page) < 256 {
				break
			}
		}
		if first {
			first = false
			if err := heartbeat(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-tick.C:
			if err := heartbeat(); err != nil {
				return err
			}
		}
	}
}

// WatchDevices streams device changes in commit order. Each device is sent
// as of its latest change; intermediate states may be skipped. The resume
// token is (revision, mac): many devices can share a revision.
func (s *Server) WatchDevices(req *medmeshv1.WatchDevicesRequest, stream medmeshv1.InventoryService_WatchDevicesServer) error {
	var rev uint64
	var mac string
	if tok := req.GetResumeToken(); tok != "" {
		k, err := decodeToken(tok)
		if err != nil {
			return err
		}
		r, m, ok := strings.Cut(k, "/")
		if rev, err = strconv.ParseUint(r, 10, 64); !ok || err != nil {
			return invalid("resume_token", "malformed")
		}
		mac = m
	}
	f := s.b.FSM()
	ctx := stream.Context()
	for {
		changed := f.Changed()
		devs, _ := f.DevicesChanged(rev, mac)
		for _, d := range devs {
			rev, mac = d.GetRevision(), d.GetMac()
			tok := encodeToken(strconv.FormatUint(rev, 10) + "/" + mac)
			if err := stream.Send(&medmeshv1.WatchDevicesResponse{Device: d, Index: rev, ResumeToken: tok}); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}
