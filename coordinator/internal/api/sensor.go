package api

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/internal/authz"
	"github.com/medmesh/medmesh/internal/pki"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// batcher coalesces sensor reports from many streams into few Raft
// entries by group commit: a report goes into the next entry at once when
// fewer than maxInflight entries are in flight, and reports that arrive
// while they are wait and go together into one entry (up to maxRecords)
// when one commits. So a lone report (a sensor's alert) waits for no timer,
// and under load entries grow with the commit latency. Entries are proposed
// by one goroutine in arrival order, so Raft commits them in that order and
// one sensor's records always commit in seq order.
type batcher struct {
	in          chan *pending
	maxRecords  int
	maxInflight int
	propose     func(context.Context, *fsmpb.Command) func() (*fsm.Result, error)
	stop        chan struct{}
	done        chan struct{}
	once        sync.Once
}

type pending struct {
	rep  *fsmpb.SensorReport
	done chan batchResult
}

type batchResult struct {
	acked uint64
	index uint64
	err   error
}

func newBatcher(maxRecords, maxInflight int, propose func(context.Context, *fsmpb.Command) func() (*fsm.Result, error)) *batcher {
	b := &batcher{
		in: make(chan *pending, 1024), maxRecords: maxRecords, maxInflight: maxInflight, propose: propose,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go b.run()
	return b
}

func (b *batcher) close() {
	b.once.Do(func() { close(b.stop) })
	<-b.done
}

// enqueue queues one sensor's records; their commit is reported on the
// pending's done channel. Reports enqueued one after another are
// committed in that order.
func (b *batcher) enqueue(ctx context.Context, rep *fsmpb.SensorReport) (*pending, error) {
	p := &pending{rep: rep, done: make(chan batchResult, 1)}
	select {
	case b.in <- p:
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.stop:
		return nil, errors.New("coordinator shutting down")
	}
}

// wait waits for p's commit: the sensor's acknowledged seq and the entry's
// Raft index.
func (p *pending) wait(ctx context.Context) (uint64, uint64, error) {
	select {
	case r := <-p.done:
		return r.acked, r.index, r.err
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
}

func (b *batcher) run() {
	var inflight sync.WaitGroup
	defer func() {
		inflight.Wait()
		close(b.done)
	}()
	slots := make(chan struct{}, b.maxInflight)
	for {
		var batch []*pending
		select {
		case p := <-b.in:
			batch = append(batch, p)
		case <-b.stop:
			return
		}
		select {
		case slots <- struct{}{}:
		case <-b.stop:
			b.fail(batch, errors.New("coordinator shutting down"))
			return
		}
		// Whatever arrived while waiting for a slot goes in too.
		n := len(batch[0].rep.GetRecords())
	collect:
		for n < b.maxRecords {
			select {
			case p := <-b.in:
				batch = append(batch, p)
				n += len(p.rep.GetRecords())
			default:
				break collect
			}
		}
		cmd := &fsmpb.SensorBatch{}
		for _, p := range batch {
			cmd.Reports = append(cmd.Reports, p.rep)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		wait := b.propose(ctx, &fsmpb.Command{Time: nowPB(), Command: &fsmpb.Command_SensorBatch{SensorBatch: cmd}})
		inflight.Go(func() {
			defer func() { cancel(); <-slots }()
			res, err := wait()
			for _, p := range batch {
				r := batchResult{err: err}
				if err == nil {
					r.acked, r.index = res.Acks[p.rep.GetSensorId()], res.Index
				}
				p.done <- r
			}
		})
	}
}

func (b *batcher) fail(batch []*pending, err error) {
	for _, p := range batch {
		p.done <- batchResult{err: err}
	}
}

// checkSensor lets a sensor report only as the sensor its certificate
// names.
func checkSensor(ctx context.Context, req *medmeshv1.ReportRequest) error {
	if err := required("sensor_id", req.GetSensorId()); err != nil {
		return err
	}
	id, err := caller(ctx)
	if err != nil {
		return err
	}
	return speaksFor(id, pki.RoleSensor, req.GetSensorId(), "sensor_id")
}

// Report accepts a sensor's record stream. On a follower it is proxied to
// the leader. A sensor reports only as itself, and its sequence numbers
// may not run ahead of the last one accepted by more than MaxSeqJump.
func (s *Server) Report(stream medmeshv1.SensorService_ReportServer) error {
	if !s.b.IsLeader() {
		return s.proxyReport(stream)
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	// A stream's reports are proposed as they arrive, without waiting for
	// the one before to commit, and acknowledged in order: a sensor keeps a
	// few requests in flight, so its next report (an alert) never waits a
	// commit round behind the previous one.
	type proposed struct {
		p    *pending
		last uint64 // the report's last seq (0: no records)
	}
	queue := make(chan proposed, maxPipelinedReports)
	recvErr := make(chan error, 1)
	go func() {
		defer close(queue)
		recvErr <- s.receiveReports(ctx, stream, func(rep *fsmpb.SensorReport, last uint64) error {
			p, err := s.batch.enqueue(ctx, rep)
			if err != nil {
				return toStatus(err)
			}
			select {
			case queue <- proposed{p: p, last: last}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	for q := range queue {
		acked, index, err := q.p.wait(ctx)
		if err != nil {
			return toStatus(err)
		}
		if acked < q.last {
			// Skipped for its after_seq: the report before it on this
			// stream was proposed and never committed.
			return status.Errorf(codes.Aborted, "records up to seq %d were not committed; send them again", q.last)
		}
		if err := stream.Send(&medmeshv1.ReportResponse{AckedSeq: acked, Index: index}); err != nil {
			return err
		}
	}
	// Every report received is acknowledged; nil when the sensor closed
	// its side.
	return <-recvErr
}

// maxPipelinedReports bounds one stream's reports proposed and not yet
// acknowledged; a sensor sending more waits (its reporter keeps two).
const maxPipelinedReports = 8

// receiveReports reads, checks and hands on a stream's reports, each with
// the last seq of the report before it on the stream (its after_seq) and
// its own last seq. It returns nil when the sensor closes its side.
func (s *Server) receiveReports(ctx context.Context, stream medmeshv1.SensorService_ReportServer, submit func(*fsmpb.SensorReport, uint64) error) error {
	var prevLast uint64 // the last seq proposed on this stream for sensor
	var sensor string
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := checkSensor(ctx, req); err != nil {
			return err
		}
		if err := validateReport(req, s.cfg.MaxRecordsPerReport); err != nil {
			return err
		}
		if req.GetSensorId() != sensor {
			sensor, prevLast = req.GetSensorId(), 0
		}
		last := max(s.b.FSM().SensorSeq(sensor), prevLast)
		var prev uint64
		for i, r := range req.GetRecords() {
			// validateReport checked that seqs are positive and increasing.
			if base := max(prev, last); r.GetSeq() > base && r.GetSeq()-base > s.cfg.MaxSeqJump {
				return invalid("records", "records[%d].seq %d is %d ahead of sensor %s's last seq %d; at most %d is accepted",
					i, r.GetSeq(), r.GetSeq()-base, req.GetSensorId(), base, s.cfg.MaxSeqJump)
			}
			prev = r.GetSeq()
			// Alerts are idempotent on their id: a sensor names only its own.
			if a := r.GetAlert(); a != nil && a.GetId() != "" && !strings.HasPrefix(a.GetId(), req.GetSensorId()+"/") {
				return invalid("records", "records[%d].alert.id %q is not one of sensor %s's (%s/SEQ)", i, a.GetId(), req.GetSensorId(), req.GetSensorId())
			}
		}
		if !s.b.IsLeader() {
			return toStatus(ErrNotLeader)
		}
		// prev is the request's last seq (validateReport: increasing).
		if err := submit(&fsmpb.SensorReport{SensorId: req.GetSensorId(), Records: req.GetRecords(), AfterSeq: prevLast}, prev); err != nil {
			return err
		}
		prevLast = max(prevLast, prev)
	}
}

// proxyReport relays a sensor stream to the leader.
func (s *Server) proxyReport(stream medmeshv1.SensorService_ReportServer) error {
	ctx := stream.Context()
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedKey)) > 0 {
		return toStatus(ErrNotLeader)
	}
	conn, err := s.b.LeaderConn()
	if err != nil {
		return toStatus(err)
	}
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(authz.ForwardContext(ctx), forwardedKey, s.b.ID()))
	defer cancel()
	up, err := medmeshv1.NewSensorServiceClient(conn).Report(ctx)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				errc <- up.CloseSend()
				return
			}
			if err != nil {
				errc <- err
				return
			}
			if err := checkSensor(ctx, req); err != nil {
				errc <- err
				return
			}
			if err := up.Send(req); err != nil {
				errc <- err
				return
			}
		}
	}()
	for {
		resp, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			cancel()
			select {
			case rerr := <-errc: // our own refusal, not the leader's
				if rerr != nil {
					return rerr
				}
			default:
			}
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// GetBaseline returns a device's baseline, or its class baseline.
func (s *Server) GetBaseline(ctx context.Context, req *medmeshv1.GetBaselineRequest) (*medmeshv1.GetBaselineResponse, error) {
	mac, err := normalizeMAC("device_mac", req.GetDeviceMac())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.SensorService_GetBaseline_FullMethodName, kindRead, req, &medmeshv1.GetBaselineResponse{}); done {
		return resp, err
	}
	f := s.b.FSM()
	idx := f.AppliedIndex()
	if b := f.Baseline(mac); b != nil {
		return &medmeshv1.GetBaselineResponse{Baseline: b, ReadInfo: s.readInfo(req, idx)}, nil
	}
	if c := req.GetDeviceClass(); c != 0 {
		if b := f.ClassBaseline(c); b != nil {
			return &medmeshv1.GetBaselineResponse{Baseline: b, ClassBaseline: true, ReadInfo: s.readInfo(req, idx)}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "device_mac: no baseline for %s", mac)
}
