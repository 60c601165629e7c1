package api

import (
	"math"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// goodReport is a report with one record of each kind, as a sensor sends.
func goodReport() *medmeshv1.ReportRequest {
	out := medmeshv1.Direction_DIRECTION_OUTBOUND
	return &medmeshv1.ReportRequest{SensorId: "s-icu", Records: []*medmeshv1.SensorRecord{
		{Seq: 1, Record: &medmeshv1.SensorRecord_Device{Device: &medmeshv1.DeviceObservation{Device: &medmeshv1.Device{
			Mac: "02:00:00:00:00:07", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, IpAddresses: []string{"10.1.0.7"},
			ClassConfidence: 0.9, Services: []*medmeshv1.Service{{Protocol: 6, Port: 2575}}}}}},
		{Seq: 2, Record: &medmeshv1.SensorRecord_Baseline{Baseline: &medmeshv1.Baseline{
			DeviceMac: "02:00:00:00:00:07", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, Version: 1,
			Entries: []*medmeshv1.BaselineEntry{{PeerCidr: "10.9.0.5/32", Protocol: 6, Port: 2575, Direction: out}},
			Hourly:  []*medmeshv1.HourlyStats{{Hour: 23, Samples: 2, MeanBytes: 10}}}}},
		{Seq: 3, Record: &medmeshv1.SensorRecord_FlowSummary{FlowSummary: &medmeshv1.FlowSummary{
			DeviceMac: "02:00:00:00:00:07", DeviceIp: "10.1.0.7", PeerIp: "10.9.0.5", Protocol: 6, Port: 2575, Direction: out, Flows: 3}}},
		{Seq: 4, Record: &medmeshv1.SensorRecord_Alert{Alert: &medmeshv1.Alert{
			DeviceMac: "02:00:00:00:00:07", Kind: "scan", Risk: &medmeshv1.RiskScore{Score: 80},
			Flow:      &medmeshv1.FlowRef{Src: "10.1.0.7", Dst: "10.9.0.9", Sport: 40000, Dport: 22, Proto: 6},
			Direction: out, Peers: []string{"10.9.0.8", "10.9.0.9"}, PeerCount: 2,
			Services: []*medmeshv1.Service{{Protocol: 6, Port: 22}, {Protocol: 6, Port: 23}}, ServiceCount: 2,
			Scan:  &medmeshv1.ScanEvidence{Patterns: []string{"vertical"}, Methods: []string{"tcp_syn"}},
			Login: &medmeshv1.LoginEvidence{Protocol: "telnet", Account: "admin", Accounts: []string{"admin"}}}}},
	}}
}

// TestValidateReportRejectsOutOfRange: a report with any out-of-range
// value is refused whole, naming the field. Before, only seq and the
// device MAC were checked: port 70000, protocol 300, score 250 or an
// unknown class were committed as sent.
func TestValidateReportRejectsOutOfRange(t *testing.T) {
	if err := validateReport(goodReport(), 1000); err != nil {
		t.Fatalf("good report: %v", err)
	}
	for field, mutate := range map[string]func(r *medmeshv1.ReportRequest){
		"sensor_id":                                 func(r *medmeshv1.ReportRequest) { r.SensorId = "" },
		"records[1].seq":                            func(r *medmeshv1.ReportRequest) { r.Records[1].Seq = 1 },
		"records[0].device.device.mac":              func(r *medmeshv1.ReportRequest) { r.Records[0].GetDevice().Device.Mac = "zz" },
		"records[0].device.device.device_class":     func(r *medmeshv1.ReportRequest) { r.Records[0].GetDevice().Device.DeviceClass = 999 },
		"records[0].device.device.class_confidence": func(r *medmeshv1.ReportRequest) { r.Records[0].GetDevice().Device.ClassConfidence = math.NaN() },
		"records[0].device.device.ip_addresses[0]":  func(r *medmeshv1.ReportRequest) { r.Records[0].GetDevice().Device.IpAddresses[0] = "10.1.0.300" },
		"records[0].device.device.services[0].port": func(r *medmeshv1.ReportRequest) { r.Records[0].GetDevice().Device.Services[0].Port = 70000 },
		"records[0].device.device.tier":             func(r *medmeshv1.ReportRequest) { r.Records[0].GetDevice().Device.Tier = -1 },
		"records[1].baseline.entries[0].port":       func(r *medmeshv1.ReportRequest) { r.Records[1].GetBaseline().Entries[0].Port = 65536 },
		"records[1].baseline.entries[0].protocol":   func(r *medmeshv1.ReportRequest) { r.Records[1].GetBaseline().Entries[0].Protocol = 300 },
		"records[1].baseline.entries[0].peer_cidr":  func(r *medmeshv1.ReportRequest) { r.Records[1].GetBaseline().Entries[0].PeerCidr = "10.9.0.5/33" },
		"records[1].baseline.entries[0].direction":  func(r *medmeshv1.ReportRequest) { r.Records[1].GetBaseline().Entries[0].Direction = 42 },
		"records[1].baseline.hourly[0].hour":        func(r *medmeshv1.ReportRequest) { r.Records[1].GetBaseline().Hourly[0].Hour = 24 },
		"records[1].baseline.hourly[0]":             func(r *medmeshv1.ReportRequest) { r.Records[1].GetBaseline().Hourly[0].MeanBytes = math.Inf(1) },
		"records[2].flow_summary.port":              func(r *medmeshv1.ReportRequest) { r.Records[2].GetFlowSummary().Port = 1 << 20 },
		"records[2].flow_summary.peer_ip":           func(r *medmeshv1.ReportRequest) { r.Records[2].GetFlowSummary().PeerIp = "x" },
		"records[2].flow_summary.device_mac":        func(r *medmeshv1.ReportRequest) { r.Records[2].GetFlowSummary().DeviceMac = "02:00" },
		"records[3].alert.risk.score":               func(r *medmeshv1.ReportRequest) { r.Records[3].GetAlert().Risk.Score = 250 },
		"records[3].alert.flow.port":                func(r *medmeshv1.ReportRequest) { r.Records[3].GetAlert().Flow.Sport = 70000 },
		"records[3].alert.state":                    func(r *medmeshv1.ReportRequest) { r.Records[3].GetAlert().State = 77 },
		"records[3].alert.direction":                func(r *medmeshv1.ReportRequest) { r.Records[3].GetAlert().Direction = 9 },
		"records[3].alert.peers[1]":                 func(r *medmeshv1.ReportRequest) { r.Records[3].GetAlert().Peers = []string{"10.1.0.2", "10.1.0"} },
		"records[3].alert.services[0].port": func(r *medmeshv1.ReportRequest) {
			r.Records[3].GetAlert().Services = []*medmeshv1.Service{{Protocol: 6, Port: 65536}}
		},
		"records[3].alert.peers": func(r *medmeshv1.ReportRequest) {
			r.Records[3].GetAlert().Peers = make([]string, maxAlertList+1)
		},
		"records[3]": func(r *medmeshv1.ReportRequest) { r.Records[3].Record = nil },
		"records[3].alert.scan.methods": func(r *medmeshv1.ReportRequest) {
			r.Records[3].GetAlert().Scan.Methods = make([]string, maxAlertList+1)
		},
		"records[3].alert.login.account": func(r *medmeshv1.ReportRequest) {
			r.Records[3].GetAlert().Login.Account = strings.Repeat("a", 5000)
		},
		"records[3].alert.login.accounts[0]": func(r *medmeshv1.ReportRequest) {
			r.Records[3].GetAlert().Login.Accounts[0] = strings.Repeat("a", 5000)
		},
		"records[3].alert.risk.factors[0].weight": func(r *medmeshv1.ReportRequest) {
			r.Records[3].GetAlert().Risk.Factors = []*medmeshv1.RiskFactor{{Weight: -5}}
		},
	} {
		r := goodReport()
		mutate(r)
		err := validateReport(r, 1000)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), field+":") {
			t.Errorf("%s: err %v, want INVALID_ARGUMENT naming it", field, err)
		}
	}
}

// FuzzValidateReport: a ReportRequest decoded from arbitrary bytes never
// panics the coordinator's validation, and whatever passes holds only
// in-range values.
func FuzzValidateReport(f *testing.F) {
	good, err := proto.Marshal(goodReport())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &medmeshv1.ReportRequest{}
		if proto.Unmarshal(data, req) != nil {
			return
		}
		if validateReport(req, 1000) != nil {
			return
		}
		var prev uint64
		for _, r := range req.GetRecords() {
			if r.GetSeq() <= prev {
				t.Fatalf("accepted seq %d after %d", r.GetSeq(), prev)
			}
			prev = r.GetSeq()
			var ports []uint32
			var protos []uint32
			switch rec := r.GetRecord().(type) {
			case *medmeshv1.SensorRecord_FlowSummary:
				ports, protos = append(ports, rec.FlowSummary.GetPort()), append(protos, rec.FlowSummary.GetProtocol())
			case *medmeshv1.SensorRecord_Baseline:
				for _, e := range rec.Baseline.GetEntries() {
					ports, protos = append(ports, e.GetPort()), append(protos, e.GetProtocol())
				}
			case *medmeshv1.SensorRecord_Alert:
				if s := rec.Alert.GetRisk().GetScore(); s > 100 {
					t.Fatalf("accepted score %d", s)
				}
				fl := rec.Alert.GetFlow()
				ports, protos = append(ports, fl.GetSport(), fl.GetDport()), append(protos, fl.GetProto())
				if len(rec.Alert.GetPeers()) > maxAlertList || len(rec.Alert.GetServices()) > maxAlertList {
					t.Fatalf("accepted %d peers, %d services", len(rec.Alert.GetPeers()), len(rec.Alert.GetServices()))
				}
				for _, ip := range rec.Alert.GetPeers() {
					if _, err := netip.ParseAddr(ip); ip != "" && err != nil {
						t.Fatalf("accepted peer %q", ip)
					}
				}
				for _, sv := range rec.Alert.GetServices() {
					ports, protos = append(ports, sv.GetPort()), append(protos, sv.GetProtocol())
				}
			case *medmeshv1.SensorRecord_Device:
				if _, err := normalizeMAC("mac", rec.Device.GetDevice().GetMac()); err != nil {
					t.Fatalf("accepted mac %q", rec.Device.GetDevice().GetMac())
				}
			}
			for _, p := range ports {
				if p > 65535 {
					t.Fatalf("accepted port %d", p)
				}
			}
			for _, p := range protos {
				if p > 255 {
					t.Fatalf("accepted protocol %d", p)
				}
			}
		}
	})
}

// FuzzPolicyJSON: what `medmesh policies put FILE` reads (protobuf JSON)
// never panics PutPolicy's validation, and a policy it accepts has rules
// an enforcer can hold.
func FuzzPolicyJSON(f *testing.F) {
	f.Add([]byte(`{"name": "device/00:1b:44:11:3a:b7", "device_mac": "00:1b:44:11:3a:b7", "mode": "POLICY_MODE_MONITOR",
	  "rules": [{"name": "pacs", "peer_cidr": "10.20.0.5/32", "protocol": 6, "port_min": 104, "port_max": 104}]}`))
	f.Add([]byte(`{"name": "class/pump", "device_class": "DEVICE_CLASS_INFUSION_PUMP", "rules": [{"peer_dns_name": "ntp.example.org", "protocol": 17, "port_min": 123, "port_max": 123, "direction": "DIRECTION_OUTBOUND"}]}`))
	f.Add([]byte(`{"name": "device/00:1b:44:11:3a:b7", "device_mac": "00:1b:44:11:3a:b7", "rules": [{"port_min": "2575", "port_max": -1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := &medmeshv1.Policy{}
		if protojson.Unmarshal(data, p) != nil {
			return
		}
		if validatePut(p) != nil {
			return
		}
		for _, r := range p.GetRules() {
			if r.GetPortMax() > 65535 || r.GetPortMin() > r.GetPortMax() || r.GetProtocol() > 255 {
				t.Fatalf("accepted rule %v", r)
			}
		}
	})
}
