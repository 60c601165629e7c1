package api

import (
	"context"
	"net/netip"
	"strconv"

	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// maxImportRecords bounds one ImportDevices request (one Raft entry).
const maxImportRecords = 10000

// ImportDevices merges asset register records into the inventory (see
// fsm/state_assets.go for the merge rules), or with dry_run reports what it
// would change.
func (s *Server) ImportDevices(ctx context.Context, req *medmeshv1.ImportDevicesRequest) (*medmeshv1.ImportDevicesResponse, error) {
	recs, err := importRecords(req.GetRecords())
	if err != nil {
		return nil, err
	}
	for _, f := range []struct{ name, v string }{{"source", req.GetSource()}, {"reason", req.GetReason()}} {
		if len(f.v) > maxTextField {
			return nil, invalid(f.name, "longer than %d bytes", maxTextField)
		}
	}
	who, comment, err := author(ctx, req.GetActor())
	if err != nil {
		return nil, err
	}
	if req.GetDryRun() {
		if resp, done, err := route(ctx, s, medmeshv1.InventoryService_ImportDevices_FullMethodName, kindRead, req, &medmeshv1.ImportDevicesResponse{}); done {
			return resp, err
		}
		resp, _ := s.b.FSM().PlanImport(recs)
		return resp, nil
	}
	creq, err := clientRequest(who, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.InventoryService_ImportDevices_FullMethodName, kindWrite, req, &medmeshv1.ImportDevicesResponse{}); done {
		return resp, err
	}
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_DeviceImport{DeviceImport: &fsmpb.DeviceImport{
		Records: recs, Actor: who.String(), Comment: comment, Reason: req.GetReason(), Source: req.GetSource(),
	}}})
	if err != nil {
		return nil, err
	}
	if res.Import == nil {
		return &medmeshv1.ImportDevicesResponse{}, nil
	}
	return res.Import, nil
}

// importRecords validates and normalises import records: MACs in canonical
// form, addresses canonical, text bounded, tiers known.
func importRecords(in []*medmeshv1.AssetRecord) ([]*medmeshv1.AssetRecord, error) {
	if len(in) == 0 {
		return nil, invalid("records", "required")
	}
	if len(in) > maxImportRecords {
		return nil, invalid("records", "%d records, at most %d in one request", len(in), maxImportRecords)
	}
	out := make([]*medmeshv1.AssetRecord, 0, len(in))
	for i, r := range in {
		field := func(name string) string { return "records[" + strconv.Itoa(i) + "]." + name }
		n := &medmeshv1.AssetRecord{Line: r.GetLine(), Location: r.GetLocation()}
		switch {
		case r.GetMac() != "":
			mac, err := normalizeMAC(field("mac"), r.GetMac())
			if err != nil {
				return nil, err
			}
			n.Mac = mac
		case r.GetIp() != "":
			a, err := netip.ParseAddr(r.GetIp())
			if err != nil {
				return nil, invalid(field("ip"), "%q is not an IP address", r.GetIp())
			}
			n.Ip = a.Unmap().String()
		default:
			return nil, invalid(field("mac"), "a record needs a mac or an ip")
		}
		if len(fsm.LocationParts(r.GetLocation())) > 4 {
			return nil, invalid(field("location"), "want campus/building/floor/zone, got %q", r.GetLocation())
		}
		a := r.GetAsset()
		if _, ok := medmeshv1.Tier_name[int32(a.GetCriticality())]; !ok {
			return nil, invalid(field("asset.criticality"), "unknown tier %d", a.GetCriticality())
		}
		for _, f := range []struct{ name, v string }{
			{"location", r.GetLocation()}, {"asset.manufacturer", a.GetManufacturer()}, {"asset.model", a.GetModel()},
			{"asset.version", a.GetVersion()}, {"asset.serial", a.GetSerial()}, {"asset.udi", a.GetUdi()},
			{"asset.udi_di", a.GetUdiDi()}, {"asset.owner", a.GetOwner()}, {"asset.record_id", a.GetRecordId()},
		} {
			if len(f.v) > maxLabelValLength {
				return nil, invalid(field(f.name), "longer than %d bytes", maxLabelValLength)
			}
		}
		if a != nil {
			n.Asset = &medmeshv1.Asset{
				Manufacturer: a.GetManufacturer(), Model: a.GetModel(), Version: a.GetVersion(), Serial: a.GetSerial(),
				Udi: a.GetUdi(), UdiDi: a.GetUdiDi(), Owner: a.GetOwner(), Criticality: a.GetCriticality(), RecordId: a.GetRecordId(),
			}
		}
		out = append(out, n)
	}
	return out, nil
}
