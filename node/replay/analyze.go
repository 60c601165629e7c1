package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/engine"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// AnalyzeOptions configure Analyze.
type AnalyzeOptions struct {
	Replay Options
	// SensorID names the sensor in alert ids; default "replay".
	SensorID string
	// Learn, when set, is a capture the engine learns baselines from first;
	// they are frozen before the scored capture is replayed.
	Learn string
}

// Analysis is the outcome of Analyze: the flows of the scored capture and
// the engine's report (devices, detections, alerts).
type Analysis struct {
	Records []flow.Record
	report  *engine.Report
}

// WriteTable prints the report for people.
func (a *Analysis) WriteTable(w io.Writer) error { return a.report.WriteTable(w) }

// WriteJSON prints the report as one JSON document (proto field names).
func (a *Analysis) WriteJSON(w io.Writer) error { return a.report.WriteJSON(w) }

// Alerts returns how many alerts the engine raised.
func (a *Analysis) Alerts() int { return len(a.report.Alerts) }

// AlertRecords returns the alerts the engine raised, as a sensor reports
// them to the coordinators.
func (a *Analysis) AlertRecords() []*medmeshv1.Alert { return a.report.Alerts }

// DeviceRecords returns the devices the engine inventoried, as a sensor
// reports them to the coordinators.
func (a *Analysis) DeviceRecords() []*medmeshv1.Device { return a.report.Devices }

// Analyze replays path through the datapath and the sensor's engine (the
// same detectors, identity, baselines and scoring as `medmesh node`). With
// opts.Learn it first learns from that capture, freezes every baseline and
// then scores path against them; otherwise the engine learns while it
// reads path, as a new sensor would.
func Analyze(ctx context.Context, path string, opts AnalyzeOptions, log *slog.Logger) (*Analysis, error) {
	cfg := engine.DefaultConfig()
	if opts.SensorID != "" {
		cfg.SensorID = opts.SensorID
	} else {
		cfg.SensorID = "replay"
	}
	e, err := engine.New(cfg, log, nil)
	if err != nil {
		return nil, err
	}
	if opts.Learn != "" {
		if _, err := Run(ctx, opts.Learn, opts.Replay, e); err != nil {
			return nil, fmt.Errorf("learn: %w", err)
		}
		e.FreezeAll()
		e.SetMode(engine.Score)
	}
	recs, err := Run(ctx, path, opts.Replay, e)
	if err != nil && !errors.Is(err, ErrTruncated) {
		return nil, err
	}
	e.FlushAlerts() // the capture ended: no alert waits for a window that will not end
	// A truncated capture is still analysed up to its cut, with the error.
	return &Analysis{Records: recs, report: e.Report()}, err
}
