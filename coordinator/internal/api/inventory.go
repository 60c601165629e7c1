package api

import (
	"context"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// ListDevices lists devices by MAC with filters.
func (s *Server) ListDevices(ctx context.Context, req *medmeshv1.ListDevicesRequest) (*medmeshv1.ListDevicesResponse, error) {
	if resp, done, err := route(ctx, s, medmeshv1.InventoryService_ListDevices_FullMethodName, kindRead, req, &medmeshv1.ListDevicesResponse{}); done {
		return resp, err
	}
	n, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after, err := decodeToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	q := strings.ToLower(strings.TrimSpace(req.GetQuery()))
	if len(q) > 128 {
		return nil, invalid("query", "longer than 128 bytes")
	}
	keep := func(d *medmeshv1.Device) bool {
		if q != "" && !deviceMatches(d, q) {
			return false
		}
		if req.GetDeviceClass() != 0 && d.GetDeviceClass() != req.GetDeviceClass() {
			return false
		}
		if req.GetTier() != 0 && d.GetTier() != req.GetTier() {
			return false
		}
		if req.GetFloor() != "" && d.GetLocation().GetFloor() != req.GetFloor() {
			return false
		}
		if req.GetZone() != "" && d.GetLocation().GetZone() != req.GetZone() {
			return false
		}
		for k, v := range req.GetLabels() {
			if got, ok := d.GetLabels()[k]; !ok || got != v {
				return false
			}
		}
		return d.GetRisk().GetScore() >= req.GetMinRiskScore()
	}
	page, more, total, idx := s.b.FSM().ListDevices(after, n, keep)
	resp := &medmeshv1.ListDevicesResponse{Devices: page, TotalSize: int32(total), ReadInfo: s.readInfo(req, idx)}
	if more {
		resp.NextPageToken = encodeToken(page[len(page)-1].GetMac())
	}
	return resp, nil
}

// GetDevice returns one device.
func (s *Server) GetDevice(ctx context.Context, req *medmeshv1.GetDeviceRequest) (*medmeshv1.GetDeviceResponse, error) {
	mac, err := normalizeMAC("mac", req.GetMac())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.InventoryService_GetDevice_FullMethodName, kindRead, req, &medmeshv1.GetDeviceResponse{}); done {
		return resp, err
	}
	idx := s.b.FSM().AppliedIndex()
	d := s.b.FSM().Device(mac)
	if d == nil {
		return nil, status.Errorf(codes.NotFound, "mac: device %s not found", mac)
	}
	return &medmeshv1.GetDeviceResponse{Device: d, ReadInfo: s.readInfo(req, idx)}, nil
}

// UpdateDevice changes labels, tier and location.
func (s *Server) UpdateDevice(ctx context.Context, req *medmeshv1.UpdateDeviceRequest) (*medmeshv1.UpdateDeviceResponse, error) {
	if req.GetDevice() == nil {
		return nil, invalid("device", "required")
	}
	mac, err := normalizeMAC("device.mac", req.GetDevice().GetMac())
	if err != nil {
		return nil, err
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		return nil, invalid("update_mask", "required")
	}
	for _, p := range paths {
		if p != "labels" && p != "tier" && p != "location" && p != "device_class" {
			return nil, invalid("update_mask", "path %q is not one of labels, tier, location, device_class", p)
		}
	}
	who, comment, err := author(ctx, req.GetActor())
	if err != nil {
		return nil, err
	}
	if _, ok := medmeshv1.DeviceClass_name[int32(req.GetDevice().GetDeviceClass())]; !ok {
		return nil, invalid("device.device_class", "unknown class %d", req.GetDevice().GetDeviceClass())
	}
	if len(req.GetDevice().GetLabels()) > maxLabels {
		return nil, invalid("device.labels", "more than %d labels", maxLabels)
	}
	for k, v := range req.GetDevice().GetLabels() {
		if k == "" || len(k) > maxLabelKeyLength || len(v) > maxLabelValLength {
			return nil, invalid("device.labels", "label %q: key must be 1-%d bytes, value at most %d", k, maxLabelKeyLength, maxLabelValLength)
		}
	}
	if _, ok := medmeshv1.Tier_name[int32(req.GetDevice().GetTier())]; !ok {
		return nil, invalid("device.tier", "unknown tier %d", req.GetDevice().GetTier())
	}
	creq, err := clientRequest(who, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.InventoryService_UpdateDevice_FullMethodName, kindWrite, req, &medmeshv1.UpdateDeviceResponse{}); done {
		return resp, err
	}
	in := &medmeshv1.Device{Mac: mac, Labels: req.GetDevice().GetLabels(), Tier: req.GetDevice().GetTier(), Location: req.GetDevice().GetLocation(),
		DeviceClass: req.GetDevice().GetDeviceClass()}
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_DeviceUpdate{DeviceUpdate: &fsmpb.DeviceUpdate{
		Device: in, Paths: paths, Actor: who.String(), Comment: comment, Reason: req.GetReason(),
	}}})
	if err != nil {
		return nil, err
	}
	return &medmeshv1.UpdateDeviceResponse{Device: res.Device}, nil
}

// deviceMatches reports whether q (lower case) is in the device's MAC, an
// address, its vendor, model or hostname, ignoring case.
func deviceMatches(d *medmeshv1.Device, q string) bool {
	for _, f := range []string{d.GetMac(), d.GetVendor(), d.GetModel(), d.GetHostname()} {
		if strings.Contains(strings.ToLower(f), q) {
			return true
		}
	}
	for _, ip := range d.GetIpAddresses() {
		if strings.Contains(strings.ToLower(ip), q) {
			return true
		}
	}
	return false
}
