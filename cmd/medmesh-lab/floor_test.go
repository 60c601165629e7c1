package main

import (
	"context"
	"testing"
	"time"
)

func TestMeasureFloor(t *testing.T) {
	res, err := measureFloor(context.Background(), 300*time.Millisecond, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if res.Samples == 0 || res.FsyncSamples == 0 {
		t.Fatalf("no samples: %+v", res)
	}
	if !(res.WakeP50ms <= res.WakeP99ms && res.WakeP99ms <= res.WakeMaxMs) ||
		!(0 < res.FsyncP50ms && res.FsyncP50ms <= res.FsyncP99ms && res.FsyncP99ms <= res.FsyncMaxMs) {
		t.Fatalf("percentiles out of order: %+v", res)
	}
	if _, err := measureFloor(context.Background(), time.Millisecond, "/nonexistent-dir"); err == nil {
		t.Fatal("a missing directory was accepted")
	}
}
