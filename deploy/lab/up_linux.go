package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/medmesh/medmesh/deploy/lab/sim"
	"github.com/medmesh/medmesh/internal/grpcx"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Up builds the lab and starts its processes. If a complete lab with every
// process alive is already up, Up changes nothing; a partial one is removed
// and rebuilt.
func (l *Lab) Up(ctx context.Context) (*State, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	if st, err := ReadState(l.cfg.StateDir); err != nil {
		return nil, err
	} else if st != nil && l.healthy(st) {
		l.log.Info("lab already up", "state", statePath(l.cfg.StateDir))
		return st, nil
	}
	if err := l.Down(); err != nil {
		return nil, fmt.Errorf("clear previous lab: %w", err)
	}
	st := &State{Config: l.cfg, Created: time.Now().UTC(), Namespaces: l.cfg.namespaces(), Skipped: map[string]string{}}
	// Written first, so a failed Up can always be taken down.
	if err := writeState(l.cfg.StateDir, st); err != nil {
		return nil, err
	}
	if err := l.build(ctx, st); err != nil {
		// Remove what was built: a failed Up leaves nothing behind.
		if derr := l.Down(); derr != nil {
			return nil, errors.Join(err, fmt.Errorf("remove the partial lab: %w", derr))
		}
		return nil, fmt.Errorf("%w (the partial lab was removed)", err)
	}
	return st, nil
}

// build makes the namespaces and topology, starts every process and waits
// until the cluster has a leader and every sensor and enforcer reports.
func (l *Lab) build(ctx context.Context, st *State) error {
	for _, ns := range st.Namespaces {
		if err := createNS(ns); err != nil {
			return err
		}
	}
	h := newNSHandles()
	defer h.Close()
	t := &topo{cfg: l.cfg, h: h}
	if err := t.build(); err != nil {
		return fmt.Errorf("build topology: %w", err)
	}
	l.log.Info("topology up", "namespaces", len(st.Namespaces), "floors", len(l.cfg.Floors))
	if err := l.startAll(ctx, st); err != nil {
		return err
	}
	if err := l.waitReporting(ctx, st, 60*time.Second); err != nil {
		return err
	}
	if slices.ContainsFunc(st.Procs, func(p Proc) bool { return p.Role == "coordinator" && slices.Contains(p.Args, "--web-addr") }) {
		// The web console's accounts: not a reason to fail Up either (the
		// CLI works without them); the console then lets nobody in.
		if err := l.provisionConsole(ctx, 30*time.Second); err != nil {
			l.log.Warn("lab console accounts not created", "err", err)
		}
	}
	if slices.ContainsFunc(st.Procs, func(p Proc) bool { return p.Role == "coordinator" }) {
		// Risk posture: not a reason to fail Up (the rest of the lab works
		// without it); `medmesh risk top` then shows what sensors saw.
		if err := l.provisionRisk(ctx, 90*time.Second); err != nil {
			l.log.Warn("lab risk posture not provisioned", "err", err)
		}
	}
	st.Complete = true
	return writeState(l.cfg.StateDir, st)
}

// waitReporting waits until the coordinators have a leader and every
// sensor and enforcer the lab started is in its member table.
// Without coordinators (not asked for, or not built) there is nothing to
// wait for.
func (l *Lab) waitReporting(ctx context.Context, st *State, timeout time.Duration) error {
	var want []string
	coordinators := false
	for _, p := range st.Procs {
		switch p.Role {
		case "sensor", "enforcer":
			want = append(want, p.Role+"/"+p.Name)
		case "coordinator":
			coordinators = true
		}
	}
	if !coordinators {
		return nil
	}
	cc := grpcx.DefaultClientConfig()
	cc.TLS = l.cfg.TLSFiles(ViewerName)
	conn, err := grpcx.Dial(l.cfg.CoordinatorAPI(1), cc, nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	cs := medmeshv1.NewClusterServiceClient(conn)
	deadline := time.Now().Add(timeout)
	missing := "a leader"
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := cs.GetClusterStatus(cctx, &medmeshv1.GetClusterStatusRequest{})
		cancel()
		if err == nil && resp.GetLeader() != "" {
			have := map[string]bool{}
			for _, m := range resp.GetMembers() {
				have[m.GetRole()+"/"+m.GetId()] = true
			}
			var left []string
			for _, w := range want {
				if !have[w] {
					left = append(left, w)
				}
			}
			if len(left) == 0 {
				l.log.Info("lab ready", "leader", resp.GetLeader(), "members", len(want))
				return nil
			}
			missing = strings.Join(left, ", ")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab not ready after %s: waiting for %s (logs in %s)", timeout, missing, l.cfg.StateDir)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (l *Lab) healthy(st *State) bool {
	if !st.Complete {
		return false
	}
	for _, ns := range st.Namespaces {
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err != nil {
			return false
		}
	}
	for _, p := range st.Procs {
		if !p.Alive() {
			return false
		}
	}
	return true
}

func (l *Lab) spawn(st *State, name, role, ns string, args []string) error {
	p, err := spawn(l.cfg.StateDir, l.cfg.Prefix, l.cfg.binary(role), l.cfg.Env, name, role, ns, args)
	if err != nil {
		return err
	}
	st.Procs = append(st.Procs, p)
	return writeState(l.cfg.StateDir, st)
}

func (l *Lab) startAll(ctx context.Context, st *State) error {
	c := l.cfg
	if c.Simulators {
		for i, s := range services {
			if err := l.startSim(st, s.name, roleService, c.nsService(s.name), l.serviceConfig(s, c.ServiceIP(i).String())); err != nil {
				return err
			}
		}
		if err := l.startSim(st, "inet", roleService, c.nsService("inet"), l.serviceConfig(service{name: "inet", kind: sim.KindInternet}, InternetIP.String())); err != nil {
			return err
		}
		if err := waitServing(ctx, st, 10*time.Second); err != nil {
			return err
		}
		for _, d := range c.Devices() {
			if err := l.startSim(st, d.Name, roleDevice, d.Namespace, l.DeviceConfig(d)); err != nil {
				return err
			}
		}
		if err := waitServing(ctx, st, 10*time.Second); err != nil {
			return err
		}
	}
	if !c.Components {
		return nil
	}
	// Every component speaks mutual TLS with a certificate of the lab's
	// own CA; the sensors' gossip is encrypted.
	if err := c.makePKI(); err != nil {
		return err
	}
	coord := l.probe("coordinator", "--bootstrap-expect")
	if coord.missing != "" {
		st.Skipped["coordinator"] = coord.missing
		l.log.Warn("coordinators not started", "reason", coord.missing)
	} else {
		for i := 1; i <= 3; i++ {
			if err := l.startCoordinator(st, coord, i); err != nil {
				return err
			}
		}
		if err := waitTCP(ctx, c.CoordinatorAPI(1), 30*time.Second); err != nil {
			l.log.Warn("coordinator c1 API not answering yet", "addr", c.CoordinatorAPI(1), "err", err)
		}
	}
	node := l.probe("node", "--iface")
	if node.missing != "" {
		st.Skipped["node"] = node.missing
		l.log.Warn("sensors not started", "reason", node.missing)
	}
	enf := l.probe("enforcer", "--iface")
	if enf.missing != "" {
		st.Skipped["enforcer"] = enf.missing
		l.log.Warn("enforcers not started", "reason", enf.missing)
	}
	coordinators := strings.Join(c.CoordinatorAddrs(), ",")
	if node.missing == "" {
		// The core's sensor watches the services' segment.
		if err := l.startSensor(st, node, 0, coordinators); err != nil {
			return err
		}
	}
	for fi := range c.Floors {
		n := fi + 1
		if node.missing == "" {
			if err := l.startSensor(st, node, n, coordinators); err != nil {
				return err
			}
		}
		if enf.missing == "" {
			args := []string{"enforcer", "--id", fmt.Sprintf("e%d", n), "--iface", "dev0", "--coordinator", coordinators}
			if c.PinDir != "" {
				args = enf.opt(args, "--pin-dir", filepath.Join(c.PinDir, fmt.Sprintf("e%d", n)))
			}
			args = append(args, c.tlsArgs(fmt.Sprintf("e%d", n))...)
			if err := l.spawn(st, fmt.Sprintf("e%d", n), "enforcer", c.nsEnforcer(n), args); err != nil {
				return err
			}
		}
	}
	return nil
}

// startSensor starts sensor n: floor n's, or with n = 0 the core's (on
// the services' segment, zone "core").
func (l *Lab) startSensor(st *State, node probed, n int, coordinators string) error {
	c := l.cfg
	id := fmt.Sprintf("s%d", n)
	args := []string{"node", "--id", id, "--iface", "tap0", "--mode", "tap", "--coordinator", coordinators}
	if n > 0 {
		args = node.opt(args, "--floor", strconv.Itoa(n))
		args = node.opt(args, "--zone", fmt.Sprintf("ward-%d", n))
	} else {
		args = node.opt(args, "--zone", "core")
	}
	args = node.opt(args, "--learn-window", c.LearnWindow.String())
	args = node.opt(args, "--spool-dir", filepath.Join(c.StateDir, "data", id, "spool"))
	args = node.opt(args, "--admin", "")
	args = node.opt(args, "--gossip", fmt.Sprintf("%s:7402", c.SensorMgmt(n)))
	var seeds []string
	for m := 0; m <= len(c.Floors); m++ {
		if m != n {
			seeds = append(seeds, fmt.Sprintf("%s:7402", c.SensorMgmt(m)))
		}
	}
	args = node.opt(args, "--join", strings.Join(seeds, ","))
	args = node.opt(args, "--gossip-key-file", c.GossipKeyFile())
	args = node.opt(args, "--campus", strings.TrimSuffix(c.Prefix, "-")+"-lab")
	args = append(args, c.tlsArgs(id)...)
	return l.spawn(st, id, "sensor", c.nsSensor(n), args)
}

func (l *Lab) startCoordinator(st *State, p probed, i int) error {
	c := l.cfg
	data := filepath.Join(c.StateDir, "data", fmt.Sprintf("c%d", i))
	if err := os.MkdirAll(data, 0o700); err != nil {
		return err
	}
	host := fmt.Sprintf("127.0.0.%d", i)
	var join []string
	for j := 1; j <= 3; j++ {
		if j != i {
			join = append(join, c.CoordinatorAPI(j))
		}
	}
	args := []string{"coordinator", "--id", fmt.Sprintf("c%d", i), "--data-dir", data,
		"--api", c.CoordinatorAPI(i), "--raft", fmt.Sprintf("%s:%d", host, c.APIPort+1),
		"--bootstrap-expect", "3", "--join", strings.Join(join, ",")}
	args = append(args, c.tlsArgs(fmt.Sprintf("c%d", i))...)
	args = p.opt(args, "--admin", fmt.Sprintf("%s:%d", host, c.APIPort+3))
	args = p.opt(args, "--intel-key", c.IntelPublicKey())
	// The web console, HTTPS with the coordinator's certificate (its IP
	// SAN is this loopback address).
	args = p.opt(args, "--web-addr", c.ConsoleAddr(i))
	return l.spawn(st, fmt.Sprintf("c%d", i), "coordinator", "", args)
}

// probed is what `medmesh ROLE --help` says about a component.
type probed struct {
	help    string
	missing string // why the component cannot be started, or ""
}

// opt appends flag and value when the component knows the flag.
func (p probed) opt(args []string, flag, value string) []string {
	if strings.Contains(p.help, flag+" ") || strings.Contains(p.help, flag+"=") {
		return append(args, flag, value)
	}
	return args
}

// probe asks the binary whether it has a working ROLE command, recognised
// by a flag its help must list.
func (l *Lab) probe(role, flag string) probed {
	cmd := exec.Command(l.cfg.Binary, role, "--help")
	cmd.Env = append(os.Environ(), l.cfg.Env...)
	out, err := cmd.CombinedOutput()
	help := string(out)
	if err != nil || !strings.Contains(help, flag) {
		return probed{help: help, missing: fmt.Sprintf("medmesh %s is not built yet in %s (its --help lacks %s)", role, l.cfg.Binary, flag)}
	}
	return probed{help: help}
}

func (l *Lab) startSim(st *State, name, role, ns string, cfg sim.Config) error {
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	return l.spawn(st, name, role, ns, []string{"sim", "--config", string(b)})
}

func (l *Lab) serviceConfig(s service, ip string) sim.Config {
	c := l.cfg
	cfg := sim.DefaultConfig(s.kind, s.name)
	cfg.Listen = ip
	cfg.HL7App, cfg.HL7Software = s.app, s.software
	if s.kind == sim.KindDHCPDNS {
		cfg.NTP = net.JoinHostPort(c.ServiceIP(3).String(), strconv.Itoa(sim.PortNTP))
		cfg.Records = map[string]string{
			"hl7.hospital.lab":       c.ServiceIP(0).String(),
			"pacs.hospital.lab":      c.ServiceIP(1).String(),
			"dhcp.hospital.lab":      c.ServiceIP(2).String(),
			"ntp.hospital.lab":       c.ServiceIP(3).String(),
			"central.hospital.lab":   c.ServiceIP(4).String(),
			"updates.vendor.example": InternetIP.String(),
		}
	}
	return cfg
}

// DeviceConfig is the simulator configuration of device d.
func (l *Lab) DeviceConfig(d DeviceInfo) sim.Config {
	c := l.cfg
	svc := func(i, port int) string { return net.JoinHostPort(c.ServiceIP(i).String(), strconv.Itoa(port)) }
	cfg := sim.DefaultConfig(d.Kind, d.Name)
	cfg.Interval = c.SimInterval
	cfg.HL7 = svc(0, sim.PortHL7Engine)
	cfg.PACS = svc(1, sim.PortDICOM)
	cfg.DHCP = svc(2, sim.PortDHCP)
	cfg.DNS = svc(2, sim.PortDNS)
	cfg.NTP = svc(3, sim.PortNTP)
	cfg.Central = svc(4, sim.PortMLLP)
	cfg.NurseCall = svc(4, sim.PortNurseCall)
	cfg.Web = "updates.vendor.example"
	if d.Console {
		cfg.Telnet = net.JoinHostPort(d.IP, strconv.Itoa(sim.PortTelnet))
	}
	return cfg
}

// CompromisedConfig is the simulator configuration that makes device d run
// the compromised-device scenario: scan its floor, log into the first
// console on the floor with admin/admin, send data to the internet host.
func (l *Lab) CompromisedConfig(d DeviceInfo, exfilFor time.Duration) sim.Config {
	c := l.cfg
	cfg := sim.DefaultConfig(sim.KindCompromised, d.Name)
	for _, o := range c.Devices() {
		if o.Floor != d.Floor || o.Name == d.Name {
			continue
		}
		cfg.Scan = append(cfg.Scan, o.IP)
		if o.Console && cfg.Login == "" {
			cfg.Login = net.JoinHostPort(o.IP, strconv.Itoa(sim.PortTelnet))
		}
	}
	cfg.Scan = append(cfg.Scan, c.FloorGateway(d.Floor).String())
	slices.Sort(cfg.Scan)
	cfg.Exfil = net.JoinHostPort(InternetIP.String(), "8443")
	cfg.ExfilFor = exfilFor
	return cfg
}

// waitServing waits until every simulator started so far logged that it
// serves.
func waitServing(ctx context.Context, st *State, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, p := range st.Procs {
		if p.Role != roleService && p.Role != roleDevice {
			continue
		}
		for {
			b, _ := os.ReadFile(p.Log)
			if strings.Contains(string(b), "msg="+sim.ServingMessage) {
				break
			}
			if !p.Alive() {
				return fmt.Errorf("service %s exited: %s", p.Name, lastLine(string(b)))
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("service %s not serving after %s (log %s)", p.Name, timeout, p.Log)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

func waitTCP(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Down stops every process the lab started and removes its namespaces,
// host link, nftables table, bpffs pins and state. It is safe on a lab that
// is not (or only partly) up.
func (l *Lab) Down() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	c := l.cfg
	var errs []error
	st, err := ReadState(c.StateDir)
	if err != nil {
		errs = append(errs, err)
	}
	if st != nil {
		// Coordinators last, so sensors and enforcers leave cleanly.
		for i := len(st.Procs) - 1; i >= 0; i-- {
			p := st.Procs[i]
			if err := kill(p.PID, p.Start, 3*time.Second); err != nil {
				errs = append(errs, fmt.Errorf("stop %s: %w", p.Name, err))
			}
		}
	}
	for _, pid := range markedProcs(c.Prefix) {
		if err := kill(pid, 0, 2*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, deleteHostLink(c.hostLink()), deleteNftTable(c.nftTable()))
	nss, err := listNS(c.Prefix)
	if err != nil {
		errs = append(errs, err)
	}
	for _, ns := range nss {
		if err := deleteNS(ns); err != nil {
			errs = append(errs, err)
		}
	}
	for _, g := range c.PinGlobs {
		matches, _ := filepath.Glob(g)
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				errs = append(errs, fmt.Errorf("remove pin %s: %w", m, err))
			}
		}
	}
	if err := os.RemoveAll(c.StateDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Leftovers lists what of the lab still exists: namespaces, the host link,
// the nftables table, processes, pins, the state directory. Empty after Down.
func (l *Lab) Leftovers() []string {
	c := l.cfg
	var out []string
	nss, _ := listNS(c.Prefix)
	for _, ns := range nss {
		out = append(out, "netns "+ns)
	}
	if _, err := net.InterfaceByName(c.hostLink()); err == nil {
		out = append(out, "link "+c.hostLink())
	}
	if exec.Command("nft", "list", "table", "ip", c.nftTable()).Run() == nil {
		out = append(out, "nft table "+c.nftTable())
	}
	for _, pid := range markedProcs(c.Prefix) {
		out = append(out, "process "+strconv.Itoa(pid))
	}
	for _, g := range c.PinGlobs {
		m, _ := filepath.Glob(g)
		for _, p := range m {
			out = append(out, "pin "+p)
		}
	}
	if _, err := os.Stat(c.StateDir); err == nil {
		out = append(out, "dir "+c.StateDir)
	}
	return out
}
