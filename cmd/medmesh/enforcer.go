package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/enforcer"
	"github.com/medmesh/medmesh/internal/admin"
	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
)

func newEnforcerCmd() *cobra.Command {
	cfg := enforcer.DefaultConfig()
	var (
		coordinators string
		adminAddr    string
		dnsServers   []string
		dhcpServers  []string
		uninstall    bool
		debug, pprof bool
		dev          bool
	)
	cmd := &cobra.Command{
		Use:   "enforcer --id ID --iface IF --coordinator ADDR[,ADDR]",
		Short: "Run an inline XDP enforcer on a device-facing interface",
		Long: "The enforcer attaches an XDP verdict program to the device-facing interface of a routing\n" +
			"node and applies the coordinators' decisions to it. Its maps and XDP link are pinned in\n" +
			"bpffs: a stopped or crashed enforcer keeps enforcing, a restarted one adopts them.\n" +
			"--uninstall removes the pinned program and stops enforcing.\n" +
			"\n" +
			"Policy rules that name a peer by DNS name are installed as one rule per address of the\n" +
			"name's answer, which the enforcer asks of --resolver (default: the system's resolvers)\n" +
			"and asks again when the answer's TTL runs out, held between --dns-min-ttl and --dns-max-ttl.\n" +
			"Before the first answer nothing is allowed for the name; when DNS fails, the last answer\n" +
			"stays. `medmesh policies get` shows what each enforcer installed.\n" +
			"\n" +
			"Security: coordinator connections are mutual TLS with an enforcer certificate named as --id\n" +
			"(--tls-ca, --tls-cert, --tls-key); without them the enforcer starts only if every\n" +
			"coordinator address is loopback, or with --dev.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.ID == "" {
				return usagef("--id is required")
			}
			if err := enforcer.CheckID(cfg.ID); err != nil {
				return usagef("--id: %v", err)
			}
			if cfg.PinDir == "" {
				cfg.PinDir = enforcer.PinDir(cfg.ID)
			}
			if err := enforcer.CheckPinDir(cfg.PinDir); err != nil {
				return usagef("--pin-dir: %v", err)
			}
			if uninstall {
				kept, err := enforcer.Uninstall(cfg.PinDir)
				if err != nil {
					return fmt.Errorf("uninstall: %w", err)
				}
				if len(kept) > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "enforcer %s uninstalled; %s kept: it holds files medmesh did not pin: %v\n", cfg.ID, cfg.PinDir, kept)
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "enforcer %s uninstalled (%s removed)\n", cfg.ID, cfg.PinDir)
				return nil
			}
			cfg.Coordinators = grpcx.SplitTargets(coordinators)
			if cfg.Interface == "" || len(cfg.Coordinators) == 0 {
				return usagef("--iface and --coordinator are required")
			}
			var err error
			if cfg.DNSServers, err = parseAddrs("--dns-server", dnsServers); err != nil {
				return err
			}
			if cfg.DHCPServers, err = parseAddrs("--dhcp-server", dhcpServers); err != nil {
				return err
			}
			if cfg.DNS.MinTTL <= 0 || cfg.DNS.MaxTTL < cfg.DNS.MinTTL {
				return usagef("--dns-min-ttl %s, --dns-max-ttl %s: want 0 < min <= max", cfg.DNS.MinTTL, cfg.DNS.MaxTTL)
			}
			cfg.AdminAddr, cfg.Version = adminAddr, version
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("component", "enforcer", "id", cfg.ID)
			if err := checkDaemonTLS("enforcer", cfg.TLS, dev, log, cfg.Coordinators...); err != nil {
				return err
			}
			if err := checkIdentity(cfg.TLS, pki.RoleEnforcer, cfg.ID); err != nil {
				return err
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			e, err := enforcer.New(cfg, log, reg)
			if err != nil {
				return err
			}
			adm := admin.New(adminAddr, reg, func() error {
				if h := e.Health(); h != "ok" {
					return errors.New(h)
				}
				return nil
			}, log)
			adm.Handle("GET /applied", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(e.RecentApplied())
			}))
			if pprof {
				adm.EnablePprof()
			}
			if err := adm.Start(); err != nil {
				return errors.Join(err, e.Close())
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			runErr := e.Run(ctx)
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			log.Info("enforcer stopping; the pinned program keeps enforcing", "applied_index", e.Applied())
			return errors.Join(runErr, adm.Close(sctx), e.Close())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ID, "id", "", "enforcer id (member id and pin directory name)")
	f.StringVar(&cfg.Interface, "iface", "", "device-facing interface")
	f.StringVar(&coordinators, "coordinator", "", "coordinator API addresses, comma-separated")
	f.StringVar(&cfg.PinDir, "pin-dir", "", "bpffs directory for pinned maps and link (default /sys/fs/bpf/medmesh/ID)")
	f.StringVar(&adminAddr, "admin", admin.EnforcerAddr, "admin listener: /metrics, /healthz, /readyz, /applied (the last decisions applied, with when)")
	f.BoolVar(&pprof, "pprof", false, "also serve /debug/pprof/ on the admin listener")
	f.IntVar(&cfg.MaxDevices, "max-devices", cfg.MaxDevices, "devices the maps hold")
	f.StringSliceVar(&dnsServers, "dns-server", nil, "DNS server a quarantined device may still reach (repeatable)")
	f.StringSliceVar(&dhcpServers, "dhcp-server", nil, "DHCP server a quarantined device may still reach (repeatable)")
	f.StringSliceVar(&cfg.Resolvers, "resolver", nil, "DNS server the enforcer asks for the addresses of policies' DNS-named peers, ADDR or ADDR:PORT (repeatable; default: the nameservers of /etc/resolv.conf)")
	f.DurationVar(&cfg.DNS.MinTTL, "dns-min-ttl", cfg.DNS.MinTTL, "ask a DNS-named peer again no sooner than this, whatever its answer's TTL")
	f.DurationVar(&cfg.DNS.MaxTTL, "dns-max-ttl", cfg.DNS.MaxTTL, "ask a DNS-named peer again no later than this, whatever its answer's TTL")
	f.DurationVar(&cfg.AlarmAfter, "alarm-after", cfg.AlarmAfter, "raise the control-plane alarm after this long without a coordinator")
	f.DurationVar(&cfg.ReportInterval, "report-interval", cfg.ReportInterval, "member status period")
	f.BoolVar(&uninstall, "uninstall", false, "remove the pinned program and maps, then exit")
	f.BoolVar(&debug, "debug", false, "debug logging")
	f.BoolVar(&dev, "dev", false, "lab/development: allow plaintext to non-loopback coordinators")
	addDaemonTLSFlags(cmd, &cfg.TLS, "an enforcer certificate named as --id,")
	return cmd
}

func parseAddrs(flag string, ss []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range ss {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, usagef("%s %q: %v", flag, s, err)
		}
		out = append(out, a)
	}
	return out, nil
}
