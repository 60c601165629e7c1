package reporter

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/node/flow"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// summaryKey is one FlowSummary: a device, a peer, a protocol, a port and
// a direction within one window.
type summaryKey struct {
	device   flow.MAC
	deviceIP netip.Addr
	peer     netip.Addr
	proto    uint8
	port     uint16
	dir      medmeshv1.Direction
	window   int64 // window start, unix ns
}

type summary struct {
	app                                       string
	flows, pktsOut, bytesOut, pktsIn, bytesIn uint64
}

// aggregator folds flow records into per-window FlowSummary records.
type aggregator struct {
	sensor  string
	window  time.Duration
	maxKeys int

	mu   sync.Mutex
	open map[summaryKey]*summary
}

func newAggregator(sensor string, window time.Duration, maxKeys int) *aggregator {
	return &aggregator{sensor: sensor, window: window, maxKeys: maxKeys, open: make(map[summaryKey]*summary)}
}

// AddFlow folds one exported flow record into its device's summary for
// the window the flow ended in. deviceIsSrc says which side is the
// monitored device: the flow's initiator (outbound; the port is the
// peer's) or its responder (inbound; the port is the device's own).
// Nothing is sent per flow; summaries are spooled when their window ends.
func (r *Reporter) AddFlow(rec *flow.Record, deviceIsSrc bool) {
	a := r.agg
	k := summaryKey{proto: rec.Proto, port: rec.DstPort}
	var s summary
	if deviceIsSrc {
		k.device, k.deviceIP, k.peer, k.dir = rec.SrcMAC, rec.Src, rec.Dst, medmeshv1.Direction_DIRECTION_OUTBOUND
		s = summary{pktsOut: rec.FwdPackets, bytesOut: rec.FwdBytes, pktsIn: rec.RevPackets, bytesIn: rec.RevBytes}
	} else {
		k.device, k.deviceIP, k.peer, k.dir = rec.DstMAC, rec.Dst, rec.Src, medmeshv1.Direction_DIRECTION_INBOUND
		s = summary{pktsOut: rec.RevPackets, bytesOut: rec.RevBytes, pktsIn: rec.FwdPackets, bytesIn: rec.FwdBytes}
	}
	end := rec.LastNs
	if end == 0 {
		end = time.Now().UnixNano()
	}
	k.window = end - end%int64(a.window)
	a.mu.Lock()
	cur, ok := a.open[k]
	if !ok {
		cur = &summary{}
		a.open[k] = cur
	}
	if cur.app == "" {
		cur.app = rec.App
	}
	cur.flows++
	cur.pktsOut += s.pktsOut
	cur.bytesOut += s.bytesOut
	cur.pktsIn += s.pktsIn
	cur.bytesIn += s.bytesIn
	full := len(a.open) > a.maxKeys
	a.mu.Unlock()
	if full {
		select {
		case r.flushNow <- struct{}{}:
		default:
		}
	}
}

// take removes and returns the summaries of windows that ended by
// cutoff (all of them when all is set, or the oldest window when the
// aggregator is over its key bound).
func (a *aggregator) take(cutoff time.Time, all bool) []*medmeshv1.SensorRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	var oldest int64 = -1
	if len(a.open) > a.maxKeys {
		for k := range a.open {
			if oldest < 0 || k.window < oldest {
				oldest = k.window
			}
		}
	}
	var out []*medmeshv1.SensorRecord
	for k, s := range a.open {
		if !all && k.window != oldest && time.Unix(0, k.window+int64(a.window)).After(cutoff) {
			continue
		}
		delete(a.open, k)
		fs := &medmeshv1.FlowSummary{
			DeviceMac:     k.device.String(),
			Protocol:      uint32(k.proto),
			Port:          uint32(k.port),
			App:           s.app,
			Direction:     k.dir,
			WindowStart:   timestamppb.New(time.Unix(0, k.window)),
			WindowSeconds: uint32(a.window / time.Second),
			Flows:         s.flows,
			PacketsOut:    s.pktsOut,
			BytesOut:      s.bytesOut,
			PacketsIn:     s.pktsIn,
			BytesIn:       s.bytesIn,
			SensorId:      a.sensor,
		}
		if k.deviceIP.IsValid() {
			fs.DeviceIp = k.deviceIP.String()
		}
		if k.peer.IsValid() {
			fs.PeerIp = k.peer.String()
		}
		out = append(out, &medmeshv1.SensorRecord{Record: &medmeshv1.SensorRecord_FlowSummary{FlowSummary: fs}})
	}
	return out
}

func (r *Reporter) flushSummaries(ctx context.Context, cutoff time.Time, all bool) {
	recs := r.agg.take(cutoff, all)
	for len(recs) > 0 {
		n := min(len(recs), r.cfg.BatchSize)
		r.appendRetry(ctx, recs[:n])
		r.metrics.summaries.Add(float64(n))
		recs = recs[n:]
	}
}
