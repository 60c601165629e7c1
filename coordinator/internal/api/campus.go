package api

import (
	"context"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/coordinator/internal/campus"
	"github.com/medmesh/medmesh/coordinator/internal/policy"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Limits of the campus service.
const (
	defaultCrossings   = 200
	maxCrossings       = 1000
	defaultSegmentPage = 50
	maxSegmentPage     = 200
	maxSegmentField    = 128
)

// GetCampusMap returns the segments and what crosses between them.
func (s *Server) GetCampusMap(ctx context.Context, req *medmeshv1.GetCampusMapRequest) (*medmeshv1.GetCampusMapResponse, error) {
	n := int(req.GetMaxCrossings())
	switch {
	case n < 0:
		return nil, invalid("max_crossings", "must not be negative")
	case n == 0:
		n = defaultCrossings
	case n > maxCrossings:
		n = maxCrossings
	}
	if resp, done, err := route(ctx, s, medmeshv1.CampusService_GetCampusMap_FullMethodName, kindRead, req, &medmeshv1.GetCampusMapResponse{}); done {
		return resp, err
	}
	v := s.b.FSM().CampusTraffic()
	segs, crossings, truncated := campus.Map(v, n)
	return &medmeshv1.GetCampusMapResponse{Segments: segs, Crossings: crossings, TruncatedCrossings: uint32(truncated),
		Devices: uint32(len(v.Devices)), ReadInfo: s.readInfo(req, v.Index)}, nil
}

// ListSegmentDevices pages through one segment's devices with their peers.
func (s *Server) ListSegmentDevices(ctx context.Context, req *medmeshv1.ListSegmentDevicesRequest) (*medmeshv1.ListSegmentDevicesResponse, error) {
	seg := req.GetSegment()
	for _, f := range [][2]string{{"segment.campus", seg.GetCampus()}, {"segment.building", seg.GetBuilding()}, {"segment.floor", seg.GetFloor()}, {"segment.zone", seg.GetZone()}} {
		if len(f[1]) > maxSegmentField {
			return nil, invalid(f[0], "longer than %d bytes", maxSegmentField)
		}
	}
	if seg.GetOutside() {
		return nil, invalid("segment.outside", "the outside of the inventory has no devices")
	}
	n := int(req.GetPageSize())
	switch {
	case n < 0:
		return nil, invalid("page_size", "must not be negative")
	case n == 0:
		n = defaultSegmentPage
	case n > maxSegmentPage:
		n = maxSegmentPage
	}
	after, err := decodeToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.CampusService_ListSegmentDevices_FullMethodName, kindRead, req, &medmeshv1.ListSegmentDevicesResponse{}); done {
		return resp, err
	}
	v := s.b.FSM().CampusTraffic()
	page, more, total := campus.SegmentDevices(v, seg, after, n)
	resp := &medmeshv1.ListSegmentDevicesResponse{Devices: page, TotalSize: int32(total), ReadInfo: s.readInfo(req, v.Index)}
	if more {
		resp.NextPageToken = encodeToken(page[len(page)-1].GetMac())
	}
	return resp, nil
}

// GetDeviceTraffic returns a device's peers, recent flows, policies and
// what a policy generated from its baseline would drop. It stores nothing:
// the policy is generated as GeneratePolicy generates it and kept nowhere.
func (s *Server) GetDeviceTraffic(ctx context.Context, req *medmeshv1.GetDeviceTrafficRequest) (*medmeshv1.GetDeviceTrafficResponse, error) {
	mac, err := normalizeMAC("device_mac", req.GetDeviceMac())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.CampusService_GetDeviceTraffic_FullMethodName, kindRead, req, &medmeshv1.GetDeviceTrafficResponse{}); done {
		return resp, err
	}
	v := s.b.FSM().DeviceTraffic(mac)
	if v == nil {
		return nil, status.Errorf(codes.NotFound, "device_mac: device %s not found", mac)
	}
	d := v.Devices[mac]
	resp := &medmeshv1.GetDeviceTrafficResponse{Policies: v.Policies, ClassPolicy: v.ClassPolicy, Segment: campus.SegmentOf(d), ReadInfo: s.readInfo(req, v.Index)}
	b := v.Baselines[mac]
	if b == nil {
		if cb := v.ClassBaselines[d.GetDeviceClass()]; cb != nil {
			b = cloneBaselineFor(cb, mac)
			resp.ClassBaseline = true
		}
	}
	var generated *medmeshv1.Policy
	if b != nil {
		resp.HasBaseline = true
		resp.BaselineVersion = b.GetVersion()
		resp.BaselineFreezeTime = b.GetFreezeTime()
		resp.BaselineSensorId = b.GetSensorId()
		for _, e := range b.GetEntries() {
			if e.GetApp() != "" && !slices.Contains(resp.BaselineProtocols, e.GetApp()) {
				resp.BaselineProtocols = append(resp.BaselineProtocols, e.GetApp())
			}
		}
		slices.Sort(resp.BaselineProtocols)
		if generated, err = policy.Generate(b, d.GetDeviceClass(), policy.DefaultDefaults()); err != nil {
			resp.GenerateError = err.Error()
			generated = nil
		}
	} else {
		resp.GenerateError = "the device has no frozen baseline yet, nor does its class"
	}
	flows := v.Flows[mac]
	resp.FlowSummaries = uint32(len(flows))
	for _, fs := range flows {
		resp.Flows += max(fs.GetFlows(), 1)
		if t := fs.GetWindowStart(); t != nil && (resp.FlowsSince == nil || t.AsTime().Before(resp.FlowsSince.AsTime())) {
			resp.FlowsSince = t
		}
	}
	if generated != nil {
		resp.Generated = policy.Simulate(generated, flows)
	}
	resp.Peers = campus.Peers(v, mac, b, generated)
	return resp, nil
}
