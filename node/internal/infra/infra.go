// Package infra knows the campus's infrastructure services as one sensor
// sees them: which addresses serve DHCP, DNS, NTP, syslog, directory
// lookups (LDAP, Kerberos), HL7 and DICOM to the devices here. It learns
// them from what devices ask for and get answered (or, for syslog, send),
// from what DHCP servers advertise, and from what the operator declares.
//
// A device talking to its campus's infrastructure for the service it uses
// is not an anomaly: the scorer asks Serves before calling such a flow a
// new peer. Only campus (local) addresses qualify, and a learned server
// counts once it served MinClients distinct devices, so one compromised
// device cannot make an address "infrastructure" by talking to it.
package infra

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Service is an infrastructure service.
type Service uint8

// The services, in the order they are reported.
const (
	None Service = iota
	DHCP
	DNS
	NTP
	Syslog
	Directory
	HL7
	DICOM
	numServices
)

var serviceNames = [numServices]string{None: "", DHCP: "dhcp", DNS: "dns", NTP: "ntp", Syslog: "syslog",
	Directory: "directory", HL7: "hl7", DICOM: "dicom"}

func (s Service) String() string {
	if s < numServices {
		return serviceNames[s]
	}
	return fmt.Sprintf("service(%d)", uint8(s))
}

// ParseService reads a service name as String spells it.
func ParseService(name string) (Service, error) {
	for s := DHCP; s < numServices; s++ {
		if serviceNames[s] == name {
			return s, nil
		}
	}
	return None, fmt.Errorf("unknown infrastructure service %q: want one of %s", name, strings.Join(serviceNames[DHCP:], ", "))
}

// Classify names the infrastructure service a flow to (proto, port) with
// the detected application app uses, or None. The application decides
// when it is known; the well-known port otherwise (a flow's first packet,
// before any payload). HL7 and DICOM have no fixed port: only their
// application names them.
func Classify(proto uint8, port uint16, app string) Service {
	switch app {
	case "dhcp":
		return DHCP
	case "dns":
		return DNS
	case "ntp":
		return NTP
	case "syslog":
		return Syslog
	case "ldap":
		return Directory
	case "hl7":
		return HL7
	case "dicom":
		return DICOM
	case "":
	default:
		return None // another application on a well-known port is not that service
	}
	switch {
	case proto == 17 && port == 67:
		return DHCP
	case (proto == 17 || proto == 6) && port == 53:
		return DNS
	case proto == 17 && port == 123:
		return NTP
	case proto == 17 && port == 514:
		return Syslog
	case proto == 6 && (port == 389 || port == 636 || port == 3268 || port == 3269),
		(proto == 6 || proto == 17) && port == 88:
		return Directory
	}
	return None
}

var (
	allRouters6    = netip.MustParseAddr("ff02::2")
	mldv2Reports   = netip.MustParseAddr("ff02::16")
	solicitedNodes = netip.MustParsePrefix("ff02::1:ff00:0/104")
)

// LinkControl reports whether a flow of protocol proto to dst is the IP
// stack's own housekeeping with the link's routers and switches: IGMP,
// and ICMPv6 router solicitations (ff02::2), MLDv2 reports (ff02::16)
// and neighbour solicitations (solicited-node groups). A device sends
// them whenever an interface comes up, whatever it learned; they are
// never a new peer. Echo requests to all nodes (ff02::1), a sweep, are
// not among them.
func LinkControl(proto uint8, dst netip.Addr) bool {
	switch proto {
	case 2: // IGMP
		return true
	case 58: // ICMPv6
		return dst == allRouters6 || dst == mldv2Reports || solicitedNodes.Contains(dst)
	}
	return false
}

// fixedPort reports whether s is always offered on its well-known ports,
// so that serving it once stands for every one of them.
func fixedPort(s Service) bool { return s != HL7 && s != DICOM }

// Declared is an operator's declaration: the addresses in Prefix provide
// Service.
type Declared struct {
	Service Service
	Prefix  netip.Prefix
}

// ParseDeclared reads "SERVICE=ADDRESS" or "SERVICE=PREFIX", e.g.
// "ntp=10.20.0.5" or "dns=10.20.0.0/28".
func ParseDeclared(s string) (Declared, error) {
	name, addr, ok := strings.Cut(s, "=")
	if !ok {
		return Declared{}, fmt.Errorf("infrastructure %q: want SERVICE=ADDRESS or SERVICE=PREFIX", s)
	}
	svc, err := ParseService(strings.TrimSpace(name))
	if err != nil {
		return Declared{}, err
	}
	addr = strings.TrimSpace(addr)
	p, err := netip.ParsePrefix(addr)
	if err != nil {
		a, aerr := netip.ParseAddr(addr)
		if aerr != nil {
			return Declared{}, fmt.Errorf("infrastructure %q: %q is neither an address nor a prefix", s, addr)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return Declared{Service: svc, Prefix: p.Masked()}, nil
}

func (d Declared) String() string { return d.Service.String() + "=" + d.Prefix.String() }

// Config bounds the map.
type Config struct {
	// MinClients is the number of distinct devices a server must have
	// served before it counts as infrastructure.
	MinClients int
	// MaxServers bounds the learned servers.
	MaxServers int
	// Declared are the operator's declarations; they count at once.
	Declared []Declared
	// Local reports whether an address belongs to the campus. Nil: the
	// private, unique-local and CGNAT ranges.
	Local func(netip.Addr) bool
}

// DefaultConfig learns a server from two clients, up to 4096 servers.
func DefaultConfig() Config { return Config{MinClients: 2, MaxServers: 4096} }

func (c Config) validate() error {
	var errs []error
	if c.MinClients < 1 || c.MinClients > maxTracked {
		errs = append(errs, fmt.Errorf("min clients %d not in 1..%d", c.MinClients, maxTracked))
	}
	if c.MaxServers < 1 {
		errs = append(errs, fmt.Errorf("max servers %d must be positive", c.MaxServers))
	}
	for _, d := range c.Declared {
		if d.Service == None || d.Service >= numServices || !d.Prefix.IsValid() {
			errs = append(errs, fmt.Errorf("declared %v is not a service and prefix", d))
		}
	}
	return errors.Join(errs...)
}

// maxTracked is the most distinct clients remembered per service.
const maxTracked = 4

// maxPorts bounds the ports remembered per server for HL7 and DICOM.
const maxPorts = 8

type use struct {
	clients    [maxTracked]netip.Addr
	n          uint8
	advertised bool
	ports      []uint32 // proto<<16 | port, HL7 and DICOM only
}

type server struct {
	svc [numServices]use
}

// Map is one sensor's knowledge of its campus's infrastructure. Not safe
// for concurrent use.
type Map struct {
	cfg     Config
	servers map[netip.Addr]*server
}

// New returns an empty map.
func New(cfg Config) (*Map, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("infra config: %w", err)
	}
	if cfg.Local == nil {
		cfg.Local = Local
	}
	return &Map{cfg: cfg, servers: make(map[netip.Addr]*server)}, nil
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// Local reports whether a is a private (RFC 1918), unique-local or CGNAT
// address: the campus ranges when none are configured.
func Local(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsPrivate() || cgnat.Contains(a)
}

func (m *Map) entry(addr netip.Addr) *server {
	addr = addr.Unmap()
	if !addr.IsValid() || !m.cfg.Local(addr) || addr.IsLinkLocalUnicast() {
		return nil
	}
	sv := m.servers[addr]
	if sv == nil {
		if len(m.servers) >= m.cfg.MaxServers {
			return nil
		}
		sv = &server{}
		m.servers[addr] = sv
	}
	return sv
}

// Served records that server provided s to client on (proto, port): it
// answered the client's request, or, for syslog, received its messages.
// It does not allocate for a server, service and client already known.
func (m *Map) Served(server, client netip.Addr, s Service, proto uint8, port uint16) {
	if s == None || s >= numServices || server == client {
		return
	}
	sv := m.servers[server.Unmap()]
	if sv == nil {
		if sv = m.entry(server); sv == nil {
			return
		}
	}
	u := &sv.svc[s]
	if !fixedPort(s) {
		pp := uint32(proto)<<16 | uint32(port)
		if !slices.Contains(u.ports, pp) {
			if len(u.ports) >= maxPorts {
				return
			}
			u.ports = append(u.ports, pp)
		}
	}
	client = client.Unmap()
	if int(u.n) >= maxTracked || !client.IsValid() || slices.Contains(u.clients[:u.n], client) {
		return
	}
	u.clients[u.n] = client
	u.n++
}

// Advertised records that a DHCP server named server as the campus's
// provider of s (options 6, 42, 54).
func (m *Map) Advertised(server netip.Addr, s Service) {
	if s == None || s >= numServices || !fixedPort(s) {
		return
	}
	if sv := m.entry(server); sv != nil {
		sv.svc[s].advertised = true
	}
}

// Serves reports whether server provides s on (proto, port) to this
// campus: declared, advertised by DHCP, or seen serving MinClients
// devices. HL7 and DICOM count on the ports they were seen serving. It
// does not allocate.
func (m *Map) Serves(server netip.Addr, s Service, proto uint8, port uint16) bool {
	if s == None || s >= numServices {
		return false
	}
	server = server.Unmap()
	for _, d := range m.cfg.Declared {
		if d.Service == s && d.Prefix.Contains(server) {
			return true
		}
	}
	sv := m.servers[server]
	if sv == nil {
		return false
	}
	u := &sv.svc[s]
	if !fixedPort(s) && !slices.Contains(u.ports, uint32(proto)<<16|uint32(port)) {
		return false
	}
	return u.advertised || int(u.n) >= m.cfg.MinClients
}

// Server is one known infrastructure server, for reports.
type Server struct {
	Addr     netip.Addr
	Services []Service
}

// Servers lists the addresses that Serves some service (declared prefixes
// aside), ordered by address.
func (m *Map) Servers() []Server {
	var out []Server
	for addr, sv := range m.servers {
		var svcs []Service
		for s := DHCP; s < numServices; s++ {
			u := &sv.svc[s]
			if u.advertised || int(u.n) >= m.cfg.MinClients {
				svcs = append(svcs, s)
			}
		}
		if len(svcs) > 0 {
			out = append(out, Server{Addr: addr, Services: svcs})
		}
	}
	slices.SortFunc(out, func(a, b Server) int { return a.Addr.Compare(b.Addr) })
	return out
}
