package engine

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's counters. Labels are fixed names (factor and
// application protocol names), never values taken from packets.
type metrics struct {
	records       prometheus.Counter
	misses        prometheus.Counter
	devices       prometheus.Gauge
	frozen        prometheus.Counter
	installErrors prometheus.Counter
	flowsDropped  prometheus.Counter
	suppressed    prometheus.Counter
	probesIgnored prometheus.Counter
	alerts        *prometheus.CounterVec
	detections    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_sensor_records_scored_total", Help: "Flow records scored."}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_sensor_baseline_misses_scored_total", Help: "Datapath baseline misses the engine scored."}),
		devices: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "medmesh_sensor_devices", Help: "Devices in the sensor's inventory."}),
		frozen: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_sensor_baselines_frozen_total", Help: "Device baselines frozen."}),
		installErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_sensor_baseline_install_errors_total", Help: "Failures to install a baseline into the datapath."}),
		flowsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_sensor_detect_flows_dropped_total", Help: "Samples not inspected because the flow-state table was full."}),
		suppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_sensor_alerts_suppressed_total", Help: "Alerts not raised again for the same device, kind and peer."}),
		probesIgnored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medmesh_sensor_probes_not_scored_total", Help: "Flows that carried nothing, not scored against the device they reached (scan victims)."}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medmesh_sensor_alerts_total", Help: "Alerts raised, by kind."}, []string{"kind"}),
		detections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medmesh_sensor_detections_total", Help: "Detector findings, by application protocol."}, []string{"app"}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.records, m.misses, m.devices, m.frozen, m.installErrors,
		m.flowsDropped, m.suppressed, m.probesIgnored, m.alerts, m.detections} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register engine metrics: %w", err)
	}
	return m, nil
}
