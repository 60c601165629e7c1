package api

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// ListAlerts lists alerts by commit index.
func (s *Server) ListAlerts(ctx context.Context, req *medmeshv1.ListAlertsRequest) (*medmeshv1.ListAlertsResponse, error) {
	n, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after, err := decodeIndexToken("page_token", req.GetPageToken()) // a position in the alert log
	if err != nil {
		return nil, err
	}
	mac := ""
	if req.GetDeviceMac() != "" {
		if mac, err = normalizeMAC("device_mac", req.GetDeviceMac()); err != nil {
			return nil, err
		}
	}
	if resp, done, err := route(ctx, s, medmeshv1.AlertService_ListAlerts_FullMethodName, kindRead, req, &medmeshv1.ListAlertsResponse{}); done {
		return resp, err
	}
	keep := func(a *medmeshv1.Alert) bool {
		return (mac == "" || a.GetDeviceMac() == mac) && (req.GetState() == 0 || a.GetState() == req.GetState()) &&
			a.GetRisk().GetScore() >= req.GetMinScore()
	}
	page, last, more, idx := s.b.FSM().ListAlerts(after, n, keep)
	resp := &medmeshv1.ListAlertsResponse{Alerts: page, ReadInfo: s.readInfo(req, idx)}
	if more {
		resp.NextPageToken = indexToken(last)
	}
	return resp, nil
}

// GetAlert returns one alert.
func (s *Server) GetAlert(ctx context.Context, req *medmeshv1.GetAlertRequest) (*medmeshv1.GetAlertResponse, error) {
	if err := required("id", req.GetId()); err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.AlertService_GetAlert_FullMethodName, kindRead, req, &medmeshv1.GetAlertResponse{}); done {
		return resp, err
	}
	idx := s.b.FSM().AppliedIndex()
	a := s.b.FSM().Alert(req.GetId())
	if a == nil {
		return nil, status.Errorf(codes.NotFound, "id: alert %q not found", req.GetId())
	}
	return &medmeshv1.GetAlertResponse{Alert: a, ReadInfo: s.readInfo(req, idx)}, nil
}

// AcknowledgeAlert marks an alert handled.
func (s *Server) AcknowledgeAlert(ctx context.Context, req *medmeshv1.AcknowledgeAlertRequest) (*medmeshv1.AcknowledgeAlertResponse, error) {
	if err := required("id", req.GetId()); err != nil {
		return nil, err
	}
	who, comment, err := author(ctx, req.GetActor())
	if err != nil {
		return nil, err
	}
	if len(req.GetNote()) > maxTextField {
		return nil, invalid("note", "longer than %d bytes", maxTextField)
	}
	creq, err := clientRequest(who, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.AlertService_AcknowledgeAlert_FullMethodName, kindWrite, req, &medmeshv1.AcknowledgeAlertResponse{}); done {
		return resp, err
	}
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_AlertAck{AlertAck: &fsmpb.AlertAck{
		Id: req.GetId(), Actor: who.String(), Comment: comment, Note: req.GetNote(),
	}}})
	if err != nil {
		return nil, err
	}
	return &medmeshv1.AcknowledgeAlertResponse{Alert: res.Alert}, nil
}
