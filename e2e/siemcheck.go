package e2e

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/medmesh/medmesh/internal/testutil/siem"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// CheckSIEM checks what rsyslogd received against the cluster's alerts and
// audit trail (read after it): each event says what its alert or record
// says, and no id is foreign. Audit ids are sequence numbers in the trail
// (audit/SEQ): the retained records, oldest first, must map onto them
// with one offset (what retention evicted before them).
func CheckSIEM(got *siem.Received, alerts []*medmeshv1.Alert, audit []*medmeshv1.AuditRecord) []string {
	var v []string
	byID := map[string]*medmeshv1.Alert{}
	for _, a := range alerts {
		byID["alert/"+a.GetId()] = a
	}
	type auditEv struct {
		seq uint64
		ev  *siem.CEF
	}
	var audits []auditEv
	for _, id := range sortedIDs(got.ByID) {
		ev := got.ByID[id]
		switch kind, rest, _ := strings.Cut(id, "/"); kind {
		case "alert":
			a := byID[id]
			if a == nil {
				v = append(v, "rsyslogd has "+id+", no alert of the cluster")
				continue
			}
			if ev.Ext["cat"] != "alert" || ev.ClassID != a.GetKind() || ev.Ext["cs4"] != a.GetId() || ev.Ext["cn1"] != strconv.FormatUint(a.GetIndex(), 10) ||
				ev.Ext["cn2"] != strconv.FormatUint(uint64(a.GetRisk().GetScore()), 10) || ev.Ext["smac"] != a.GetDeviceMac() || ev.Ext["msg"] != a.GetSummary() {
				v = append(v, fmt.Sprintf("%s: CEF %v does not say what the alert says (kind %s, index %d, score %d, mac %s, summary %q)",
					id, ev.Ext, a.GetKind(), a.GetIndex(), a.GetRisk().GetScore(), a.GetDeviceMac(), a.GetSummary()))
			}
		case "audit":
			seq, err := strconv.ParseUint(rest, 10, 64)
			if err != nil || seq == 0 || ev.Ext["cat"] != "audit" {
				v = append(v, "rsyslogd has "+id+", not an audit sequence number")
				continue
			}
			audits = append(audits, auditEv{seq, ev})
		default:
			v = append(v, "rsyslogd has "+id+", neither an alert nor an audit record")
		}
	}
	same := func(ev *siem.CEF, r *medmeshv1.AuditRecord) bool {
		return ev.Ext["act"] == r.GetAction() && ev.Ext["suser"] == r.GetActor() && ev.Ext["cs1"] == r.GetResource() &&
			ev.Ext["msg"] == r.GetReason() && ev.Ext["cn1"] == strconv.FormatUint(r.GetIndex(), 10)
	}
	if len(audits) == 0 {
		return append(v, "no audit record reached rsyslogd (the sink's own sink.put at least)")
	}
	// The offset: the first received record's place in the trail.
	best, bestBad := -1, []string(nil)
	for p, rec := range audit {
		if !same(audits[0].ev, rec) || audits[0].seq < uint64(p+1) {
			continue
		}
		off := audits[0].seq - uint64(p+1)
		var mis []string
		for _, a := range audits {
			i := a.seq - off - 1
			if a.seq <= off || i >= uint64(len(audit)) {
				mis = append(mis, fmt.Sprintf("audit/%d: no such record in the trail", a.seq))
			} else if !same(a.ev, audit[i]) {
				mis = append(mis, fmt.Sprintf("audit/%d: CEF %v does not say what record %d says (%v)", a.seq, a.ev.Ext, a.seq, audit[i]))
			}
		}
		if best < 0 || len(mis) < len(bestBad) {
			best, bestBad = p, mis
		}
	}
	if best < 0 {
		return append(v, fmt.Sprintf("audit/%d (%v) is no audit record of the cluster", audits[0].seq, audits[0].ev.Ext))
	}
	if len(bestBad) > 10 {
		bestBad = append(bestBad[:10], fmt.Sprintf("and %d more", len(bestBad)-10))
	}
	return append(v, bestBad...)
}

// sortedIDs orders event ids by kind, then by number where they end in one.
func sortedIDs(m map[string]*siem.CEF) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		ka, ra, _ := strings.Cut(a, "/")
		kb, rb, _ := strings.Cut(b, "/")
		if c := strings.Compare(ka, kb); c != 0 {
			return c
		}
		na, ea := strconv.ParseUint(ra, 10, 64)
		nb, eb := strconv.ParseUint(rb, 10, 64)
		if ea == nil && eb == nil && na != nb {
			if na < nb {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	return ids
}
