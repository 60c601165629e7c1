// Package score gives every flow and event a 0–100 risk score made of
// named, weighted factors, and decides when a score raises an alert. The
// same code scores live traffic and replayed captures: time comes from the
// records, never from the clock.
package score

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"strings"

	"github.com/medmesh/medmesh/internal/names"
	"github.com/medmesh/medmesh/node/internal/baseline"
	"github.com/medmesh/medmesh/node/internal/detect"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Factor is one named reason a score is above zero.
type Factor uint8

// The factors, in the order they are reported: the first hit of a score
// names its alert's kind.
const (
	KnownBad Factor = iota
	DefaultCredentials
	CleartextCredentials
	ProtocolMisuse
	CleartextPHI
	FailedLoginBurst
	Scan
	ExternalDestination
	NewPeer
	NewPort
	VolumeAnomaly
	numFactors
)

var factorNames = [numFactors]string{
	KnownBad:             "known_bad_destination",
	DefaultCredentials:   "default_credentials",
	CleartextCredentials: "cleartext_credentials",
	ProtocolMisuse:       "protocol_misuse",
	CleartextPHI:         "cleartext_phi",
	FailedLoginBurst:     "failed_login_burst",
	Scan:                 "scan",
	ExternalDestination:  "external_destination",
	NewPeer:              "new_peer",
	NewPort:              "new_port",
	VolumeAnomaly:        "volume_anomaly",
}

// String is the factor's stable machine name.
func (f Factor) String() string {
	if f < numFactors {
		return factorNames[f]
	}
	return fmt.Sprintf("factor(%d)", uint8(f))
}

// Factors lists every factor name.
func Factors() []string { return append([]string(nil), factorNames[:]...) }

// ParseKnownBad reads a known-bad destination list: one CIDR prefix,
// address or DNS name per line, "#" comments and blank lines ignored.
func ParseKnownBad(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read known-bad list: %w", err)
	}
	return out, nil
}

// Config sets weights and thresholds.
type Config struct {
	// Weights are the points each factor contributes, by factor name.
	// Factors missing from the map weigh 0.
	Weights map[string]float64
	// AlertThreshold is the score from which an alert is raised.
	AlertThreshold uint32
	// VolumeZ is the z-score above which a slot's volume is anomalous.
	VolumeZ float64
	// KnownBad lists known-bad destinations: CIDR prefixes, addresses, or
	// DNS names (a name matches itself and its subdomains).
	KnownBad []string
	// Private are the address ranges that are not "external" besides the
	// RFC 1918, link-local and unique-local ones.
	Private []netip.Prefix
}

// DefaultConfig returns the project's default weights and thresholds.
func DefaultConfig() Config {
	return Config{
		Weights: map[string]float64{
			"known_bad_destination": 80,
			"default_credentials":   60,
			"cleartext_credentials": 50,
			"protocol_misuse":       45,
			"cleartext_phi":         40,
			"failed_login_burst":    50,
			"scan":                  60,
			"external_destination":  30,
			"new_peer":              25,
			"new_port":              25,
			"volume_anomaly":        30,
		},
		AlertThreshold: 50,
		VolumeZ:        4,
	}
}

func (c Config) validate() error {
	var errs []error
	for name, w := range c.Weights {
		known := false
		for _, n := range factorNames {
			known = known || n == name
		}
		if !known {
			errs = append(errs, fmt.Errorf("weight for unknown factor %q", name))
		}
		if w < 0 || w > 100 {
			errs = append(errs, fmt.Errorf("weight %s %v not in 0..100", name, w))
		}
	}
	if c.AlertThreshold == 0 || c.AlertThreshold > 100 {
		errs = append(errs, fmt.Errorf("alert threshold %d not in 1..100", c.AlertThreshold))
	}
	if c.VolumeZ <= 0 {
		errs = append(errs, fmt.Errorf("volume z %v must be positive", c.VolumeZ))
	}
	return errors.Join(errs...)
}

// Scorer computes scores. It holds only configuration and is safe for
// concurrent use; per-device state lives in Tracker.
type Scorer struct {
	cfg      Config
	weight   [numFactors]float64
	badNets  []netip.Prefix
	badNames []string
}

// New returns a scorer.
func New(cfg Config) (*Scorer, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("score config: %w", err)
	}
	s := &Scorer{cfg: cfg}
	for i, n := range factorNames {
		s.weight[i] = cfg.Weights[n]
	}
	for _, b := range cfg.KnownBad {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		if p, err := netip.ParsePrefix(b); err == nil {
			s.badNets = append(s.badNets, p.Masked())
		} else if a, err := netip.ParseAddr(b); err == nil {
			s.badNets = append(s.badNets, netip.PrefixFrom(a, a.BitLen()))
		} else {
			s.badNames = append(s.badNames, strings.ToLower(strings.TrimSuffix(b, ".")))
		}
	}
	return s, nil
}

// Threshold is the alert threshold.
func (s *Scorer) Threshold() uint32 { return s.cfg.AlertThreshold }

// Hit is one factor that contributed to a score.
type Hit struct {
	Factor Factor
	Weight float64
	Detail string
}

// Result is a score. Reuse one Result across calls: Reset keeps its
// buffer, so scoring allocates nothing when no factor hits.
type Result struct {
	Score uint32
	Hits  []Hit
}

// Reset empties r, keeping its buffer.
func (r *Result) Reset() { r.Score, r.Hits = 0, r.Hits[:0] }

func (r *Result) add(f Factor, w float64, detail string) {
	if w <= 0 {
		return
	}
	r.Hits = append(r.Hits, Hit{Factor: f, Weight: w, Detail: detail})
}

// finish sums the hits into the 0–100 score, ordered by factor.
func (r *Result) finish() {
	// Insertion sort: at most a handful of hits.
	for i := 1; i < len(r.Hits); i++ {
		for j := i; j > 0 && r.Hits[j].Factor < r.Hits[j-1].Factor; j-- {
			r.Hits[j], r.Hits[j-1] = r.Hits[j-1], r.Hits[j]
		}
	}
	var sum float64
	for _, h := range r.Hits {
		sum += h.Weight
	}
	r.Score = uint32(math.Min(100, math.Round(sum)))
}

// Top is the most severe hit, which names an alert's kind: factors are
// ordered by severity (known-bad destination first, volume anomaly last).
func (r *Result) Top() (Hit, bool) {
	if len(r.Hits) == 0 {
		return Hit{}, false
	}
	return r.Hits[0], true
}

// RiskScore returns the result as protobuf.
func (r *Result) RiskScore() *medmeshv1.RiskScore {
	rs := &medmeshv1.RiskScore{Score: r.Score}
	for _, h := range r.Hits {
		rs.Factors = append(rs.Factors, &medmeshv1.RiskFactor{Name: h.Factor.String(), Weight: h.Weight, Detail: h.Detail})
	}
	return rs
}

// Tracker is one device's scoring state: the volume of its current slot.
// Not safe for concurrent use.
type Tracker struct {
	slotIdx   int64
	slotBytes float64
	slotFlows float64
	volumeHit bool // volume anomaly already reported in this slot
}

// NewTracker returns an empty tracker.
func NewTracker() *Tracker {
	return &Tracker{slotIdx: math.MinInt64}
}

// Flow is one flow (or the start of one) as seen from a device.
type Flow struct {
	Peer netip.Addr
	// Names gives the peer's DNS/SNI name, looked up only when a detail or
	// the known-bad name list needs it. May be nil.
	Names    baseline.Namer
	Proto    uint8
	Port     uint16 // peer's port outbound, own port inbound
	App      string
	Outbound bool
	Bytes    uint64
	TimeNs   int64
	// Class is the device's class; Baseline its own frozen baseline, or its
	// class's (ClassBaseline), or nil while none exists.
	Class         medmeshv1.DeviceClass
	Baseline      *baseline.Baseline
	ClassBaseline bool
	// CountVolume is false for events that are not whole flow records
	// (baseline misses), so they do not count twice in volume statistics.
	CountVolume bool
	// Answered: for an inbound flow, the device took it up (a TCP SYN-ACK,
	// any UDP reply). A device that did not answer did nothing.
	Answered bool
	// Infra: an outbound flow to the campus's infrastructure server for
	// the service it provides (infra.Map.Serves).
	Infra bool

	name  string
	named bool
}

// PeerName is the peer's DNS/SNI name, or "".
func (f *Flow) PeerName() string {
	if !f.named {
		f.named = true
		if f.Names != nil {
			f.name = f.Names.PeerName(f.Peer)
		}
	}
	return f.name
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// External reports whether addr is outside the campus.
func (s *Scorer) External(addr netip.Addr) bool {
	if !addr.IsGlobalUnicast() || addr.IsPrivate() || addr.IsLinkLocalUnicast() {
		return false
	}
	if cgnat.Contains(addr) {
		return false
	}
	for _, p := range s.cfg.Private {
		if p.Contains(addr) {
			return false
		}
	}
	return true
}

func (s *Scorer) knownBad(f *Flow) bool {
	for _, p := range s.badNets {
		if p.Contains(f.Peer) {
			return true
		}
	}
	if len(s.badNames) == 0 {
		return false
	}
	name := f.PeerName()
	if name == "" {
		return false
	}
	for _, b := range s.badNames {
		if len(name) >= len(b) && strings.EqualFold(name[len(name)-len(b):], b) &&
			(len(name) == len(b) || name[len(name)-len(b)-1] == '.') {
			return true
		}
	}
	return false
}

// peerLabel is "addr" or "addr (name)" for details.
func peerLabel(f *Flow) string {
	if n := f.PeerName(); n != "" {
		return f.Peer.String() + " (" + n + ")"
	}
	return f.Peer.String()
}

func serviceLabel(f *Flow) string {
	p := names.Protocol(uint32(f.Proto))
	if f.Port != 0 {
		p = fmt.Sprintf("%s/%d", p, f.Port)
	}
	if f.App != "" {
		p += " (" + f.App + ")"
	}
	return p
}

// ScoreFlow scores one flow of the device t tracks into r (reset first).
// For a flow that matches the device's baseline exactly and trips no
// threshold it does no allocation.
func (s *Scorer) ScoreFlow(t *Tracker, f *Flow, r *Result) {
	r.Reset()
	if s.knownBad(f) {
		r.add(KnownBad, s.weight[KnownBad], peerLabel(f)+" is on the known-bad list")
	}
	s.misuse(f, r)
	if b := f.Baseline; b != nil {
		scope := "baseline"
		if f.ClassBaseline {
			scope = "class baseline"
		}
		dir := baseline.Inbound
		if f.Outbound {
			dir = baseline.Outbound
		}
		m := b.Lookup(baseline.Key{Peer: f.Peer, Proto: f.Proto, Port: f.Port, Dir: dir})
		if m != baseline.Exact {
			dev := s.deviation(f)
			if (m == baseline.NewPeer || m == baseline.NewPeerService) && (f.App == "hl7" || f.App == "dicom") &&
				(f.Outbound || s.External(f.Peer)) {
				r.add(CleartextPHI, s.weight[CleartextPHI], strings.ToUpper(f.App)+" without TLS "+dir.String()+" with "+
					peerLabel(f)+", a peer not in the "+scope)
			}
			if f.Outbound && s.External(f.Peer) {
				r.add(ExternalDestination, s.weight[ExternalDestination], peerLabel(f)+" is external and not in the "+scope)
			}
			switch m {
			case baseline.NewPeer:
				r.add(NewPeer, dev*s.weight[NewPeer], dir.String()+" peer "+peerLabel(f)+" not in the "+scope)
			case baseline.NewService:
				r.add(NewPort, dev*s.weight[NewPort], dir.String()+" "+serviceLabel(f)+" not in the "+scope)
			case baseline.NewPeerService:
				r.add(NewPeer, dev*s.weight[NewPeer], dir.String()+" peer "+peerLabel(f)+" not in the "+scope)
				r.add(NewPort, dev*s.weight[NewPort], dir.String()+" "+serviceLabel(f)+" not in the "+scope)
			case baseline.NewCombination:
				r.add(NewPort, dev*s.weight[NewPort]/2, dir.String()+" "+serviceLabel(f)+" never used with "+peerLabel(f)+" in the "+scope)
			}
		}
		if f.CountVolume {
			s.volume(t, b, f, r)
		}
	}
	r.finish()
}

// deviation scales what a flow outside the baseline says about the
// device: nothing for a flow to the campus infrastructure for the service
// it provides (a device asking the DHCP, DNS, NTP server) or for an
// inbound flow the device did not answer (a probe: the prober is the one
// deviating, not its victim); half for an inbound flow from the campus the
// device answered (accepting a new client is the client's deviation
// first); in full otherwise.
func (s *Scorer) deviation(f *Flow) float64 {
	switch {
	case f.Outbound && f.Infra:
		return 0
	case f.Outbound:
		return 1
	case !f.Answered:
		return 0
	case s.External(f.Peer):
		return 1
	}
	return 0.5
}

func (s *Scorer) misuse(f *Flow, r *Result) {
	switch f.App {
	case "dicom":
		if !f.Outbound {
			return
		}
		switch f.Class {
		case medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED, medmeshv1.DeviceClass_DEVICE_CLASS_UNKNOWN,
			medmeshv1.DeviceClass_DEVICE_CLASS_IMAGING_MODALITY, medmeshv1.DeviceClass_DEVICE_CLASS_PACS:
			return
		}
		r.add(ProtocolMisuse, s.weight[ProtocolMisuse], "DICOM association from a "+names.Enum(f.Class)+" to "+peerLabel(f))
	case "hl7":
		if f.Outbound && f.Class == medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION {
			r.add(ProtocolMisuse, s.weight[ProtocolMisuse], "HL7 from an IT workstation to "+peerLabel(f))
		}
	}
}

func (s *Scorer) volume(t *Tracker, b *baseline.Baseline, f *Flow, r *Result) {
	idx := f.TimeNs / int64(b.Slot)
	if idx != t.slotIdx {
		if idx < t.slotIdx {
			idx = t.slotIdx // late record: current slot
		} else {
			t.slotIdx, t.slotBytes, t.slotFlows, t.volumeHit = idx, 0, 0, false
		}
	}
	t.slotBytes += float64(f.Bytes)
	t.slotFlows++
	if t.volumeHit {
		return
	}
	v := &b.Volume[b.SlotOf(f.TimeNs)]
	zb := baseline.Z(v.Bytes, t.slotBytes, 4096)
	zf := baseline.Z(v.Flows, t.slotFlows, 2)
	if zb < s.cfg.VolumeZ && zf < s.cfg.VolumeZ {
		return
	}
	t.volumeHit = true
	z := max(zb, zf)
	w := s.weight[VolumeAnomaly] * min(1, z/(2*s.cfg.VolumeZ))
	w = max(w, s.weight[VolumeAnomaly]/2)
	r.add(VolumeAnomaly, w, fmt.Sprintf("%.0f bytes in %.0f flows this slot, z=%.1f against mean %.0f bytes / %.1f flows",
		t.slotBytes, t.slotFlows, z, v.Bytes.Mean, v.Flows.Mean))
}

// ScoreLogin scores one login seen in a flow with peer into r (reset
// first); peerIsServer says the peer is the service (the alert is about
// the client, the service being off the campus). A password sent in
// cleartext is a finding whatever the answer; a factory default (or no
// password at all) is one when the service let the login in. A login
// inferred from an SSH banner is scored at the alert threshold: worth
// telling, not proof. The login carries no password, so none can reach
// the result.
func (s *Scorer) ScoreLogin(l *detect.Login, peer string, peerIsServer bool, r *Result) {
	r.Reset()
	what := l.Protocol + " login for user " + quote(l.User)
	switch {
	case l.Protocol == detect.AppSNMP:
		what = "snmp community string"
	case l.User == "":
		what = l.Protocol + " login"
	}
	if l.Method == "form" || l.Method == "basic" {
		what = strings.Replace(what, " login", " "+l.Method+" login", 1)
	}
	var answer string
	switch l.Outcome {
	case detect.Accepted:
		answer = ", accepted"
	case detect.Refused:
		answer = ", refused"
	case detect.NotSeen:
		answer = "; the answer was not seen"
	case detect.NoAnswer:
		answer = " (a notification: no login)"
	}
	if l.Cleartext {
		d := what + " in cleartext with " + peer + answer
		if l.Default && l.Outcome != detect.Accepted {
			d += "; the password is a factory default"
		}
		r.add(CleartextCredentials, s.weight[CleartextCredentials], d)
	}
	// who is the service, from: the client.
	who, from := l.Protocol, " from "+peer
	if peerIsServer {
		who, from = l.Protocol+" server "+peer, ""
	}
	w := s.weight[DefaultCredentials]
	switch {
	case !l.Default:
	case l.Inferred:
		if w > 0 {
			r.add(DefaultCredentials, min(w, float64(s.cfg.AlertThreshold)), who+": its banner names a model that ships with account "+
				quote(l.User)+" and a published password; the login is encrypted: whether it was used cannot be seen")
		}
	case l.Outcome != detect.Accepted:
	case l.NoPassword && l.Method == "none":
		r.add(DefaultCredentials, w, who+" let a client"+from+" in without a password (security type None)")
	case l.NoPassword:
		r.add(DefaultCredentials, w, who+" let user "+quote(l.User)+from+" in without a password")
	case l.Protocol == detect.AppSNMP:
		r.add(DefaultCredentials, w, "snmp agent"+strings.TrimPrefix(who, "snmp")+" answered a factory-default community string"+from)
	case l.User == "":
		r.add(DefaultCredentials, w, who+" accepted a factory-default password"+from)
	default:
		r.add(DefaultCredentials, w, who+" accepted user "+quote(l.User)+from+" with a factory-default password")
	}
	r.finish()
}

// ScoreFinding scores a finding a detector made on its own (a scan, a
// burst of failed logins) into r (reset first): one factor, its weight.
func (s *Scorer) ScoreFinding(f Factor, detail string, r *Result) {
	r.Reset()
	if f < numFactors {
		r.add(f, s.weight[f], detail)
	}
	r.finish()
}

// quote bounds and sanitises a user name for a detail string.
func quote(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return fmt.Sprintf("%q", s)
}
