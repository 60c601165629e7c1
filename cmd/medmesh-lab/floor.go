package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"
)

// floorResult is what `medmesh-lab bench floor` prints: what this machine
// charges any program for the two things a detection-to-drop path cannot
// avoid, a process waking up and a durable write.
type floorResult struct {
	Samples      int     `json:"samples"`
	WakeP50ms    float64 `json:"wake_p50_ms"`
	WakeP99ms    float64 `json:"wake_p99_ms"`
	WakeMaxMs    float64 `json:"wake_max_ms"`
	FsyncSamples int     `json:"fsync_samples"`
	FsyncP50ms   float64 `json:"fsync_p50_ms"`
	FsyncP99ms   float64 `json:"fsync_p99_ms"`
	FsyncMaxMs   float64 `json:"fsync_max_ms"`
}

func newBenchFloorCmd(o *clientFlags) *cobra.Command {
	var (
		dur time.Duration
		dir string
	)
	c := &cobra.Command{
		Use:   "floor",
		Short: "Measure this machine's wake-up latency and fsync latency: the floor under any detection-to-drop figure",
		Long: "floor runs two probes side by side for --duration: a goroutine that sleeps 1 ms and records how late\n" +
			"it wakes (every hop of the sensor -> coordinator -> enforcer path waits for at least one wake-up),\n" +
			"and 4 KiB appends to a file in --dir each followed by fsync (a Raft commit waits for at least\n" +
			"one). Run it while the machine carries the load the figure it explains was measured under.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dur <= 0 {
				return usagef("--duration must be positive")
			}
			res, err := measureFloor(cmd.Context(), dur, dir)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if o.json() {
				return printJSON(w, res)
			}
			t := newTable(w, "PROBE", "SAMPLES", "P50 MS", "P99 MS", "MAX MS")
			t.row("wake-up (1 ms sleep, lateness)", res.Samples, fmt.Sprintf("%.2f", res.WakeP50ms), fmt.Sprintf("%.2f", res.WakeP99ms), fmt.Sprintf("%.2f", res.WakeMaxMs))
			t.row("4 KiB append + fsync", res.FsyncSamples, fmt.Sprintf("%.2f", res.FsyncP50ms), fmt.Sprintf("%.2f", res.FsyncP99ms), fmt.Sprintf("%.2f", res.FsyncMaxMs))
			return t.flush()
		},
	}
	f := c.Flags()
	f.DurationVar(&dur, "duration", 60*time.Second, "how long to probe")
	f.StringVar(&dir, "dir", os.TempDir(), "directory for the fsync probe's file (put it on the disk the coordinators use)")
	return c
}

func measureFloor(ctx context.Context, dur time.Duration, dir string) (floorResult, error) {
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	f, err := os.CreateTemp(dir, "medmesh-floor-*")
	if err != nil {
		return floorResult{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()

	syncs := make(chan []time.Duration, 1)
	syncErr := make(chan error, 1)
	go func() {
		var lats []time.Duration
		buf := make([]byte, 4096)
		var off int64
		for ctx.Err() == nil {
			start := time.Now()
			if _, err := f.WriteAt(buf, off); err != nil {
				syncErr <- err
				break
			}
			if err := f.Sync(); err != nil {
				syncErr <- fmt.Errorf("fsync %s: %w", filepath.Base(f.Name()), err)
				break
			}
			lats = append(lats, time.Since(start))
			off = (off + 4096) % (64 << 20) // stay within 64 MiB
		}
		syncs <- lats
	}()

	var wakes []time.Duration
	for ctx.Err() == nil {
		start := time.Now()
		time.Sleep(time.Millisecond)
		wakes = append(wakes, time.Since(start)-time.Millisecond)
	}
	fs := <-syncs
	select {
	case err := <-syncErr:
		return floorResult{}, err
	default:
	}
	slices.Sort(wakes)
	slices.Sort(fs)
	return floorResult{
		Samples: len(wakes), WakeP50ms: ms(percentile(wakes, 0.5)), WakeP99ms: ms(percentile(wakes, 0.99)), WakeMaxMs: ms(percentile(wakes, 1)),
		FsyncSamples: len(fs), FsyncP50ms: ms(percentile(fs, 0.5)), FsyncP99ms: ms(percentile(fs, 0.99)), FsyncMaxMs: ms(percentile(fs, 1)),
	}, nil
}
