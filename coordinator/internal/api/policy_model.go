package api

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/coordinator/internal/policy"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// maxMUDBytes bounds an imported MUD file.
const maxMUDBytes = 1 << 20

// policyError turns the policy package's validation errors into
// InvalidArgument; anything else is internal.
func policyError(field string, err error) error {
	if errors.Is(err, policy.ErrInvalid) {
		return status.Errorf(codes.InvalidArgument, "%s: %v", field, err)
	}
	return status.Errorf(codes.Internal, "%s: %v", field, err)
}

// GeneratePolicy builds a device's least-privilege policy from its frozen
// baseline (or its class's) plus class defaults, and simulates it against
// the device's recent flow summaries. It stores nothing.
func (s *Server) GeneratePolicy(ctx context.Context, req *medmeshv1.GeneratePolicyRequest) (*medmeshv1.GeneratePolicyResponse, error) {
	mac, err := normalizeMAC("device_mac", req.GetDeviceMac())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.PolicyService_GeneratePolicy_FullMethodName, kindRead, req, &medmeshv1.GeneratePolicyResponse{}); done {
		return resp, err
	}
	f := s.b.FSM()
	dev := f.Device(mac)
	if dev == nil {
		return nil, status.Errorf(codes.NotFound, "device_mac: device %s not found", mac)
	}
	b := f.Baseline(mac)
	if b == nil {
		if cb := f.ClassBaseline(dev.GetDeviceClass()); cb != nil {
			b = cloneBaselineFor(cb, mac)
		}
	}
	if b == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "device_mac: device %s has no frozen baseline yet, nor does its class", mac)
	}
	p, err := policy.Generate(b, dev.GetDeviceClass(), policy.DefaultDefaults())
	if err != nil {
		return nil, policyError("baseline", err)
	}
	if req.GetMode() != medmeshv1.PolicyMode_POLICY_MODE_UNSPECIFIED {
		p.Mode = req.GetMode()
	}
	return &medmeshv1.GeneratePolicyResponse{Policy: p, Simulation: policy.Simulate(p, f.FlowSummaries(mac))}, nil
}

func cloneBaselineFor(b *medmeshv1.Baseline, mac string) *medmeshv1.Baseline {
	return &medmeshv1.Baseline{DeviceMac: mac, DeviceClass: b.GetDeviceClass(), Version: b.GetVersion(),
		LearnStart: b.GetLearnStart(), FreezeTime: b.GetFreezeTime(), Entries: b.GetEntries(), Hourly: b.GetHourly(), SensorId: b.GetSensorId()}
}

// SimulatePolicy replays a device's recent flow summaries against a policy.
func (s *Server) SimulatePolicy(ctx context.Context, req *medmeshv1.SimulatePolicyRequest) (*medmeshv1.SimulatePolicyResponse, error) {
	p := req.GetPolicy()
	if err := policy.Validate(p); err != nil {
		return nil, policyError("policy", err)
	}
	target := req.GetDeviceMac()
	if target == "" {
		target = p.GetDeviceMac()
	}
	mac, err := normalizeMAC("device_mac", target)
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.PolicyService_SimulatePolicy_FullMethodName, kindRead, req, &medmeshv1.SimulatePolicyResponse{}); done {
		return resp, err
	}
	if s.b.FSM().Device(mac) == nil {
		return nil, status.Errorf(codes.NotFound, "device_mac: device %s not found", mac)
	}
	return &medmeshv1.SimulatePolicyResponse{Simulation: policy.Simulate(p, s.b.FSM().FlowSummaries(mac))}, nil
}

// ExportPolicyMud renders a stored policy as an RFC 8520 MUD file.
func (s *Server) ExportPolicyMud(ctx context.Context, req *medmeshv1.ExportPolicyMudRequest) (*medmeshv1.ExportPolicyMudResponse, error) {
	if err := required("name", req.GetName()); err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.PolicyService_ExportPolicyMud_FullMethodName, kindRead, req, &medmeshv1.ExportPolicyMudResponse{}); done {
		return resp, err
	}
	p := s.b.FSM().Policy(req.GetName())
	if p == nil {
		return nil, status.Errorf(codes.NotFound, "name: policy %q not found", req.GetName())
	}
	url := req.GetMudUrl()
	if url == "" {
		url = fmt.Sprintf("https://mud.medmesh.invalid/%s.json", p.GetName())
	}
	out, err := policy.ExportMUD(p, url)
	if err != nil {
		return nil, policyError("name", err)
	}
	return &medmeshv1.ExportPolicyMudResponse{MudJson: string(out)}, nil
}

// ImportPolicyMud parses a MUD file into a device policy. It stores nothing.
func (s *Server) ImportPolicyMud(_ context.Context, req *medmeshv1.ImportPolicyMudRequest) (*medmeshv1.ImportPolicyMudResponse, error) {
	mac, err := normalizeMAC("device_mac", req.GetDeviceMac())
	if err != nil {
		return nil, err
	}
	if req.GetMudJson() == "" {
		return nil, invalid("mud_json", "required")
	}
	if len(req.GetMudJson()) > maxMUDBytes {
		return nil, invalid("mud_json", "%d bytes, at most %d", len(req.GetMudJson()), maxMUDBytes)
	}
	p, warnings, err := policy.ImportMUD(mac, []byte(req.GetMudJson()))
	if err != nil {
		return nil, policyError("mud_json", err)
	}
	if req.GetName() != "" {
		p.Name = req.GetName()
	}
	return &medmeshv1.ImportPolicyMudResponse{Policy: p, Warnings: warnings}, nil
}
