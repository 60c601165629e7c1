package sink

import (
	"strconv"
	"strings"

	"github.com/medmesh/medmesh/internal/names"
)

// CEF (ArcSight Common Event Format, version 0):
//
//	CEF:0|Vendor|Product|Version|Event Class ID|Name|Severity|Extension
//
// Header fields escape \ and |; extension values escape \ and = and carry
// newlines as \n and \r. Keys are the spec's dictionary names; the custom
// string fields cs1..cs6 have labels.

var (
	cefHeader = strings.NewReplacer(`\`, `\\`, `|`, `\|`, "\r", " ", "\n", " ")
	cefValue  = strings.NewReplacer(`\`, `\\`, `=`, `\=`, "\n", `\n`, "\r", `\r`)
)

type cefExt struct {
	b strings.Builder
}

func (x *cefExt) add(key, value string) {
	if value == "" {
		return
	}
	if x.b.Len() > 0 {
		x.b.WriteByte(' ')
	}
	x.b.WriteString(key)
	x.b.WriteByte('=')
	x.b.WriteString(cefValue.Replace(value))
}

func (x *cefExt) label(n int, label, value string) {
	if value == "" {
		return
	}
	k := "cs" + strconv.Itoa(n)
	x.add(k+"Label", label)
	x.add(k, value)
}

// CEF renders an event as one CEF line (no newline): host is the
// coordinator that sent it, version medmesh's.
func CEF(e Event, host, version string) string {
	var class, name string
	var x cefExt
	x.add("externalId", e.ID)
	x.add("rt", strconv.FormatInt(e.Time().UnixMilli(), 10))
	x.add("dvchost", host)
	x.add("cn1Label", "raftIndex")
	x.add("cn1", strconv.FormatUint(e.Index(), 10))
	if a := e.Alert; a != nil {
		class = a.GetKind()
		name = a.GetSummary()
		if name == "" {
			name = a.GetKind()
		}
		x.add("cat", "alert")
		x.add("smac", a.GetDeviceMac())
		if f := a.GetFlow(); f != nil {
			x.add("src", f.GetSrc())
			x.add("dst", f.GetDst())
			if f.GetSport() != 0 {
				x.add("spt", strconv.FormatUint(uint64(f.GetSport()), 10))
			}
			if f.GetDport() != 0 {
				x.add("dpt", strconv.FormatUint(uint64(f.GetDport()), 10))
			}
			if f.GetProto() != 0 {
				x.add("proto", protoName(f.GetProto()))
			}
			x.add("app", f.GetApp())
		}
		x.add("dhost", a.GetPeerName())
		x.add("msg", a.GetSummary())
		x.add("deviceExternalId", a.GetSensorId())
		x.add("cn2Label", "riskScore")
		x.add("cn2", strconv.FormatUint(uint64(a.GetRisk().GetScore()), 10))
		x.label(1, "deviceClass", names.Enum(a.GetDeviceClass()))
		x.label(2, "tier", names.Enum(a.GetTier()))
		x.label(3, "incident", a.GetIncidentId())
		x.label(4, "alertId", a.GetId())
	} else if p := e.Posture; p != nil {
		class, name = cefFinding(&x, e)
	} else {
		r := e.Audit
		class = r.GetAction()
		name = "medmesh " + r.GetAction() + " " + r.GetResource()
		x.add("cat", "audit")
		x.add("act", r.GetAction())
		x.add("suser", r.GetActor())
		x.add("msg", r.GetReason())
		x.label(1, "resource", r.GetResource())
		x.label(2, "rule", r.GetRule())
		x.label(3, "alertId", r.GetAlertId())
		x.label(4, "requestId", r.GetRequestId())
		x.label(5, "comment", r.GetComment())
	}
	return "CEF:0|medmesh|medmesh|" + cefHeader.Replace(version) + "|" + cefHeader.Replace(class) + "|" +
		cefHeader.Replace(name) + "|" + strconv.Itoa(e.cefSeverity()) + "|" + x.b.String()
}

// cefFinding writes a risk finding's extension: the device (MAC, first
// address, hostname), the finding's id, CVE and advisory, its CVSS, and
// what it concerns (the account and protocol of default credentials, never
// a password; the component of a vulnerability; the recall number). It
// returns the event class ("finding:" and the kind) and the name.
func cefFinding(x *cefExt, e Event) (class, name string) {
	p, f := e.Posture, e.Finding
	class = "finding:" + f.GetKind()
	name = f.GetSummary()
	if name == "" {
		name = f.GetKind() + " " + f.GetId()
	}
	x.add("cat", "finding")
	x.add("smac", p.GetDeviceMac())
	if len(e.IPs) > 0 {
		x.add("src", e.IPs[0])
	}
	x.add("shost", p.GetHostname())
	x.add("msg", f.GetSummary())
	x.add("app", f.GetProtocol())
	x.add("cn2Label", "riskScore")
	x.add("cn2", strconv.FormatUint(uint64(p.GetScore().GetScore()), 10))
	if c := f.GetCvss(); c > 0 {
		x.add("cfp1Label", "cvss")
		x.add("cfp1", strconv.FormatFloat(c, 'f', 1, 64))
	}
	x.label(1, "findingId", f.GetId())
	if strings.HasPrefix(f.GetId(), "CVE-") {
		x.label(2, "cve", f.GetId())
	}
	x.label(3, "advisory", f.GetSource())
	x.label(4, "tier", names.Enum(p.GetTier()))
	switch {
	case f.GetAccount() != "":
		x.label(5, "account", f.GetAccount())
	case f.GetComponent() != "":
		x.label(5, "component", f.GetComponent())
	case f.GetRecallNumber() != "":
		x.label(5, "recall", f.GetRecallNumber())
	case f.GetEolDate() != "":
		x.label(5, "eolDate", f.GetEolDate())
	}
	x.label(6, "suppressed", f.GetSuppressed())
	return class, name
}
