package coordinator

import (
	"errors"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the coordinator's Prometheus metrics, labelled by node so
// several coordinators can share one registry in tests.
type metrics struct {
	reg           prometheus.Registerer
	collectors    []prometheus.Collector
	applyDuration prometheus.Observer
	applyErrors   prometheus.Counter
	leaderChanges prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, c *Coordinator) (*metrics, error) {
	labels := prometheus.Labels{"node": c.cfg.ID}
	apply := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "medmesh_coordinator_raft_apply_seconds", Help: "Time to commit and apply one Raft command on the leader.",
		ConstLabels: labels, Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	applyErr := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "medmesh_coordinator_raft_apply_errors_total", Help: "Raft applies that failed.", ConstLabels: labels,
	})
	changes := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "medmesh_coordinator_leadership_changes_total", Help: "Leadership gained or lost by this node.", ConstLabels: labels,
	})
	responses := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "medmesh_coordinator_response_decisions_total", Help: "Decisions the response rules made in the entries this node applied since it started (every replica makes the same ones).", ConstLabels: labels,
	}, func() float64 { return float64(c.fsm.RuleDecisions()) })
	notices := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "medmesh_coordinator_commit_notices_total", Help: "Commit notices sent to followers: AppendEntries without entries that tell a follower the commit index as soon as an entry commits.", ConstLabels: labels,
	}, func() float64 { return float64(c.notices.Sent()) })
	early := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "medmesh_coordinator_early_appends_total", Help: "New entries the leader sent to a follower while writing them to its own log, acknowledged (Raft's own AppendEntries of the same entries is then answered without being sent).", ConstLabels: labels,
	}, func() float64 { return float64(c.notices.EarlyAppends()) })
	answered := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "medmesh_coordinator_raft_appends_answered_early_total", Help: "Raft's own AppendEntries the leader answered without sending, because an early append of the same entries had already been acknowledged.", ConstLabels: labels,
	}, func() float64 { return float64(c.notices.Answered()) })
	applied := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "medmesh_coordinator_applied_index", Help: "Last Raft index applied to the FSM.", ConstLabels: labels,
	}, func() float64 { return float64(c.fsm.AppliedIndex()) })
	isLeader := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "medmesh_coordinator_is_leader", Help: "1 when this node is the Raft leader.", ConstLabels: labels,
	}, func() float64 {
		if c.raft.State() == raft.Leader {
			return 1
		}
		return 0
	})
	m := &metrics{reg: reg, applyDuration: apply, applyErrors: applyErr, leaderChanges: changes}
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{apply, applyErr, changes, responses, notices, early, answered, applied, isLeader, newSinkCollector(c)} {
		if err := reg.Register(col); err != nil {
			m.unregister()
			return nil, errors.Join(errors.New("register coordinator metrics"), err)
		}
		m.collectors = append(m.collectors, col)
	}
	return m, nil
}

func (m *metrics) unregister() {
	for _, col := range m.collectors {
		m.reg.Unregister(col)
	}
	m.collectors = nil
}
