package engine

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/medmesh/medmesh/internal/names"
	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/detect"
	"github.com/medmesh/medmesh/node/internal/identity"
	"github.com/medmesh/medmesh/node/internal/scan"
	"github.com/medmesh/medmesh/node/internal/score"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// The findings detectors make beyond one flow's score: scans, logins,
// bursts of refused logins, and HL7 or DICOM to peers outside a baseline.

// probe counts one probe (or session) of device d for scan detection and
// raises d's scan alert when it makes d a scanner in its window. f is the
// flow from d's side.
func (e *Engine) probe(d *identity.Device, ds *devState, f *score.Flow, p scan.Probe, src, dst netip.Addr, sport, dport uint16) {
	fi := e.scans.Observe(p)
	if fi == nil {
		return
	}
	e.scorer.ScoreFinding(score.Scan, fi.String(), &e.res)
	if e.res.Score < e.scorer.Threshold() {
		return
	}
	e.raise(d, ds, f, src, dst, sport, dport, p.Proto, &evidence{once: true, scan: scanEvidence(fi), finding: fi})
}

// arp counts an ARP request or reply sent by device d.
func (e *Engine) arp(d *identity.Device, a *detect.ARP, ns int64) {
	fi := e.scans.ARP(a.Op == 2, a.SenderIP, a.TargetIP, ns)
	if fi == nil {
		return
	}
	e.scorer.ScoreFinding(score.Scan, fi.String(), &e.res)
	if e.res.Score < e.scorer.Threshold() {
		return
	}
	ds := e.state(d)
	class, _ := d.Class()
	f := score.Flow{Peer: a.TargetIP, Names: d, Outbound: true, TimeNs: ns, Class: class}
	e.raise(d, ds, &f, a.SenderIP, a.TargetIP, 0, 0, 0, &evidence{once: true, scan: scanEvidence(fi), finding: fi})
}

func scanEvidence(fi *scan.Finding) *medmeshv1.ScanEvidence {
	return &medmeshv1.ScanEvidence{
		Patterns: fi.Patterns, Methods: fi.Methods,
		Probes: uint32(fi.Probes), Hosts: uint32(fi.Hosts), Services: uint32(fi.Ports),
		Refused: uint32(fi.Refused), Unanswered: uint32(fi.Unanswered), HalfOpen: uint32(fi.HalfOpen),
		Open: uint32(fi.Open), Pending: uint32(fi.Pending),
		ArpAsked: uint32(fi.ARPAsked), ArpAnswered: uint32(fi.ARPAnswered),
		WindowSeconds: uint32(fi.Window.Seconds()),
	}
}

// listScan lists what a scan probed in its alert, as the coordinator's
// incidents read it: the hosts (its victims) and services, at most 64.
func listScan(a *medmeshv1.Alert, fi *scan.Finding) {
	a.Peers, a.PeerCount = fi.PeerNames(scan.ListMax), uint32(fi.Hosts)
	a.Services, a.ServiceCount = nil, uint32(fi.Ports)
	for _, s := range fi.Services {
		a.Services = append(a.Services, &medmeshv1.Service{Protocol: uint32(s.Proto), Port: uint32(s.Port)})
	}
}

func loginEvidence(l *detect.Login) *medmeshv1.LoginEvidence {
	return &medmeshv1.LoginEvidence{Protocol: l.Protocol, Method: l.Method, Account: l.User,
		DefaultPassword: l.Default, Cleartext: l.Cleartext, Outcome: l.Outcome.String()}
}

// login scores a login seen in flow t between initiator and responder
// (either may be nil), and counts a refused one towards a burst.
func (e *Engine) login(l *detect.Login, t flow.Tuple, initiator, responder *identity.Device, ns int64) {
	if l.Outcome == detect.Refused {
		e.refused(l, t, initiator, responder, ns)
	}
	// A login is a finding about the service that accepts it (for an SNMP
	// notification, the agent that sends it); a service outside the campus
	// has no device here, so the other end carries it.
	d, peer, outbound := responder, t.Src, false
	if l.Subject == flow.Fwd {
		d, peer, outbound = initiator, t.Dst, true
	}
	subject := d
	if d == nil {
		d, peer, outbound = initiator, t.Dst, true
		if l.Subject == flow.Fwd {
			d, peer, outbound = responder, t.Src, false
		}
	}
	if d == nil {
		return
	}
	e.scorer.ScoreLogin(l, peer.String(), d != subject, &e.res)
	if e.res.Score < e.scorer.Threshold() {
		return
	}
	ds := e.state(d)
	class, _ := d.Class()
	f := score.Flow{Peer: peer, Names: d, Proto: t.Proto, Port: t.DstPort, App: l.Protocol, Outbound: outbound, TimeNs: ns, Class: class}
	e.raise(d, ds, &f, t.Src, t.Dst, t.SrcPort, t.DstPort, t.Proto, &evidence{login: loginEvidence(l), noPeer: l.Inferred})
}

// failKey is one source's logins to one service.
type failKey struct {
	src, dst netip.Addr
	proto    uint8
	port     uint16
}

// failures are the refused logins of one failKey in its window.
type failures struct {
	start    int64
	n        int
	accounts []string
	reported bool
}

// Bounds on refused-login tracking.
const (
	maxFailureKeys = 1 << 14
	maxAccounts    = 8
)

// refused counts a refused login; the FailedLogins-th within the window
// raises one failed_login_burst alert, about the source when it is a
// device here, else about the service.
func (e *Engine) refused(l *detect.Login, t flow.Tuple, initiator, responder *identity.Device, ns int64) {
	k := failKey{t.Src, t.Dst, t.Proto, t.DstPort}
	w := int64(e.cfg.FailedLoginWindow)
	fl := e.failures[k]
	if fl == nil || ns-fl.start >= w {
		if fl == nil && len(e.failures) >= maxFailureKeys {
			for k, o := range e.failures {
				if ns-o.start >= w {
					delete(e.failures, k)
				}
			}
			if len(e.failures) >= maxFailureKeys {
				return
			}
		}
		fl = &failures{start: ns}
		e.failures[k] = fl
	}
	fl.n++
	if l.User != "" && len(fl.accounts) < maxAccounts && !slices.Contains(fl.accounts, l.User) {
		fl.accounts = append(fl.accounts, l.User)
	}
	if fl.reported || fl.n < e.cfg.FailedLogins {
		return
	}
	fl.reported = true
	d, peer, outbound := initiator, t.Dst, true
	if d == nil {
		d, peer, outbound = responder, t.Src, false
	}
	if d == nil {
		return
	}
	service := names.Protocol(uint32(t.Proto)) + "/" + strconv.Itoa(int(t.DstPort))
	detail := fmt.Sprintf("%d refused %s logins from %s to %s %s within %v", fl.n, l.Protocol, t.Src, t.Dst, service, e.cfg.FailedLoginWindow)
	if len(fl.accounts) > 0 {
		detail += " (accounts " + strings.Join(fl.accounts, ", ") + ")"
	}
	e.scorer.ScoreFinding(score.FailedLoginBurst, detail, &e.res)
	if e.res.Score < e.scorer.Threshold() {
		return
	}
	ds := e.state(d)
	class, _ := d.Class()
	f := score.Flow{Peer: peer, Names: d, Proto: t.Proto, Port: t.DstPort, App: l.Protocol, Outbound: outbound, TimeNs: ns, Class: class}
	ev := loginEvidence(l)
	ev.Account, ev.DefaultPassword = "", false
	ev.Attempts, ev.Accounts = uint32(fl.n), slices.Clone(fl.accounts)
	ev.WindowSeconds = uint32(e.cfg.FailedLoginWindow.Seconds())
	e.raise(d, ds, &f, t.Src, t.Dst, t.SrcPort, t.DstPort, t.Proto, &evidence{once: true, login: ev})
}

// phi checks a flow just found to carry HL7 or DICOM, which carry patient
// data and here go without TLS, against the baselines of its ends: the
// initiator's (it chose the peer), and the responder's when the initiator
// is outside the campus. A peer in the baseline is the device's normal
// business.
func (e *Engine) phi(t flow.Tuple, app string, initiator, responder *identity.Device, ns int64) {
	check := func(d *identity.Device, peer netip.Addr, outbound bool) {
		ds := e.state(d)
		if ds.learner != nil || ds.base == nil && e.mode == Learn {
			return // still learning what is normal
		}
		class, _ := d.Class()
		f := score.Flow{Peer: peer, Names: d, Proto: t.Proto, Port: t.DstPort, App: app, Outbound: outbound, TimeNs: ns, Class: class}
		f.Baseline = ds.base
		if f.Baseline == nil {
			f.Baseline, f.ClassBaseline = e.classBaseline(class), true
		}
		if f.Baseline == nil {
			return
		}
		e.scorer.ScoreFlow(ds.tracker, &f, &e.res)
		if e.res.Score < e.scorer.Threshold() || !slices.ContainsFunc(e.res.Hits, func(h score.Hit) bool { return h.Factor == score.CleartextPHI }) {
			return
		}
		e.raise(d, ds, &f, t.Src, t.Dst, t.SrcPort, t.DstPort, t.Proto, nil)
	}
	if initiator != nil {
		check(initiator, t.Dst, true)
	}
	if responder != nil && responder != initiator && e.scorer.External(t.Src) {
		check(responder, t.Src, false)
	}
}
