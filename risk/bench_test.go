package risk

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// benchInventory makes n devices of 200 distinct models taken from the
// real advisories' product trees (vendor, product name, a version of the
// advisory), a quarter of them with an operating system.
func benchInventory(in *Intel, n int) []Device {
	type model struct{ vendor, name, version string }
	seen := map[string]bool{}
	var models []model
	for _, a := range in.advisories {
		ids := make([]string, 0, len(a.Products))
		for id := range a.Products {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			p := a.Products[id]
			k := strings.ToLower(p.Vendor + "|" + p.Name)
			if seen[k] || len(models) == 200 {
				continue
			}
			seen[k] = true
			v := "1.0"
			for _, alt := range p.Constraint.Alts {
				if alt.Exact != nil {
					v = alt.Exact.String()
				} else if alt.Hi != nil {
					v = alt.Hi.V.String()
				}
			}
			models = append(models, model{p.Vendor, p.Name, v})
		}
	}
	oses := []string{"Windows 7 SP1", "Windows XP Embedded", "Windows 10 Enterprise LTSC 2019", "Ubuntu 16.04.7 LTS"}
	out := make([]Device, n)
	for i := range out {
		m := models[i%len(models)]
		out[i] = Device{MAC: fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff), Vendor: m.vendor, Model: m.name, Version: m.version}
		if i%4 == 0 {
			out[i].OS = oses[i/4%len(oses)]
		}
	}
	return out
}

// BenchmarkAssess assesses 10,000 devices of 200 models against the bundle
// of the real shared data and the fixtures. The baseline, in the same run,
// is decoding the same inventory from JSON Lines: the ratio says what
// matching costs over merely reading the devices.
func BenchmarkAssess(b *testing.B) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	in := loadAll(b)
	loadTime := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	devices := benchInventory(in, 10_000)
	var lines bytes.Buffer
	for _, d := range devices {
		j, _ := json.Marshal(d)
		lines.Write(append(j, '\n'))
	}
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var baseCPU float64
	b.Run("decode-baseline", func(b *testing.B) {
		b.ReportAllocs()
		c0 := cpuSeconds()
		for b.Loop() {
			if _, err := ReadInventory(bytes.NewReader(lines.Bytes())); err != nil {
				b.Fatal(err)
			}
		}
		baseCPU = (cpuSeconds() - c0) / float64(b.N)
		b.ReportMetric(baseCPU, "cpu-s/op")
	})
	var findings int
	b.Run("assess-10000", func(b *testing.B) {
		b.ReportAllocs()
		c0 := cpuSeconds()
		for b.Loop() {
			findings = 0
			for _, d := range devices {
				fs, err := in.Assess(d, at)
				if err != nil {
					b.Fatal(err)
				}
				findings += len(fs)
			}
		}
		cpu := (cpuSeconds() - c0) / float64(b.N)
		b.ReportMetric(float64(findings), "findings")
		b.ReportMetric(cpu, "cpu-s/op")
		if baseCPU > 0 {
			b.ReportMetric(cpu/baseCPU, "cpu-x-decode")
		}
	})
	b.Logf("bundle: %d advisories; load %v (while the machine runs other work), heap in use after load %.1f MiB",
		len(in.advisories), loadTime.Round(time.Millisecond), float64(after.HeapInuse-min(before.HeapInuse, after.HeapInuse))/(1<<20))
}
