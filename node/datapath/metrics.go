package datapath

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/medmesh/medmesh/node/flow"
	"github.com/medmesh/medmesh/node/internal/xdp"
)

// metrics reads the program's counters at scrape time.
type metrics struct {
	d            *xdp.Datapath
	flowStarts   prometheus.Counter
	decodeErrors prometheus.Counter

	packets, bytes, flowsCreated, fill, rbEvents, rbDrops, parseErrors, nonIP, fragments, samples, discovery, misses *prometheus.Desc
	cacheHits, cacheOrphans                                                                                          *prometheus.Desc
}

func newMetrics(d *xdp.Datapath) *metrics {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("medmesh_sensor_"+name, help, labels, nil)
	}
	return &metrics{
		d: d,
		flowStarts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "medmesh", Subsystem: "sensor", Name: "flow_start_events_total",
			Help: "Flow-start events read from the ring buffer.",
		}),
		decodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "medmesh", Subsystem: "sensor", Name: "event_decode_errors_total",
			Help: "Ring-buffer records that failed to decode.",
		}),
		packets:      desc("packets_total", "Frames seen by the XDP program."),
		bytes:        desc("bytes_total", "Frame bytes seen by the XDP program."),
		flowsCreated: desc("flows_created_total", "Flows created in the flow table."),
		fill:         desc("flow_table_fill_ratio", "Flows in the table over its capacity."),
		rbEvents:     desc("ringbuf_events_total", "Events written to the ring buffer."),
		rbDrops:      desc("ringbuf_drops_total", "Events lost because the ring buffer was full."),
		parseErrors:  desc("parse_errors_total", "Malformed or truncated frames, by reason.", "reason"),
		nonIP:        desc("non_ip_packets_total", "Non-IP frames (ARP, LLDP, ...)."),
		fragments:    desc("fragments_total", "IP fragments (accounted without ports)."),
		samples:      desc("payload_samples_total", "Payload samples taken."),
		discovery:    desc("discovery_events_total", "DHCP, DHCPv6, DNS response, ARP and ND packets sent up."),
		misses:       desc("baseline_misses_total", "New flows outside their device's baseline."),
		cacheHits:    desc("flow_cache_hits_total", "Packets counted in a per-CPU flow cache slot instead of the flow table."),
		cacheOrphans: desc("flow_cache_orphans_total", "Flows re-created from cached counts after their entry was exported or evicted."),
	}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.flowStarts.Describe(ch)
	m.decodeErrors.Describe(ch)
	for _, d := range []*prometheus.Desc{m.packets, m.bytes, m.flowsCreated, m.fill, m.rbEvents, m.rbDrops, m.parseErrors, m.nonIP, m.fragments, m.samples, m.discovery, m.misses, m.cacheHits, m.cacheOrphans} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.flowStarts.Collect(ch)
	m.decodeErrors.Collect(ch)
	st, err := m.d.Stats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(m.packets, err)
		return
	}
	c := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	c(m.packets, st.Packets)
	c(m.bytes, st.Bytes)
	c(m.flowsCreated, st.FlowsCreated)
	c(m.rbEvents, st.RingEvents)
	c(m.rbDrops, st.RingDrops)
	c(m.nonIP, st.NonIP)
	c(m.fragments, st.Fragments)
	c(m.samples, st.Samples)
	c(m.discovery, st.Discovery)
	c(m.misses, st.BaselineMisses)
	c(m.cacheHits, st.CacheHits)
	c(m.cacheOrphans, st.CacheOrphans)
	for reason, v := range st.ParseErrorsByReason {
		c(m.parseErrors, v, reason)
	}
	n := 0
	if err := m.d.ForEachFlow(func(xdp.FlowKey, *flow.Record) bool { n++; return true }); err == nil {
		ch <- prometheus.MustNewConstMetric(m.fill, prometheus.GaugeValue, float64(n)/float64(m.d.FlowCapacity()))
	}
}
