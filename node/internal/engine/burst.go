package engine

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/medmesh/medmesh/internal/names"
	"github.com/medmesh/medmesh/node/internal/score"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// A scan reaches many peers and ports outside the baselines, each of
// which alone would raise a new_peer or new_port alert, at the scanner and
// at every device it probes. A burst folds them: within one scan window
// from a device's first deviation alert, the first is raised at once (an
// isolated new peer is reported without delay), later ones from or to the
// device are held and folded into one. If the device's scan alert follows
// in the window, the burst goes into it (the alert the default rule
// quarantine-scanner fires on); otherwise the held alert is raised once
// the window ends, with its counts and the peers and ports touched. Only
// addresses and ports are kept, never payload.
type burst struct {
	dev     *devState
	start   int64 // window start, ns
	scanned bool  // scan raised in this window: later deviations fold into it
	held    *medmeshv1.Alert
	// answer: the held alert is an ICMP flow the device sent to answer; it
	// is dropped if that peer turns out to be a scanner (the device's
	// stack answering a probe with an error).
	answer netip.Addr
	folded int // deviation alerts folded, the first raised one excluded
	peers  map[netip.Addr]struct{}
	ports  map[uint32]struct{}
}

// burstListed bounds the peers and ports a summary names; the counts are
// kept up to burstTracked.
const (
	burstListed  = 12
	burstTracked = 1024
)

func (b *burst) touch(peer netip.Addr, proto uint8, port uint16) {
	if len(b.peers) < burstTracked {
		b.peers[peer] = struct{}{}
	}
	if len(b.ports) < burstTracked {
		b.ports[uint32(proto)<<16|uint32(port)] = struct{}{}
	}
}

// describe is "N alerts folded: P peers (a, b, …), Q ports (tcp/22, …)".
func (b *burst) describe() string {
	peers := make([]netip.Addr, 0, len(b.peers))
	for p := range b.peers {
		peers = append(peers, p)
	}
	slices.SortFunc(peers, netip.Addr.Compare)
	ports := make([]uint32, 0, len(b.ports))
	for p := range b.ports {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	var s strings.Builder
	fmt.Fprintf(&s, "%d alerts folded; %d peers (", b.folded, len(peers))
	for i, p := range peers {
		if i == burstListed {
			fmt.Fprintf(&s, ", +%d", len(peers)-i)
			break
		}
		if i > 0 {
			s.WriteString(", ")
		}
		s.WriteString(p.String())
	}
	fmt.Fprintf(&s, "), %d ports (", len(ports))
	for i, p := range ports {
		if i == burstListed {
			fmt.Fprintf(&s, ", +%d", len(ports)-i)
			break
		}
		if i > 0 {
			s.WriteString(", ")
		}
		s.WriteString(names.Protocol(p >> 16))
		if p&0xffff != 0 {
			fmt.Fprintf(&s, "/%d", p&0xffff)
		}
	}
	s.WriteString(")")
	return s.String()
}

// alertListed bounds the peers and services an alert lists; the counts
// go on (medmeshv1.Alert.peers, services).
const alertListed = 64

// fill lists the burst's peers and services in the alert, sorted, for the
// coordinator's incidents (a scan's victims join the scanner's incident).
func (b *burst) fill(a *medmeshv1.Alert) {
	peers := make([]netip.Addr, 0, len(b.peers))
	for p := range b.peers {
		peers = append(peers, p)
	}
	slices.SortFunc(peers, netip.Addr.Compare)
	a.Peers, a.PeerCount = a.Peers[:0], uint32(len(peers))
	for _, p := range peers[:min(len(peers), alertListed)] {
		a.Peers = append(a.Peers, p.String())
	}
	ports := make([]uint32, 0, len(b.ports))
	for p := range b.ports {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	a.Services, a.ServiceCount = a.Services[:0], uint32(len(ports))
	for _, p := range ports[:min(len(ports), alertListed)] {
		a.Services = append(a.Services, &medmeshv1.Service{Protocol: p >> 16, Port: p & 0xffff})
	}
}

func deviation(f score.Factor) bool { return f == score.NewPeer || f == score.NewPort }

// openBurst returns the device's burst if its window is still open at ns.
func (e *Engine) openBurst(addr netip.Addr, ns int64) *burst {
	b := e.bursts[addr]
	if b == nil || ns-b.start >= int64(e.cfg.Scan.Window) || ns < b.start {
		return nil
	}
	return b
}

// foldDeviation decides what becomes of a new_peer or new_port alert
// about d (own address self) for flow f: folded into the burst of the
// peer that probes d, or into d's own burst, or raised (it returns nil
// then, after opening d's burst). When it returns a burst whose held
// alert is nil, the caller builds the alert and holds it there.
func (e *Engine) foldDeviation(ds *devState, self netip.Addr, f *score.Flow) (*burst, bool) {
	if !f.Outbound {
		if b := e.openBurst(f.Peer, f.TimeNs); b != nil && b.dev != ds {
			// A probe from a device already under a burst: the probed
			// device is its victim, not a second finding.
			b.folded++
			b.touch(self, f.Proto, f.Port)
			return nil, true
		}
	}
	b := e.openBurst(self, f.TimeNs)
	if b == nil || b.dev != ds {
		e.flushBurst(self)
		nb := e.newBurst(ds, self, f.TimeNs)
		e.touchBurst(nb, f)
		if f.Outbound && isICMP(f.Proto) {
			// Maybe an error sent back to a scanner whose probes are not
			// counted yet: held until the window ends.
			nb.answer = f.Peer
			return nb, true
		}
		return nil, false
	}
	b.folded++
	e.touchBurst(b, f)
	if b.scanned || b.held != nil {
		return nil, true
	}
	return b, true
}

func (e *Engine) touchBurst(b *burst, f *score.Flow) {
	if f.Outbound {
		b.touch(f.Peer, f.Proto, f.Port)
	} else {
		b.touch(f.Peer, f.Proto, 0) // a new inbound client: its source port says nothing
	}
}

// scanStarts folds the open burst of d (state ds, own address self) into
// its scan alert a; later deviations in the window fold into a too.
func (e *Engine) scanStarts(ds *devState, self netip.Addr, f *score.Flow, a *medmeshv1.Alert) {
	b := e.openBurst(self, f.TimeNs)
	if b == nil || b.dev != ds {
		e.flushBurst(self)
		b = e.newBurst(ds, self, f.TimeNs)
	}
	b.scanned, b.held = true, nil
	e.touchBurst(b, f)
	if b.folded > 0 {
		a.Summary += fmt.Sprintf("; %d new_peer/new_port alerts folded in", b.folded)
	}
	if a.Scan != nil {
		a.Scan.FoldedAlerts = uint32(b.folded)
	}
	if len(a.Peers) == 0 { // a scan alert lists what its finding counted
		b.fill(a)
	}
}

func (e *Engine) newBurst(ds *devState, self netip.Addr, ns int64) *burst {
	b := &burst{dev: ds, start: ns, peers: make(map[netip.Addr]struct{}), ports: make(map[uint32]struct{})}
	e.bursts[self] = b
	e.nextFlush = min(e.nextFlush, ns+int64(e.cfg.Scan.Window))
	return b
}

// flushBurst raises the held alert of the burst keyed by addr, if any,
// and forgets the burst.
func (e *Engine) flushBurst(addr netip.Addr) {
	b := e.bursts[addr]
	if b == nil {
		return
	}
	delete(e.bursts, addr)
	if b.held == nil {
		return
	}
	if b.answer.IsValid() && b.folded == 0 && e.scans.Suspect(b.answer, e.clock) {
		e.metrics.probesIgnored.Inc() // the device's answer to a scan
		return
	}
	a := b.held
	a.Summary += fmt.Sprintf("; within %v: %s", e.cfg.Scan.Window, b.describe())
	b.fill(a)
	e.emit(a)
}

// flushDue raises the held alerts whose window ended by the latest time
// seen.
func (e *Engine) flushDue() {
	if len(e.bursts) == 0 || e.clock < e.nextFlush {
		return
	}
	w := int64(e.cfg.Scan.Window)
	e.nextFlush = int64(^uint64(0) >> 1)
	var due []netip.Addr
	for addr, b := range e.bursts {
		if e.clock-b.start >= w {
			due = append(due, addr)
		} else {
			e.nextFlush = min(e.nextFlush, b.start+w)
		}
	}
	slices.SortFunc(due, netip.Addr.Compare) // deterministic alert order
	for _, addr := range due {
		e.flushBurst(addr)
	}
}

// FlushAlerts raises every held alert now, as at the end of a capture or
// when the sensor stops; the windows they wait for will not end otherwise.
func (e *Engine) FlushAlerts() {
	e.mu.Lock()
	defer e.mu.Unlock()
	addrs := make([]netip.Addr, 0, len(e.bursts))
	for addr := range e.bursts {
		addrs = append(addrs, addr)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	for _, addr := range addrs {
		e.flushBurst(addr)
	}
}
