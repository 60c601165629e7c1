package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/coordinator/internal/sink"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// fsmSource is the committed state the sinks read.
type fsmSource struct{ *fsm.FSM }

func (s fsmSource) Ends() (uint64, uint64) { return s.AlertEnd(), s.AuditHead().Seq }

// newSinkRunner builds the runner of the outbound sinks; runSinks runs it
// while this coordinator leads.
func (c *Coordinator) newSinkRunner() *sink.Runner {
	o := sink.DefaultOptions()
	if c.cfg.SinkStuckAfter > 0 {
		o.StuckAfter = c.cfg.SinkStuckAfter
	}
	if c.cfg.SinkBackoffMax > 0 {
		o.BackoffMax = c.cfg.SinkBackoffMax
	}
	if c.cfg.SinkCommitInterval > 0 {
		o.CommitInterval = c.cfg.SinkCommitInterval
	}
	o.Host, o.Version, o.Log = c.cfg.ID, c.cfg.Version, c.log
	if o.Version == "" {
		o.Version = "dev"
	}
	o.Commit = func(ctx context.Context, ps []*fsmpb.SinkPosition) error {
		_, err := c.applyNow(ctx, &fsmpb.Command{Command: &fsmpb.Command_SinkProgress{SinkProgress: &fsmpb.SinkProgress{Positions: ps}}})
		return err
	}
	o.Raise = func(ctx context.Context, a *medmeshv1.Alert) error {
		_, err := c.applyNow(ctx, &fsmpb.Command{Command: &fsmpb.Command_SinkAlert{SinkAlert: &fsmpb.SinkAlert{Alert: a}}})
		return err
	}
	return sink.NewRunner(fsmSource{c.fsm}, o)
}

// applyNow commits a leader-made command stamped with the leader's time.
func (c *Coordinator) applyNow(ctx context.Context, cmd *fsmpb.Command) (*fsm.Result, error) {
	cmd.Time = timestampOf(time.Now())
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ApplyTimeout)
	defer cancel()
	return c.Apply(ctx, cmd)
}

// runSinks runs the sinks for every leadership term of this coordinator,
// from the committed positions once the post-election barrier is applied
// (so the new leader has every position the old one committed), and stops
// them when leadership is lost.
func (c *Coordinator) runSinks() {
	defer c.wg.Done()
	var cancel context.CancelFunc
	var done sync.WaitGroup
	var gen uint64
	stop := func() {
		if cancel != nil {
			cancel()
			done.Wait()
			cancel = nil
		}
	}
	defer stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
		}
		g := c.leaderGen.Load()
		leading := c.IsLeader() && c.leaderReady.Load() == g
		switch {
		case leading && (cancel == nil || gen != g):
			stop()
			ctx, cf := context.WithCancel(c.ctx)
			cancel, gen = cf, g
			done.Add(1)
			go func() {
				defer done.Done()
				c.sinks.Run(ctx)
			}()
		case !leading && cancel != nil:
			stop()
		}
	}
}

// sinkCollector exports the leader's sink status as metrics.
type sinkCollector struct {
	c                                   *Coordinator
	backlog, delivered, failures, stuck *prometheus.Desc
}

func newSinkCollector(c *Coordinator) *sinkCollector {
	l := prometheus.Labels{"node": c.cfg.ID}
	return &sinkCollector{c: c,
		backlog:   prometheus.NewDesc("medmesh_sink_backlog_events", "Events committed but not yet delivered to the sink (leader only).", []string{"sink"}, l),
		delivered: prometheus.NewDesc("medmesh_sink_delivered_total", "Events this leader delivered to the sink in its terms.", []string{"sink"}, l),
		failures:  prometheus.NewDesc("medmesh_sink_failures_total", "Failed delivery attempts to the sink in this leader's terms.", []string{"sink"}, l),
		stuck:     prometheus.NewDesc("medmesh_sink_stuck", "1 while the sink has been failing for longer than the stuck threshold.", []string{"sink"}, l),
	}
}

func (s *sinkCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.backlog
	ch <- s.delivered
	ch <- s.failures
	ch <- s.stuck
}

func (s *sinkCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range s.c.sinks.Status() {
		stuck := 0.0
		if st.GetStuck() {
			stuck = 1
		}
		ch <- prometheus.MustNewConstMetric(s.backlog, prometheus.GaugeValue, float64(st.GetBacklog()), st.GetName())
		ch <- prometheus.MustNewConstMetric(s.delivered, prometheus.CounterValue, float64(st.GetDeliveredTotal()), st.GetName())
		ch <- prometheus.MustNewConstMetric(s.failures, prometheus.CounterValue, float64(st.GetFailuresTotal()), st.GetName())
		ch <- prometheus.MustNewConstMetric(s.stuck, prometheus.GaugeValue, stuck, st.GetName())
	}
}

// SinkStatus is the leader's delivery state of every sink (api.SinkBackend).
func (c *Coordinator) SinkStatus() []*medmeshv1.SinkStatus { return c.sinks.Status() }

// TestSink sends one test event to s (api.SinkBackend).
func (c *Coordinator) TestSink(ctx context.Context, s *medmeshv1.Sink, actor string) (string, error) {
	return c.sinks.Test(ctx, s, actor)
}
