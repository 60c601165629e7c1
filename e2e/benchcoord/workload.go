package main

import (
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// result matches the JSON `medmesh-lab bench write -o json` prints.
type result struct {
	OK         int     `json:"ok"`
	Failed     int     `json:"failed"`
	NotRun     int     `json:"not_run"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
	ElapsedMs  float64 `json:"elapsed_ms"`
	FirstError string  `json:"first_error,omitempty"`
	// ServerCPUms is the CPU time the cluster's processes used per
	// successful write (benchcoord measures it around the run).
	ServerCPUms float64 `json:"server_cpu_ms_per_write,omitempty"`
}

// benchPolicy is the record both systems store: for medmesh the PutPolicy
// payload, for etcd its protobuf encoding as the value, so both write the
// same bytes. It mirrors cmd/medmesh-lab's bench write.
func benchPolicy(name string, valueSize int) *medmeshv1.Policy {
	return &medmeshv1.Policy{
		Name:    name,
		Subject: &medmeshv1.Policy_DeviceClass{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION},
		Mode:    medmeshv1.PolicyMode_POLICY_MODE_MONITOR,
		Rules: []*medmeshv1.Rule{{
			Name: "https", Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: "10.0.0.0/8"},
			Protocol: 6, PortMin: 443, PortMax: 443, Direction: medmeshv1.Direction_DIRECTION_OUTBOUND,
		}},
		Description: strings.Repeat("x", valueSize),
	}
}

func benchValue(name string, valueSize int) []byte {
	b, _ := proto.Marshal(benchPolicy(name, valueSize))
	return b
}

// runWorkload calls op(i) for i in [0,n) from conc goroutines until done or
// ctx ends, and measures each successful call.
func runWorkload(ctx context.Context, n, conc int, op func(ctx context.Context, i int) error) result {
	var (
		next     atomic.Int64
		mu       sync.Mutex
		lats     = make([]time.Duration, 0, n)
		failed   int
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				err := op(ctx, i)
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					lats = append(lats, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	res := result{OK: len(lats), Failed: failed, NotRun: n - len(lats) - failed, ElapsedMs: ms(elapsed)}
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	if elapsed > 0 {
		res.OpsPerSec = math.Round(float64(len(lats))/elapsed.Seconds()*10) / 10
	}
	slices.Sort(lats)
	res.P50ms = ms(percentile(lats, 0.50))
	res.P99ms = ms(percentile(lats, 0.99))
	if len(lats) > 0 {
		res.MaxMs = ms(lats[len(lats)-1])
	}
	return res
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
