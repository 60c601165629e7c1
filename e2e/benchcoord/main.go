// Command benchcoord compares medmesh's coordinator with etcd on the same
// write workload: a 3-node medmesh cluster and a 3-member etcd cluster on
// loopback, fsync on in both, N writes of the same size at several
// concurrencies. It prints throughput and p99 latency with medmesh/etcd
// ratios. Run it with `make bench-coordinator`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

type config struct {
	bin         string
	labBin      string
	etcdBin     string
	n           int
	valueSize   int
	concs       []int
	maxTime     time.Duration
	startupWait time.Duration
	keep        bool
	skipMedmesh bool
	skipEtcd    bool
	jsonOut     string
	target      string
	rounds      int
	tls         bool
	baseline    string
	memberDirs  string
}

func main() {
	os.Exit(run())
}

func run() int {
	var cfg config
	var concs string
	flag.StringVar(&cfg.bin, "bin", "bin/medmesh", "medmesh binary (the coordinators)")
	flag.StringVar(&cfg.labBin, "lab-bin", "bin/medmesh-lab", "medmesh-lab binary (the bench write client)")
	flag.StringVar(&cfg.etcdBin, "etcd", "etcd", "etcd binary")
	// 6000: at concurrency 16 and 64 a run of 2000 writes lasted 0.25-0.5 s,
	// so one disk stall or collection of one system moved its round by
	// several percent and a median of 3 such rounds still swung 1.01-1.16x.
	flag.IntVar(&cfg.n, "n", 6000, "writes per run")
	flag.IntVar(&cfg.valueSize, "value-size", 256, "approximate bytes of each record's padding")
	flag.StringVar(&concs, "concurrency", "1,16,64", "comma-separated concurrencies")
	flag.DurationVar(&cfg.maxTime, "max-time", 90*time.Second, "bound on each run")
	flag.DurationVar(&cfg.startupWait, "startup-timeout", 30*time.Second, "bound on a cluster's start")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the data directories and logs")
	flag.BoolVar(&cfg.skipMedmesh, "skip-medmesh", false, "run etcd only")
	flag.BoolVar(&cfg.skipEtcd, "skip-etcd", false, "run medmesh only")
	flag.StringVar(&cfg.jsonOut, "json", "", "also write the results as JSON to this file")
	flag.StringVar(&cfg.target, "target", "all", "where clients send writes: all (every node's address) or leader")
	flag.IntVar(&cfg.rounds, "rounds", 3, "rounds; the table shows each figure's median")
	flag.BoolVar(&cfg.tls, "tls", true, "also run a medmesh cluster with mutual TLS on every connection and report TLS/plaintext")
	flag.StringVar(&cfg.memberDirs, "member-dirs", "", "comma-separated directories, each on its own file system: member i of every cluster keeps its data under the i-th, as each member has its own disk in production (default: all under one temporary directory)")
	flag.StringVar(&cfg.baseline, "baseline-bin", "", "also run a plaintext cluster of this medmesh binary (an earlier build; the same -lab-bin client) and report -bin/baseline, to measure a change in the same run")
	flag.Parse()
	if cfg.rounds <= 0 || cfg.n <= 0 {
		fmt.Fprintln(os.Stderr, "benchcoord: -rounds and -n must be positive")
		return 2
	}
	if cfg.target != "all" && cfg.target != "leader" {
		fmt.Fprintf(os.Stderr, "benchcoord: invalid -target %q: want all or leader\n", cfg.target)
		return 2
	}
	for _, c := range strings.Split(concs, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || v <= 0 {
			fmt.Fprintf(os.Stderr, "benchcoord: invalid -concurrency %q\n", concs)
			return 2
		}
		cfg.concs = append(cfg.concs, v)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, "benchcoord: "+err.Error())
		return 1
	}
	return 0
}

// row is one concurrency's results for both systems: the median of the
// rounds' throughputs and p99s, and every round.
type row struct {
	Concurrency   int      `json:"concurrency"`
	Medmesh       *result  `json:"medmesh,omitempty"`
	Etcd          *result  `json:"etcd,omitempty"`
	MedmeshTLS    *result  `json:"medmesh_tls,omitempty"`
	Baseline      *result  `json:"baseline,omitempty"`
	MedmeshRounds []result `json:"medmesh_rounds,omitempty"`
	EtcdRounds    []result `json:"etcd_rounds,omitempty"`
	TLSRounds     []result `json:"medmesh_tls_rounds,omitempty"`
	BaseRounds    []result `json:"baseline_rounds,omitempty"`
}

// system is a running cluster the workload can be sent to.
type system interface {
	writeBench(ctx context.Context, n, conc, valueSize int, maxTime time.Duration, prefix string) (result, error)
	processes() []*proc
	Close()
}

func bench(ctx context.Context, cfg config, log *slog.Logger) (err error) {
	dir, err := os.MkdirTemp("", "benchcoord-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	memberRoots = nil
	defer func() {
		if cfg.keep || err != nil {
			log.Info("data and logs kept", "dir", dir, "member dirs", memberRoots)
			return
		}
		os.RemoveAll(dir)
		for _, r := range memberRoots {
			os.RemoveAll(r)
		}
	}()
	for _, d := range strings.Split(cfg.memberDirs, ",") {
		if d = strings.TrimSpace(d); d == "" {
			continue
		}
		root, err := os.MkdirTemp(d, "benchcoord-")
		if err != nil {
			return fmt.Errorf("member dir: %w", err)
		}
		memberRoots = append(memberRoots, root)
	}
	var names []string
	systems := map[string]system{}
	defer func() {
		for _, s := range systems {
			s.Close()
		}
	}()
	if !cfg.skipEtcd {
		ec, err := startEtcd(ctx, cfg.etcdBin, filepath.Join(dir, "etcd"), 3, cfg.startupWait, log)
		if err != nil {
			return fmt.Errorf("etcd: %w", err)
		}
		systems["etcd"] = ec
		names = append(names, "etcd")
		if cfg.target == "leader" {
			if err := ec.useLeader(ctx); err != nil {
				return fmt.Errorf("etcd: %w", err)
			}
		}
	}
	for _, withTLS := range []bool{false, true} {
		if cfg.skipMedmesh || (withTLS && !cfg.tls) {
			continue
		}
		name := "medmesh"
		if withTLS {
			name = "medmesh-tls"
		}
		mc, err := startMedmesh(ctx, cfg.bin, cfg.labBin, filepath.Join(dir, name), 3, withTLS, cfg.startupWait, log)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		systems[name] = mc
		names = append(names, name)
		if cfg.target == "leader" {
			if err := mc.useLeader(ctx); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	if cfg.baseline != "" && !cfg.skipMedmesh {
		mc, err := startMedmesh(ctx, cfg.baseline, cfg.labBin, filepath.Join(dir, "baseline"), 3, false, cfg.startupWait, log)
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		systems["baseline"] = mc
		names = append(names, "baseline")
		if cfg.target == "leader" {
			if err := mc.useLeader(ctx); err != nil {
				return fmt.Errorf("baseline: %w", err)
			}
		}
	}
	rows := make([]row, len(cfg.concs))
	// Both clusters run throughout but only one takes writes at a time; the
	// two measurements of a pair are taken back to back, in alternating
	// order, so the shared machine's drifting load hits both alike.
	for round := range cfg.rounds {
		for i, c := range cfg.concs {
			rows[i].Concurrency = c
			order := slices.Clone(names)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, name := range order {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				cpu0 := cpuTime(systems[name].processes())
				res, err := systems[name].writeBench(ctx, cfg.n, c, cfg.valueSize, cfg.maxTime, fmt.Sprintf("bench/r%d/c%d", round, c))
				if err != nil {
					return fmt.Errorf("%s concurrency %d: %w", name, c, err)
				}
				if res.OK > 0 {
					res.ServerCPUms = float64((cpuTime(systems[name].processes()) - cpu0).Microseconds()) / 1000 / float64(res.OK)
				}
				log.Info(name, "round", round+1, "concurrency", c, "ok", res.OK, "failed", res.Failed+res.NotRun,
					"ops_per_sec", res.OpsPerSec, "p99_ms", res.P99ms)
				switch name {
				case "etcd":
					rows[i].EtcdRounds = append(rows[i].EtcdRounds, res)
				case "medmesh-tls":
					rows[i].TLSRounds = append(rows[i].TLSRounds, res)
				case "baseline":
					rows[i].BaseRounds = append(rows[i].BaseRounds, res)
				default:
					rows[i].MedmeshRounds = append(rows[i].MedmeshRounds, res)
				}
			}
		}
	}
	for i := range rows {
		rows[i].Etcd = median(rows[i].EtcdRounds)
		rows[i].Medmesh = median(rows[i].MedmeshRounds)
		rows[i].MedmeshTLS = median(rows[i].TLSRounds)
		rows[i].Baseline = median(rows[i].BaseRounds)
	}
	printTable(os.Stdout, cfg, rows)
	if cfg.jsonOut != "" {
		b, _ := json.MarshalIndent(rows, "", "  ")
		if err := os.WriteFile(cfg.jsonOut, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", cfg.jsonOut, err)
		}
	}
	return nil
}

// median is the per-field median of rounds (throughput and latencies taken
// separately), with the failures summed; nil without rounds.
func median(rs []result) *result {
	if len(rs) == 0 {
		return nil
	}
	med := func(get func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = get(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	out := result{
		OpsPerSec:   med(func(r result) float64 { return r.OpsPerSec }),
		P50ms:       med(func(r result) float64 { return r.P50ms }),
		P99ms:       med(func(r result) float64 { return r.P99ms }),
		MaxMs:       med(func(r result) float64 { return r.MaxMs }),
		ServerCPUms: med(func(r result) float64 { return r.ServerCPUms }),
		ElapsedMs:   med(func(r result) float64 { return r.ElapsedMs }),
	}
	for _, r := range rs {
		out.OK += r.OK
		out.Failed += r.Failed
		out.NotRun += r.NotRun
		if out.FirstError == "" {
			out.FirstError = r.FirstError
		}
	}
	return &out
}

func printTable(w *os.File, cfg config, rows []row) {
	fmt.Fprintf(w, "\ncoordinator writes: %d writes per run, value %d B, 3 nodes each, loopback, fsync on, clients to %s; median of %d rounds\n\n",
		cfg.n, cfg.valueSize, map[string]string{"all": "every node", "leader": "the leader"}[cfg.target], cfg.rounds)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "concurrency\tmedmesh ops/s\tetcd ops/s\tthroughput ratio\tmedmesh p99 ms\tetcd p99 ms\tp99 ratio\tfailed m/e\t")
	for _, r := range rows {
		m, e := r.Medmesh, r.Etcd
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s/%s\t\n", r.Concurrency,
			f(m, func(x *result) float64 { return x.OpsPerSec }, 0), f(e, func(x *result) float64 { return x.OpsPerSec }, 0),
			ratio(m, e, func(x *result) float64 { return x.OpsPerSec }),
			f(m, func(x *result) float64 { return x.P99ms }, 2), f(e, func(x *result) float64 { return x.P99ms }, 2),
			ratio(m, e, func(x *result) float64 { return x.P99ms }),
			failed(m), failed(e))
	}
	tw.Flush()
	fmt.Fprintln(w, "\nthroughput ratio = medmesh/etcd (higher is better for medmesh); p99 ratio = medmesh/etcd (lower is better)")
	fmt.Fprint(w, "server CPU per write (ms, the three processes; medmesh/etcd):")
	for _, r := range rows {
		fmt.Fprintf(w, "  c%d %s/%s", r.Concurrency, f(r.Medmesh, func(x *result) float64 { return x.ServerCPUms }, 2), f(r.Etcd, func(x *result) float64 { return x.ServerCPUms }, 2))
	}
	fmt.Fprintln(w)
	if cfg.baseline != "" {
		fmt.Fprintf(w, "\n%s vs the baseline %s (plaintext), same run:\n\n", cfg.bin, cfg.baseline)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "concurrency\tops/s\tbaseline ops/s\tthroughput ratio\tbaseline/etcd throughput\tp99 ms\tbaseline p99 ms\tp99 ratio\tfailed m/b\t")
		for _, r := range rows {
			m, b := r.Medmesh, r.Baseline
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s/%s\t\n", r.Concurrency,
				f(m, func(x *result) float64 { return x.OpsPerSec }, 0), f(b, func(x *result) float64 { return x.OpsPerSec }, 0),
				ratio(m, b, func(x *result) float64 { return x.OpsPerSec }),
				ratio(b, r.Etcd, func(x *result) float64 { return x.OpsPerSec }),
				f(m, func(x *result) float64 { return x.P99ms }, 2), f(b, func(x *result) float64 { return x.P99ms }, 2),
				ratio(m, b, func(x *result) float64 { return x.P99ms }),
				failed(m), failed(b))
		}
		tw.Flush()
	}
	if !cfg.tls {
		return
	}
	fmt.Fprintln(w, "\nmedmesh with mutual TLS on every connection (Raft, API, forwarding, client) vs plaintext, same run:")
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "concurrency\tplaintext ops/s\tTLS ops/s\tTLS/plaintext ops\tplaintext p99 ms\tTLS p99 ms\tTLS/plaintext p99\tfailed p/t\t")
	for _, r := range rows {
		m, t := r.Medmesh, r.MedmeshTLS
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s/%s\t\n", r.Concurrency,
			f(m, func(x *result) float64 { return x.OpsPerSec }, 0), f(t, func(x *result) float64 { return x.OpsPerSec }, 0),
			ratio(t, m, func(x *result) float64 { return x.OpsPerSec }),
			f(m, func(x *result) float64 { return x.P99ms }, 2), f(t, func(x *result) float64 { return x.P99ms }, 2),
			ratio(t, m, func(x *result) float64 { return x.P99ms }),
			failed(m), failed(t))
	}
	tw.Flush()
}

func f(r *result, get func(*result) float64, prec int) string {
	if r == nil {
		return "-"
	}
	return strconv.FormatFloat(get(r), 'f', prec, 64)
}

func ratio(m, e *result, get func(*result) float64) string {
	if m == nil || e == nil || get(e) == 0 {
		return "-"
	}
	return strconv.FormatFloat(get(m)/get(e), 'f', 2, 64)
}

func failed(r *result) string {
	if r == nil {
		return "-"
	}
	return strconv.Itoa(r.Failed + r.NotRun)
}

// memberRoots are the -member-dirs of this run, one temporary directory in
// each; none means every member's data sits under the run's directory.
var memberRoots []string

// dataDir is the data directory of member i (named name) of the cluster
// whose files are under dir.
func dataDir(dir string, i int, name string) string {
	if len(memberRoots) == 0 {
		return filepath.Join(dir, name)
	}
	return filepath.Join(memberRoots[i%len(memberRoots)], filepath.Base(dir), name)
}
