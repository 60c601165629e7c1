package gossip

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	members           *prometheus.GaugeVec
	sightings         prometheus.Gauge
	sightingsSent     prometheus.Counter
	sightingsReceived prometheus.Counter
	inboxDropped      prometheus.Counter
	badMessages       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "medmesh_gossip_members", Help: "Mesh members known here, by state.",
		}, []string{"state"}),
		sightings: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "medmesh_gossip_sightings", Help: "Device sightings kept.",
		}),
		sightingsSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_gossip_sightings_sent_total", Help: "Sightings this member broadcast.",
		}),
		sightingsReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_gossip_sightings_received_total", Help: "Sightings received from other members.",
		}),
		inboxDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_gossip_inbox_dropped_total", Help: "Gossip messages dropped because the handler was behind.",
		}),
		badMessages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_gossip_bad_messages_total", Help: "Gossip messages that could not be decoded.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.members, m.sightings, m.sightingsSent, m.sightingsReceived, m.inboxDropped, m.badMessages} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register gossip metrics: %w", err)
		}
	}
	return m, nil
}

// logWriter turns memberlist's "[LEVEL] memberlist: ..." lines into slog
// records at the matching level.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{
		"[DEBUG] ": slog.LevelDebug, "[INFO] ": slog.LevelInfo,
		"[WARN] ": slog.LevelWarn, "[ERR] ": slog.LevelError,
	} {
		if len(line) >= len(prefix) && line[:len(prefix)] == prefix {
			level, line = l, line[len(prefix):]
			break
		}
	}
	// memberlist warns about every failed probe; those are debug noise in
	// a mesh where members come and go.
	if level == slog.LevelError {
		level = slog.LevelWarn
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}

func log10(x float64) float64 { return math.Log10(x) }
