package fsm

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// MaxFindingsPerDevice bounds the findings a device's posture keeps, most
// urgent first; the rest are counted in DevicePosture.truncated.
const MaxFindingsPerDevice = 256

// riskState is the replicated risk posture: the active intelligence
// bundle (its digest and description; the bundle itself is kept out of
// Raft), the SBOMs attached to device models, and every device's posture.
// Values are immutable once stored.
type riskState struct {
	intel    *medmeshv1.IntelBundle
	sboms    map[string]*medmeshv1.SBOMAttachment // by sbomKey
	postures map[string]*medmeshv1.DevicePosture  // by device MAC
}

func newRiskState() riskState {
	return riskState{sboms: map[string]*medmeshv1.SBOMAttachment{}, postures: map[string]*medmeshv1.DevicePosture{}}
}

func (r riskState) copy() riskState {
	c := riskState{intel: r.intel, sboms: make(map[string]*medmeshv1.SBOMAttachment, len(r.sboms)), postures: make(map[string]*medmeshv1.DevicePosture, len(r.postures))}
	for k, v := range r.sboms {
		c.sboms[k] = v
	}
	for k, v := range r.postures {
		c.postures[k] = v
	}
	return c
}

// SBOMKey is how an attachment is keyed: vendor, model and version,
// case-folded and trimmed. Devices look their SBOM up the same way.
func SBOMKey(vendor, model, version string) string {
	norm := func(s string) string { return strings.Join(strings.Fields(strings.ToLower(s)), " ") }
	return norm(vendor) + "\x00" + norm(model) + "\x00" + norm(version)
}

func isDigest(s string) bool {
	return len(s) == 64 && strings.Trim(s, "0123456789abcdef") == ""
}

func (s *state) applyIntelActivate(index uint64, now *timestamppb.Timestamp, c *fsmpb.IntelActivate) *Result {
	b := c.GetBundle()
	if !isDigest(b.GetDigest()) {
		return &Result{Err: fmt.Errorf("bundle digest %q: want 64 lower-case hex digits: %w", b.GetDigest(), ErrInvalid)}
	}
	nb := proto.CloneOf(b)
	nb.ActivatedBy, nb.ActivateTime, nb.Index = c.GetActor(), now, index
	prev := "none"
	if s.risk.intel != nil {
		prev = s.risk.intel.GetDigest()
	}
	s.risk.intel = nb
	s.appendAudit(index, now, c.GetActor(), "intel.activate", "intel/"+nb.GetDigest(),
		c.GetReason(), "", "", joinComment(c.GetComment(), fmt.Sprintf("bundle %q, %d files, signed %v, previous %s", nb.GetName(), nb.GetFiles(), nb.GetSigned(), prev)))
	s.riskAll = true
	return &Result{Intel: nb}
}

func (s *state) applySBOMAttach(index uint64, now *timestamppb.Timestamp, c *fsmpb.SBOMAttach) *Result {
	a := c.GetAttachment()
	if strings.TrimSpace(a.GetVendor()) == "" || strings.TrimSpace(a.GetModel()) == "" {
		return &Result{Err: fmt.Errorf("sbom attachment: vendor and model are required: %w", ErrInvalid)}
	}
	if !isDigest(a.GetDigest()) {
		return &Result{Err: fmt.Errorf("sbom digest %q: want 64 lower-case hex digits: %w", a.GetDigest(), ErrInvalid)}
	}
	na := proto.CloneOf(a)
	na.AttachedBy, na.AttachTime, na.Index = c.GetActor(), now, index
	s.risk.sboms[SBOMKey(a.GetVendor(), a.GetModel(), a.GetVersion())] = na
	what := strings.TrimSpace(a.GetVendor() + "/" + a.GetModel() + "/" + a.GetVersion())
	s.appendAudit(index, now, c.GetActor(), "sbom.attach", "sbom/"+what, c.GetReason(), "", "",
		joinComment(c.GetComment(), fmt.Sprintf("%s %q, sha256 %s, %d components", na.GetFormat(), na.GetName(), na.GetDigest(), na.GetComponents())))
	s.riskAll = true
	return &Result{SBOM: na}
}

func joinComment(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// applyFindingsPut replaces the postures it carries, each wholesale. A
// posture for a device that is not in the inventory, or matched against a
// bundle that is not the active one, is skipped: the leader assesses the
// device again from what is committed.
func (s *state) applyFindingsPut(index uint64, c *fsmpb.FindingsPut) *Result {
	active := s.risk.intel.GetDigest()
	for _, p := range c.GetPostures() {
		mac := p.GetDeviceMac()
		if s.devices[mac] == nil || p.GetBundleDigest() != active {
			continue
		}
		np := proto.CloneOf(p)
		if n := len(np.Findings); n > MaxFindingsPerDevice {
			np.Truncated += uint32(n - MaxFindingsPerDevice)
			np.Findings = np.Findings[:MaxFindingsPerDevice]
		}
		np.Index = index
		s.risk.postures[mac] = np
	}
	return &Result{}
}

// markRisk notes that a device changed, for the leader's assessor
// (FSM.TakeRiskChanges). Not replicated state.
func (s *state) markRisk(mac string) {
	if s.riskDirty == nil {
		s.riskDirty = map[string]bool{}
	}
	s.riskDirty[mac] = true
}

// TakeRiskChanges returns the devices changed since the last call and
// whether everything must be assessed again (a bundle or SBOM changed, a
// snapshot was restored), and forgets them. Every replica collects them as
// it applies the log; the leader's assessor consumes them, the others
// discard them.
func (f *FSM) TakeRiskChanges() (macs []string, all bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	macs, all = sortedKeys(f.riskDirty), f.riskAll
	f.riskDirty, f.riskAll = nil, false
	return macs, all
}

// RiskChanged is signalled (without blocking) after an apply that changed
// something the risk assessment reads.
func (f *FSM) RiskChanged() <-chan struct{} { return f.riskCh }

// collectRiskLocked moves the apply's risk changes into the FSM's pending
// set and signals the assessor.
func (f *FSM) collectRiskLocked() {
	st := f.st
	if len(st.riskDirty) == 0 && !st.riskAll {
		return
	}
	if f.riskDirty == nil {
		f.riskDirty = map[string]bool{}
	}
	if !f.riskAll {
		for mac := range st.riskDirty {
			f.riskDirty[mac] = true
		}
	}
	if st.riskAll {
		f.riskAll, f.riskDirty = true, map[string]bool{}
	}
	st.riskDirty, st.riskAll = nil, false
	select {
	case f.riskCh <- struct{}{}:
	default:
	}
}

// ActiveIntel is the active bundle, or nil.
func (f *FSM) ActiveIntel() *medmeshv1.IntelBundle {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.risk.intel
}

// SBOMs lists the SBOM attachments by vendor, model and version.
func (f *FSM) SBOMs() []*medmeshv1.SBOMAttachment {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*medmeshv1.SBOMAttachment, 0, len(f.st.risk.sboms))
	for _, k := range sortedKeys(f.st.risk.sboms) {
		out = append(out, f.st.risk.sboms[k])
	}
	return out
}

// SBOMFor is the SBOM attached to a device model: the one for its exact
// version, else the one for the model without a version; nil if none.
func (f *FSM) SBOMFor(vendor, model, version string) *medmeshv1.SBOMAttachment {
	if strings.TrimSpace(vendor) == "" || strings.TrimSpace(model) == "" {
		return nil
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if version != "" {
		if a := f.st.risk.sboms[SBOMKey(vendor, model, version)]; a != nil {
			return a
		}
	}
	return f.st.risk.sboms[SBOMKey(vendor, model, "")]
}

// Posture is a device's committed posture, or nil.
func (f *FSM) Posture(mac string) *medmeshv1.DevicePosture {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.risk.postures[mac]
}

// Postures returns every committed posture ordered by MAC, and the applied
// index.
func (f *FSM) Postures() ([]*medmeshv1.DevicePosture, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*medmeshv1.DevicePosture, 0, len(f.st.risk.postures))
	for _, k := range sortedKeys(f.st.risk.postures) {
		out = append(out, f.st.risk.postures[k])
	}
	return out, f.st.applied
}

// PosturesChanged returns the postures committed after (afterIndex,
// afterMAC) in (index, mac) order, and the applied index: one FindingsPut
// commits many devices at one index.
func (f *FSM) PosturesChanged(afterIndex uint64, afterMAC string) ([]*medmeshv1.DevicePosture, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*medmeshv1.DevicePosture
	for _, p := range f.st.risk.postures {
		if p.Index > afterIndex || (p.Index == afterIndex && p.DeviceMac > afterMAC) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Index < out[j].Index || (out[i].Index == out[j].Index && out[i].DeviceMac < out[j].DeviceMac)
	})
	return out, f.st.applied
}

// Devices returns every device ordered by MAC.
func (f *FSM) Devices() []*medmeshv1.Device {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*medmeshv1.Device, 0, len(f.st.devices))
	for _, k := range sortedKeys(f.st.devices) {
		out = append(out, f.st.devices[k])
	}
	return out
}

// writeRisk appends the risk state's snapshot items, in a fixed order.
func (r riskState) write(put func(*fsmpb.SnapshotItem) error) error {
	if r.intel != nil {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Intel{Intel: r.intel}}); err != nil {
			return err
		}
	}
	for _, k := range sortedKeys(r.sboms) {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Sbom{Sbom: r.sboms[k]}}); err != nil {
			return err
		}
	}
	for _, k := range sortedKeys(r.postures) {
		if err := put(&fsmpb.SnapshotItem{Item: &fsmpb.SnapshotItem_Posture{Posture: r.postures[k]}}); err != nil {
			return err
		}
	}
	return nil
}
