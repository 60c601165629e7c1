package coordinator

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/medmesh/medmesh/coordinator/internal/posture"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"github.com/medmesh/medmesh/risk"
)

// BenchmarkRiskReassessment measures what a new bundle costs a cluster:
// from ImportBundle's answer until every device's posture against it is
// committed (the leader assesses all of them, Raft commits FindingsPut
// batches, the FSM stores them), against a baseline in the same run:
// posture.Assess of the same devices in one process, nothing committed.
// The ratio is what the cluster adds; load-ms is risk.Load of the bundle
// alone (checked on receipt and loaded for assessment). Devices: 2,000 with 40 identities of
// the shared advisories' products (so every one has findings).
//
//	go test ./coordinator -run '^$' -bench BenchmarkRiskReassessment -benchtime 3x
func BenchmarkRiskReassessment(b *testing.B) {
	const n = 2000
	cl := newCluster(b, 1, nil)
	leader := cl.leader()
	idents := []struct{ vendor, model, version string }{
		{"Siemens", "SPECT Workplaces/Symbia.net Windows XP-Based", "VA60B"},
		{"BD", "Alaris 8015 PC unit", "9.7"},
		{"Philips", "IntelliVue MX40", "B.06.17"},
		{"GE Healthcare", "Discovery NM 750b", "1.002"},
		{"Medtronic", "MMT-1710", ""},
	}
	var devs []*medmeshv1.Device
	for i := range n {
		id := idents[i%len(idents)]
		devs = append(devs, &medmeshv1.Device{Mac: fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff),
			Vendor: id.vendor, Model: id.model, Firmware: id.version,
			DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, Protocols: []string{"hl7"}})
	}
	for i := 0; i < n; i += 500 {
		report(b, leader, "s1", uint64(i+1), devs[i:i+500]...)
	}
	// Two bundles of the same data with different manifests (their
	// creation times): every import changes the active digest.
	var paths, digests []string
	for k := range 2 {
		p, d := writeTestBundleAt(b, time.Date(2026, 12, 1+k, 0, 0, 0, 0, time.UTC), testIntelDirs...)
		paths, digests = append(paths, p), append(digests, d)
	}
	in, err := risk.Load(paths[0], nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()

	var cluster, local, load time.Duration
	b.ResetTimer()
	for i := range b.N {
		k := i % 2
		start := time.Now()
		if _, err := importBundle(ctx, leader.conn, paths[k], ""); err != nil {
			b.Fatal(err)
		}
		for done := false; !done; {
			done = true
			ps, _ := leader.c.FSM().Postures()
			if len(ps) < n {
				done = false
			}
			for _, p := range ps {
				if p.GetBundleDigest() != digests[k] {
					done = false
					break
				}
			}
			if !done {
				time.Sleep(2 * time.Millisecond)
			}
		}
		cluster += time.Since(start)

		start = time.Now()
		at := time.Now()
		for _, d := range devs {
			if _, err := posture.Assess(in, d, nil, nil, "", "", at); err != nil {
				b.Fatal(err)
			}
		}
		local += time.Since(start)

		// What checking a bundle costs alone (the coordinator that
		// receives it and the leader each do it once, and each replica
		// when it loads it).
		start = time.Now()
		if _, err := risk.Load(paths[k], nil); err != nil {
			b.Fatal(err)
		}
		load += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(cluster.Milliseconds())/float64(b.N), "cluster-ms/import")
	b.ReportMetric(float64(local.Milliseconds())/float64(b.N), "local-ms/pass")
	b.ReportMetric(float64(load.Milliseconds())/float64(b.N), "load-ms/bundle")
	b.ReportMetric(float64(cluster)/float64(local), "cluster/local")
	b.ReportMetric(float64(cluster.Microseconds())/float64(b.N*n), "cluster-us/device")
}

func writeTestBundleAt(b *testing.B, created time.Time, dirs ...string) (string, string) {
	b.Helper()
	f, err := os.Create(filepath.Join(b.TempDir(), "intel.tar.gz"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := risk.WriteBundle(f, dirs, created, nil); err != nil {
		b.Fatal(err)
	}
	f.Close()
	in, err := risk.Load(f.Name(), nil)
	if err != nil {
		b.Fatal(err)
	}
	return f.Name(), in.Digest()
}
