package export

import (
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/xdp"
)

// fakeTable is an in-memory Source. xdp.FlowKey's zero value is the only
// key a test can build, so entries are told apart by position: the fake
// hands out keys in order and TakeFlow takes the first live entry.
type fakeTable struct{ recs []*flow.Record }

func (f *fakeTable) ForEachFlow(fn func(xdp.FlowKey, *flow.Record) bool) error {
	for _, r := range f.recs {
		if r != nil && !fn(xdp.FlowKey{}, r) {
			break
		}
	}
	return nil
}

func (f *fakeTable) TakeFlow(xdp.FlowKey) (flow.Record, bool, error) {
	for i, r := range f.recs {
		if r != nil && r.EndReason == "due" {
			f.recs[i] = nil
			return *r, true, nil
		}
	}
	return flow.Record{}, false, nil
}

func TestReason(t *testing.T) {
	c := DefaultConfig()
	now := int64(1000 * time.Second)
	rec := func(proto uint8, first, last time.Duration, flags uint8) *flow.Record {
		return &flow.Record{Proto: proto, FirstNs: now - int64(first), LastNs: now - int64(last), RevTCPFlags: flags}
	}
	for _, tc := range []struct {
		r    *flow.Record
		want string
	}{
		{rec(17, 10*time.Second, time.Second, 0), ""},
		{rec(17, 20*time.Second, 15*time.Second, 0), "idle"},
		{rec(17, 61*time.Second, time.Second, 0), "active"},
		{rec(6, 5*time.Second, 3*time.Second, tcpFIN), "fin"},
		{rec(6, 5*time.Second, time.Second, tcpFIN), ""},
		{rec(6, 5*time.Second, 3*time.Second, tcpRST|tcpFIN), "rst"},
		{rec(17, 5*time.Second, 3*time.Second, tcpFIN), ""},
	} {
		if got := c.Reason(tc.r, now); got != tc.want {
			t.Errorf("reason(%+v) = %q, want %q", *tc.r, got, tc.want)
		}
	}
}

func TestExpireAndDrain(t *testing.T) {
	now := int64(1000 * time.Second)
	a := netip.MustParseAddr("10.0.0.1")
	mk := func(last time.Duration) *flow.Record {
		return &flow.Record{Src: a, Dst: a, Proto: 17, FirstNs: now - int64(time.Minute/2), LastNs: now - int64(last)}
	}
	tab := &fakeTable{recs: []*flow.Record{mk(time.Second), mk(20 * time.Second), mk(30 * time.Second)}}
	reg := prometheus.NewRegistry()
	e, err := New(DefaultConfig(), tab, reg)
	if err != nil {
		t.Fatal(err)
	}
	// Mark what Reason finds due so the fake's TakeFlow can find it.
	for _, r := range tab.recs {
		if e.cfg.Reason(r, now) != "" {
			r.EndReason = "due"
		}
	}
	var got []string
	left, err := e.Expire(now, func(r *flow.Record) { got = append(got, r.EndReason) })
	if err != nil || left != 1 || len(got) != 2 || got[0] != "idle" || got[1] != "idle" {
		t.Fatalf("expire: left %d, got %v, err %v", left, got, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var idle float64
	for _, mf := range mfs {
		if mf.GetName() == "medmesh_sensor_flows_expired_total" {
			for _, m := range mf.GetMetric() {
				idle += m.GetCounter().GetValue()
			}
		}
	}
	if idle != 2 {
		t.Errorf("expired metric %v, want 2", idle)
	}
	tab.recs[0].EndReason = "due"
	got = nil
	if err := e.Drain(func(r *flow.Record) { got = append(got, r.EndReason) }); err != nil || len(got) != 1 || got[0] != "drain" {
		t.Fatalf("drain: %v %v", got, err)
	}
	if _, err := New(Config{}, tab, nil); err == nil {
		t.Error("zero config accepted")
	}
}
