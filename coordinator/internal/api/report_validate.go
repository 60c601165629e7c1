package api

import (
	"fmt"
	"math"
	"net/netip"

	"google.golang.org/protobuf/reflect/protoreflect"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// validateReport checks one ReportRequest of a sensor stream before any of
// it is committed: a request with any out-of-range value (a port above
// 65535, a protocol above 255, an unknown enum, a score above 100, a
// malformed address) is refused whole with an INVALID_ARGUMENT naming the
// field. MACs are normalized in place.
func validateReport(req *medmeshv1.ReportRequest, maxRecords int) error {
	if err := required("sensor_id", req.GetSensorId()); err != nil {
		return err
	}
	if len(req.GetRecords()) > maxRecords {
		return invalid("records", "more than %d records in one request", maxRecords)
	}
	for k := range req.GetDropped() {
		if len(k) > maxTextField {
			return invalid("dropped", "key longer than %d bytes", maxTextField)
		}
	}
	var prev uint64
	for i, r := range req.GetRecords() {
		f := fmt.Sprintf("records[%d]", i)
		if r.GetSeq() == 0 || r.GetSeq() <= prev {
			return invalid(f+".seq", "%d is not positive and increasing", r.GetSeq())
		}
		prev = r.GetSeq()
		var err error
		switch rec := r.GetRecord().(type) {
		case *medmeshv1.SensorRecord_Device:
			err = checkDevice(f+".device.device", rec.Device.GetDevice())
		case *medmeshv1.SensorRecord_Baseline:
			err = checkBaseline(f+".baseline", rec.Baseline)
		case *medmeshv1.SensorRecord_Alert:
			err = checkAlert(f+".alert", rec.Alert)
		case *medmeshv1.SensorRecord_FlowSummary:
			err = checkFlowSummary(f+".flow_summary", rec.FlowSummary)
		default:
			err = invalid(f, "no record")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func checkEnum(field string, v protoreflect.Enum) error {
	n := v.Number()
	if v.Descriptor().Values().ByNumber(n) == nil {
		return invalid(field, "unknown value %d", n)
	}
	return nil
}

func checkIP(field, s string) error {
	if s == "" {
		return nil
	}
	if _, err := netip.ParseAddr(s); err != nil {
		return invalid(field, "%q is not an IP address", s)
	}
	return nil
}

// optionalMAC normalizes *mac when it is set.
func optionalMAC(field string, mac *string) error {
	if *mac == "" {
		return nil
	}
	m, err := normalizeMAC(field, *mac)
	if err != nil {
		return err
	}
	*mac = m
	return nil
}

func checkPortProto(field string, proto, port uint32) error {
	if proto > 255 {
		return invalid(field+".protocol", "%d is not an IP protocol number", proto)
	}
	if port > 65535 {
		return invalid(field+".port", "%d is not a port 0..65535", port)
	}
	return nil
}

func checkScore(field string, r *medmeshv1.RiskScore) error {
	if r.GetScore() > 100 {
		return invalid(field+".score", "%d is not a score 0..100", r.GetScore())
	}
	for i, f := range r.GetFactors() {
		if w := f.GetWeight(); math.IsNaN(w) || w < 0 || w > 100 {
			return invalid(fmt.Sprintf("%s.factors[%d].weight", field, i), "%v is not 0..100", w)
		}
	}
	return nil
}

func checkDevice(f string, d *medmeshv1.Device) error {
	if d == nil {
		return invalid(f, "required")
	}
	mac, err := normalizeMAC(f+".mac", d.GetMac())
	if err != nil {
		return err
	}
	d.Mac = mac
	for i, ip := range d.GetIpAddresses() {
		if err := checkIP(fmt.Sprintf("%s.ip_addresses[%d]", f, i), ip); err != nil {
			return err
		}
	}
	if err := checkEnum(f+".device_class", d.GetDeviceClass()); err != nil {
		return err
	}
	if err := checkEnum(f+".tier", d.GetTier()); err != nil {
		return err
	}
	if c := d.GetClassConfidence(); math.IsNaN(c) || c < 0 || c > 1 {
		return invalid(f+".class_confidence", "%v is not 0..1", c)
	}
	for i, s := range d.GetServices() {
		if err := checkPortProto(fmt.Sprintf("%s.services[%d]", f, i), s.GetProtocol(), s.GetPort()); err != nil {
			return err
		}
	}
	return checkScore(f+".risk", d.GetRisk())
}

func checkBaseline(f string, b *medmeshv1.Baseline) error {
	if err := optionalMAC(f+".device_mac", &b.DeviceMac); err != nil {
		return err
	}
	if err := checkEnum(f+".device_class", b.GetDeviceClass()); err != nil {
		return err
	}
	for i, e := range b.GetEntries() {
		ef := fmt.Sprintf("%s.entries[%d]", f, i)
		if c := e.GetPeerCidr(); c != "" {
			if err := checkCIDR(c); err != nil {
				return invalid(ef+".peer_cidr", "%v", err)
			}
		}
		if err := checkPortProto(ef, e.GetProtocol(), e.GetPort()); err != nil {
			return err
		}
		if err := checkEnum(ef+".direction", e.GetDirection()); err != nil {
			return err
		}
	}
	for i, h := range b.GetHourly() {
		hf := fmt.Sprintf("%s.hourly[%d]", f, i)
		if h.GetHour() > 23 {
			return invalid(hf+".hour", "%d is not an hour 0..23", h.GetHour())
		}
		for _, v := range []float64{h.GetMeanBytes(), h.GetM2Bytes(), h.GetMeanFlows(), h.GetM2Flows()} {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				return invalid(hf, "statistic %v is not a finite non-negative number", v)
			}
		}
	}
	return nil
}

func checkAlert(f string, a *medmeshv1.Alert) error {
	if err := optionalMAC(f+".device_mac", &a.DeviceMac); err != nil {
		return err
	}
	if err := checkScore(f+".risk", a.GetRisk()); err != nil {
		return err
	}
	if fl := a.GetFlow(); fl != nil {
		for _, c := range []struct {
			field, ip string
		}{{".flow.src", fl.GetSrc()}, {".flow.dst", fl.GetDst()}} {
			if err := checkIP(f+c.field, c.ip); err != nil {
				return err
			}
		}
		if err := checkPortProto(f+".flow", fl.GetProto(), max(fl.GetSport(), fl.GetDport())); err != nil {
			return err
		}
	}
	if err := checkEnum(f+".device_class", a.GetDeviceClass()); err != nil {
		return err
	}
	if err := checkEnum(f+".tier", a.GetTier()); err != nil {
		return err
	}
	if err := checkEnum(f+".direction", a.GetDirection()); err != nil {
		return err
	}
	if len(a.GetPeers()) > maxAlertList {
		return invalid(f+".peers", "more than %d peers", maxAlertList)
	}
	for i, ip := range a.GetPeers() {
		if err := checkIP(fmt.Sprintf("%s.peers[%d]", f, i), ip); err != nil {
			return err
		}
	}
	if len(a.GetServices()) > maxAlertList {
		return invalid(f+".services", "more than %d services", maxAlertList)
	}
	for i, sv := range a.GetServices() {
		if err := checkPortProto(fmt.Sprintf("%s.services[%d]", f, i), sv.GetProtocol(), sv.GetPort()); err != nil {
			return err
		}
	}
	if err := checkEvidence(f, a); err != nil {
		return err
	}
	return checkEnum(f+".state", a.GetState())
}

// maxAlertList bounds an alert's peers and services: a sensor lists at
// most 64 and counts the rest.
const maxAlertList = 64

// checkEvidence bounds an alert's scan and login evidence: list lengths
// and text lengths.
func checkEvidence(f string, a *medmeshv1.Alert) error {
	texts := func(field string, list []string, ip bool) error {
		if len(list) > maxAlertList {
			return invalid(field, "more than %d entries", maxAlertList)
		}
		for i, s := range list {
			if len(s) > maxTextField {
				return invalid(fmt.Sprintf("%s[%d]", field, i), "longer than %d bytes", maxTextField)
			}
			if ip {
				if err := checkIP(fmt.Sprintf("%s[%d]", field, i), s); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if sc := a.GetScan(); sc != nil {
		for _, c := range []struct {
			field string
			list  []string
			ip    bool
		}{{".scan.patterns", sc.GetPatterns(), false}, {".scan.methods", sc.GetMethods(), false}} {
			if err := texts(f+c.field, c.list, c.ip); err != nil {
				return err
			}
		}
	}
	if l := a.GetLogin(); l != nil {
		for _, c := range []struct{ field, s string }{{".login.protocol", l.GetProtocol()}, {".login.method", l.GetMethod()},
			{".login.account", l.GetAccount()}, {".login.outcome", l.GetOutcome()}} {
			if len(c.s) > maxTextField {
				return invalid(f+c.field, "longer than %d bytes", maxTextField)
			}
		}
		if err := texts(f+".login.accounts", l.GetAccounts(), false); err != nil {
			return err
		}
	}
	return nil
}

func checkFlowSummary(f string, s *medmeshv1.FlowSummary) error {
	if err := optionalMAC(f+".device_mac", &s.DeviceMac); err != nil {
		return err
	}
	if err := checkIP(f+".device_ip", s.GetDeviceIp()); err != nil {
		return err
	}
	if err := checkIP(f+".peer_ip", s.GetPeerIp()); err != nil {
		return err
	}
	if err := checkPortProto(f, s.GetProtocol(), s.GetPort()); err != nil {
		return err
	}
	return checkEnum(f+".direction", s.GetDirection())
}
