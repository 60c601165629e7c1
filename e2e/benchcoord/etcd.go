package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdCluster is an n-member etcd cluster on loopback with default
// durability (every commit fsynced).
type etcdCluster struct {
	procs     []*proc
	endpoints []string
	client    *clientv3.Client
}

func startEtcd(ctx context.Context, bin, dir string, n int, timeout time.Duration, log *slog.Logger) (*etcdCluster, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("e%d=http://127.0.0.1:%d", i+1, ports[n+i]))
	}
	ec := &etcdCluster{}
	for i := range n {
		name := fmt.Sprintf("e%d", i+1)
		client := "http://127.0.0.1:" + strconv.Itoa(ports[i])
		peer := "http://127.0.0.1:" + strconv.Itoa(ports[n+i])
		p, err := startProc("etcd "+name, filepath.Join(dir, name+".log"), bin,
			"--name", name,
			"--data-dir", dataDir(dir, i, name),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new", "--initial-cluster-token", "benchcoord",
			"--logger", "zap", "--log-level", "warn",
		)
		if err != nil {
			ec.Close()
			return nil, err
		}
		ec.procs = append(ec.procs, p)
		ec.endpoints = append(ec.endpoints, client)
	}
	ec.client, err = clientv3.New(clientv3.Config{
		Endpoints:   ec.endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		ec.Close()
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	t0 := time.Now()
	err = poll(ctx, timeout, ec.procs, func(ctx context.Context) error {
		for _, ep := range ec.endpoints {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := ec.client.Status(cctx, ep)
			cancel()
			if err != nil {
				return err
			}
			if st.Leader == 0 {
				return fmt.Errorf("%s: no leader", ep)
			}
		}
		return nil
	})
	if err != nil {
		ec.Close()
		return nil, err
	}
	log.Info("etcd cluster ready", "members", n, "endpoints", strings.Join(ec.endpoints, ","), "took", time.Since(t0).Round(time.Millisecond))
	return ec, nil
}

// useLeader points the client at the leader only.
func (ec *etcdCluster) useLeader(ctx context.Context) error {
	for _, ep := range ec.endpoints {
		st, err := ec.client.Status(ctx, ep)
		if err != nil {
			return err
		}
		if st.Header.GetMemberId() == st.Leader {
			ec.client.SetEndpoints(ep)
			return nil
		}
	}
	return fmt.Errorf("no member is the leader")
}

// writeBench puts n distinct keys prefix/i with conc writers.
func (ec *etcdCluster) writeBench(ctx context.Context, n, conc, valueSize int, maxTime time.Duration, prefix string) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, maxTime)
	defer cancel()
	res := runWorkload(ctx, n, conc, func(ctx context.Context, i int) error {
		key := prefix + "/" + strconv.Itoa(i)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := ec.client.Put(cctx, key, string(benchValue(key, valueSize)))
		return err
	})
	if res.OK == 0 {
		return res, fmt.Errorf("every write failed: %s", res.FirstError)
	}
	return res, nil
}

// count returns how many keys start with prefix.
func (ec *etcdCluster) count(ctx context.Context, prefix string) (int64, error) {
	resp, err := ec.client.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Count, nil
}

func (ec *etcdCluster) Close() {
	if ec.client != nil {
		ec.client.Close()
	}
	for _, p := range ec.procs {
		p.stop(10 * time.Second)
	}
}

func (ec *etcdCluster) processes() []*proc { return ec.procs }
