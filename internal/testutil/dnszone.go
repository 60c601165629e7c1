package testutil

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DNSZone is a real DNS server (github.com/miekg/dns, UDP and TCP on one
// loopback port) serving records a test changes while it runs, as a
// recursive resolver would answer: CNAMEs it holds are followed, a name it
// does not hold is NXDOMAIN and an answer without records of the type asked
// carries the zone's SOA (negative TTL 60 s), a failing name gets SERVFAIL,
// and a UDP answer larger than the query's EDNS size goes out truncated and
// empty, so clients ask again over TCP.
type DNSZone struct {
	// Addr is the server's host:port.
	Addr string

	mu      sync.Mutex
	records map[string][]dns.RR // by lower-case FQDN
	fail    map[string]bool
	down    bool
	queries map[string]int // by network
	udp     *dns.Server
	tcp     *dns.Server
}

// StartDNSZone starts a server on 127.0.0.1, stopped when the test ends.
func StartDNSZone(t testing.TB) *DNSZone {
	t.Helper()
	z := &DNSZone{records: map[string][]dns.RR{}, fail: map[string]bool{}, queries: map[string]int{}}
	var pc net.PacketConn
	var ln net.Listener
	for range 20 {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		t.Fatal("no loopback port free for both udp and tcp")
	}
	z.Addr = pc.LocalAddr().String()
	started := make(chan struct{}, 2)
	h := dns.HandlerFunc(z.serve)
	z.udp = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { started <- struct{}{} }}
	z.tcp = &dns.Server{Listener: ln, Handler: h, NotifyStartedFunc: func() { started <- struct{}{} }}
	for _, s := range []*dns.Server{z.udp, z.tcp} {
		go s.ActivateAndServe()
	}
	<-started
	<-started
	t.Cleanup(z.Stop)
	return z
}

// Stop shuts the server down: queries get no answer.
func (z *DNSZone) Stop() {
	z.udp.Shutdown()
	z.tcp.Shutdown()
}

// Set replaces name's records with rrs, in zone-file syntax
// ("a.example.com. 60 IN A 192.0.2.1").
func (z *DNSZone) Set(t testing.TB, name string, rrs ...string) {
	t.Helper()
	var parsed []dns.RR
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		parsed = append(parsed, rr)
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	z.records[strings.ToLower(dns.Fqdn(name))] = parsed
}

// SetA replaces name's records with one A record per address.
func (z *DNSZone) SetA(t testing.TB, name string, ttl int, addrs ...string) {
	t.Helper()
	var rrs []string
	for _, a := range addrs {
		rrs = append(rrs, fmt.Sprintf("%s %d IN A %s", dns.Fqdn(name), ttl, a))
	}
	z.Set(t, name, rrs...)
}

// SetFail makes the server answer SERVFAIL for name, or stop doing so.
func (z *DNSZone) SetFail(name string, fail bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.fail[strings.ToLower(dns.Fqdn(name))] = fail
}

// SetDown makes the server ignore every query (a resolver that does not
// answer), or answer again.
func (z *DNSZone) SetDown(down bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.down = down
}

// Queries returns how many queries arrived over network ("udp", "tcp").
func (z *DNSZone) Queries(network string) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.queries[network]
}

func (z *DNSZone) serve(w dns.ResponseWriter, q *dns.Msg) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.down || len(q.Question) != 1 {
		return
	}
	network := w.LocalAddr().Network()
	z.queries[network]++
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	qn, qtype := strings.ToLower(q.Question[0].Name), q.Question[0].Qtype
	if z.fail[qn] {
		m.Rcode = dns.RcodeServerFailure
		w.WriteMsg(m)
		return
	}
	name, found := qn, false
	for range 10 {
		rrs, ok := z.records[name]
		if !ok {
			break
		}
		found = true
		next := ""
		for _, rr := range rrs {
			if c, ok := rr.(*dns.CNAME); ok {
				m.Answer = append(m.Answer, rr)
				next = strings.ToLower(c.Target)
			} else if rr.Header().Rrtype == qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
		if next == "" {
			break
		}
		name = next
	}
	if !found {
		m.Rcode = dns.RcodeNameError
	}
	if !slices.ContainsFunc(m.Answer, func(rr dns.RR) bool { return rr.Header().Rrtype == qtype }) {
		soa, _ := dns.NewRR("example.com. 300 IN SOA ns.example.com. admin.example.com. 1 3600 600 86400 60")
		m.Ns = []dns.RR{soa}
	}
	size := dns.MinMsgSize
	if o := q.IsEdns0(); o != nil {
		size = int(o.UDPSize())
	}
	if network == "udp" && m.Len() > size {
		m.Answer, m.Truncated = nil, true
	}
	w.WriteMsg(m)
}
