// Package scan finds port scans and address sweeps in what the sensor's
// datapath reports without payload: flow records (their TCP flags and
// packet counts say whether a connection was refused, unanswered, half
// opened or opened without data), flow starts outside a device's baseline
// and ARP requests and replies. A source that crosses a threshold within
// a window yields one Finding for that window, with counts and bounded
// lists of the hosts and services it touched.
//
// A probe is what a scan leaves behind: a connection that carried no
// payload. A session (payload exchanged, or a UDP or ICMP answer) is not a
// probe, so a busy client is not a scanner however many peers it has.
//
//   - vertical: one host probed on Ports or more distinct ports (flow
//     starts outside the baseline count here before their outcome is
//     known, so a scan is named while it runs);
//   - horizontal: one port probed on Hosts or more distinct hosts, counting
//     probes whose outcome is known;
//   - mixed: Probes or more distinct (host, port) probes with a known
//     outcome;
//   - ARP sweep: ARPTargets or more distinct addresses asked for, fewer
//     than half of them answered.
package scan

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/medmesh/medmesh/internal/names"
	"github.com/medmesh/medmesh/node/flow"
)

// Config sets the window and thresholds.
type Config struct {
	Window     time.Duration
	Ports      int // vertical: distinct ports of one host
	Hosts      int // horizontal: distinct hosts on one port
	Probes     int // mixed: distinct (host, port) probes
	ARPTargets int // ARP sweep: distinct addresses asked for
	// Active is how many probes a source must have made in its window for
	// Probing to report it (victims of an active scan are not scored).
	Active int
	// MaxSources bounds the sources followed at once; MaxKeys the probes
	// remembered per source and window (sessions are not remembered unless
	// they follow a probe of the same host and port).
	MaxSources, MaxKeys int
}

// DefaultConfig returns the thresholds medmesh ships with.
func DefaultConfig() Config {
	return Config{
		Window: time.Minute, Ports: 24, Hosts: 24, Probes: 64, ARPTargets: 32, Active: 8,
		MaxSources: 4096, MaxKeys: 1024,
	}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if c.Window <= 0 || c.Ports <= 1 || c.Hosts <= 1 || c.Probes <= 1 || c.ARPTargets <= 1 || c.Active <= 0 ||
		c.MaxSources <= 0 || c.MaxKeys <= 0 {
		return errors.New("scan config: window must be positive, thresholds above 1, bounds positive")
	}
	return nil
}

// Outcome is what became of one probe.
type Outcome uint8

// Outcomes, weakest evidence first; a key keeps its strongest.
const (
	// Pending: a flow started outside the source's baseline; its outcome
	// is not known yet.
	Pending Outcome = iota + 1
	// Refused: the host answered with a reset and never accepted.
	Refused
	// Unanswered: no packet came back.
	Unanswered
	// HalfOpen: the host accepted (SYN-ACK); the source reset without
	// completing the handshake (a SYN scan).
	HalfOpen
	// Open: the handshake completed and the connection closed without
	// payload (a connect scan hitting an open port).
	Open
	// Session: payload was exchanged, or a UDP or ICMP answer came back:
	// not a probe.
	Session
)

var outcomeNames = [...]string{Pending: "pending", Refused: "refused", Unanswered: "unanswered", HalfOpen: "half_open", Open: "open", Session: "session"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) && outcomeNames[o] != "" {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

func (o Outcome) probe() bool { return o >= Pending && o < Session }
func (o Outcome) known() bool { return o > Pending && o < Session }

// TCP flag bits as flow records carry them.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// Classify tells what a flow record says about its initiator as a
// scanner: ok is false for protocols and flows that say nothing (a flow
// without a SYN from its initiator, a flow the sensor saw mid-way).
// payload says whether any payload packet of the flow was seen; a TCP
// direction whose packets average more than headers can hold (IPv4 20 +
// TCP 60 bytes; IPv6 40 + 60) carried payload too, samples or not.
func Classify(r *flow.Record, payload bool) (o Outcome, method string, ok bool) {
	switch r.Proto {
	case 6:
		hdr := uint64(80)
		if r.Src.Is6() && !r.Src.Is4In6() {
			hdr = 100
		}
		payload = payload || r.FwdBytes > hdr*r.FwdPackets || r.RevBytes > hdr*r.RevPackets
		f, b := r.FwdTCPFlags, r.RevTCPFlags
		if f&tcpSYN == 0 {
			return 0, "", false // not seen from its start
		}
		method = "tcp_connect"
		if f&tcpACK == 0 {
			method = "tcp_syn"
		}
		switch {
		case payload:
			return Session, method, true
		case r.RevPackets == 0:
			return Unanswered, method, true
		case b&tcpSYN == 0 && b&tcpRST != 0:
			return Refused, method, true
		case b&tcpSYN != 0 && f&tcpACK == 0 && f&tcpRST != 0:
			return HalfOpen, "tcp_syn", true
		case b&tcpSYN != 0 && f&tcpACK != 0:
			return Open, method, true
		}
		return 0, "", false
	case 17:
		if r.RevPackets > 0 {
			return Session, "udp", true
		}
		return Unanswered, "udp", true
	case 1, 58:
		if r.RevPackets > 0 {
			return Session, "icmp", true
		}
		return Unanswered, "icmp", true
	}
	return 0, "", false
}

// Probe is one observation of a source reaching a host's port.
type Probe struct {
	Src, Dst netip.Addr
	Proto    uint8
	Port     uint16 // 0 for ICMP
	Outcome  Outcome
	Method   string // as Classify names it; "" for a flow start
	TimeNs   int64
}

// Finding is a scan: what one source did within its window, up to the
// observation that crossed a threshold.
type Finding struct {
	Src      netip.Addr
	Patterns []string // "vertical", "horizontal", "mixed", "arp_sweep"
	Methods  []string
	StartNs  int64
	TimeNs   int64
	Window   time.Duration
	// Distinct (host, protocol, port) probes, hosts and services.
	Probes, Hosts, Ports int
	// Probes by outcome.
	Refused, Unanswered, HalfOpen, Open, Pending int
	// ARP: addresses asked for, and answered.
	ARPAsked, ARPAnswered int
	// TopHost is the host probed on most ports; TopService the service
	// probed on most hosts.
	TopHost         netip.Addr
	TopHostPorts    int
	TopService      string
	TopServiceHosts int
	// The hosts and services probed, sorted, at most ListMax each.
	Peers    []netip.Addr
	Services []Service
}

// Service is a protocol and port (0 for ICMP).
type Service struct {
	Proto uint8
	Port  uint16
}

func (s Service) String() string { return svcName(svc(s.Proto, s.Port)) }

// ListMax bounds the hosts and services a Finding lists; String names
// the first SummaryMax.
const (
	ListMax    = 64
	SummaryMax = 12
)

type key struct {
	host  netip.Addr
	proto uint8
	port  uint16
}

func svc(proto uint8, port uint16) uint32 { return uint32(proto)<<16 | uint32(port) }

func svcName(s uint32) string {
	n := names.Protocol(s >> 16)
	if p := s >> 16; p == 6 || p == 17 || p == 132 || s&0xffff != 0 {
		n += fmt.Sprintf("/%d", s&0xffff)
	}
	return n
}

// window is one source's state.
type window struct {
	start    int64
	reported bool
	keys     map[key]Outcome
	// probes per host (outcome known or pending) and known probes per
	// service; hosts and services ever touched.
	hostProbes map[netip.Addr]int
	svcKnown   map[uint32]int
	methods    map[string]struct{}
	probes     int // keys that are probes
	known      int // keys that are probes with a known outcome
	// ARP targets asked for: answered or not.
	arp         map[netip.Addr]bool
	arpAnswered int
}

func newWindow(ns int64) *window {
	return &window{start: ns, keys: map[key]Outcome{}, hostProbes: map[netip.Addr]int{}, svcKnown: map[uint32]int{},
		methods: map[string]struct{}{}}
}

// Detector follows sources. It is not safe for concurrent use.
type Detector struct {
	cfg     Config
	src     map[netip.Addr]*window
	dropped uint64
	// reported is when each source was last reported, kept two windows.
	reported map[netip.Addr]int64
}

// New returns a detector.
func New(cfg Config) (*Detector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Detector{cfg: cfg, src: make(map[netip.Addr]*window), reported: make(map[netip.Addr]int64)}, nil
}

// Dropped is how many observations were ignored because MaxSources
// sources were followed already.
func (d *Detector) Dropped() uint64 { return d.dropped }

// win returns src's window open at ns, starting one if needed; nil when
// the detector follows MaxSources sources already.
func (d *Detector) win(src netip.Addr, ns int64) *window {
	w := d.src[src]
	if w != nil {
		if ns-w.start < int64(d.cfg.Window) {
			// Records reach the detector at a flow's end: one that started
			// before the window counts in it.
			return w
		}
		delete(d.src, src)
	}
	if len(d.src) >= d.cfg.MaxSources {
		for s, o := range d.src {
			if ns-o.start >= int64(d.cfg.Window) {
				delete(d.src, s)
			}
		}
		if len(d.src) >= d.cfg.MaxSources {
			d.dropped++
			return nil
		}
	}
	w = newWindow(ns)
	d.src[src] = w
	return w
}

// Observe counts one probe or session of p.Src and returns a Finding when
// this observation makes the source a scanner in its window (once per
// source and window).
func (d *Detector) Observe(p Probe) *Finding {
	if !p.Src.IsValid() || !p.Dst.IsValid() || !p.Dst.IsGlobalUnicast() && !p.Dst.IsLinkLocalUnicast() {
		return nil // broadcast and multicast are how discovery works, not probes
	}
	if p.Outcome == Session {
		// A session only undoes a probe counted before it: nothing to do
		// for a source without a window (the common case, kept cheap).
		if w := d.src[p.Src]; w == nil || p.TimeNs-w.start >= int64(d.cfg.Window) {
			return nil
		}
	}
	w := d.win(p.Src, p.TimeNs)
	if w == nil {
		return nil
	}
	k := key{p.Dst, p.Proto, p.Port}
	old, seen := w.keys[k]
	if !seen && (p.Outcome == Session || len(w.keys) >= d.cfg.MaxKeys) {
		return nil // a session is remembered only to undo a probe counted before it
	}
	if seen && p.Outcome <= old {
		return nil // nothing new about this key
	}
	if seen && old.known() && p.Outcome.known() {
		return nil // a second flow to a key already known to be a probe
	}
	w.keys[k] = p.Outcome
	if p.Method != "" && p.Outcome.probe() {
		w.methods[p.Method] = struct{}{}
	}
	s := svc(p.Proto, p.Port)
	if old.probe() && !p.Outcome.probe() { // a session after all
		w.hostProbes[p.Dst]--
		w.probes--
		if old.known() {
			w.svcKnown[s]--
			w.known--
		}
	}
	if !old.probe() && p.Outcome.probe() {
		w.hostProbes[p.Dst]++
		w.probes++
	}
	if !old.known() && p.Outcome.known() {
		w.svcKnown[s]++
		w.known++
	}
	if w.reported || !p.Outcome.probe() {
		return nil
	}
	var pat []string
	if w.hostProbes[p.Dst] >= d.cfg.Ports {
		pat = append(pat, "vertical")
	}
	if w.svcKnown[s] >= d.cfg.Hosts {
		pat = append(pat, "horizontal")
	}
	if len(pat) == 0 && w.known >= d.cfg.Probes {
		pat = append(pat, "mixed")
	}
	if len(pat) == 0 {
		return nil
	}
	w.reported = true
	return d.finding(p.Src, w, pat, p.TimeNs)
}

// ARP counts one ARP packet: a request from sender (sender IP spa) for
// tpa, or a reply from spa to tpa. Gratuitous ARP and address probes
// (sender 0.0.0.0) say nothing about sweeps.
func (d *Detector) ARP(reply bool, spa, tpa netip.Addr, ns int64) *Finding {
	if !spa.IsValid() || !tpa.IsValid() || spa.IsUnspecified() || spa == tpa {
		return nil
	}
	if reply {
		// spa answers tpa's request.
		if w := d.src[tpa]; w != nil && ns-w.start < int64(d.cfg.Window) {
			if answered, asked := w.arp[spa]; asked && !answered {
				w.arp[spa] = true
				w.arpAnswered++
			}
		}
		return nil
	}
	w := d.win(spa, ns)
	if w == nil {
		return nil
	}
	if w.arp == nil {
		w.arp = map[netip.Addr]bool{}
	}
	if _, asked := w.arp[tpa]; asked || len(w.arp) >= d.cfg.MaxKeys {
		return nil
	}
	w.arp[tpa] = false
	w.methods["arp"] = struct{}{}
	if w.reported || len(w.arp) < d.cfg.ARPTargets || 2*w.arpAnswered >= len(w.arp) {
		return nil
	}
	w.reported = true
	return d.finding(spa, w, []string{"arp_sweep"}, ns)
}

// Following reports whether src has an open window at ns: only then can a
// session of src change anything.
func (d *Detector) Following(src netip.Addr, ns int64) bool {
	w := d.src[src]
	return w != nil && ns-w.start < int64(d.cfg.Window)
}

// Probing reports whether src has made Active probes or more in its open
// window at ns, or was reported in it: a device it reaches is its victim.
func (d *Detector) Probing(src netip.Addr, ns int64) bool {
	w := d.src[src]
	if w == nil || ns-w.start >= int64(d.cfg.Window) {
		return false
	}
	if w.reported {
		return true
	}
	return w.probes+len(w.arp)-w.arpAnswered >= d.cfg.Active
}

// Suspect reports whether src is Probing at ns, or was reported as a
// scanner within the two windows before: what a device sends back to it
// (an ICMP error) is an answer, not the device's behaviour.
func (d *Detector) Suspect(src netip.Addr, ns int64) bool {
	if d.Probing(src, ns) {
		return true
	}
	t, ok := d.reported[src]
	return ok && ns-t < 2*int64(d.cfg.Window) && ns >= t-int64(d.cfg.Window)
}

func (d *Detector) finding(src netip.Addr, w *window, pat []string, ns int64) *Finding {
	if len(d.reported) >= d.cfg.MaxSources {
		for s, t := range d.reported {
			if ns-t >= 2*int64(d.cfg.Window) {
				delete(d.reported, s)
			}
		}
	}
	if len(d.reported) < d.cfg.MaxSources {
		d.reported[src] = ns
	}
	f := &Finding{Src: src, Patterns: pat, StartNs: w.start, TimeNs: ns, Window: d.cfg.Window,
		ARPAsked: len(w.arp), ARPAnswered: w.arpAnswered}
	for m := range w.methods {
		f.Methods = append(f.Methods, m)
	}
	slices.Sort(f.Methods)
	hosts := map[netip.Addr]int{}
	svcHosts := map[uint32]int{}
	for k, o := range w.keys {
		if !o.probe() {
			continue
		}
		f.Probes++
		hosts[k.host]++
		svcHosts[svc(k.proto, k.port)]++
		switch o {
		case Pending:
			f.Pending++
		case Refused:
			f.Refused++
		case Unanswered:
			f.Unanswered++
		case HalfOpen:
			f.HalfOpen++
		case Open:
			f.Open++
		}
	}
	for a := range w.arp {
		if _, ok := hosts[a]; !ok {
			hosts[a] = 0
		}
	}
	f.Hosts, f.Ports = len(hosts), len(svcHosts)
	peers := make([]netip.Addr, 0, len(hosts))
	for h := range hosts {
		peers = append(peers, h)
	}
	slices.SortFunc(peers, netip.Addr.Compare)
	for _, h := range peers { // the first of the most probed, in address order
		if hosts[h] > f.TopHostPorts {
			f.TopHost, f.TopHostPorts = h, hosts[h]
		}
	}
	f.Peers = peers[:min(len(peers), ListMax):min(len(peers), ListMax)]
	svcs := make([]uint32, 0, len(svcHosts))
	for s := range svcHosts {
		svcs = append(svcs, s)
	}
	slices.Sort(svcs)
	for _, s := range svcs {
		if svcHosts[s] > f.TopServiceHosts {
			f.TopService, f.TopServiceHosts = svcName(s), svcHosts[s]
		}
	}
	for _, s := range svcs[:min(len(svcs), ListMax)] {
		f.Services = append(f.Services, Service{uint8(s >> 16), uint16(s)})
	}
	return f
}

// String is the finding for people: "vertical scan (tcp_connect): 320
// probes of 8 hosts on 40 services within 1m0s (300 refused, ...); most
// ports on 10.0.0.5 (40); hosts 10.0.0.1, …; services tcp/21, …".
func (f *Finding) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s scan", strings.Join(f.Patterns, "+"))
	if len(f.Methods) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(f.Methods, ", "))
	}
	if f.ARPAsked > 0 {
		fmt.Fprintf(&b, ": ARP requests for %s, %d answered", plural(f.ARPAsked, "address"), f.ARPAnswered)
	}
	if f.Probes > 0 {
		if f.ARPAsked > 0 {
			b.WriteString(";")
		} else {
			b.WriteString(":")
		}
		fmt.Fprintf(&b, " %s of %s on %s within %v (", plural(f.Probes, "probe"), plural(f.Hosts, "host"), plural(f.Ports, "service"), f.Window)
		sep := ""
		for _, c := range []struct {
			n    int
			name string
		}{{f.Refused, "refused"}, {f.Unanswered, "unanswered"}, {f.HalfOpen, "half-open"}, {f.Open, "open, no data"}, {f.Pending, "still starting"}} {
			if c.n > 0 {
				fmt.Fprintf(&b, "%s%d %s", sep, c.n, c.name)
				sep = ", "
			}
		}
		b.WriteString(")")
		if f.TopHostPorts > 1 {
			fmt.Fprintf(&b, "; %d services of %s", f.TopHostPorts, f.TopHost) // the most probed host
		}
		if f.TopServiceHosts > 1 {
			fmt.Fprintf(&b, "; %s on %d hosts", f.TopService, f.TopServiceHosts)
		}
	}
	list := func(label string, l []string, total int) {
		if len(l) == 0 {
			return
		}
		fmt.Fprintf(&b, "; %s %s", label, strings.Join(l, ", "))
		if total > len(l) {
			fmt.Fprintf(&b, ", +%d", total-len(l))
		}
	}
	list("hosts", f.PeerNames(SummaryMax), f.Hosts)
	list("services", f.ServiceNames(SummaryMax), f.Ports)
	return b.String()
}

// PeerNames are the first n hosts of the finding, as text.
func (f *Finding) PeerNames(n int) []string {
	var out []string
	for _, p := range f.Peers[:min(n, len(f.Peers))] {
		out = append(out, p.String())
	}
	return out
}

// ServiceNames are the first n services of the finding: "tcp/22", "icmp".
func (f *Finding) ServiceNames(n int) []string {
	var out []string
	for _, s := range f.Services[:min(n, len(f.Services))] {
		out = append(out, s.String())
	}
	return out
}

// plural is "1 host", "2 hosts", "3 addresses".
func plural(n int, noun string) string {
	switch {
	case n == 1:
		return "1 " + noun
	case strings.HasSuffix(noun, "s"):
		return fmt.Sprintf("%d %ses", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
