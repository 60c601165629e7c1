// Package resolve turns the DNS names that policies use as peers into
// addresses for the enforcer, with the TTL their answers carry. A Client
// asks DNS servers (the --resolver addresses, or /etc/resolv.conf's) for a
// name's A and AAAA records; a Resolver keeps every name a policy uses
// resolved, asks again when an answer's TTL (held between a floor and a
// ceiling) runs out, and hands each changed answer to the enforcer's
// state. When a resolution fails, the last good answer stays installed:
// DNS being down never removes an allow rule, and nothing but an answer
// for the name itself ever adds one.
package resolve

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Answer is a name's addresses and how long they may be used.
type Answer struct {
	// Addrs are the name's IPv4 and IPv6 addresses, sorted, without
	// duplicates; empty when the name has none (NXDOMAIN, or no A and no
	// AAAA records).
	Addrs []netip.Addr
	// TTL is the smallest TTL of the records the answer was read from (for
	// an answer without addresses, the negative-caching TTL of the zone's
	// SOA, RFC 2308, or 0 without one).
	TTL time.Duration
}

// Client asks DNS servers for names' addresses, over UDP and, when an
// answer is truncated, TCP. It never follows referrals: it asks recursive
// resolvers, as a host's stub resolver does.
type Client struct {
	servers    []string
	resolvConf string
	timeout    time.Duration
}

// DefaultTimeout bounds one query to one server.
const DefaultTimeout = 2 * time.Second

// NewClient returns a client asking servers (host or host:port, port 53 by
// default) in order until one answers. Without servers it asks the
// nameservers /etc/resolv.conf lists, read again at every lookup.
func NewClient(servers []string, timeout time.Duration) (*Client, error) {
	c := &Client{resolvConf: "/etc/resolv.conf", timeout: timeout}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	for _, s := range servers {
		hp, err := serverAddr(s)
		if err != nil {
			return nil, err
		}
		c.servers = append(c.servers, hp)
	}
	return c, nil
}

// serverAddr turns "10.0.0.53", "10.0.0.53:5353", "2001:db8::53" or
// "[2001:db8::53]:53" into host:port.
func serverAddr(s string) (string, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return "", fmt.Errorf("resolver %q: want an IP address, optionally with a port", s)
	}
	return ap.String(), nil
}

// Servers returns the servers a lookup asks now.
func (c *Client) Servers() ([]string, error) {
	if len(c.servers) > 0 {
		return c.servers, nil
	}
	cc, err := dns.ClientConfigFromFile(c.resolvConf)
	if err != nil {
		return nil, fmt.Errorf("system resolver: %w", err)
	}
	var out []string
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("system resolver: %s lists no nameserver", c.resolvConf)
	}
	return out, nil
}

// Lookup resolves name to its addresses: A and AAAA, both from the same
// server. A server that fails either query (no answer, SERVFAIL, REFUSED,
// an answer to another question) is skipped for the next one; the lookup
// fails when all do.
func (c *Client) Lookup(ctx context.Context, name string) (Answer, error) {
	servers, err := c.Servers()
	if err != nil {
		return Answer{}, err
	}
	var errs []error
	for _, s := range servers {
		a, err := c.lookupAt(ctx, s, name)
		if err == nil {
			return a, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", s, err))
		if ctx.Err() != nil {
			break
		}
	}
	return Answer{}, errors.Join(errs...)
}

func (c *Client) lookupAt(ctx context.Context, server, name string) (Answer, error) {
	var out Answer
	ttl := uint32(math.MaxUint32)
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m, err := c.exchange(ctx, server, name, qtype)
		if err != nil {
			return Answer{}, err
		}
		addrs, t, err := addresses(name, qtype, m)
		if err != nil {
			return Answer{}, err
		}
		out.Addrs = append(out.Addrs, addrs...)
		ttl = min(ttl, t)
	}
	slices.SortFunc(out.Addrs, netip.Addr.Compare)
	out.Addrs = slices.Compact(out.Addrs)
	out.TTL = time.Duration(ttl) * time.Second
	return out, nil
}

// exchange sends one query, over TCP again when the UDP answer is
// truncated.
func (c *Client) exchange(ctx context.Context, server, name string, qtype uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.RecursionDesired = true
	q.SetEdns0(1232, false) // the DNS flag day 2020 size: no fragments
	for _, network := range []string{"udp", "tcp"} {
		cl := &dns.Client{Net: network, Timeout: c.timeout}
		qctx, cancel := context.WithTimeout(ctx, c.timeout)
		m, _, err := cl.ExchangeContext(qctx, q, server)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s %s over %s: %w", dns.TypeToString[qtype], name, network, err)
		}
		if !m.Truncated {
			return m, nil
		}
	}
	return nil, fmt.Errorf("%s %s: truncated over tcp too", dns.TypeToString[qtype], name)
}

// maxChain bounds the CNAME records followed from the name asked.
const maxChain = 8

// addresses reads the addresses of name from m, an answer to the question
// (name, qtype): the A or AAAA records of name, or of the name its CNAME
// chain in the answer section leads to, and the smallest TTL of the
// records used. Records about any other name are ignored, so an answer
// cannot slip in addresses of names nobody asked for. NXDOMAIN and an
// answer without records of the type are answers without addresses, with
// the SOA's negative TTL; any other response code is an error, as is a
// message that answers another question.
func addresses(name string, qtype uint16, m *dns.Msg) ([]netip.Addr, uint32, error) {
	fqdn := strings.ToLower(dns.Fqdn(name))
	switch {
	case !m.Response || m.Opcode != dns.OpcodeQuery:
		return nil, 0, errors.New("not a response to a query")
	case len(m.Question) != 1 || strings.ToLower(m.Question[0].Name) != fqdn || m.Question[0].Qtype != qtype || m.Question[0].Qclass != dns.ClassINET:
		return nil, 0, errors.New("an answer to another question")
	}
	switch m.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, negativeTTL(m), nil
	default:
		return nil, 0, fmt.Errorf("server answered %s", dns.RcodeToString[m.Rcode])
	}
	owner, ttl := fqdn, uint32(math.MaxUint32)
	for range maxChain {
		next := ""
		for _, rr := range m.Answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, owner) && c.Hdr.Class == dns.ClassINET {
				next, ttl = strings.ToLower(dns.Fqdn(c.Target)), min(ttl, c.Hdr.Ttl)
				break
			}
		}
		if next == "" {
			break
		}
		owner = next
	}
	var out []netip.Addr
	for _, rr := range m.Answer {
		h := rr.Header()
		if !strings.EqualFold(h.Name, owner) || h.Class != dns.ClassINET || h.Rrtype != qtype {
			continue
		}
		var ip net.IP
		switch r := rr.(type) {
		case *dns.A:
			ip = r.A.To4()
		case *dns.AAAA:
			ip = r.AAAA.To16()
		}
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		a = a.Unmap()
		// A sinkhole's 0.0.0.0 or :: means "blocked", not an address.
		if a.IsUnspecified() {
			continue
		}
		out = append(out, a)
		ttl = min(ttl, h.Ttl)
	}
	if len(out) == 0 {
		return nil, min(ttl, negativeTTL(m)), nil
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), ttl, nil
}

// negativeTTL is how long an answer without addresses holds (RFC 2308
// section 5): the smaller of the SOA record's TTL and its minimum field,
// or 0 without an SOA in the authority section.
func negativeTTL(m *dns.Msg) uint32 {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return min(soa.Hdr.Ttl, soa.Minttl)
		}
	}
	return 0
}
