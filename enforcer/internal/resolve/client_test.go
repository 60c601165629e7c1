package resolve

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/medmesh/medmesh/internal/testutil"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func lookup(t *testing.T, c *Client, name string) (Answer, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Lookup(ctx, name)
}

// The client against a real DNS server: A and AAAA together, the smallest
// TTL of the chain, CNAMEs followed, NXDOMAIN and NODATA as answers
// without addresses (the SOA's negative TTL), SERVFAIL as a failure,
// truncated UDP answers asked again over TCP, and a dead server skipped
// for the next one.
func TestClientAgainstRealServer(t *testing.T) {
	z := testutil.StartDNSZone(t)
	c, err := NewClient([]string{z.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	z.Set(t, "fw-update.luminaire.example.com",
		"fw-update.luminaire.example.com. 300 IN A 192.0.2.10",
		"fw-update.luminaire.example.com. 120 IN A 192.0.2.11",
		"fw-update.luminaire.example.com. 600 IN AAAA 2001:db8::10")
	a, err := lookup(t, c, "FW-Update.Luminaire.example.com.")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Addrs, addrs("192.0.2.10", "192.0.2.11", "2001:db8::10")) || a.TTL != 120*time.Second {
		t.Fatalf("answer %+v", a)
	}

	z.Set(t, "cdn.example.com", "cdn.example.com. 40 IN CNAME edge.example.net.")
	z.Set(t, "edge.example.net", "edge.example.net. 90 IN A 203.0.113.9")
	if a, err := lookup(t, c, "cdn.example.com"); err != nil || !slices.Equal(a.Addrs, addrs("203.0.113.9")) || a.TTL != 40*time.Second {
		t.Fatalf("through a CNAME: %+v %v", a, err)
	}

	if a, err := lookup(t, c, "gone.example.com"); err != nil || len(a.Addrs) != 0 || a.TTL != 60*time.Second {
		t.Fatalf("NXDOMAIN: %+v %v, want no addresses for the SOA's 60 s", a, err)
	}
	z.Set(t, "mx-only.example.com", "mx-only.example.com. 300 IN MX 10 mail.example.com.")
	if a, err := lookup(t, c, "mx-only.example.com"); err != nil || len(a.Addrs) != 0 {
		t.Fatalf("NODATA: %+v %v", a, err)
	}

	z.SetFail("broken.example.com", true)
	if _, err := lookup(t, c, "broken.example.com"); err == nil || !strings.Contains(err.Error(), "SERVFAIL") {
		t.Fatalf("SERVFAIL: %v", err)
	}

	var big []string
	for i := range 200 {
		big = append(big, fmt.Sprintf("198.18.%d.%d", i/256, i%256))
	}
	z.SetA(t, "big.example.com", 60, big...)
	tcpBefore := z.Queries("tcp")
	if a, err := lookup(t, c, "big.example.com"); err != nil || len(a.Addrs) != 200 {
		t.Fatalf("truncated answer: %d addresses, %v", len(a.Addrs), err)
	}
	if z.Queries("tcp") == tcpBefore {
		t.Fatal("a truncated answer was not asked again over tcp")
	}

	// A server that does not answer is skipped for the next one.
	dead, err := NewClient([]string{"127.0.0.1:1", z.Addr}, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := lookup(t, dead, "cdn.example.com"); err != nil || len(a.Addrs) != 1 {
		t.Fatalf("with a dead first server: %+v %v", a, err)
	}
}

// Without --resolver the client asks the nameservers of resolv.conf, read
// at every lookup; --resolver takes an address with or without a port.
func TestClientSystemResolver(t *testing.T) {
	z := testutil.StartDNSZone(t)
	z.Set(t, "pacs.example.com", "pacs.example.com. 30 IN A 10.20.0.5")
	host, _, _ := strings.Cut(z.Addr, ":")
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	c, err := NewClient(nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.resolvConf = conf
	if _, err := lookup(t, c, "pacs.example.com"); err == nil {
		t.Fatal("looked up without a resolv.conf")
	}
	// resolv.conf names servers without a port: 53.
	if err := os.WriteFile(conf, []byte("# written by the test\nnameserver "+host+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	servers, err := c.Servers()
	if err != nil || !slices.Equal(servers, []string{host + ":53"}) {
		t.Fatalf("servers %v %v", servers, err)
	}
	if _, err := NewClient([]string{"not-an-address"}, 0); err == nil {
		t.Fatal("a resolver that is not an address accepted")
	}
	c2, err := NewClient([]string{z.Addr}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := lookup(t, c2, "pacs.example.com"); err != nil || !slices.Equal(a.Addrs, addrs("10.20.0.5")) {
		t.Fatalf("%+v %v", a, err)
	}
}

// addresses ignores what an answer says about other names: records of
// names not on the CNAME chain from the question, sinkhole addresses, and
// answers to another question.
func TestAddressesTakeOnlyTheNameAsked(t *testing.T) {
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	q := new(dns.Msg)
	q.SetQuestion("a.example.com.", dns.TypeA)
	m := new(dns.Msg)
	m.SetReply(q)
	m.Answer = []dns.RR{
		rr("bank.example.org. 300 IN A 198.51.100.66"), // not asked: ignored
		rr("a.example.com. 300 IN CNAME b.example.com."),
		rr("b.example.com. 100 IN A 192.0.2.1"),
		rr("b.example.com. 100 IN A 0.0.0.0"),
		rr("a.example.com. 50 IN A 192.0.2.99"), // beside its own CNAME: not on the chain's end
	}
	got, ttl, err := addresses("a.example.com", dns.TypeA, m)
	if err != nil || !slices.Equal(got, addrs("192.0.2.1")) || ttl != 100 {
		t.Fatalf("addresses %v ttl %d err %v", got, ttl, err)
	}
	if _, _, err := addresses("other.example.com", dns.TypeA, m); err == nil {
		t.Fatal("an answer to another question accepted")
	}
	if _, _, err := addresses("a.example.com", dns.TypeAAAA, m); err == nil {
		t.Fatal("an answer to another type accepted")
	}
	m.Response = false
	if _, _, err := addresses("a.example.com", dns.TypeA, m); err == nil {
		t.Fatal("a query accepted as an answer")
	}
	// A CNAME loop ends after maxChain steps with no address.
	m.Response = true
	m.Answer = []dns.RR{rr("a.example.com. 300 IN CNAME b.example.com."), rr("b.example.com. 300 IN CNAME a.example.com.")}
	if got, _, err := addresses("a.example.com", dns.TypeA, m); err != nil || len(got) != 0 {
		t.Fatalf("CNAME loop: %v %v", got, err)
	}
}

// FuzzAnswer: DNS answers come from the network. Whatever bytes arrive,
// reading them never panics, and every address taken is one an A or AAAA
// record of the message holds, for the question's type; the TTL is never
// above every record's.
func FuzzAnswer(f *testing.F) {
	q := new(dns.Msg)
	q.SetQuestion("a.example.com.", dns.TypeA)
	m := new(dns.Msg)
	m.SetReply(q)
	for _, s := range []string{"a.example.com. 300 IN CNAME b.example.com.", "b.example.com. 100 IN A 192.0.2.1", "a.example.com. 5 IN AAAA 2001:db8::1"} {
		rr, err := dns.NewRR(s)
		if err != nil {
			f.Fatal(err)
		}
		m.Answer = append(m.Answer, rr)
	}
	b, err := m.Pack()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, "a.example.com", true)
	m.Rcode = dns.RcodeNameError
	m.Answer = nil
	if b, err = m.Pack(); err != nil {
		f.Fatal(err)
	}
	f.Add(b, "a.example.com", false)
	f.Fuzz(func(t *testing.T, b []byte, name string, v4 bool) {
		msg := new(dns.Msg)
		if msg.Unpack(b) != nil {
			return
		}
		qtype := dns.TypeAAAA
		if v4 {
			qtype = dns.TypeA
		}
		got, ttl, err := addresses(name, qtype, msg)
		if err != nil {
			return
		}
		held := map[netip.Addr]bool{}
		maxTTL := uint32(0)
		for _, rr := range append(append([]dns.RR{}, msg.Answer...), msg.Ns...) {
			maxTTL = max(maxTTL, rr.Header().Ttl)
			switch r := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(r.A.To4()); ok && qtype == dns.TypeA {
					held[a.Unmap()] = true
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(r.AAAA.To16()); ok && qtype == dns.TypeAAAA {
					held[a.Unmap()] = true
				}
			case *dns.SOA:
				maxTTL = max(maxTTL, r.Minttl)
			}
		}
		for _, a := range got {
			if !held[a] || a.IsUnspecified() {
				t.Fatalf("address %s is not one the answer holds for the type asked", a)
			}
		}
		if !slices.IsSortedFunc(got, netip.Addr.Compare) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Fatalf("addresses %v not sorted and unique", got)
		}
		if ttl > maxTTL {
			t.Fatalf("ttl %d above every record's (%d)", ttl, maxTTL)
		}
	})
}
