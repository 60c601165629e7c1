package sim

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DeviceStats counts a device's successful and failed exchanges.
type DeviceStats struct {
	OK     atomic.Int64
	Failed atomic.Int64
	Logins atomic.Int64 // successful logins on the device's console
}

// Device is a running device simulator.
type Device struct {
	cfg   Config
	log   *slog.Logger
	Stats DeviceStats
	seq   int
	mac   net.HardwareAddr

	console net.Listener
	wg      sync.WaitGroup
}

// NewDevice prepares a device and binds its service console, if any.
func NewDevice(cfg Config, log *slog.Logger) (*Device, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Kind.IsService() || cfg.Kind == KindCompromised {
		return nil, fmt.Errorf("%s is not a device", cfg.Kind)
	}
	d := &Device{cfg: cfg, log: log.With("device", cfg.ID)}
	d.mac = localMAC()
	if cfg.Telnet != "" {
		ln, err := net.Listen("tcp", cfg.Telnet)
		if err != nil {
			return nil, fmt.Errorf("listen telnet console: %w", err)
		}
		d.console = ln
		d.wg.Go(d.serveConsole)
	}
	return d, nil
}

// ConsoleAddr is the bound address of the telnet console, or "".
func (d *Device) ConsoleAddr() string {
	if d.console == nil {
		return ""
	}
	return d.console.Addr().String()
}

// Close stops the console.
func (d *Device) Close() error {
	var err error
	if d.console != nil {
		err = d.console.Close()
	}
	d.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// localMAC returns the MAC of the first up, non-loopback interface, for the
// DHCP chaddr. The lab gives device interfaces vendor OUIs.
func localMAC() net.HardwareAddr {
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 && i.Flags&net.FlagUp != 0 && len(i.HardwareAddr) == 6 {
			return i.HardwareAddr
		}
	}
	return net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
}

// Run runs rounds of device traffic every Interval until ctx ends or Rounds
// are done. A failed exchange is counted and logged, never fatal: devices
// keep trying, as real ones do.
func (d *Device) Run(ctx context.Context) error {
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for {
		d.round(ctx)
		if d.cfg.Rounds > 0 && d.seq >= d.cfg.Rounds {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Round runs one round of the device's traffic and returns the first error.
func (d *Device) Round(ctx context.Context) error { return d.round(ctx) }

func (d *Device) round(ctx context.Context) error {
	d.seq++
	var steps []func(context.Context) error
	switch d.cfg.Kind {
	case KindPump:
		steps = []func(context.Context) error{d.dhcp, d.dns("hl7.hospital.lab"), d.ntp, d.hl7(d.cfg.HL7, pumpMessage(d.cfg.ID, d.udi(), d.seq, time.Now()))}
	case KindMonitor:
		steps = []func(context.Context) error{d.dhcp, d.hl7(d.cfg.Central, monitorMessage(d.cfg.ID, d.seq, time.Now()))}
	case KindModality:
		steps = []func(context.Context) error{d.dns("pacs.hospital.lab"), d.ntp, d.dicom}
	case KindNurseCall:
		steps = []func(context.Context) error{d.nurseCall}
	case KindWorkstation:
		steps = []func(context.Context) error{d.dns(d.cfg.Web), d.web}
	}
	var first error
	for _, step := range steps {
		if err := step(ctx); err != nil {
			d.Stats.Failed.Add(1)
			d.log.Warn("exchange failed", "round", d.seq, "err", err)
			if first == nil {
				first = err
			}
			continue
		}
		d.Stats.OK.Add(1)
	}
	if first == nil {
		d.log.Info("round done", "round", d.seq, "exchanges", len(steps))
	}
	return first
}

// udi is a synthetic GS1 UDI for the pump: (01) device identifier, (21) serial.
func (d *Device) udi() string {
	return "(01)00812345000019(21)" + strings.ToUpper(d.cfg.ID)
}

func (d *Device) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if addr == "" {
		return nil, errors.New("no server address configured")
	}
	dl := net.Dialer{Timeout: 3 * time.Second}
	c, err := dl.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return c, nil
}

func (d *Device) hl7(addr, msg string) func(context.Context) error {
	return func(ctx context.Context) error {
		c, err := d.dial(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("hl7: %w", err)
		}
		defer c.Close()
		return exchangeHL7(c, bufio.NewReader(c), msg)
	}
}

func (d *Device) dicom(ctx context.Context) error {
	c, err := d.dial(ctx, "tcp", d.cfg.PACS)
	if err != nil {
		return fmt.Errorf("dicom: %w", err)
	}
	defer c.Close()
	return dicomStore(c, "PACS", d.cfg.ID, 8*1024+rand.IntN(4096))
}

func (d *Device) udpExchange(ctx context.Context, laddr *net.UDPAddr, addr string, req []byte, check func([]byte) error) error {
	if addr == "" {
		return errors.New("no server address configured")
	}
	raddr, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return err
	}
	c, err := net.DialUDP("udp4", laddr, raddr)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(2 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = c.SetDeadline(deadline)
	if _, err := c.Write(req); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	return check(buf[:n])
}

func (d *Device) dhcp(ctx context.Context) error {
	if d.cfg.DHCP == "" {
		return nil
	}
	xid := rand.Uint32()
	var laddr *net.UDPAddr
	if d.cfg.DHCPPort != 0 {
		laddr = &net.UDPAddr{Port: d.cfg.DHCPPort}
	}
	vendor := map[Kind]string{KindPump: "MedSim-Infusion-Pump-3.2", KindMonitor: "MedSim-PatientMonitor-8"}[d.cfg.Kind]
	req := dhcpDiscover(xid, d.mac, d.cfg.ID, vendor, []byte{1, 3, 6, 15, 42})
	err := d.udpExchange(ctx, laddr, d.cfg.DHCP, req, func(b []byte) error {
		opts, err := dhcpOptions(b)
		if err != nil {
			return err
		}
		if len(opts[53]) != 1 || opts[53][0] != 2 || string(b[4:8]) != string(req[4:8]) {
			return errors.New("not an offer for our discover")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	return nil
}

func (d *Device) dns(name string) func(context.Context) error {
	return func(ctx context.Context) error {
		if d.cfg.DNS == "" || name == "" {
			return nil
		}
		_, err := d.resolve(ctx, name)
		return err
	}
}

func (d *Device) resolve(ctx context.Context, name string) (net.IP, error) {
	id := uint16(rand.Uint32())
	var ip net.IP
	err := d.udpExchange(ctx, nil, d.cfg.DNS, dnsQuery(id, name), func(b []byte) error {
		var err error
		ip, err = parseDNSAnswer(b, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dns %s: %w", name, err)
	}
	return ip, nil
}

func (d *Device) ntp(ctx context.Context) error {
	if d.cfg.NTP == "" {
		return nil
	}
	req := ntpRequest(time.Now())
	err := d.udpExchange(ctx, nil, d.cfg.NTP, req, func(b []byte) error {
		if len(b) < 48 || b[0]&0x07 != 4 {
			return errors.New("not a server response")
		}
		if uint64FromBE(b[24:32]) != uint64FromBE(req[40:48]) {
			return errors.New("response does not echo our transmit time")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ntp: %w", err)
	}
	return nil
}

func uint64FromBE(b []byte) uint64 {
	var v uint64
	for _, x := range b[:8] {
		v = v<<8 | uint64(x)
	}
	return v
}

func (d *Device) nurseCall(ctx context.Context) error {
	msg := []byte(fmt.Sprintf("NC1|%s|STATUS|IDLE|%d", d.cfg.ID, d.seq))
	err := d.udpExchange(ctx, nil, d.cfg.NurseCall, msg, func(b []byte) error {
		if string(b) != "ACK" {
			return errors.New("no ack")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("nurse call: %w", err)
	}
	return nil
}

// web fetches a page from the internet host over HTTP and HTTPS, with the
// host name in the Host header and the TLS SNI.
func (d *Device) web(ctx context.Context) error {
	if d.cfg.Web == "" {
		return nil
	}
	host := d.cfg.Web
	ip, err := d.resolve(ctx, host)
	if err != nil {
		return err
	}
	ports := map[string]string{
		strconv.Itoa(PortHTTP):  strconv.Itoa(d.cfg.port("http", PortHTTP)),
		strconv.Itoa(PortHTTPS): strconv.Itoa(d.cfg.port("https", PortHTTPS)),
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, p, _ := net.SplitHostPort(addr)
			if q, ok := ports[p]; ok {
				p = q
			}
			return d.dial(ctx, "tcp", net.JoinHostPort(ip.String(), p))
		},
		TLSClientConfig:   &tls.Config{ServerName: host, InsecureSkipVerify: true}, //nolint:gosec // lab host with a throwaway certificate
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for _, u := range []string{"http://" + host + "/status", "https://" + host + "/api/v1/updates"} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "MedSim-Workstation/10.0")
		resp, err := cl.Do(req)
		if err != nil {
			return fmt.Errorf("web: %w", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("web: %s answered %s", u, resp.Status)
		}
	}
	return nil
}

// serveConsole is the device's telnet service console, with the factory
// default credentials admin/admin that the compromised device tries.
func (d *Device) serveConsole() {
	for {
		c, err := d.console.Accept()
		if err != nil {
			return
		}
		d.wg.Go(func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			if _, err := io.WriteString(c, "\r\n"+d.cfg.ID+" service console\r\nlogin: "); err != nil {
				return
			}
			user, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, "Password: "); err != nil {
				return
			}
			pass, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.TrimSpace(user) == "admin" && strings.TrimSpace(pass) == "admin" {
				d.Stats.Logins.Add(1)
				_, _ = io.WriteString(c, "\r\nWelcome\r\n# ")
				_, _ = r.ReadString('\n')
				return
			}
			_, _ = io.WriteString(c, "\r\nLogin incorrect\r\n")
		})
	}
}
