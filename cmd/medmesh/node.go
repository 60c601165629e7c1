package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/internal/admin"
	"github.com/medmesh/medmesh/internal/pki"
	"github.com/medmesh/medmesh/node"
	"github.com/medmesh/medmesh/node/collector"
	"github.com/medmesh/medmesh/node/datapath"
	"github.com/medmesh/medmesh/node/gossip"
)

// nodeOptions are the flags of `medmesh node`.
type nodeOptions struct {
	id, iface, mode, admin string
	debug, generic, pprof  bool
	flows                  uint32
	coordinator, join      []string
	gossip, zone, spoolDir string
	gossipKeyFile, campus  string
	infra                  []string
	collect                string
	collectSite            []string
	floor                  int
	learnWindow            time.Duration
	dev                    bool
	tls                    pki.Files
}

func newNodeCmd() *cobra.Command {
	o := nodeOptions{}
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a sensor: XDP flow capture on one interface, and/or IPFIX and NetFlow v9 collection",
		Long: "Run the sensor datapath on --iface. tap mode is for a dedicated mirror port (frames are\n" +
			"dropped after accounting); passive mode passes every frame on. The sensor identifies\n" +
			"devices and protocols, learns per-device baselines over --learn-window, scores every flow,\n" +
			"and reports devices, baselines, alerts and per-minute flow summaries to --coordinator\n" +
			"(spooled on disk while none is reachable). Without --coordinator it logs flows and alerts.\n" +
			"With --gossip it joins the sensor mesh; a device first seen at another sensor is scored\n" +
			"with the baseline the coordinators replicated.\n" +
			"\n" +
			"With --collect ADDR it also receives IPFIX and NetFlow v9 over UDP from routers, VPN\n" +
			"concentrators and gateways that see devices at home or at remote sites; their flows go\n" +
			"through the same identity, baselines and scoring, under a site named by the exporter\n" +
			"(--collect-site ADDRESS=NAME, else its address), and decisions about those devices are\n" +
			"advisory (no inline enforcer on their path). Without --iface the node only collects.\n" +
			"\n" +
			"Security: coordinator connections are mutual TLS with a sensor certificate named as --id\n" +
			"(--tls-ca, --tls-cert, --tls-key); without them the node starts only if every coordinator\n" +
			"address is loopback, or with --dev. Gossip is encrypted with --gossip-key-file (make one\n" +
			"with 'medmesh keygen'), required unless --dev; --campus keeps campuses apart.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runNode(ctx, o, os.Stderr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.id, "id", "", "sensor id, unique in the mesh")
	f.StringVar(&o.iface, "iface", "", "interface to capture on (required unless --collect)")
	f.StringVar(&o.mode, "mode", datapath.ModePassive, "tap (mirror port: drop after accounting) or passive (pass frames on)")
	f.BoolVar(&o.debug, "debug", false, "debug logging and the full verifier log if the program fails to load")
	f.BoolVar(&o.generic, "generic", false, "attach in generic (skb) mode even if the driver has native XDP")
	f.Uint32Var(&o.flows, "flows", datapath.DefaultConfig().FlowEntries, "flow table size")
	f.StringVar(&o.admin, "admin", admin.SensorAddr, "admin listener: /metrics, /healthz, /readyz (empty: none)")
	f.BoolVar(&o.pprof, "pprof", false, "also serve /debug/pprof/ on the admin listener")
	f.StringSliceVar(&o.coordinator, "coordinator", nil, "coordinator API addresses, comma-separated (any replica)")
	f.StringVar(&o.spoolDir, "spool-dir", "", "on-disk spool for reports while no coordinator answers (default /var/lib/medmesh/<id>/spool)")
	f.DurationVar(&o.learnWindow, "learn-window", 7*24*time.Hour, "how long a new device is watched before its baseline freezes")
	f.StringVar(&o.gossip, "gossip", "", "gossip listen address host:port (default port 7402); empty: no gossip")
	f.StringSliceVar(&o.join, "join", nil, "gossip seeds to join, comma-separated host:port")
	f.StringVar(&o.gossipKeyFile, "gossip-key-file", "", "file with base64 AES keys (16, 24 or 32 bytes), one per line, first is primary")
	f.StringVar(&o.campus, "campus", "medmesh", "campus name: the gossip label; sensors of another campus cannot join")
	f.StringVar(&o.campus, "gossip-label", "medmesh", "old name of --campus")
	_ = f.MarkDeprecated("gossip-label", "use --campus")
	f.BoolVar(&o.dev, "dev", false, "lab/development: allow plaintext to non-loopback coordinators and unencrypted gossip")
	addDaemonTLSFlags(cmd, &o.tls, "a sensor certificate named as --id,")
	f.StringVar(&o.collect, "collect", "", "UDP address to collect IPFIX and NetFlow v9 on, host:port (e.g. 0.0.0.0:4739); empty: none")
	f.StringArrayVar(&o.collectSite, "collect-site", nil, "name an exporter's site, ADDRESS=NAME (repeatable); an exporter not named is the site of its address")
	f.IntVar(&o.floor, "floor", 0, "floor of this sensor (0: unset)")
	f.StringVar(&o.zone, "zone", "", "zone of this sensor, e.g. icu")
	f.StringArrayVar(&o.infra, "infra", nil, "a campus infrastructure server, SERVICE=ADDRESS or SERVICE=PREFIX (dhcp, dns, ntp, syslog,\n"+
		"directory, hl7, dicom; repeatable): flows to it for that service are not anomalies. Servers that\n"+
		"answer two devices, and those DHCP advertises, are learned without it")
	return cmd
}

func runNode(ctx context.Context, o nodeOptions, stderr io.Writer) error {
	if o.iface == "" && o.collect == "" {
		return usagef("node: --iface or --collect is required")
	}
	if o.mode != datapath.ModeTap && o.mode != datapath.ModePassive {
		return usagef("node: --mode %q: want tap or passive", o.mode)
	}
	level := slog.LevelInfo
	if o.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("component", "node")
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var attached atomic.Bool
	if o.admin != "" {
		adm := admin.New(o.admin, reg, func() error {
			if !attached.Load() {
				return errors.New("datapath not attached yet")
			}
			return nil
		}, log)
		if o.pprof {
			adm.EnablePprof()
		}
		if err := adm.Start(); err != nil {
			return fmt.Errorf("node: %w", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := adm.Close(sctx); err != nil {
				log.Error("admin listener", "err", err)
			}
		}()
	}

	if o.id == "" {
		return usagef("node: --id is required")
	}
	if len(o.coordinator) > 0 {
		if err := checkDaemonTLS("node", o.tls, o.dev, log, o.coordinator...); err != nil {
			return err
		}
		if err := checkIdentity(o.tls, pki.RoleSensor, o.id); err != nil {
			return err
		}
	}
	cfg := node.DefaultConfig()
	cfg.TLS = o.tls
	sc := &cfg.Sensor
	sc.Iface, sc.Mode, sc.ID, sc.Debug = o.iface, o.mode, o.id, o.debug
	sc.ForceGeneric, sc.FlowEntries = o.generic, o.flows
	cfg.Coordinators, cfg.Zone, cfg.LearnWindow, cfg.Version = o.coordinator, o.zone, o.learnWindow, version
	if o.floor != 0 {
		cfg.Floor = strconv.Itoa(o.floor)
	}
	cfg.SpoolDir = o.spoolDir
	cfg.Infra = o.infra
	cfg.Collect.Addr = o.collect
	for _, s := range o.collectSite {
		a, name, err := collector.ParseSite(s)
		if err != nil {
			return usagef("node: --collect-site: %v", err)
		}
		if cfg.Collect.Sites == nil {
			cfg.Collect.Sites = map[netip.Addr]string{}
		}
		cfg.Collect.Sites[a] = name
	}
	cfg.Attached = func() { attached.Store(true) }
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = filepath.Join("/var/lib/medmesh", o.id, "spool")
	}
	if o.gossip != "" {
		gc, err := gossipConfig(o, log)
		if err != nil {
			return err
		}
		cfg.Gossip = gc
	}
	if err := node.Run(ctx, cfg, log, reg); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// gossipConfig builds the mesh membership config from the flags.
func gossipConfig(o nodeOptions, log *slog.Logger) (gossip.Config, error) {
	gc := gossip.DefaultConfig()
	host, port, err := net.SplitHostPort(o.gossip)
	if err != nil {
		host, port = o.gossip, strconv.Itoa(gossip.DefaultPort)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p > 65535 {
		return gc, usagef("node: --gossip %q: want host:port", o.gossip)
	}
	gc.NodeName, gc.BindAddr, gc.BindPort, gc.Join, gc.Label = o.id, host, p, o.join, o.campus
	if o.gossipKeyFile == "" {
		if !o.dev {
			return gc, usagef("node: --gossip needs --gossip-key-file, the campus's gossip key: make one with 'medmesh keygen --out FILE' and give every sensor the same file (or --dev for a lab without encryption)")
		}
		log.Warn("gossip is not encrypted because of --dev: for a lab only")
		return gc, nil
	}
	data, err := os.ReadFile(o.gossipKeyFile)
	if err != nil {
		return gc, fmt.Errorf("node: gossip keys: %w", err)
	}
	for i, line := range strings.Fields(string(data)) {
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return gc, fmt.Errorf("node: gossip key %d in %s: want base64 of 16, 24 or 32 bytes", i+1, o.gossipKeyFile)
		}
		gc.Keys = append(gc.Keys, k)
	}
	return gc, nil
}
