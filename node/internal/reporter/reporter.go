// Package reporter streams a sensor's records to the coordinators over
// SensorService.Report: records pass through a bounded in-memory queue
// into the on-disk spool (backpressure when the queue is full), are sent
// in sequence order to any coordinator replica (which forwards to the
// leader), and leave the spool only once acknowledged. After a reconnect
// everything unacknowledged is sent again; the coordinators deduplicate
// by sequence number, so each record is applied exactly once.
//
// It also aggregates flow records into per-minute FlowSummary records and
// fetches roaming devices' baselines (SensorService.GetBaseline).
package reporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/node/internal/spool"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// ErrClosed is returned by Enqueue once the reporter has stopped.
var ErrClosed = errors.New("reporter stopped")

// Config configures a reporter.
type Config struct {
	// SensorID names this sensor. Required.
	SensorID string
	// Coordinators lists the coordinators' API addresses (host:port); any
	// one accepts the stream. Required.
	Coordinators []string
	// TLS is the sensor's identity (a sensor certificate of the campus CA):
	// every coordinator connection is mutual TLS with it. Empty means
	// plaintext, which the daemon allows only on loopback or with --dev.
	TLS grpcx.TLSFiles
	// QueueSize bounds the in-memory queue in front of the spool.
	QueueSize int
	// BatchSize bounds the records per spool write and per ReportRequest
	// (the coordinators accept up to 4096 per request).
	BatchSize int
	// MaxUnacked bounds the records in flight (sent, not acknowledged);
	// MaxInflightRequests the requests awaiting their response.
	MaxUnacked          int
	MaxInflightRequests int
	// BackoffMin and BackoffMax bound the reconnect backoff (exponential,
	// with jitter).
	BackoffMin, BackoffMax time.Duration
	// AckTimeout: a stream with records in flight and no acknowledgement
	// for this long is abandoned and another coordinator tried.
	AckTimeout time.Duration
	// RPCTimeout bounds a GetBaseline call to one coordinator.
	RPCTimeout time.Duration
	// SummaryWindow is the flow-summary window (one minute); a window is
	// spooled SummaryGrace after it ends.
	SummaryWindow time.Duration
	SummaryGrace  time.Duration
	// MaxSummaryKeys bounds the open summaries; beyond it the oldest
	// window is spooled early.
	MaxSummaryKeys int
}

// DefaultConfig returns production defaults.
func DefaultConfig() Config {
	return Config{
		QueueSize:           4096,
		BatchSize:           1024,
		MaxUnacked:          8192,
		MaxInflightRequests: 2,
		BackoffMin:          100 * time.Millisecond,
		BackoffMax:          10 * time.Second,
		AckTimeout:          30 * time.Second,
		RPCTimeout:          5 * time.Second,
		SummaryWindow:       time.Minute,
		SummaryGrace:        5 * time.Second,
		MaxSummaryKeys:      100000,
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.SensorID == "" {
		errs = append(errs, errors.New("sensor id is required"))
	}
	if len(c.Coordinators) == 0 {
		errs = append(errs, errors.New("at least one coordinator address is required"))
	}
	for name, v := range map[string]int{"queue size": c.QueueSize, "batch size": c.BatchSize, "max unacked": c.MaxUnacked, "max inflight requests": c.MaxInflightRequests, "max summary keys": c.MaxSummaryKeys} {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	for name, d := range map[string]time.Duration{"backoff min": c.BackoffMin, "backoff max": c.BackoffMax, "ack timeout": c.AckTimeout, "rpc timeout": c.RPCTimeout, "summary window": c.SummaryWindow} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	if c.BackoffMax < c.BackoffMin {
		errs = append(errs, errors.New("backoff max below backoff min"))
	}
	return errors.Join(errs...)
}

// Reporter delivers a sensor's records to the coordinators.
type Reporter struct {
	cfg     Config
	log     *slog.Logger
	spool   *spool.Spool
	metrics *metrics
	conns   []*grpc.ClientConn
	clients []medmeshv1.SensorServiceClient
	current atomic.Int64 // index of the coordinator last used

	queue   chan *medmeshv1.SensorRecord
	stopped chan struct{}
	stop    sync.Once

	agg      *aggregator
	flushNow chan struct{}
}

// New builds a reporter on an open spool. Run starts it.
func New(cfg Config, sp *spool.Spool, logger *slog.Logger, reg prometheus.Registerer) (*Reporter, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("reporter config: %w", err)
	}
	if sp == nil {
		return nil, errors.New("reporter config: spool is required")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	r := &Reporter{
		cfg:      cfg,
		log:      logger.With("component", "reporter", "sensor", cfg.SensorID),
		spool:    sp,
		metrics:  m,
		queue:    make(chan *medmeshv1.SensorRecord, cfg.QueueSize),
		stopped:  make(chan struct{}),
		agg:      newAggregator(cfg.SensorID, cfg.SummaryWindow, cfg.MaxSummaryKeys),
		flushNow: make(chan struct{}, 1),
	}
	cc := grpcx.DefaultClientConfig()
	cc.TLS = cfg.TLS
	opts, err := grpcx.DialOptions(cc, r.log, cfg.Coordinators...)
	if err != nil {
		return nil, fmt.Errorf("reporter: %w", err)
	}
	for _, addr := range cfg.Coordinators {
		cc, err := grpc.NewClient(addr, opts...)
		if err != nil {
			r.closeConns()
			return nil, fmt.Errorf("coordinator %s: %w", addr, err)
		}
		r.conns = append(r.conns, cc)
		r.clients = append(r.clients, medmeshv1.NewSensorServiceClient(cc))
	}
	return r, nil
}

// Enqueue hands a record to the reporter; its Seq is assigned when it is
// spooled, and the reporter owns it from now on. Enqueue blocks while the
// queue is full (backpressure) until ctx is done or the reporter stops.
func (r *Reporter) Enqueue(ctx context.Context, rec *medmeshv1.SensorRecord) error {
	if _, err := spool.KindOf(rec); err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	select {
	case <-r.stopped:
		return ErrClosed
	default:
	}
	select {
	case r.queue <- rec:
		r.metrics.enqueued.Inc()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-r.stopped:
		return ErrClosed
	}
}

// Run writes queued records to the spool, spools closed flow-summary
// windows and streams the spool to the coordinators until ctx is done.
// On return, everything queued has been spooled (flow summaries of open
// windows included), so nothing enqueued is lost.
func (r *Reporter) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	sendCtx, cancelSend := context.WithCancel(ctx)
	defer cancelSend()
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.sendLoop(sendCtx)
	}()

	tick := time.NewTicker(min(r.cfg.SummaryWindow/4, time.Second))
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case rec := <-r.queue:
			r.spoolBatch(ctx, rec)
		case now := <-tick.C:
			r.flushSummaries(ctx, now.Add(-r.cfg.SummaryGrace), false)
		case <-r.flushNow:
			r.flushSummaries(ctx, time.Now().Add(-r.cfg.SummaryGrace), false)
		}
	}
	// Drain: stop accepting, then spool what is queued and open windows.
	r.stop.Do(func() { close(r.stopped) })
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelDrain()
	for {
		select {
		case rec := <-r.queue:
			r.spoolBatch(drainCtx, rec)
			continue
		default:
		}
		break
	}
	r.flushSummaries(drainCtx, time.Time{}, true)
	cancelSend()
	wg.Wait()
	return nil
}

// spoolBatch appends first and whatever else is queued, up to BatchSize,
// in one fsynced transaction; it retries until it succeeds or ctx ends.
func (r *Reporter) spoolBatch(ctx context.Context, first *medmeshv1.SensorRecord) {
	batch := []*medmeshv1.SensorRecord{first}
	for len(batch) < r.cfg.BatchSize {
		select {
		case rec := <-r.queue:
			batch = append(batch, rec)
			continue
		default:
		}
		break
	}
	r.appendRetry(ctx, batch)
}

func (r *Reporter) appendRetry(ctx context.Context, batch []*medmeshv1.SensorRecord) {
	backoff := r.cfg.BackoffMin
	for {
		_, err := r.spool.Append(batch...)
		if err == nil {
			r.metrics.queueLen.Set(float64(len(r.queue)))
			return
		}
		r.log.Error("spool append failed, retrying", "records", len(batch), "err", err)
		if !sleep(ctx, jitter(backoff)) {
			r.metrics.lost.Add(float64(len(batch)))
			r.log.Error("records lost: spool unwritable at shutdown", "records", len(batch))
			return
		}
		backoff = min(2*backoff, r.cfg.BackoffMax)
	}
}

// sendLoop keeps one Report stream open to some coordinator, rotating on
// failure with exponential backoff and jitter.
func (r *Reporter) sendLoop(ctx context.Context) {
	backoff := r.cfg.BackoffMin
	for ctx.Err() == nil {
		idx := int(r.current.Load()) % len(r.clients)
		progressed, err := r.stream(ctx, idx)
		if ctx.Err() != nil {
			return
		}
		code := status.Code(err)
		r.metrics.reconnects.WithLabelValues(code.String()).Inc()
		if rotate(code) {
			r.current.CompareAndSwap(int64(idx), int64((idx+1)%len(r.clients)))
		}
		if progressed {
			backoff = r.cfg.BackoffMin
		}
		r.log.Debug("report stream ended", "coordinator", r.cfg.Coordinators[idx], "code", code, "err", err, "backoff", backoff)
		if !sleep(ctx, jitter(backoff)) {
			return
		}
		backoff = min(2*backoff, r.cfg.BackoffMax)
	}
}

// rotate says whether an error means "try another replica".
func rotate(c codes.Code) bool {
	switch c {
	case codes.Unavailable, codes.FailedPrecondition, codes.DeadlineExceeded, codes.Unknown, codes.Aborted, codes.Internal:
		return true
	}
	return false
}

var errAckTimeout = status.Error(codes.DeadlineExceeded, "no acknowledgement in time")

// stream sends everything unacknowledged over one Report stream until it
// fails. progressed reports whether any acknowledgement arrived.
func (r *Reporter) stream(ctx context.Context, idx int) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := r.clients[idx].Report(ctx)
	if err != nil {
		return false, err
	}
	recvDone := make(chan struct{})
	defer func() { cancel(); <-recvDone }()
	var acked atomic.Uint64
	var responses atomic.Int64 // one per request, in order
	acked.Store(r.spool.Stats().AckedSeq)
	ackCh := make(chan struct{}, 1)
	errCh := make(chan error, 1)
	go func() {
		defer close(recvDone)
		for {
			resp, err := st.Recv()
			if err != nil {
				errCh <- err
				return
			}
			if a := resp.GetAckedSeq(); a > acked.Load() {
				if _, err := r.spool.Ack(a); err != nil {
					errCh <- status.Errorf(codes.Internal, "spool ack: %v", err)
					return
				}
				r.metrics.acked.Add(float64(a - acked.Load()))
				acked.Store(a)
			}
			responses.Add(1)
			select {
			case ackCh <- struct{}{}:
			default:
			}
		}
	}()

	sent := acked.Load() // resend everything unacknowledged
	lastAck := time.Now()
	poll := time.NewTicker(min(r.cfg.AckTimeout/4, 250*time.Millisecond))
	defer poll.Stop()
	var requests int64
	for {
		// Few requests in flight, each as big as what accumulated: the
		// coordinators propose a stream's next request before the one
		// before it commits (so an alert does not wait a commit round
		// behind it), and many small requests would only queue behind
		// each other in the Raft log.
		inflight := int(sent - min(acked.Load(), sent))
		room := r.cfg.MaxUnacked - inflight
		if room > 0 && requests-responses.Load() < int64(r.cfg.MaxInflightRequests) {
			recs, err := r.spool.Pending(sent, min(room, r.cfg.BatchSize))
			if err != nil {
				return progressed, status.Errorf(codes.Internal, "%v", err)
			}
			if len(recs) > 0 {
				req := &medmeshv1.ReportRequest{SensorId: r.cfg.SensorID, Records: recs, Dropped: r.spool.Stats().Dropped}
				if err := st.Send(req); err != nil {
					// The real error comes from Recv.
					select {
					case err = <-errCh:
					case <-time.After(r.cfg.RPCTimeout):
					}
					return progressed, err
				}
				sent = recs[len(recs)-1].GetSeq()
				requests++
				r.metrics.sent.Add(float64(len(recs)))
				continue
			}
		}
		select {
		case <-ctx.Done():
			return progressed, ctx.Err()
		case err := <-errCh:
			return progressed, err
		case <-ackCh:
			progressed = true
			lastAck = time.Now()
		case <-r.spool.Notify():
		case <-poll.C:
			if acked.Load() < sent && time.Since(lastAck) > r.cfg.AckTimeout {
				return progressed, errAckTimeout
			}
			if acked.Load() >= sent {
				lastAck = time.Now()
			}
		}
	}
}

// GetBaseline fetches a device's baseline (falling back to its class's)
// from the coordinators, trying each replica in turn. A sensor calls it
// when a device arrives that was last seen elsewhere or never (the
// gossip roaming hook).
func (r *Reporter) GetBaseline(ctx context.Context, mac string, class medmeshv1.DeviceClass) (*medmeshv1.GetBaselineResponse, error) {
	var errs []error
	backoff := r.cfg.BackoffMin
	// A few rounds over every replica: an election in progress answers
	// "no leader" for a moment.
	for round := 0; round < 3; round++ {
		start := int(r.current.Load())
		for i := range r.clients {
			idx := (start + i) % len(r.clients)
			cctx, cancel := context.WithTimeout(ctx, r.cfg.RPCTimeout)
			resp, err := r.clients[idx].GetBaseline(cctx, &medmeshv1.GetBaselineRequest{DeviceMac: mac, DeviceClass: class})
			cancel()
			if err == nil {
				r.metrics.baselines.WithLabelValues("ok").Inc()
				return resp, nil
			}
			if !rotate(status.Code(err)) || ctx.Err() != nil {
				r.metrics.baselines.WithLabelValues(status.Code(err).String()).Inc()
				return nil, fmt.Errorf("get baseline %s from %s: %w", mac, r.cfg.Coordinators[idx], err)
			}
			errs = append(errs, fmt.Errorf("%s: %w", r.cfg.Coordinators[idx], err))
		}
		if !sleep(ctx, jitter(backoff)) {
			break
		}
		backoff = min(2*backoff, r.cfg.BackoffMax)
	}
	r.metrics.baselines.WithLabelValues("unavailable").Inc()
	return nil, fmt.Errorf("get baseline %s: no coordinator answered: %w", mac, errors.Join(errs...))
}

// Close releases the coordinator connections. Call it after Run returned.
func (r *Reporter) Close() error {
	r.stop.Do(func() { close(r.stopped) })
	return r.closeConns()
}

func (r *Reporter) closeConns() error {
	var errs []error
	for _, cc := range r.conns {
		if err := cc.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

type metrics struct {
	enqueued, sent, acked prometheus.Counter
	queueLen              prometheus.Gauge
	reconnects, baselines *prometheus.CounterVec
	summaries, lost       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		enqueued:   prometheus.NewCounter(prometheus.CounterOpts{Name: "medmesh_reporter_enqueued_total", Help: "Records handed to the reporter."}),
		sent:       prometheus.NewCounter(prometheus.CounterOpts{Name: "medmesh_reporter_sent_total", Help: "Records sent to a coordinator (resends included)."}),
		acked:      prometheus.NewCounter(prometheus.CounterOpts{Name: "medmesh_reporter_acked_total", Help: "Records the coordinators acknowledged as committed."}),
		queueLen:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "medmesh_reporter_queue_length", Help: "Records queued in memory before the spool."}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "medmesh_reporter_stream_ends_total", Help: "Report streams that ended, by gRPC code."}, []string{"code"}),
		baselines:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "medmesh_reporter_baseline_fetches_total", Help: "Baseline fetches, by result."}, []string{"result"}),
		summaries:  prometheus.NewCounter(prometheus.CounterOpts{Name: "medmesh_reporter_flow_summaries_total", Help: "Flow summaries spooled."}),
		lost:       prometheus.NewCounter(prometheus.CounterOpts{Name: "medmesh_reporter_lost_total", Help: "Records lost because the spool could not be written at shutdown."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.enqueued, m.sent, m.acked, m.queueLen, m.reconnects, m.baselines, m.summaries, m.lost} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register reporter metrics: %w", err)
		}
	}
	return m, nil
}
