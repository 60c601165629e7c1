package coordinator

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medmesh/medmesh/internal/testutil"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestDevModeBootstrapsAndCleansUp: a --dev node bootstraps itself on a
// temporary directory, is ready quickly, and removes the directory on Close.
func TestDevModeBootstrapsAndCleansUp(t *testing.T) {
	cfg := testConfig("dev", "", fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	cfg.Dev = true
	reg := prometheus.NewRegistry()
	start := time.Now()
	c, err := New(cfg, testLogger(), reg)
	if err != nil {
		t.Fatal(err)
	}
	dir := c.cfg.DataDir
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 2*time.Second, 5*time.Millisecond, func() bool { return c.Ready() == nil }, "dev node not ready: %v", c.Ready())
	t.Logf("dev node ready after %v", time.Since(start))
	pol := &medmeshv1.Policy{Name: "p", Subject: &medmeshv1.Policy_DeviceClass{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_PACS}}
	d, err := c.ProposeDecision(context.Background(), &medmeshv1.Decision{Action: medmeshv1.DecisionAction_DECISION_ACTION_APPLY_POLICY, Policy: pol, Actor: "op"}, false)
	if err != nil || d.GetIndex() == 0 || d.GetState() != medmeshv1.DecisionState_DECISION_STATE_EFFECTIVE {
		t.Fatalf("decision: %v %v", d, err)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) == 0 {
		t.Fatalf("metrics: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("dev data dir %s still there: %v", dir, err)
	}
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Errorf("metrics still registered after Close: %d families", len(mfs))
	}
}
