// Package lab builds the medmesh campus lab on one Linux host: a hospital
// core with its services, floors of simulated medical devices behind inline
// enforcers, sensors fed by mirrored floor traffic, and three coordinators,
// all in network namespaces made with netlink. It supervises the processes
// it starts through a state file, and tears everything down again.
//
// Layout (default prefix "mm-", default octet 96):
//
//	host netns      coordinators c1..c3 on 127.0.0.1..3 (API :7400, Raft :7401,
//	                admin :7403); link mm-host 10.99.0.1/24 to the core, with
//	                10.99.0.11..13:7400 DNATed to 127.0.0.1..3:7400 so sensors and
//	                enforcers in namespaces reach the coordinators.
//	mm-core         router: host0 10.99.0.2, svcbr 10.98.0.1/24 (services),
//	                inet0 203.0.113.1/24, eN 10.97.N.1/24 (enforcer uplinks),
//	                sN 10.96.N.1/24 (sensor management, s0 for the core's).
//	mm-hl7 ...      core services on 10.98.0.10.. (hl7, pacs, dhcp, ntp, central),
//	                each with a server vendor's MAC; every frame they send, and
//	                every frame the core routes to them, is mirrored to mm-s0.
//	mm-s0           the core's sensor: tap0 receives the services' mirrored
//	                frames; mgmt0 10.96.0.2.
//	mm-inet         the "internet" host 203.0.113.10 (TEST-NET-3, never routed).
//	mm-fN           floor N: bridge br0 with a port per device and the enforcer;
//	                every port's ingress is mirrored (tc u32 + mirred) to "mirror".
//	mm-fN-DEV       a device: eth0 10.(100+N).0.X/24, default route via its enforcer.
//	mm-eN           enforcer: dev0 10.(100+N).0.1 on the floor (XDP attaches here),
//	                the floor's gateway (a Cisco MAC), up0 10.97.N.2 to the core.
//	mm-sN           sensor: tap0 receives the floor's mirrored frames; mgmt0
//	                10.96.N.2 reaches the coordinators through the core.
//
// Every connection (Raft, API, sensors, enforcers, the lab's own clients)
// is mutual TLS with certificates of a CA that Up makes in StateDir/tls
// (see TLSDir); the sensors' gossip is encrypted with a key made there too.
//
// Nothing is routed to the real network: the host only routes 10.96.0.0/12
// into the lab, and the core has no default route.
package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/medmesh/medmesh/deploy/lab/sim"
)

// Device is a simulated device on a floor.
type Device struct {
	Name         string   `json:"name"` // unique in the lab, e.g. "pump1"
	Kind         sim.Kind `json:"kind"`
	MAC          string   `json:"mac"` // vendor OUI, so sensors can classify it
	LifeCritical bool     `json:"life_critical"`
	Console      bool     `json:"console,omitempty"` // runs a telnet service console with default credentials
	// Host is the last octet of the device's address on its floor; 0 means
	// 10 + the device's position in the lab. Roam pins it.
	Host int `json:"host,omitempty"`
	// Home is the floor whose name its namespace carries, when the device
	// roamed away from it; 0 means its current floor.
	Home int `json:"home,omitempty"`
	// Identity is what the lab's CMDB says the device is: Up sets it as
	// the device's vendor, model, version, os and udi_di labels, which
	// risk matching reads (risk.go). Real products of the shared CISA
	// advisories and the risk fixtures.
	Identity *Identity `json:"identity,omitempty"`
}

// Floor is one floor: a bridge, its devices, a sensor and an enforcer.
type Floor struct {
	Devices []Device `json:"devices"`
}

// Config describes a lab.
type Config struct {
	// Prefix starts every namespace, host link and nftables table the lab
	// makes; Down removes everything with it. Keep it short: host link names
	// are limited to 15 bytes.
	Prefix string
	// Octet is the second octet of the lab's 10.Octet.0.0/12 block; a
	// multiple of 16 so two labs with different prefixes can coexist.
	Octet  int
	Floors []Floor
	// StateDir holds the state file, logs and coordinator data.
	StateDir string
	// Binary is the medmesh executable the components run (coordinator,
	// node, enforcer).
	Binary string
	// LabBinary is the medmesh-lab executable the simulators and the
	// compromised device run (`medmesh-lab sim`).
	LabBinary string
	// Env is added to every started process's environment.
	Env []string
	// APIPort is the coordinators' API port on 127.0.0.1..3 (Raft +1, admin +3).
	APIPort int
	// Components starts coordinators, sensors and enforcers when the binary
	// has them; Simulators starts the core services and devices.
	Components bool
	Simulators bool
	// PinGlobs are bpffs paths the components pin; Down removes them.
	PinGlobs []string
	// SimInterval is the devices' traffic period.
	SimInterval time.Duration
	// Compromised is the device the compromised-device scenario takes over.
	Compromised string
	// LearnWindow is the sensors' baseline learning window: short, so the
	// demo's baselines freeze within a minute.
	LearnWindow time.Duration
	// PinDir is the bpffs directory enforcers pin under (one directory per
	// enforcer); empty: the enforcer's default, /sys/fs/bpf/medmesh/eN.
	// A lab beside another sets its own, and PinGlobs to match.
	PinDir string
	// IntelDirs are the source directories of the intelligence bundle Up
	// imports; empty: IntelSources finds the shared data and fixtures.
	IntelDirs []string
}

// DefaultConfig is the campus of the demo: two floors, three coordinators.
// The running executable is the lab binary (medmesh-lab), and medmesh is
// expected beside it (make build puts both in bin/).
func DefaultConfig() Config {
	exe, _ := os.Executable()
	return Config{
		Prefix:      "mm-",
		Octet:       96,
		StateDir:    "/run/medmesh-lab",
		Binary:      filepath.Join(filepath.Dir(exe), "medmesh"),
		LabBinary:   exe,
		APIPort:     7400,
		LearnWindow: 45 * time.Second,
		Floors: []Floor{
			{Devices: []Device{
				{Name: "pump1", Kind: sim.KindPump, MAC: "58:46:e1:00:01:0a", LifeCritical: true, Identity: labIdentities["pump1"]},          // Baxter
				{Name: "monitor1", Kind: sim.KindMonitor, MAC: "00:09:5c:00:01:0b", LifeCritical: true, Identity: labIdentities["monitor1"]}, // Philips Medical
				{Name: "modality1", Kind: sim.KindModality, MAC: "44:4b:5d:00:01:0c", Console: true, Identity: labIdentities["modality1"]},   // GE Healthcare
				{Name: "nursecall1", Kind: sim.KindNurseCall, MAC: "00:14:b8:00:01:0d"},                                                      // Hill-Rom
				{Name: "ws1", Kind: sim.KindWorkstation, MAC: "98:e7:43:00:01:0e", Identity: labIdentities["ws1"]},                           // Dell
			}},
			{Devices: []Device{
				{Name: "pump2", Kind: sim.KindPump, MAC: "00:12:21:00:02:0a", LifeCritical: true},       // B. Braun
				{Name: "monitor2", Kind: sim.KindMonitor, MAC: "00:10:5d:00:02:0b", LifeCritical: true}, // Draeger
				{Name: "nursecall2", Kind: sim.KindNurseCall, MAC: "00:01:3e:00:02:0c"},                 // Ascom
				{Name: "ws2", Kind: sim.KindWorkstation, MAC: "98:e7:43:00:02:0d"},                      // Dell
			}},
		},
		Components:  true,
		Simulators:  true,
		PinGlobs:    []string{"/sys/fs/bpf/medmesh*"},
		SimInterval: 2 * time.Second,
		Compromised: "nursecall1",
	}
}

func (c Config) validate() error {
	var errs []error
	if c.Prefix == "" || len(c.Prefix) > 6 || strings.ContainsAny(c.Prefix, "/ ") {
		errs = append(errs, fmt.Errorf("prefix %q: want 1-6 characters without / or space", c.Prefix))
	}
	if c.Octet < 16 || c.Octet > 240 || c.Octet%16 != 0 {
		errs = append(errs, fmt.Errorf("octet %d: want a multiple of 16 in [16, 240]", c.Octet))
	}
	if len(c.Floors) < 1 || len(c.Floors) > 9 {
		errs = append(errs, fmt.Errorf("%d floors: want 1 to 9", len(c.Floors)))
	}
	if !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("state dir %q is not absolute", c.StateDir))
	}
	if c.Binary == "" {
		errs = append(errs, errors.New("binary is empty"))
	}
	if c.LabBinary == "" {
		errs = append(errs, errors.New("lab binary is empty"))
	}
	if c.APIPort <= 0 || c.APIPort > 65535-3 {
		errs = append(errs, fmt.Errorf("api port %d out of range", c.APIPort))
	}
	if c.SimInterval <= 0 {
		errs = append(errs, errors.New("sim interval must be positive"))
	}
	seen := map[string]bool{}
	for _, f := range c.Floors {
		if len(f.Devices) > 100 {
			errs = append(errs, errors.New("more than 100 devices on a floor"))
		}
		for _, d := range f.Devices {
			if d.Name == "" || len(d.Name) > 12 || seen[d.Name] {
				errs = append(errs, fmt.Errorf("device name %q: want unique, 1-12 characters", d.Name))
			}
			seen[d.Name] = true
			if d.Host != 0 && (d.Host < 10 || d.Host > 250) {
				errs = append(errs, fmt.Errorf("device %s: host octet %d not in [10, 250]", d.Name, d.Host))
			}
			if d.Kind.IsService() || d.Kind == sim.KindCompromised {
				errs = append(errs, fmt.Errorf("device %s: kind %q is not a device kind", d.Name, d.Kind))
			}
		}
	}
	if c.Compromised != "" && !seen[c.Compromised] {
		errs = append(errs, fmt.Errorf("compromised device %q is not in the lab", c.Compromised))
	}
	return errors.Join(errs...)
}

// Process roles in the state file; simulators run the lab binary, the
// components medmesh.
const (
	roleService = "service"
	roleDevice  = "device"
)

// binary is the executable a process of role runs.
func (c Config) binary(role string) string {
	if role == roleService || role == roleDevice {
		return c.LabBinary
	}
	return c.Binary
}

// Addressing plan. Floors and devices are numbered from 1.

func (c Config) ip(b, x, y int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(c.Octet + b), byte(x), byte(y)})
}

// Block is the lab's whole address block.
func (c Config) Block() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(c.Octet), 0, 0}), 12)
}

// SensorMgmt is the sensor of floor n's management address (n = 0: the
// core's sensor); the core is .1.
func (c Config) SensorMgmt(n int) netip.Addr { return c.ip(0, n, 2) }

// EnforcerUplink is the enforcer of floor n's core-facing address.
func (c Config) EnforcerUplink(n int) netip.Addr { return c.ip(1, n, 2) }

// ServiceIP is the address of the i-th core service (see services).
func (c Config) ServiceIP(i int) netip.Addr { return c.ip(2, 0, 10+i) }

// HostIP is the host's address on its link to the core; the core is .2.
func (c Config) HostIP() netip.Addr { return c.ip(3, 0, 1) }

// CoordinatorVIP is the address namespaces use for coordinator i (1-based).
func (c Config) CoordinatorVIP(i int) netip.Addr { return c.ip(3, 0, 10+i) }

// FloorGateway is the enforcer's floor-facing address on floor n.
func (c Config) FloorGateway(n int) netip.Addr { return c.ip(4+n, 0, 1) }

// deviceIP is the address of the device with host octet h on floor n.
func (c Config) deviceIP(n, h int) netip.Addr { return c.ip(4+n, 0, h) }

// FloorSubnet is floor n's subnet.
func (c Config) FloorSubnet(n int) netip.Prefix { return netip.PrefixFrom(c.ip(4+n, 0, 0), 24) }

// InternetIP is the internet host.
var InternetIP = netip.MustParseAddr("203.0.113.10")

// CoordinatorAPI is coordinator i's (1-based) API address on the host.
func (c Config) CoordinatorAPI(i int) string {
	return fmt.Sprintf("127.0.0.%d:%d", i, c.APIPort)
}

// CoordinatorAddrs are the coordinators' addresses as namespaces reach them.
func (c Config) CoordinatorAddrs() []string {
	var out []string
	for i := 1; i <= 3; i++ {
		out = append(out, fmt.Sprintf("%s:%d", c.CoordinatorVIP(i), c.APIPort))
	}
	return out
}

// Names.

func (c Config) nsCore() string       { return c.Prefix + "core" }
func (c Config) nsFloor(n int) string { return fmt.Sprintf("%sf%d", c.Prefix, n) }
func (c Config) nsDevice(n int, d string) string {
	return fmt.Sprintf("%sf%d-%s", c.Prefix, n, d)
}
func (c Config) nsEnforcer(n int) string { return fmt.Sprintf("%se%d", c.Prefix, n) }
func (c Config) nsSensor(n int) string   { return fmt.Sprintf("%ss%d", c.Prefix, n) }
func (c Config) nsService(s string) string {
	return c.Prefix + s
}
func (c Config) hostLink() string { return c.Prefix + "host" }
func (c Config) nftTable() string {
	return strings.NewReplacer("-", "_", ".", "_").Replace(c.Prefix) + "lab"
}

// service is a core service simulator.
type service struct {
	name string // namespace suffix
	kind sim.Kind
	mac  string // a server vendor's OUI
	// app and software are what its HL7 ACKs name (MSH-3, SFT).
	app, software string
}

var services = []service{
	{"hl7", sim.KindHL7Engine, "00:0c:29:98:00:0a", "Mirth Connect", "NextGen Healthcare|4.5.0|Mirth Connect|b1"}, // VMware: an engine in a VM
	{"pacs", sim.KindPACS, "94:40:c9:98:00:0b", "", ""},                                                           // Hewlett Packard Enterprise
	{"dhcp", sim.KindDHCPDNS, "00:0c:29:98:00:0c", "", ""},                                                        // VMware
	{"ntp", sim.KindNTP, "ec:46:70:98:00:0d", "", ""},                                                             // Meinberg
	{"central", sim.KindCentral, "f8:bc:12:98:00:0e", "PIC iX", "Philips|C.02|PIC iX|b2"},                         // Dell server
}

// ServiceInfo is a core service: its name, kind, MAC and address.
type ServiceInfo struct {
	Name string   `json:"name"`
	Kind sim.Kind `json:"kind"`
	MAC  string   `json:"mac"`
	IP   string   `json:"ip"`
}

// Services lists the core services.
func (c Config) Services() []ServiceInfo {
	out := make([]ServiceInfo, 0, len(services))
	for i, s := range services {
		out = append(out, ServiceInfo{Name: s.name, Kind: s.kind, MAC: s.mac, IP: c.ServiceIP(i).String()})
	}
	return out
}

// RouterInfo is a router of the lab as its devices see it.
type RouterInfo struct {
	Name string `json:"name"` // "core", or "gwN" for floor N's gateway
	MAC  string `json:"mac"`
	IP   string `json:"ip"`
}

// Routers lists the routers a sensor sees: the core (on the services'
// segment) and each floor's gateway (the enforcer's floor side), with
// Cisco MACs.
func (c Config) Routers() []RouterInfo {
	out := []RouterInfo{{Name: "core", MAC: c.coreMAC(), IP: c.ip(2, 0, 1).String()}}
	for n := 1; n <= len(c.Floors); n++ {
		out = append(out, RouterInfo{Name: fmt.Sprintf("gw%d", n), MAC: c.gatewayMAC(n), IP: c.FloorGateway(n).String()})
	}
	return out
}

func (c Config) coreMAC() string         { return "00:1e:bd:00:00:01" }
func (c Config) gatewayMAC(n int) string { return fmt.Sprintf("00:1e:bd:00:%02x:01", n) }

// DeviceInfo is where a device lives in the lab.
type DeviceInfo struct {
	Device
	Floor     int    `json:"floor"`
	IP        string `json:"ip"`
	Namespace string `json:"namespace"`
}

// Devices lists every device with its floor, address and namespace.
func (c Config) Devices() []DeviceInfo {
	var out []DeviceInfo
	g := 0
	for fi, f := range c.Floors {
		n := fi + 1
		for _, d := range f.Devices {
			if d.Host == 0 {
				d.Host = 10 + g
			}
			home := n
			if d.Home != 0 {
				home = d.Home
			}
			out = append(out, DeviceInfo{Device: d, Floor: n, IP: c.deviceIP(n, d.Host).String(), Namespace: c.nsDevice(home, d.Name)})
			g++
		}
	}
	return out
}

// Device returns the named device.
func (c Config) Device(name string) (DeviceInfo, bool) {
	for _, d := range c.Devices() {
		if d.Name == name {
			return d, true
		}
	}
	return DeviceInfo{}, false
}

// namespaces lists every namespace of the lab, core first.
func (c Config) namespaces() []string {
	out := []string{c.nsCore()}
	for _, s := range services {
		out = append(out, c.nsService(s.name))
	}
	out = append(out, c.nsService("inet"), c.nsSensor(0))
	for n := 1; n <= len(c.Floors); n++ {
		out = append(out, c.nsFloor(n), c.nsEnforcer(n), c.nsSensor(n))
	}
	for _, d := range c.Devices() {
		out = append(out, d.Namespace)
	}
	return out
}
