package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/coordinator"
	"github.com/medmesh/medmesh/internal/admin"
	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
	"github.com/medmesh/medmesh/risk"
)

// coordinatorOptions are the flags of `medmesh coordinator`.
type coordinatorOptions struct {
	id, dataDir, api, raft, admin string
	fhirAddr                      string
	dev, pprof                    bool
	bootstrapExpect               int
	join                          []string
	tls                           pki.Files
	logLevel                      string
	intelKey                      string
	intelMaxAge                   time.Duration
	webAddr, webOrigin            string
	oidc                          oidcOptions
	// started, if set, is given the coordinator once it started (tests
	// compare what the CLI gets with what the coordinator computes).
	started func(*coordinator.Coordinator)
}

func newCoordinatorCmd() *cobra.Command {
	o := coordinatorOptions{}
	cmd := &cobra.Command{
		Use:   "coordinator",
		Short: "Run a Raft-replicated coordinator (the control plane and its gRPC API)",
		Long: "Run one coordinator. --dev runs a single node on a temporary data directory.\n" +
			"A cluster: start N nodes with --bootstrap-expect N --join API_ADDR,... ; a node\n" +
			"restarted with its --data-dir rejoins by itself.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runCoordinator(ctx, o, os.Stderr, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.id, "id", "", "coordinator id, unique in the cluster (default \"dev\" with --dev)")
	f.StringVar(&o.dataDir, "data-dir", "", "directory of the Raft log and snapshots (default: a temporary directory with --dev)")
	f.StringVar(&o.api, "api", "127.0.0.1:7400", "gRPC API listen address (also advertised to other coordinators)")
	f.StringVar(&o.raft, "raft", "127.0.0.1:7401", "Raft transport listen and advertise address")
	f.StringVar(&o.admin, "admin", admin.DefaultAddr, "admin listener: /metrics, /healthz, /readyz (empty: none)")
	f.BoolVar(&o.pprof, "pprof", false, "also serve /debug/pprof/ on the admin listener")
	f.StringVar(&o.fhirAddr, "fhir-addr", "", "HTTPS listener of the read-only FHIR R4 endpoint (GET /fhir/Device); needs the TLS flags, and callers a client certificate whose role may read the inventory (empty: none)")
	f.BoolVar(&o.dev, "dev", false, "single node that bootstraps itself, data in a temporary directory")
	f.IntVar(&o.bootstrapExpect, "bootstrap-expect", 0, "number of coordinators that form a new cluster")
	f.StringSliceVar(&o.join, "join", nil, "API addresses of other coordinators, comma-separated")
	addDaemonTLSFlags(cmd, &o.tls, "a coordinator certificate (with this host's --ip)")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&o.intelKey, "intel-key", "", "ed25519 public key (PEM, medmesh intel keygen) every intelligence bundle must be signed with; unsigned bundles are refused")
	f.StringVar(&o.webAddr, "web-addr", "", "web console listen address, HTTPS with the coordinator's certificate (empty: no console; plaintext only on loopback without certificates)")
	f.StringVar(&o.webOrigin, "web-origin", "", "the console's external origin behind a reverse proxy, https://HOST[:PORT][/PATH] (default: each request's Host)")
	addOIDCFlags(f, &o.oidc)
	f.DurationVar(&o.intelMaxAge, "intel-max-age", 30*24*time.Hour, "intel status marks bundle sources older than this as stale (they are still used)")
	return cmd
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, usagef("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// runCoordinator runs a coordinator until ctx ends. ready, if not nil, is
// closed once the API serves.
func runCoordinator(ctx context.Context, o coordinatorOptions, stderr io.Writer, ready chan<- struct{}) error {
	level, err := parseLevel(o.logLevel)
	if err != nil {
		return err
	}
	if o.dev && o.id == "" {
		o.id = "dev"
	}
	switch {
	case o.id == "":
		return usagef("--id is required (or --dev)")
	case o.dataDir == "" && !o.dev:
		return usagef("--data-dir is required (or --dev)")
	case o.dev && (o.bootstrapExpect > 1 || len(o.join) > 0):
		return usagef("--dev is a single node: drop --bootstrap-expect and --join")
	case o.bootstrapExpect > 1 && len(o.join) == 0:
		return usagef("--bootstrap-expect %d needs --join", o.bootstrapExpect)
	}
	if o.fhirAddr != "" && !o.tls.Enabled() {
		return usagef("--fhir-addr needs --tls-ca, --tls-cert and --tls-key: the FHIR endpoint requires client certificates")
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("component", "coordinator", "id", o.id)
	// Plaintext only with --dev or on loopback: the API, Raft and every
	// coordinator joined.
	if err := checkDaemonTLS("coordinator", o.tls, o.dev, log, append([]string{o.api, o.raft}, o.join...)...); err != nil {
		return err
	}

	if err := checkWebFlags(o); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	tlsFiles := o.tls
	cfg := coordinator.DefaultConfig()
	// Raft and the coordinator's calls to other coordinators use its own
	// certificate (coordinator.Config.Dial defaults to grpcx.Dial with it).
	cfg.TLS = tlsFiles
	cfg.ID, cfg.DataDir, cfg.APIAddr, cfg.RaftAddr = o.id, o.dataDir, o.api, o.raft
	cfg.Dev, cfg.BootstrapExpect = o.dev, o.bootstrapExpect
	cfg.Version = version // in the events outbound sinks send
	if o.intelKey != "" {
		k, err := risk.ReadPublicKey(o.intelKey)
		if err != nil {
			return usagef("--intel-key: %v", err)
		}
		cfg.IntelKey = k
	}
	if o.intelMaxAge > 0 {
		cfg.IntelMaxAge = o.intelMaxAge
	}
	for _, j := range o.join {
		if j = strings.TrimSpace(j); j != "" {
			cfg.Join = append(cfg.Join, j)
		}
	}
	if o.dev {
		// A single node: elect fast.
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	}

	scfg := grpcx.DefaultServerConfig()
	scfg.Addr, scfg.TLS, scfg.Authz = o.api, tlsFiles, coordinator.AuthzTable()
	srv, err := grpcx.NewServer(scfg, log, reg)
	if err != nil {
		return fmt.Errorf("api server: %w", err)
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	c, err := coordinator.New(cfg, log, reg)
	if err != nil {
		srv.Stop(context.Background())
		return err
	}
	c.Register(srv.GRPC())
	var adm *admin.Server
	if o.admin != "" {
		adm = admin.New(o.admin, reg, c.Ready, log)
		if o.pprof {
			adm.EnablePprof()
		}
		if err := adm.Start(); err != nil {
			srv.Stop(context.Background())
			return errors.Join(err, c.Close())
		}
	}
	fhirSrv, err := startFHIR(o.fhirAddr, tlsFiles, c, log)
	if err != nil {
		srv.Stop(context.Background())
		if adm != nil {
			err = errors.Join(err, adm.Close(context.Background()))
		}
		return errors.Join(err, c.Close())
	}
	closeAdmin := func(ctx context.Context) error {
		var err error
		if fhirSrv != nil {
			err = fhirSrv.Shutdown(ctx)
		}
		if adm == nil {
			return err
		}
		return errors.Join(err, adm.Close(ctx))
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve() }()
	stopWeb, err := startWeb(o, c, log, serveErr)
	if err != nil {
		srv.Stop(context.Background())
		return errors.Join(err, c.Close(), closeAdmin(context.Background()))
	}
	defer stopWeb()
	setServing := func(ok bool) {
		srv.SetServing("", ok)
		for _, s := range coordinator.ServiceNames() {
			srv.SetServing(s, ok)
		}
	}
	setServing(false)
	if err := c.Start(ctx); err != nil {
		err = errors.Join(err, c.Close())
		srv.Stop(context.Background())
		return errors.Join(err, closeAdmin(context.Background()))
	}
	log.Info("coordinator started", "api", o.api, "raft", o.raft, "admin", o.admin, "dev", o.dev, "data_dir", cfg.DataDir, "mtls", tlsFiles.Enabled())
	if o.started != nil {
		o.started(c)
	}

	// Health follows readiness: SERVING once a leader is known.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	wasReady := false
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-serveErr:
			runErr = err
			break loop
		case <-tick.C:
			isReady := c.Ready() == nil
			if isReady != wasReady {
				setServing(isReady)
				if isReady {
					log.Info("coordinator ready")
					if ready != nil {
						close(ready)
						ready = nil
					}
				}
				wasReady = isReady
			}
		}
	}
	log.Info("shutting down")
	setServing(false)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The leader hands over leadership before the API stops.
	err = c.Close()
	srv.Stop(shutdownCtx)
	return errors.Join(runErr, err, closeAdmin(shutdownCtx))
}

// startFHIR serves the FHIR endpoint on addr with the coordinator's TLS,
// client certificates required; nil without an address.
func startFHIR(addr string, files pki.Files, c *coordinator.Coordinator, log *slog.Logger) (*http.Server, error) {
	if addr == "" {
		return nil, nil
	}
	tc, err := coordinator.FHIRTLSConfig(files)
	if err != nil {
		return nil, fmt.Errorf("fhir listener: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fhir listener: %w", err)
	}
	hs := &http.Server{Handler: c.FHIRHandler(), TLSConfig: tc, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go func() {
		if err := hs.Serve(tls.NewListener(ln, tc)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("fhir listener stopped", "err", err)
		}
	}()
	log.Info("fhir endpoint serving", "addr", ln.Addr().String())
	return hs, nil
}
