// Package plan ranks remediation actions: the ones that remove the most risk for the least work first.
//
// Every device brings its risk (its posture score, 0-100) and the items
// that make it (findings, and issues the sensors observed), each with a
// weight. An action closes items on its devices (a compensating control
// halves them); the risk it removes from a device is the device's risk
// times the share of the device's item weight it closes. The plan is
// greedy: repeatedly take the action with the most risk removed per
// effort point, given what earlier actions already closed; ties go to the
// larger drop, then the kind (in Kinds order), then the id. The same input
// gives the same plan.
package plan

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Item is one thing that makes a device risky.
type Item struct {
	// Key is unique within the device, e.g. "CVE-2024-1234",
	// "cleartext:hl7", "alert:s1/7".
	Key string
	// FindingID is the risk finding's id, if the item is one.
	FindingID string
	Weight    float64
	// Kinds the item is closed by, and the share each closes (1 closes it,
	// 0.5 halves it).
	Kinds map[medmeshv1.RemediationKind]float64
	// Fixed is the fixed version, for patch items.
	Fixed string
}

// Device is one device's risk and items.
type Device struct {
	MAC   string
	Label string // "vendor model" or the MAC: devices of one label are one action
	Tier  medmeshv1.Tier
	Risk  float64
	Items []Item
}

// Effort points per device, and per group for segmentation (one policy
// per group, generated and simulated once).
var Effort = map[medmeshv1.RemediationKind]struct {
	PerDevice, PerGroup uint32
	Words               string
}{
	medmeshv1.RemediationKind_REMEDIATION_KIND_CHANGE_CREDENTIALS:   {1, 0, "change the password on each device"},
	medmeshv1.RemediationKind_REMEDIATION_KIND_PATCH:                {2, 0, "vendor-validated update on each device"},
	medmeshv1.RemediationKind_REMEDIATION_KIND_SEGMENT:              {0, 2, "generate, simulate and activate one least-privilege policy"},
	medmeshv1.RemediationKind_REMEDIATION_KIND_ENABLE_TLS:           {3, 0, "configure TLS (or SSH/SFTP) and certificates on each device and its peers"},
	medmeshv1.RemediationKind_REMEDIATION_KIND_COMPENSATING_CONTROL: {2, 0, "restrict the device to its required peers and monitor it, where it cannot be patched"},
	medmeshv1.RemediationKind_REMEDIATION_KIND_REPLACE:              {8, 0, "procure, validate and swap each device"},
}

// Kinds in tie-break order: cheaper, less disruptive first.
var Kinds = []medmeshv1.RemediationKind{
	medmeshv1.RemediationKind_REMEDIATION_KIND_CHANGE_CREDENTIALS,
	medmeshv1.RemediationKind_REMEDIATION_KIND_PATCH,
	medmeshv1.RemediationKind_REMEDIATION_KIND_SEGMENT,
	medmeshv1.RemediationKind_REMEDIATION_KIND_ENABLE_TLS,
	medmeshv1.RemediationKind_REMEDIATION_KIND_COMPENSATING_CONTROL,
	medmeshv1.RemediationKind_REMEDIATION_KIND_REPLACE,
}

var kindWord = map[medmeshv1.RemediationKind]string{
	medmeshv1.RemediationKind_REMEDIATION_KIND_CHANGE_CREDENTIALS:   "change-credentials",
	medmeshv1.RemediationKind_REMEDIATION_KIND_PATCH:                "patch",
	medmeshv1.RemediationKind_REMEDIATION_KIND_SEGMENT:              "segment",
	medmeshv1.RemediationKind_REMEDIATION_KIND_ENABLE_TLS:           "enable-tls",
	medmeshv1.RemediationKind_REMEDIATION_KIND_COMPENSATING_CONTROL: "compensating-control",
	medmeshv1.RemediationKind_REMEDIATION_KIND_REPLACE:              "replace",
}

// KindName is the plan's word for k ("patch", "enable-tls", ...).
func KindName(k medmeshv1.RemediationKind) string { return kindWord[k] }

type candidate struct {
	kind  medmeshv1.RemediationKind
	label string
	fixed string
	id    string
	devs  []int // indexes into the devices
}

// Rank returns the actions, first to do first. Actions carry no
// control_ids: the caller knows which controls the items stand behind.
func Rank(devices []Device) (actions []*medmeshv1.RemediationAction, campusRisk float64) {
	total := make([]float64, len(devices))
	remaining := make([][]float64, len(devices))
	for i, d := range devices {
		campusRisk += d.Risk
		remaining[i] = make([]float64, len(d.Items))
		for j, it := range d.Items {
			total[i] += it.Weight
			remaining[i][j] = it.Weight
		}
	}
	// Candidates: one per kind and device label (patch: and fixed version).
	byID := map[string]*candidate{}
	for i, d := range devices {
		for _, it := range d.Items {
			for k := range it.Kinds {
				fixed := ""
				if k == medmeshv1.RemediationKind_REMEDIATION_KIND_PATCH {
					fixed = it.Fixed
				}
				id := kindWord[k] + ":" + d.Label
				if fixed != "" {
					id += "@" + fixed
				}
				c := byID[id]
				if c == nil {
					c = &candidate{kind: k, label: d.Label, fixed: fixed, id: id}
					byID[id] = c
				}
				if !slices.Contains(c.devs, i) {
					c.devs = append(c.devs, i)
				}
			}
		}
	}
	cands := make([]*candidate, 0, len(byID))
	for _, c := range byID {
		cands = append(cands, c)
	}
	slices.SortFunc(cands, func(a, b *candidate) int { return strings.Compare(a.id, b.id) })

	closes := func(c *candidate, it Item) float64 {
		share := it.Kinds[c.kind]
		if c.kind == medmeshv1.RemediationKind_REMEDIATION_KIND_PATCH && it.Fixed != c.fixed {
			return 0
		}
		return share
	}
	drop := func(c *candidate) float64 {
		var sum float64
		for _, i := range c.devs {
			if total[i] == 0 {
				continue
			}
			var w float64
			for j, it := range devices[i].Items {
				w += remaining[i][j] * closes(c, it)
			}
			sum += devices[i].Risk * w / total[i]
		}
		return sum
	}
	effort := func(c *candidate) uint32 {
		e := Effort[c.kind]
		return e.PerGroup + e.PerDevice*uint32(len(c.devs))
	}
	kindRank := func(k medmeshv1.RemediationKind) int { return slices.Index(Kinds, k) }
	used := map[string]bool{}
	for {
		var best *candidate
		var bestDrop float64
		for _, c := range cands {
			if used[c.id] {
				continue
			}
			d := drop(c)
			if d <= 1e-9 {
				continue
			}
			if best == nil {
				best, bestDrop = c, d
				continue
			}
			r, br := d/float64(effort(c)), bestDrop/float64(effort(best))
			if cmp.Or(-compareFloat(r, br), -compareFloat(d, bestDrop), cmp.Compare(kindRank(c.kind), kindRank(best.kind)), strings.Compare(c.id, best.id)) < 0 {
				best, bestDrop = c, d
			}
		}
		if best == nil {
			break
		}
		used[best.id] = true
		a := &medmeshv1.RemediationAction{Id: best.id, Kind: best.kind, ExpectedRiskDrop: round2(bestDrop), Rank: uint32(len(actions) + 1), Effort: effort(best)}
		var lifeCritical int
		for _, i := range best.devs {
			d := devices[i]
			closedHere := false
			for j, it := range d.Items {
				s := closes(best, it)
				if s == 0 || remaining[i][j] == 0 {
					continue
				}
				closedHere = true
				remaining[i][j] *= 1 - s
				if it.FindingID != "" && !slices.Contains(a.FindingIds, it.FindingID) {
					a.FindingIds = append(a.FindingIds, it.FindingID)
				}
			}
			if closedHere {
				a.DeviceMacs = append(a.DeviceMacs, d.MAC)
				if d.Tier == medmeshv1.Tier_TIER_LIFE_CRITICAL || d.Tier == medmeshv1.Tier_TIER_UNSPECIFIED {
					lifeCritical++
				}
			}
		}
		slices.Sort(a.FindingIds)
		e := Effort[best.kind]
		a.Title = title(best, len(a.DeviceMacs))
		a.EffortDetail = fmt.Sprintf("%s: %d point(s)", e.Words, a.Effort)
		pct := 0.0
		if campusRisk > 0 {
			pct = 100 * bestDrop / campusRisk
		}
		a.Explanation = fmt.Sprintf("removes %.2f of the campus's %.2f risk points (%.1f%%) for %d effort point(s): %.2f per point, the most of the actions left after the %d before it (ties: larger drop, then kind, then id)",
			bestDrop, campusRisk, pct, a.Effort, bestDrop/float64(a.Effort), len(actions))
		if lifeCritical > 0 {
			a.Explanation += fmt.Sprintf("; %d life-critical (or unknown-tier) device(s): schedule with clinical engineering, and a policy for them is never enforced without an operator", lifeCritical)
		}
		actions = append(actions, a)
	}
	return actions, round2(campusRisk)
}

func title(c *candidate, n int) string {
	switch c.kind {
	case medmeshv1.RemediationKind_REMEDIATION_KIND_PATCH:
		return fmt.Sprintf("Update %s to %s (%d device(s))", c.label, c.fixed, n)
	case medmeshv1.RemediationKind_REMEDIATION_KIND_REPLACE:
		return fmt.Sprintf("Replace %s: end of life or recalled (%d device(s))", c.label, n)
	case medmeshv1.RemediationKind_REMEDIATION_KIND_CHANGE_CREDENTIALS:
		return fmt.Sprintf("Change default or exposed credentials on %s (%d device(s))", c.label, n)
	case medmeshv1.RemediationKind_REMEDIATION_KIND_ENABLE_TLS:
		return fmt.Sprintf("Move %s's clear-text protocols to TLS 1.2+ or SSH/SFTP (%d device(s))", c.label, n)
	case medmeshv1.RemediationKind_REMEDIATION_KIND_SEGMENT:
		return fmt.Sprintf("Segment %s with a least-privilege policy (%d device(s))", c.label, n)
	default:
		return fmt.Sprintf("Compensating control for %s: restrict to required peers and monitor (%d device(s))", c.label, n)
	}
}

func compareFloat(a, b float64) int {
	const eps = 1e-9
	switch {
	case a < b-eps:
		return -1
	case a > b+eps:
		return 1
	}
	return 0
}

func round2(x float64) float64 {
	return float64(int64(x*100+0.5)) / 100
}
