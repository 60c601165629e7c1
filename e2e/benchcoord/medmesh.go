package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/medmesh/medmesh/internal/pki"
)

// medmeshCluster is an n-node medmesh coordinator cluster, one process per
// node, started the way an operator starts one.
type medmeshCluster struct {
	bin       string
	labBin    string // medmesh-lab: bench write
	procs     []*proc
	apis      []string
	leaderAPI string   // from the last cluster status
	target    string   // bench --addr; every API address when empty
	clientTLS []string // the CLI's --tls-* flags; empty for plaintext
}

// makePKI makes a campus CA in dir with a coordinator certificate per node
// and an operator certificate for the CLI, and returns the TLS flags of
// each coordinator and of the CLI.
func makePKI(dir string, n int) (coords [][]string, client []string, err error) {
	ca, err := pki.CreateCA(dir, "benchcoord", 1, time.Now())
	if err != nil {
		return nil, nil, err
	}
	flags := func(role pki.Role, name string) ([]string, error) {
		c, k, err := ca.IssueFiles(dir, name, pki.CertRequest{Identity: pki.Identity{Role: role, Name: name}, Days: 1})
		return []string{"--tls-ca", filepath.Join(dir, pki.CAFile), "--tls-cert", c, "--tls-key", k}, err
	}
	for i := range n {
		f, err := flags(pki.RoleCoordinator, fmt.Sprintf("c%d", i+1))
		if err != nil {
			return nil, nil, err
		}
		coords = append(coords, f)
	}
	client, err = flags(pki.RoleOperator, "bench")
	return coords, client, err
}

// startMedmesh starts an n-node cluster; with withTLS every connection
// (Raft, API, forwarding, the CLI) is mutual TLS.
func startMedmesh(ctx context.Context, bin, labBin, dir string, n int, withTLS bool, timeout time.Duration, log *slog.Logger) (*medmeshCluster, error) {
	for _, b := range []string{bin, labBin} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("binary: %w (run make build)", err)
		}
	}
	help, _ := exec.CommandContext(ctx, bin, "coordinator", "--help").CombinedOutput()
	hasAdmin := bytes.Contains(help, []byte("--admin"))
	if !bytes.Contains(help, []byte("--bootstrap-expect")) {
		return nil, fmt.Errorf("%s coordinator has no --bootstrap-expect flag: the coordinator command is not built yet", bin)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ports, err := freePorts(3 * n)
	if err != nil {
		return nil, err
	}
	mc := &medmeshCluster{bin: bin, labBin: labBin}
	for i := range n {
		mc.apis = append(mc.apis, "127.0.0.1:"+strconv.Itoa(ports[i]))
	}
	var coordTLS [][]string
	if withTLS {
		if coordTLS, mc.clientTLS, err = makePKI(filepath.Join(dir, "tls"), n); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
	}
	for i := range n {
		id := fmt.Sprintf("c%d", i+1)
		args := []string{bin, "coordinator",
			"--id", id,
			"--data-dir", dataDir(dir, i, id),
			"--api", mc.apis[i],
			"--raft", "127.0.0.1:" + strconv.Itoa(ports[n+i]),
			"--bootstrap-expect", strconv.Itoa(n),
			"--join", strings.Join(mc.apis, ","),
		}
		if hasAdmin {
			args = append(args, "--admin", "127.0.0.1:"+strconv.Itoa(ports[2*n+i]))
		}
		if withTLS {
			args = append(args, coordTLS[i]...)
		}
		p, err := startProc("medmesh "+id, filepath.Join(dir, id+".log"), args...)
		if err != nil {
			mc.Close()
			return nil, err
		}
		mc.procs = append(mc.procs, p)
	}
	t0 := time.Now()
	err = poll(ctx, timeout, mc.procs, func(ctx context.Context) error {
		for _, api := range mc.apis {
			if err := mc.ready(ctx, api, n); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		mc.Close()
		return nil, err
	}
	// pick_first: a client given every address sends to the first, so
	// whether that is the leader decides if writes are forwarded.
	log.Info("medmesh cluster ready", "nodes", n, "api", strings.Join(mc.apis, ","), "tls", withTLS,
		"leader", mc.leaderAPI, "first_is_leader", mc.leaderAPI == mc.apis[0], "took", time.Since(t0).Round(time.Millisecond))
	return mc, nil
}

// ready asks api for the cluster status through the CLI: a leader and n
// coordinators.
func (mc *medmeshCluster) ready(ctx context.Context, api string, n int) error {
	out, err := mc.cli(ctx, mc.bin, 3*time.Second, "cluster", "status", "-o", "json", "--addr", api, "--timeout", "2s")
	if err != nil {
		return err
	}
	var st struct {
		Leader        string `json:"leader"`
		LeaderAPIAddr string `json:"leader_api_addr"`
		Members       []struct {
			Role  string `json:"role"`
			State string `json:"state"`
		} `json:"members"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return fmt.Errorf("cluster status from %s: %w", api, err)
	}
	coords := 0
	for _, m := range st.Members {
		if m.Role == "coordinator" || m.Role == "" {
			coords++
		}
	}
	if st.Leader == "" || coords < n {
		return fmt.Errorf("%s: leader %q, %d of %d coordinators", api, st.Leader, coords, n)
	}
	mc.leaderAPI = st.LeaderAPIAddr
	return nil
}

// useLeader points the benchmark at the leader's API only.
func (mc *medmeshCluster) useLeader(ctx context.Context) error {
	if err := mc.ready(ctx, mc.apis[0], len(mc.apis)); err != nil {
		return err
	}
	if mc.leaderAPI == "" {
		return fmt.Errorf("cluster status names no leader API address")
	}
	mc.target = mc.leaderAPI
	return nil
}

// cli runs bin (medmesh or medmesh-lab) with args and the client's TLS
// flags, and returns its stdout.
func (mc *medmeshCluster) cli(ctx context.Context, bin string, timeout time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, mc.clientTLS...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// writeBench runs `medmesh-lab bench write` against every node's address.
func (mc *medmeshCluster) writeBench(ctx context.Context, n, conc, valueSize int, maxTime time.Duration, prefix string) (result, error) {
	target := mc.target
	if target == "" {
		target = strings.Join(mc.apis, ",")
	}
	out, err := mc.cli(ctx, mc.labBin, maxTime+30*time.Second, "bench", "write",
		"--addr", target,
		"--n", strconv.Itoa(n), "--concurrency", strconv.Itoa(conc),
		"--value-size", strconv.Itoa(valueSize), "--max-time", maxTime.String(),
		"--prefix", prefix, "-o", "json")
	if err != nil {
		return result{}, err
	}
	var res result
	if err := json.Unmarshal(out, &res); err != nil {
		return result{}, fmt.Errorf("bench output %q: %w", out, err)
	}
	return res, nil
}

func (mc *medmeshCluster) Close() {
	for _, p := range mc.procs {
		p.stop(15 * time.Second)
	}
}

func (mc *medmeshCluster) processes() []*proc { return mc.procs }
