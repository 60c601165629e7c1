// Package sim simulates the devices and core services of the campus lab. Each
// simulator speaks the real wire protocol of the device it stands for (HL7 v2
// over MLLP, DICOM upper layer, DHCP, DNS, NTP, HTTP and TLS, telnet) so that
// sensors see traffic shaped like a hospital's. Every message is synthetic:
// no simulator ever carries real patient data.
package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Kind names a simulator.
type Kind string

// Device kinds (clients on a floor).
const (
	KindPump        Kind = "pump"        // infusion pump: HL7 to the interface engine, DHCP, DNS, NTP
	KindMonitor     Kind = "monitor"     // patient monitor: HL7 ORU to the central station
	KindModality    Kind = "modality"    // imaging modality: DICOM association and transfer to PACS
	KindNurseCall   Kind = "nursecall"   // nurse-call box: UDP status to the central station
	KindWorkstation Kind = "workstation" // clinical workstation: DNS, HTTP and TLS to the internet
	// KindCompromised runs the compromised-device scenario once: scan, default
	// credential login, exfiltration. See Attack.
	KindCompromised Kind = "compromised"
)

// Service kinds (servers in the hospital core and on the internet).
const (
	KindHL7Engine Kind = "hl7-engine" // MLLP listener answering ACKs
	KindPACS      Kind = "pacs"       // DICOM SCP answering A-ASSOCIATE-AC
	KindDHCPDNS   Kind = "dhcp-dns"   // DHCP offers and DNS answers
	KindNTP       Kind = "ntp"        // NTP server
	KindCentral   Kind = "central"    // central station: MLLP ORU ACKs, nurse-call UDP
	KindInternet  Kind = "internet"   // an internet host: HTTP, HTTPS, sink for exfiltration
)

// Default ports. The interface engine listens on a non-standard MLLP port as
// many hospitals do; the central station uses the registered MLLP port.
const (
	PortHL7Engine  = 6661
	PortMLLP       = 2575
	PortDICOM      = 104
	PortDNS        = 53
	PortDHCP       = 67
	PortDHCPClient = 68
	PortNTP        = 123
	PortNurseCall  = 17000
	PortHTTP       = 80
	PortHTTPS      = 443
	PortTelnet     = 23
)

// ServingMessage is logged by a simulator once every listener it has is
// bound; the lab waits for it (services before devices start, devices before
// Up returns).
const ServingMessage = "serving"

// IsService reports whether k is a server simulator.
func (k Kind) IsService() bool {
	switch k {
	case KindHL7Engine, KindPACS, KindDHCPDNS, KindNTP, KindCentral, KindInternet:
		return true
	}
	return false
}

func (k Kind) valid() bool {
	switch k {
	case KindPump, KindMonitor, KindModality, KindNurseCall, KindWorkstation, KindCompromised:
		return true
	}
	return k.IsService()
}

// Config configures one simulator. Addresses are host:port; an empty
// address disables that exchange.
type Config struct {
	Kind Kind
	ID   string // device or service name, used in HL7 MSH, DICOM AE titles, DHCP hostname

	// Device side.
	Interval  time.Duration // time between rounds of device traffic
	Rounds    int           // rounds to run; 0 runs until the context ends
	HL7       string        // interface engine (pump)
	Central   string        // central station MLLP (monitor)
	NurseCall string        // central station nurse-call UDP (nursecall)
	PACS      string        // PACS DICOM SCP (modality)
	DHCP      string        // DHCP server (pump, monitor)
	DHCPPort  int           // client source port for DHCP; 68 by default, 0 for any
	DNS       string        // DNS server
	NTP       string        // NTP server
	Web       string        // internet host name for HTTP/TLS (workstation), resolved through DNS
	Telnet    string        // listen address of the device's service console (modality), "" for none

	// Compromised-device scenario.
	Scan        []string      // hosts to scan
	ScanPorts   []int         // ports to probe on each host
	Login       string        // telnet host:port to log into with default credentials
	Exfil       string        // internet host:port to send data to
	ExfilFor    time.Duration // how long to keep sending
	DialTimeout time.Duration

	// Service side.
	Listen  string            // IP to bind; ports are the defaults unless Ports overrides
	Ports   map[string]int    // per-protocol port override ("mllp", "dicom", "dns", "dhcp", "ntp", "nursecall", "http", "https", "hl7")
	Records map[string]string // DNS name -> IPv4 answer
	// HL7App is the application an HL7 service answers as (MSH-3 of its
	// ACKs; default: the kind); HL7Software, if set, the fields of the SFT
	// segment its ACKs carry ("vendor|version|product|binary id"). The DHCP
	// service advertises NTP (the device-side field) as the NTP server.
	HL7App      string
	HL7Software string
}

// DefaultConfig returns the defaults for kind: a round every 2 s.
func DefaultConfig(kind Kind, id string) Config {
	return Config{
		Kind:        kind,
		ID:          id,
		Interval:    2 * time.Second,
		DHCPPort:    PortDHCPClient,
		ScanPorts:   ScanPorts(),
		ExfilFor:    5 * time.Second,
		DialTimeout: 300 * time.Millisecond,
	}
}

func (c Config) validate() error {
	if !c.Kind.valid() {
		return fmt.Errorf("unknown simulator kind %q", c.Kind)
	}
	if c.ID == "" {
		return errors.New("simulator id is empty")
	}
	if c.Interval <= 0 && !c.Kind.IsService() && c.Kind != KindCompromised {
		return errors.New("interval must be positive")
	}
	if c.Kind.IsService() && net.ParseIP(c.Listen) == nil {
		return fmt.Errorf("listen %q is not an IP address", c.Listen)
	}
	if c.Kind == KindCompromised && c.Exfil == "" && c.Login == "" && len(c.Scan) == 0 {
		return errors.New("compromised device has nothing to do")
	}
	return nil
}

func (c Config) port(name string, def int) int {
	if p, ok := c.Ports[name]; ok {
		return p
	}
	return def
}

// Run runs the simulator described by cfg until ctx ends (or, for devices
// with Rounds set and for the compromised scenario, until done).
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	if cfg.Kind.IsService() {
		srv, err := StartServer(cfg, log)
		if err != nil {
			return err
		}
		log.Info(ServingMessage, "service", cfg.ID, "kind", string(cfg.Kind), "listen", cfg.Listen)
		<-ctx.Done()
		return srv.Close()
	}
	if cfg.Kind == KindCompromised {
		_, err := Attack(ctx, cfg, log)
		return err
	}
	d, err := NewDevice(cfg, log)
	if err != nil {
		return err
	}
	defer d.Close()
	log.Info(ServingMessage, "device", cfg.ID, "kind", string(cfg.Kind), "console", d.ConsoleAddr())
	return d.Run(ctx)
}

// ScanPorts are the TCP ports the compromised device probes on each host:
// the ports a real scanner's short list tries first, medical ones (DICOM,
// HL7) included: 40 ports of each host, more than the 24 distinct ports of
// one host within a window that a sensor calls a vertical scan, as any
// real port scan is.
func ScanPorts() []int {
	return []int{
		21, 22, 23, 25, 53, 80, 104, 110, 111, 135, 139, 143, 161, 389, 443, 445,
		502, 554, 587, 631, 993, 995, 1433, 1521, 1883, 2575, 3306, 3389, 4242, 5432,
		5900, 6661, 8000, 8080, 8443, 8888, 9100, 11112, 47808, 49152,
	}
}
