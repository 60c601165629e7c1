package fsm

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/incident"
	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Incidents. Inside the apply of every new alert, before the response
// rules see it, the alert folds into an incident:
//
//   - The alert's participants are the device that acted (its source: the
//     alert's device when it initiated the flow, else the flow's other end
//     if that is a known device) and the devices acted upon (its targets:
//     the other end, or the alert's device when it accepted the flow, and
//     the known devices among a scan's peers). Addresses resolve to a
//     device only when exactly one device holds them.
//   - An alert joins the open incident about its source (one where the
//     source is the incident's device or a source), the most recently
//     updated, if that incident's last alert is at most the window old
//     (leader time). An alert without a known source (a scan from the
//     internet, a sensor that saw only one end) joins the open incident
//     about one of its targets the same way. Otherwise it opens an
//     incident about its source (or first target).
//   - Targets join as AFFECTED and never pull their incident into another
//     one: two scanners of one victim are two incidents. A victim that
//     starts acting opens an incident of its own (with its own decisions:
//     a rule that quarantined the first attacker must still quarantine
//     the second), which names the incidents the victim was affected in
//     (related_incident_ids: a lateral movement may link them).
//   - An incident closes at the first entry applied more than the window
//     after its last alert.
//
// Every time is the leader's (Command.time); every list is sorted; the
// indexes below are functions of the incidents alone, rebuilt on restore,
// so every replica folds the same alerts into the same incidents.

// Bounds of one incident: the story's beginning is kept, counts go on.
const (
	maxStepAlerts    = 100 // alert ids per timeline step
	maxIncidentItems = 64  // devices, peers, ports per incident
)

// incKey orders incidents by a time, then id.
type incKey struct {
	ns int64
	id string
}

func cmpIncKey(a, b incKey) int {
	if a.ns != b.ns {
		if a.ns < b.ns {
			return -1
		}
		return 1
	}
	return strings.Compare(a.id, b.id)
}

// incChange is an incident's change at a Raft index (the watch order).
type incChange struct {
	index uint64
	id    string
}

// incidentStore holds the incidents (replicated, in snapshots) and the
// indexes derived from them (rebuilt on restore).
type incidentStore struct {
	byID map[string]*medmeshv1.Incident

	open    []incKey            // open incidents by (last alert time, id): closing order
	closed  []incKey            // closed incidents by (close time, id): eviction order
	member  map[string][]string // device MAC -> open incidents it is in (sorted ids)
	changes []incChange         // by index; an entry is live while its incident's Index equals it
}

func newIncidentStore() incidentStore {
	return incidentStore{byID: map[string]*medmeshv1.Incident{}, member: map[string][]string{}}
}

func nanos(t *timestamppb.Timestamp) int64 { return t.AsTime().UnixNano() }

// incidentID derives an incident's id from its first alert's.
func incidentID(alertID string) string {
	h := sha256.Sum256([]byte("incident\x00" + alertID))
	return "inc-" + hex.EncodeToString(h[:8])
}

func insertKey(keys []incKey, k incKey) []incKey {
	i, _ := slices.BinarySearchFunc(keys, k, cmpIncKey)
	return slices.Insert(keys, i, k)
}

func deleteKey(keys []incKey, k incKey) []incKey {
	if i, ok := slices.BinarySearchFunc(keys, k, cmpIncKey); ok {
		return slices.Delete(keys, i, i+1)
	}
	return keys
}

func (st *incidentStore) join(mac, id string) {
	if mac == "" {
		return
	}
	ids := st.member[mac]
	if i, ok := slices.BinarySearch(ids, id); !ok {
		st.member[mac] = slices.Insert(ids, i, id)
	}
}

func (st *incidentStore) leave(mac, id string) {
	ids := st.member[mac]
	if i, ok := slices.BinarySearch(ids, id); ok {
		ids = slices.Delete(ids, i, i+1)
		if len(ids) == 0 {
			delete(st.member, mac)
		} else {
			st.member[mac] = ids
		}
	}
}

// changed records that inc (already stored) changed at its Index.
func (st *incidentStore) changed(inc *medmeshv1.Incident) {
	st.changes = append(st.changes, incChange{index: inc.Index, id: inc.Id})
	if len(st.changes) > 2*len(st.byID)+1024 {
		st.rebuildChanges()
	}
}

func (st *incidentStore) rebuildChanges() {
	out := make([]incChange, 0, len(st.byID))
	for id, inc := range st.byID {
		out = append(out, incChange{index: inc.Index, id: id})
	}
	slices.SortFunc(out, func(a, b incChange) int {
		if a.index != b.index {
			if a.index < b.index {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	st.changes = out
}

// rebuild derives the indexes from byID (after a restore).
func (st *incidentStore) rebuild() {
	st.open, st.closed, st.member = nil, nil, map[string][]string{}
	for _, id := range sortedKeys(st.byID) {
		inc := st.byID[id]
		if inc.GetState() == medmeshv1.IncidentState_INCIDENT_STATE_OPEN {
			st.open = append(st.open, incKey{nanos(inc.GetUpdateTime()), id})
			for _, d := range inc.GetDevices() {
				st.join(d.GetMac(), id)
			}
		} else {
			st.closed = append(st.closed, incKey{nanos(inc.GetCloseTime()), id})
		}
	}
	slices.SortFunc(st.open, cmpIncKey)
	slices.SortFunc(st.closed, cmpIncKey)
	st.rebuildChanges()
}

// mutableIncident returns inc to change at index: inc itself when this
// apply made it (readers have not seen it), else a copy, stored and
// recorded as changed at index.
func (s *state) mutableIncident(inc *medmeshv1.Incident, index uint64) *medmeshv1.Incident {
	if inc.Index == index {
		return inc
	}
	c := proto.CloneOf(inc)
	c.Index = index
	s.inc.byID[c.Id] = c
	s.inc.changed(c)
	return c
}

// participants of an alert: who acted and who was acted upon.
type participants struct {
	source  string   // MAC of the device that acted, or ""
	targets []string // MACs of the devices acted upon, sorted, without source
	peers   []string // every address the alert names
	ports   []string // service ports, "tcp/22"
}

func canonIP(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return ""
	}
	return a.Unmap().String()
}

// deviceAt is the one device holding address ip, or "".
func (s *state) deviceAt(ip string) string {
	if ip = canonIP(ip); ip == "" {
		return ""
	}
	if macs := s.deviceIPs[ip]; len(macs) == 1 {
		return macs[0]
	}
	return ""
}

func port(proto, port uint32) string {
	if proto == 0 && port == 0 {
		return ""
	}
	p := names.Protocol(proto)
	if port != 0 {
		p += "/" + strconv.FormatUint(uint64(port), 10)
	}
	return p
}

func (s *state) participants(a *medmeshv1.Alert) participants {
	dev, fl := a.GetDeviceMac(), a.GetFlow()
	srcIsDev := true
	switch a.GetDirection() {
	case medmeshv1.Direction_DIRECTION_OUTBOUND:
	case medmeshv1.Direction_DIRECTION_INBOUND:
		srcIsDev = false
	default:
		// No direction: the alert's device is the flow's end that holds
		// its address, else the end that is not another known device.
		src, dst := s.deviceAt(fl.GetSrc()), s.deviceAt(fl.GetDst())
		switch {
		case dev != "" && src == dev:
		case dev != "" && dst == dev:
			srcIsDev = false
		case src != "" && src != dev:
			srcIsDev = false
		}
	}
	var p participants
	peerIP := fl.GetDst()
	if !srcIsDev {
		peerIP = fl.GetSrc()
	}
	peer := s.deviceAt(peerIP)
	if peer == dev {
		peer = ""
	}
	if srcIsDev {
		p.source = dev
		p.targets = append(p.targets, peer)
		for _, ip := range a.GetPeers() {
			p.targets = append(p.targets, s.deviceAt(ip))
		}
	} else {
		p.source = peer
		p.targets = append(p.targets, dev)
	}
	p.targets = slices.DeleteFunc(p.targets, func(m string) bool { return m == "" || m == p.source })
	slices.Sort(p.targets)
	p.targets = slices.Compact(p.targets)

	for _, ip := range append([]string{fl.GetSrc(), fl.GetDst()}, a.GetPeers()...) {
		if ip = canonIP(ip); ip != "" {
			p.peers = append(p.peers, ip)
		}
	}
	if fl != nil {
		p.ports = append(p.ports, port(fl.GetProto(), fl.GetDport()))
	}
	for _, sv := range a.GetServices() {
		p.ports = append(p.ports, port(sv.GetProtocol(), sv.GetPort()))
	}
	p.ports = slices.DeleteFunc(p.ports, func(x string) bool { return x == "" })
	return p
}

// incidentFor is the open incident within the window about mac: one
// whose device is mac or in which mac is a source, the most recently
// updated (then the greatest id); nil if none.
func (s *state) incidentFor(now int64, mac string) *medmeshv1.Incident {
	var best *medmeshv1.Incident
	for _, id := range s.inc.member[mac] {
		inc := s.inc.byID[id]
		if inc == nil || now-nanos(inc.GetUpdateTime()) > int64(s.retention.IncidentWindow) {
			continue
		}
		if inc.GetDeviceMac() != mac && roleOf(inc, mac) != medmeshv1.IncidentRole_INCIDENT_ROLE_SOURCE {
			continue
		}
		if best == nil || cmpIncKey(incKey{nanos(inc.GetUpdateTime()), inc.Id}, incKey{nanos(best.GetUpdateTime()), best.Id}) > 0 {
			best = inc
		}
	}
	return best
}

// maxRelated bounds an incident's related incidents.
const maxRelated = 16

// related lists the open incidents within the window in which mac is
// affected (not about mac): where a victim that now acts was touched.
func (s *state) related(now int64, mac string) []string {
	var out []string
	for _, id := range s.inc.member[mac] { // sorted
		inc := s.inc.byID[id]
		if inc == nil || now-nanos(inc.GetUpdateTime()) > int64(s.retention.IncidentWindow) || inc.GetDeviceMac() == mac {
			continue
		}
		if len(out) < maxRelated {
			out = append(out, id)
		}
	}
	return out
}

func roleOf(inc *medmeshv1.Incident, mac string) medmeshv1.IncidentRole {
	if i, ok := slices.BinarySearchFunc(inc.GetDevices(), mac, cmpIncidentDevice); ok {
		return inc.Devices[i].GetRole()
	}
	return medmeshv1.IncidentRole_INCIDENT_ROLE_UNSPECIFIED
}

func cmpIncidentDevice(d *medmeshv1.IncidentDevice, mac string) int {
	return strings.Compare(d.GetMac(), mac)
}

// foldAlert folds a new alert into its incident (opening one if none
// fits), sets the alert's incident id, and returns the incident, mutable
// for the rest of this apply.
func (s *state) foldAlert(index uint64, now *timestamppb.Timestamp, a *medmeshv1.Alert) *medmeshv1.Incident {
	p := s.participants(a)
	t := nanos(now)
	var inc *medmeshv1.Incident
	if p.source != "" {
		inc = s.incidentFor(t, p.source)
	} else {
		for _, m := range p.targets {
			if inc = s.incidentFor(t, m); inc != nil {
				break
			}
		}
	}
	if inc == nil {
		primary := p.source
		if primary == "" && len(p.targets) > 0 {
			primary = p.targets[0]
		}
		inc = &medmeshv1.Incident{
			Id: incidentID(a.GetId()), DeviceMac: primary, State: medmeshv1.IncidentState_INCIDENT_STATE_OPEN,
			OpenTime: now, UpdateTime: now, OpenIndex: index, Index: index, Evidence: &medmeshv1.IncidentEvidence{},
			RelatedIncidentIds: s.related(t, primary),
		}
		for n := 1; s.inc.byID[inc.Id] != nil; n++ {
			// An alert id committed again after retention evicted it:
			// its incident gets an id of its own.
			inc.Id = incidentID(a.GetId() + "\x00" + uitoa(index) + "\x00" + strconv.Itoa(n))
		}
		s.inc.byID[inc.Id] = inc
		s.inc.changed(inc)
		s.inc.open = insertKey(s.inc.open, incKey{t, inc.Id})
	} else {
		inc = s.mutableIncident(inc, index)
		if old := nanos(inc.GetUpdateTime()); old != t {
			s.inc.open = insertKey(deleteKey(s.inc.open, incKey{old, inc.Id}), incKey{t, inc.Id})
		}
		inc.UpdateTime = now
	}
	s.addToIncident(inc, index, now, a, p)
	a.IncidentId = inc.Id
	return inc
}

func (s *state) addToIncident(inc *medmeshv1.Incident, index uint64, now *timestamppb.Timestamp, a *medmeshv1.Alert, p participants) {
	if p.source != "" {
		s.addIncidentDevice(inc, p.source, medmeshv1.IncidentRole_INCIDENT_ROLE_SOURCE, now)
	}
	for _, m := range p.targets {
		s.addIncidentDevice(inc, m, medmeshv1.IncidentRole_INCIDENT_ROLE_AFFECTED, now)
	}
	score := a.GetRisk().GetScore()

	// The timeline: one step per stage and technique, in the order they began.
	m := incident.StageOf(a.GetKind())
	i := slices.IndexFunc(inc.Timeline, func(st *medmeshv1.IncidentStep) bool {
		return st.Stage == m.Stage && st.GetAttack().GetTechniqueId() == m.Attack.GetTechniqueId()
	})
	if i < 0 {
		st := &medmeshv1.IncidentStep{Stage: m.Stage, FirstTime: now, FirstIndex: index}
		if m.Attack != nil {
			st.Attack = proto.CloneOf(m.Attack)
		}
		// Steps begun in one entry are ordered as an attack unfolds.
		i = len(inc.Timeline)
		for i > 0 && inc.Timeline[i-1].FirstIndex == index && incident.Rank(inc.Timeline[i-1].Stage) > incident.Rank(st.Stage) {
			i--
		}
		inc.Timeline = slices.Insert(inc.Timeline, i, st)
	}
	st := inc.Timeline[i]
	st.LastTime = now
	st.AlertCount++
	if len(st.AlertIds) < maxStepAlerts {
		st.AlertIds = append(st.AlertIds, a.GetId())
	}
	st.Kinds = addSorted(st.Kinds, a.GetKind(), 0)
	st.MaxScore = max(st.MaxScore, score)

	ev := inc.Evidence
	if ev == nil {
		ev = &medmeshv1.IncidentEvidence{}
		inc.Evidence = ev
	}
	ev.AlertCount++
	k, found := slices.BinarySearchFunc(ev.Kinds, a.GetKind(), func(kc *medmeshv1.KindCount, kind string) int { return strings.Compare(kc.Kind, kind) })
	if !found {
		ev.Kinds = slices.Insert(ev.Kinds, k, &medmeshv1.KindCount{Kind: a.GetKind()})
	}
	ev.Kinds[k].Count++
	own := s.devices[inc.GetDeviceMac()].GetIpAddresses()
	for _, x := range p.peers {
		if slices.ContainsFunc(own, func(y string) bool { return canonIP(y) == x }) {
			continue // the incident device's own address
		}
		n := len(ev.Peers)
		ev.Peers = addSorted(ev.Peers, x, maxIncidentItems)
		ev.MorePeers = ev.MorePeers || (n == maxIncidentItems && !slices.Contains(ev.Peers, x))
	}
	for _, x := range p.ports {
		n := len(ev.Ports)
		ev.Ports = addSorted(ev.Ports, x, maxIncidentItems)
		ev.MorePorts = ev.MorePorts || (n == maxIncidentItems && !slices.Contains(ev.Ports, x))
	}
	if app := a.GetFlow().GetApp(); app != "" {
		ev.Protocols = addSorted(ev.Protocols, app, maxIncidentItems)
	}
	if sid := a.GetSensorId(); sid != "" {
		ev.Sensors = addSorted(ev.Sensors, sid, maxIncidentItems)
	}

	inc.Score = max(inc.Score, score)
	inc.CombinedScore = combinedScore(inc.Timeline)
}

// addSorted inserts x into the sorted set xs unless it is there or xs
// holds limit items (0: no limit).
func addSorted(xs []string, x string, limit int) []string {
	i, found := slices.BinarySearch(xs, x)
	if found || (limit > 0 && len(xs) >= limit) {
		return xs
	}
	return slices.Insert(xs, i, x)
}

// combinedScore is 100 * (1 - prod(1 - s/100)) over each stage's highest
// score, in integers (stage order), so every platform computes the same.
func combinedScore(timeline []*medmeshv1.IncidentStep) uint32 {
	best := map[medmeshv1.IncidentStage]uint32{}
	var stages []medmeshv1.IncidentStage
	for _, st := range timeline {
		if _, ok := best[st.Stage]; !ok {
			stages = append(stages, st.Stage)
		}
		best[st.Stage] = max(best[st.Stage], min(st.MaxScore, 100))
	}
	slices.Sort(stages)
	rest := uint64(10000) // (1 - combined) in hundredths of a percent
	for _, s := range stages {
		rest = rest * uint64(100-best[s]) / 100
	}
	return uint32((10000 - rest + 50) / 100)
}

func (s *state) addIncidentDevice(inc *medmeshv1.Incident, mac string, role medmeshv1.IncidentRole, now *timestamppb.Timestamp) {
	dev := s.devices[mac]
	i, found := slices.BinarySearchFunc(inc.Devices, mac, cmpIncidentDevice)
	if !found {
		if len(inc.Devices) >= maxIncidentItems {
			inc.MoreDevices = true
			return
		}
		inc.Devices = slices.Insert(inc.Devices, i, &medmeshv1.IncidentDevice{Mac: mac, Role: role, FirstTime: now})
		s.inc.join(mac, inc.Id)
	}
	d := inc.Devices[i]
	if role == medmeshv1.IncidentRole_INCIDENT_ROLE_SOURCE {
		d.Role = role // a victim that acts becomes a source
	}
	d.AlertCount++
	if dev != nil {
		d.DeviceClass, d.Tier = dev.GetDeviceClass(), dev.GetTier()
	}
}

// closeIncidents closes the open incidents whose last alert is more than
// the window before now.
func (s *state) closeIncidents(index uint64, now *timestamppb.Timestamp) {
	t := nanos(now)
	w := int64(s.retention.IncidentWindow)
	for len(s.inc.open) > 0 && t-s.inc.open[0].ns > w {
		k := s.inc.open[0]
		s.inc.open = s.inc.open[1:]
		inc := s.inc.byID[k.id]
		if inc == nil {
			continue
		}
		inc = s.mutableIncident(inc, index)
		inc.State, inc.CloseTime = medmeshv1.IncidentState_INCIDENT_STATE_CLOSED, now
		for _, d := range inc.Devices {
			s.inc.leave(d.GetMac(), inc.Id)
		}
		s.inc.closed = insertKey(s.inc.closed, incKey{t, inc.Id})
	}
}

// pruneIncidents evicts closed incidents past retention, oldest closed
// first. Open incidents are never evicted.
func (s *state) pruneIncidents(now *timestamppb.Timestamp) {
	r := s.retention
	horizon := nanos(now) - int64(r.IncidentAge)
	n := 0
	for n < len(s.inc.closed) &&
		((r.MaxIncidents > 0 && len(s.inc.closed)-n > r.MaxIncidents) || (r.IncidentAge > 0 && s.inc.closed[n].ns < horizon)) {
		delete(s.inc.byID, s.inc.closed[n].id)
		n++
	}
	if n > 0 {
		s.inc.closed = slices.Delete(s.inc.closed, 0, n)
	}
}

// indexDeviceIPs keeps deviceIPs (address -> devices holding it) in step
// when device d replaces old (nil for a new device).
func (s *state) indexDeviceIPs(old, d *medmeshv1.Device) {
	for _, ip := range old.GetIpAddresses() {
		if !slices.Contains(d.GetIpAddresses(), ip) {
			s.unindexIP(ip, d.GetMac())
		}
	}
	for _, ip := range d.GetIpAddresses() {
		if !slices.Contains(old.GetIpAddresses(), ip) {
			s.indexIP(ip, d.GetMac())
		}
	}
}

func (s *state) indexIP(ip, mac string) {
	if ip = canonIP(ip); ip == "" {
		return
	}
	macs := s.deviceIPs[ip]
	if i, ok := slices.BinarySearch(macs, mac); !ok {
		s.deviceIPs[ip] = slices.Insert(macs, i, mac)
	}
}

func (s *state) unindexIP(ip, mac string) {
	if ip = canonIP(ip); ip == "" {
		return
	}
	macs := s.deviceIPs[ip]
	if i, ok := slices.BinarySearch(macs, mac); ok {
		if macs = slices.Delete(macs, i, i+1); len(macs) == 0 {
			delete(s.deviceIPs, ip)
		} else {
			s.deviceIPs[ip] = macs
		}
	}
}

// Incident returns an incident by id, or nil.
func (f *FSM) Incident(id string) *medmeshv1.Incident {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.inc.byID[id]
}

// IncidentsChanged returns up to limit incidents that match keep whose
// last change sorts after (afterIndex, afterID) in (index, id) order, in
// that order; whether more match; and the applied index. An incident
// appears once, as of its latest change.
func (f *FSM) IncidentsChanged(afterIndex uint64, afterID string, limit int, keep func(*medmeshv1.Incident) bool) (page []*medmeshv1.Incident, more bool, applied uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := &f.st.inc
	ch := st.changes
	i := sort.Search(len(ch), func(i int) bool { return ch[i].index >= afterIndex })
	var group []*medmeshv1.Incident
	for i < len(ch) {
		j := i
		group = group[:0]
		for ; j < len(ch) && ch[j].index == ch[i].index; j++ {
			if inc := st.byID[ch[j].id]; inc != nil && inc.Index == ch[j].index {
				group = append(group, inc)
			}
		}
		slices.SortFunc(group, func(a, b *medmeshv1.Incident) int { return strings.Compare(a.Id, b.Id) })
		for _, inc := range group {
			if inc.Index == afterIndex && inc.Id <= afterID {
				continue
			}
			if !keep(inc) {
				continue
			}
			if len(page) == limit {
				return page, true, f.st.applied
			}
			page = append(page, inc)
		}
		i = j
	}
	return page, false, f.st.applied
}
