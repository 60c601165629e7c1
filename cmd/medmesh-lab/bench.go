package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// benchResult is what `medmesh-lab bench write` prints; e2e/benchcoord
// reads it.
type benchResult struct {
	OK          int     `json:"ok"`
	Failed      int     `json:"failed"`
	NotRun      int     `json:"not_run"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	ElapsedMs   float64 `json:"elapsed_ms"`
	Concurrency int     `json:"concurrency"`
	ValueSize   int     `json:"value_size"`
	FirstError  string  `json:"first_error,omitempty"`
}

func newBenchCmd() *cobra.Command {
	o := &clientFlags{}
	c := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark the coordinator",
	}
	o.register(c)
	var (
		n, conc, size int
		maxTime       time.Duration
		prefix        string
	)
	write := &cobra.Command{
		Use:   "write",
		Short: "Write N distinct policies through the normal write path and report throughput and latency",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n <= 0 || conc <= 0 || size < 0 {
				return usagef("--n and --concurrency must be positive, --value-size not negative")
			}
			if prefix == "" {
				prefix = "bench/" + strconv.FormatInt(time.Now().UnixNano(), 36)
			}
			if len(prefix)+1+len(strconv.Itoa(n)) > 128 {
				return usagef("--prefix too long for a policy name")
			}
			conn, err := o.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), maxTime)
			defer cancel()
			res, firstErr := benchWrite(ctx, conn, o.timeout, n, conc, size, prefix)
			if res.OK == 0 && firstErr != nil {
				return o.rpcError(firstErr)
			}
			if firstErr != nil {
				res.FirstError = o.rpcError(firstErr).Error()
			}
			w := cmd.OutOrStdout()
			if o.json() {
				return printJSON(w, res)
			}
			t := newTable(w, "OK", "FAILED", "NOT RUN", "CONCURRENCY", "OPS/S", "P50 MS", "P99 MS", "MAX MS")
			t.row(res.OK, res.Failed, res.NotRun, res.Concurrency, fmt.Sprintf("%.0f", res.OpsPerSec),
				fmt.Sprintf("%.2f", res.P50ms), fmt.Sprintf("%.2f", res.P99ms), fmt.Sprintf("%.2f", res.MaxMs))
			if err := t.flush(); err != nil {
				return err
			}
			if res.FirstError != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), "first error:", res.FirstError)
			}
			return nil
		},
	}
	f := write.Flags()
	f.IntVar(&n, "n", 1000, "number of policies to write")
	f.IntVar(&conc, "concurrency", 16, "concurrent writers")
	f.IntVar(&size, "value-size", 256, "approximate bytes of each policy's description")
	f.DurationVar(&maxTime, "max-time", 5*time.Minute, "stop issuing writes after this long")
	f.StringVar(&prefix, "prefix", "", "policy name prefix (default bench/<unique>)")
	c.AddCommand(write, newBenchFloorCmd(o))
	return c
}

// benchWrite puts n distinct policies named prefix/i with conc writers.
func benchWrite(ctx context.Context, conn *grpc.ClientConn, timeout time.Duration, n, conc, size int, prefix string) (benchResult, error) {
	cl := medmeshv1.NewPolicyServiceClient(conn)
	pad := strings.Repeat("x", size)
	var (
		next     atomic.Int64
		mu       sync.Mutex
		lats     = make([]time.Duration, 0, n)
		failed   int
		firstErr error
		wg       sync.WaitGroup
	)
	run := newRequestID()[:16]
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				req := &medmeshv1.PutPolicyRequest{
					Policy: &medmeshv1.Policy{
						Name:    prefix + "/" + strconv.Itoa(i),
						Subject: &medmeshv1.Policy_DeviceClass{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION},
						Mode:    medmeshv1.PolicyMode_POLICY_MODE_MONITOR,
						Rules: []*medmeshv1.Rule{{
							Name: "https", Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: "10.0.0.0/8"},
							Protocol: 6, PortMin: 443, PortMax: 443, Direction: medmeshv1.Direction_DIRECTION_OUTBOUND,
						}},
						Description: pad,
					},
					Actor:     "bench",
					Reason:    "medmesh-lab bench write",
					RequestId: run + "-" + strconv.Itoa(i),
				}
				cctx, cancel := context.WithTimeout(ctx, timeout)
				t0 := time.Now()
				// A write whose outcome is unknown is retried with its
				// request id: it is applied at most once.
				var err error
				for attempt := 1; ; attempt++ {
					_, err = cl.PutPolicy(cctx, req)
					if c := status.Code(err); (c != codes.Unavailable && c != codes.Unknown) || attempt == writeAttempts || cctx.Err() != nil {
						break
					}
					time.Sleep(writeBackoff)
				}
				d := time.Since(t0)
				cancel()
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
	res := benchResult{
		OK: len(lats), Failed: failed, NotRun: n - len(lats) - failed,
		ElapsedMs: ms(elapsed), Concurrency: conc, ValueSize: size,
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
	return res, firstErr
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
