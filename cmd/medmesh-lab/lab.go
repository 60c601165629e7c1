package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/deploy/lab"
	"github.com/medmesh/medmesh/deploy/lab/sim"
	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
)

// labFlags are the flags of the lab commands (--medmesh is up's alone).
type labFlags struct {
	stateDir string
	output   string
	verbose  bool
	medmesh  string
}

func (f *labFlags) register(c *cobra.Command) *cobra.Command {
	fl := c.Flags()
	fl.StringVar(&f.stateDir, "state-dir", lab.DefaultConfig().StateDir, "state file, logs and coordinator data")
	fl.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log progress")
	return c
}

func (f *labFlags) config() lab.Config {
	cfg := lab.DefaultConfig()
	cfg.StateDir = f.stateDir
	if f.medmesh != "" {
		cfg.Binary = f.medmesh
	}
	return cfg
}

func (f *labFlags) logger(w io.Writer) *slog.Logger {
	lvl := slog.LevelInfo
	if !f.verbose {
		lvl = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl}))
}

func (f *labFlags) lab(w io.Writer) (*lab.Lab, error) {
	if f.output != "table" && f.output != "json" {
		return nil, usagef("-o %q: want table or json", f.output)
	}
	return lab.Open(f.config(), f.logger(w))
}

// newLabCmds are the campus lab's commands: coordinators, floors of
// simulated devices, sensors and enforcers in network namespaces.
func newLabCmds() []*cobra.Command {
	f := &labFlags{}
	return []*cobra.Command{
		f.register(newLabUpCmd(f)), f.register(newLabDownCmd(f)), f.register(newLabStatusCmd(f)),
		f.register(newLabRunCmd(f)), f.register(newLabSinksCmd(f)), f.register(newLabRoamCmd(f)), newLabSimCmd(), f.register(newLabEnvCmd(f)),
	}
}

func newLabUpCmd(f *labFlags) *cobra.Command {
	var noComponents bool
	c := &cobra.Command{
		Use:   "up",
		Short: "Build the lab and start its processes (a running lab is left as it is)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := f.config()
			cfg.Components = !noComponents
			l, err := lab.New(cfg, f.logger(cmd.ErrOrStderr()))
			if err != nil {
				return err
			}
			if f.output != "table" && f.output != "json" {
				return usagef("-o %q: want table or json", f.output)
			}
			if _, err := l.Up(cmd.Context()); err != nil {
				return fmt.Errorf("lab up: %w (remove what was built with `medmesh-lab down`)", err)
			}
			return printStatus(cmd.OutOrStdout(), l, f.output)
		},
	}
	c.Flags().BoolVar(&noComponents, "no-components", false, "start only the topology and simulators, no coordinators, sensors or enforcers")
	c.Flags().StringVar(&f.medmesh, "medmesh", lab.DefaultConfig().Binary, "the medmesh binary the coordinators, sensors and enforcers run")
	return c
}

func newLabEnvCmd(f *labFlags) *cobra.Command {
	role := string(pki.RoleApprover)
	c := &cobra.Command{
		Use:   "env",
		Short: "Print the shell exports that point the CLI at the lab with a lab certificate (and name the web console and its accounts file): eval \"$(medmesh-lab env)\"",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := pki.ParseRole(role)
			if err != nil {
				return usageError{err}
			}
			cfg := f.config()
			files, err := cfg.ClientTLS(r)
			if err != nil {
				return usageError{err}
			}
			if _, err := os.Stat(files.CertFile); err != nil {
				return fmt.Errorf("no lab certificate at %s: is the lab up? (medmesh-lab up)", files.CertFile)
			}
			w := cmd.OutOrStdout()
			for _, kv := range [][2]string{
				{"MEDMESH_ADDR", cfg.CoordinatorTargets()},
				{"MEDMESH_TLS_CA", files.CAFile},
				{"MEDMESH_TLS_CERT", files.CertFile},
				{"MEDMESH_TLS_KEY", files.KeyFile},
				// The web console, for a browser: people log in with an
				// account of MEDMESH_CONSOLE_ACCOUNTS.
				{"MEDMESH_CONSOLE_URL", cfg.ConsoleURL(1)},
				{"MEDMESH_CONSOLE_ACCOUNTS", cfg.ConsoleAccountsFile()},
			} {
				fmt.Fprintf(w, "export %s=%s\n", kv[0], shellQuote(kv[1]))
			}
			return nil
		},
	}
	c.Flags().StringVar(&role, "role", role, "the lab identity to use: approver, operator or viewer")
	return c
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func newLabDownCmd(f *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop every lab process and remove its namespaces, links, nftables table, pins and state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := f.lab(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			before := l.Leftovers()
			if err := l.Down(); err != nil {
				return fmt.Errorf("lab down: %w", err)
			}
			if left := l.Leftovers(); len(left) > 0 {
				return fmt.Errorf("lab down left: %s", strings.Join(left, ", "))
			}
			w := cmd.OutOrStdout()
			if len(before) == 0 {
				fmt.Fprintln(w, "lab down: nothing to remove")
				return nil
			}
			for _, r := range before {
				fmt.Fprintf(w, "lab down: removed %s\n", r)
			}
			fmt.Fprintf(w, "lab down: removed %d things; nothing left\n", len(before))
			return nil
		},
	}
}

func newLabStatusCmd(f *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the lab's namespaces, processes and devices",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := f.lab(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return printStatus(cmd.OutOrStdout(), l, f.output)
		},
	}
}

func printStatus(w io.Writer, l *lab.Lab, output string) error {
	st, err := l.Status()
	if err != nil {
		return err
	}
	if output == "json" {
		return printJSON(w, st)
	}
	if !st.Up {
		fmt.Fprintln(w, "lab: down")
		return nil
	}
	alive := 0
	for _, p := range st.Procs {
		if p.Alive {
			alive++
		}
	}
	fmt.Fprintf(w, "lab: up (complete=%v), %d namespaces, %d/%d processes alive, state %s\n", st.Complete, st.Namespaces, alive, len(st.Procs), st.StateFile)
	if len(st.Missing) > 0 {
		fmt.Fprintf(w, "missing namespaces: %s\n", strings.Join(st.Missing, ", "))
	}
	t := newTable(w, "PROCESS", "ROLE", "NETNS", "PID", "ALIVE", "LOG")
	for _, p := range st.Procs {
		t.row(p.Name, p.Role, orHost(p.Netns), p.PID, p.Alive, p.Log)
	}
	if err := t.flush(); err != nil {
		return err
	}
	t = newTable(w, "DEVICE", "KIND", "FLOOR", "IP", "MAC", "LIFE-CRITICAL", "NETNS")
	for _, d := range st.Devices {
		t.row(d.Name, d.Kind, d.Floor, d.IP, d.MAC, d.LifeCritical, d.Namespace)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(st.Traffic) > 0 {
		t = newTable(w, "ENFORCER", "DEVICE", "LIFE-CRITICAL", "TO-ENFORCER", "PASSED", "DROPPED")
		for _, x := range st.Traffic {
			t.row(fmt.Sprintf("e%d", x.Floor), x.Device, x.LifeCritical, x.ToEnforcer, x.Passed, x.Dropped)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	for role, why := range st.Skipped {
		fmt.Fprintf(w, "not started: %s: %s\n", role, why)
	}
	fmt.Fprintf(w, "coordinator API on the host: %s, mutual TLS: eval \"$(medmesh-lab env)\", then medmesh cluster status ...\n", st.API)
	if st.Console != "" {
		fmt.Fprintf(w, "web console: %s (the lab's CA: %s), accounts and their passwords in %s (root only)\n", st.Console, l.Config().TLSFiles(lab.ViewerName).CAFile, st.ConsoleAccounts)
	}
	return nil
}

func orHost(ns string) string {
	if ns == "" {
		return "(host)"
	}
	return ns
}

func newLabRunCmd(f *labFlags) *cobra.Command {
	opts := lab.DefaultScenarioOptions()
	var scenario, addr string
	var view bool
	c := &cobra.Command{
		Use:   "run --scenario NAME",
		Short: "Run a scenario on the running lab and print its outcome",
		Long: "Run a scenario on the running lab and print its outcome.\n\n" +
			"  compromised-device  the nurse call station scans its floor, logs into a console with\n" +
			"                      default credentials and exfiltrates: the default rules quarantine it.\n" +
			"                      Then a class policy for IT workstations (class/it-workstation, enforce\n" +
			"                      mode) drops a workstation's datagrams to the PACS while its HTTPS passes.\n" +
			"  compromised-pump    an infusion pump (life-critical) does the same: its decisions wait for\n" +
			"                      approval and nothing of it is dropped; the lab's approver (a second\n" +
			"                      identity) approves them and the pump's packets are dropped.\n\n" +
			"With -o json the outcome has totals (devices_found, alerts, decisions, incidents,\n" +
			"enforcer_drops, life_critical_drops) and detection_to_drop_ms (-1: no drop seen) at the\n" +
			"top level, besides per-device traffic, class_policy (compromised-device) and pump\n" +
			"(compromised-pump: the pending decisions, the approvals, the drops before and after).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if scenario == "" {
				return usagef("--scenario is required (known: %s)", strings.Join(lab.Scenarios(), ", "))
			}
			l, err := f.lab(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if !slices.Contains(lab.Scenarios(), scenario) {
				return usagef("unknown scenario %q (known: %s)", scenario, strings.Join(lab.Scenarios(), ", "))
			}
			if addr == "" {
				addr = l.Config().CoordinatorTargets()
			}
			cc := grpcx.DefaultClientConfig()
			// The scenario reads and approves: the lab's approver.
			if cc.TLS, err = l.Config().ClientTLS(pki.RoleApprover); err != nil {
				return err
			}
			if _, err := os.Stat(cc.TLS.CertFile); err != nil {
				return fmt.Errorf("no lab certificate at %s: is the lab up? (medmesh-lab up)", cc.TLS.CertFile)
			}
			conn, err := grpcx.Dial(addr, cc, nil)
			if err != nil {
				return usageError{err}
			}
			defer conn.Close()
			obs := lab.NewObserver(l, conn)
			w := cmd.OutOrStdout()
			if view {
				title := fmt.Sprintf("medmesh lab: scenario %s", scenario)
				opts.Progress = func(s lab.Snapshot) { lab.Render(w, s, title) }
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			out, err := l.RunScenario(ctx, scenario, obs, opts)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return printJSON(w, out)
			}
			return printOutcome(w, out)
		},
	}
	fl := c.Flags()
	fl.StringVar(&scenario, "scenario", "", "scenario to run: "+strings.Join(lab.Scenarios(), ", "))
	fl.StringVar(&addr, "addr", "", "coordinator API address(es) (default: the lab's three coordinators)")
	fl.BoolVar(&view, "view", false, "live terminal view while the scenario runs")
	fl.DurationVar(&opts.BaselineTimeout, "baseline-timeout", opts.BaselineTimeout, "wait at most this long for the device's baseline to freeze (0: do not wait)")
	fl.DurationVar(&opts.ExfilFor, "exfil-for", opts.ExfilFor, "how long the compromised device sends to the internet")
	fl.DurationVar(&opts.Settle, "settle", opts.Settle, "how long to wait for alerts and decisions after the attack")
	return c
}

func printOutcome(w io.Writer, o lab.ScenarioOutcome) error {
	fmt.Fprintf(w, "\nscenario %s: device %s (%s, %s)\n", o.Scenario, o.Device, o.MAC, o.IP)
	fmt.Fprintf(w, "  baseline frozen: %v (waited %d ms)\n", o.BaselineFrozen, o.BaselineWaitMs)
	a := o.Attack
	fmt.Fprintf(w, "  attack: %d probes (%d open), default-credential login ok=%v, exfil %d/%d attempts got through (%d bytes)\n",
		a.Probes, a.OpenPorts, a.LoginOK, a.ExfilOK, a.ExfilAttempts, a.ExfilBytes)
	fmt.Fprintf(w, "  devices found: %d, alerts: %d, decisions: %d\n", o.Totals.DevicesFound, o.Totals.Alerts, o.Totals.Decisions)
	for _, d := range o.Decisions {
		fmt.Fprintf(w, "    decision #%d %s %s %s: %s\n", d.Index, d.Device, d.Action, d.State, d.Reason)
	}
	t := newTable(w, "DEVICE", "FLOOR", "LIFE-CRITICAL", "TO-ENFORCER", "PASSED", "DROPPED")
	for _, x := range o.Traffic {
		t.row(x.Device, x.Floor, x.LifeCritical, x.ToEnforcer, x.Passed, x.Dropped)
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "  packets dropped by the enforcers: %d, of life-critical devices: %d\n", o.Totals.EnforcerDrops, o.Totals.LifeCriticalDrops)
	switch {
	case o.Pump != nil:
		// The pump's drops wait for the approval: told below.
	case o.DetectionToDropMs >= 0:
		fmt.Fprintf(w, "  detection-to-drop latency: %.0f ms\n", o.DetectionToDropMs)
	default:
		fmt.Fprintln(w, "  detection-to-drop latency: no drop observed")
	}
	if o.Pump == nil && o.DetectionToEnforceMs >= 0 {
		fmt.Fprintf(w, "  detection-to-enforce latency: %.0f ms (first external packet to the decision in the enforcer's datapath)\n", o.DetectionToEnforceMs)
	}
	if c := o.ClassPolicy; c != nil {
		fmt.Fprintf(w, "  class policy %s (enforce) for class %s: %d decisions, one per device of the class\n", c.Policy, c.Class, c.Decisions)
		fmt.Fprintf(w, "    %s (classified %s): %d datagrams to %s (denied): %d packets dropped at its enforcer\n",
			c.Device, orNone(c.DeviceClass), c.DeniedSent, c.DeniedTarget, c.Dropped)
		fmt.Fprintf(w, "    %s: tcp to %s (allowed) connected=%v, %d packets passed; first drop %.0f ms after the activation\n",
			c.Device, c.AllowedTarget, c.AllowedOK, c.Passed, c.ActivationToDropMs)
	}
	if p := o.Pump; p != nil {
		fmt.Fprintf(w, "  %s is life-critical: %d decisions waited for approval; its packets dropped meanwhile: %d\n", o.Device, len(p.Pending), p.DroppedWhilePending)
		fmt.Fprintln(w, "  pending (JSON, as -o json prints them in .pump.pending):")
		if err := printJSON(w, p.Pending); err != nil {
			return err
		}
		fmt.Fprintln(w, "  approvals (.pump.approved):")
		if err := printJSON(w, p.Approved); err != nil {
			return err
		}
		fmt.Fprintf(w, "  after approval by %s: %d packets of %s dropped", orNone(p.Approver), p.DroppedAfterApproval, o.Device)
		if p.ApprovalToDropMs >= 0 {
			fmt.Fprintf(w, ", the first %.0f ms after the approval", p.ApprovalToDropMs)
		}
		fmt.Fprintln(w)
	}
	for _, n := range o.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	return nil
}

func newLabSinksCmd(f *labFlags) *cobra.Command {
	timeout := time.Minute
	c := &cobra.Command{
		Use:   "sinks",
		Short: "Show one SIEM line and one webhook for the compromised device (make demo)",
		Long: "Start a syslog receiver and a webhook receiver on loopback, add a CEF syslog sink and an\n" +
			"HMAC-signed webhook sink (lab-siem, lab-tickets) from the start of the retained history,\n" +
			"print the first alert of the compromised device each receives, and remove the sinks.\n" +
			"Run it after `medmesh-lab run --scenario compromised-device`.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.output != "table" && f.output != "json" {
				return usagef("-o %q: want table or json", f.output)
			}
			res, err := f.config().SinkDemo(cmd.Context(), timeout)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if f.output == "json" {
				return printJSON(w, res)
			}
			fmt.Fprintf(w, "SIEM (syslog RFC 5424, CEF) line for %s (%s):\n  %s\n", res.Device, res.MAC, res.SyslogLine)
			fmt.Fprintf(w, "webhook (JSON, %s verified) for %s:\n  %s\n", res.Signature[:min(len(res.Signature), 19)]+"...", res.Device, res.Webhook)
			return nil
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", timeout, "wait at most this long for both receivers")
	return c
}

func newLabRoamCmd(f *labFlags) *cobra.Command {
	var floor int
	c := &cobra.Command{
		Use:   "roam DEVICE --floor N",
		Short: "Move a device to another floor (its namespace, MAC and simulator stay)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := f.lab(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if floor < 1 {
				return usagef("--floor is required")
			}
			d, err := l.Roam(args[0], floor)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), d)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is on floor %d at %s (netns %s)\n", d.Name, d.Floor, d.IP, d.Namespace)
			return nil
		},
	}
	c.Flags().IntVar(&floor, "floor", 0, "floor to move the device to")
	return c
}

// newLabSimCmd runs one simulator, or the compromised device's attack; the
// lab starts it inside a namespace with --config, people with --kind and
// the address flags.
func newLabSimCmd() *cobra.Command {
	var js, kind, id string
	var over sim.Config
	c := &cobra.Command{
		Use:    "sim (--config JSON | --kind KIND --id ID [flags])",
		Short:  "Run one device or service simulator (the lab starts them inside namespaces)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cfg sim.Config
			switch {
			case js != "":
				if err := json.Unmarshal([]byte(js), &cfg); err != nil {
					return usagef("--config: %v", err)
				}
			case kind != "" && id != "":
				cfg = sim.DefaultConfig(sim.Kind(kind), id)
			default:
				return usagef("give --config, or --kind and --id")
			}
			fl := cmd.Flags()
			set := func(name string, dst *string, v string) {
				if fl.Changed(name) {
					*dst = v
				}
			}
			set("listen", &cfg.Listen, over.Listen)
			set("hl7", &cfg.HL7, over.HL7)
			set("central", &cfg.Central, over.Central)
			set("nurse-call", &cfg.NurseCall, over.NurseCall)
			set("pacs", &cfg.PACS, over.PACS)
			set("dhcp", &cfg.DHCP, over.DHCP)
			set("dns", &cfg.DNS, over.DNS)
			set("ntp", &cfg.NTP, over.NTP)
			set("web", &cfg.Web, over.Web)
			set("telnet", &cfg.Telnet, over.Telnet)
			if fl.Changed("interval") {
				cfg.Interval = over.Interval
			}
			if fl.Changed("rounds") {
				cfg.Rounds = over.Rounds
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			if cfg.Kind == sim.KindCompromised {
				ctx, cancel := context.WithTimeout(ctx, cfg.ExfilFor+time.Minute)
				defer cancel()
				out, err := sim.Attack(ctx, cfg, log)
				if err != nil {
					return err
				}
				return json.NewEncoder(cmd.OutOrStdout()).Encode(out)
			}
			return sim.Run(ctx, cfg, log)
		},
	}
	fl := c.Flags()
	fl.StringVar(&js, "config", "", "simulator configuration (JSON of sim.Config)")
	fl.StringVar(&kind, "kind", "", "pump, monitor, modality, nursecall, workstation; hl7-engine, pacs, dhcp-dns, ntp, central, internet")
	fl.StringVar(&id, "id", "", "device or service name")
	fl.StringVar(&over.Listen, "listen", "", "services: IP to listen on")
	fl.StringVar(&over.HL7, "hl7", "", "interface engine MLLP address (pump)")
	fl.StringVar(&over.Central, "central", "", "central station MLLP address (monitor)")
	fl.StringVar(&over.NurseCall, "nurse-call", "", "central station nurse-call UDP address (nursecall)")
	fl.StringVar(&over.PACS, "pacs", "", "PACS DICOM address (modality)")
	fl.StringVar(&over.DHCP, "dhcp", "", "DHCP server address")
	fl.StringVar(&over.DNS, "dns", "", "DNS server address")
	fl.StringVar(&over.NTP, "ntp", "", "NTP server address")
	fl.StringVar(&over.Web, "web", "", "internet host name (workstation), resolved through --dns")
	fl.StringVar(&over.Telnet, "telnet", "", "listen address of the device's telnet console")
	fl.DurationVar(&over.Interval, "interval", 2*time.Second, "time between rounds of device traffic")
	fl.IntVar(&over.Rounds, "rounds", 0, "rounds to run (0: until interrupted)")
	return c
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
