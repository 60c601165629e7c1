package main

import (
	"context"
	"errors"
	"log/slog"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func TestEtcdWriteBench(t *testing.T) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("skipped: no etcd binary (apt-get install etcd-server)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ec, err := startEtcd(ctx, bin, filepath.Join(t.TempDir(), "etcd"), 3, 30*time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	res, err := ec.writeBench(ctx, 40, 4, 300, 30*time.Second, "t/c4")
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 40 || res.Failed != 0 || res.NotRun != 0 || res.OpsPerSec <= 0 || res.P50ms <= 0 || res.P99ms < res.P50ms {
		t.Fatalf("result %+v", res)
	}
	if n, err := ec.count(ctx, "t/c4/"); err != nil || n != 40 {
		t.Fatalf("keys stored = %d, %v; want 40", n, err)
	}
	// Every member holds the writes (quorum-committed and replicated).
	resp, err := ec.client.Get(ctx, "t/c4/7")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get: %v %v", resp, err)
	}
	var p medmeshv1.Policy
	if err := proto.Unmarshal(resp.Kvs[0].Value, &p); err != nil || p.GetName() != "t/c4/7" || len(p.GetDescription()) != 300 {
		t.Fatalf("value: %v %v", &p, err)
	}
}

func TestRunWorkload(t *testing.T) {
	res := runWorkload(context.Background(), 100, 8, func(_ context.Context, i int) error {
		if i%10 == 0 {
			return errors.New("injected")
		}
		time.Sleep(time.Millisecond)
		return nil
	})
	if res.OK != 90 || res.Failed != 10 || res.NotRun != 0 || res.FirstError != "injected" {
		t.Fatalf("result %+v", res)
	}
	if res.P50ms < 1 || res.P99ms < res.P50ms || res.MaxMs < res.P99ms {
		t.Fatalf("latencies %+v", res)
	}
	// A run cut short by its context counts the writes it never issued.
	ctx, cancel := context.WithCancel(context.Background())
	res = runWorkload(ctx, 1000, 1, func(_ context.Context, i int) error {
		if i == 9 {
			cancel()
		}
		return nil
	})
	if res.OK != 10 || res.NotRun != 990 {
		t.Fatalf("cut short: %+v", res)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if p := percentile(d, 0.99); p != 99*time.Millisecond {
		t.Fatalf("p99 = %v", p)
	}
	if p := percentile(d, 0.5); p != 50*time.Millisecond {
		t.Fatalf("p50 = %v", p)
	}
	if percentile(nil, 0.99) != 0 {
		t.Fatal("empty")
	}
}

func TestMedian(t *testing.T) {
	if median(nil) != nil {
		t.Fatal("median of nothing")
	}
	m := median([]result{
		{OK: 10, OpsPerSec: 300, P99ms: 9},
		{OK: 9, Failed: 1, OpsPerSec: 100, P99ms: 30, FirstError: "x"},
		{OK: 10, OpsPerSec: 200, P99ms: 10},
	})
	if m.OpsPerSec != 200 || m.P99ms != 10 || m.OK != 29 || m.Failed != 1 || m.FirstError != "x" {
		t.Fatalf("median %+v", m)
	}
	if m := median([]result{{OpsPerSec: 1}, {OpsPerSec: 3}}); m.OpsPerSec != 2 {
		t.Fatalf("even median %+v", m)
	}
}
