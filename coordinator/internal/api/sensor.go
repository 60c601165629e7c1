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
// entries: it collects for up to maxDelay or maxRecords, then commits one
// SensorBatch. Commits are serial, so one sensor's records always commit in
// seq order.
type batcher struct {
	in         chan *pending
	maxRecords int
	maxDelay   time.Duration
	apply      func(context.Context, *fsmpb.Command) (*fsm.Result, error)
	stop       chan struct{}
	done       chan struct{}
	once       sync.Once
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

func newBatcher(maxRecords int, maxDelay time.Duration, apply func(context.Context, *fsmpb.Command) (*fsm.Result, error)) *batcher {
	b := &batcher{
		in: make(chan *pending, 1024), maxRecords: maxRecords, maxDelay: maxDelay, apply: apply,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go b.run()
	return b
}

func (b *batcher) close() {
	b.once.Do(func() { close(b.stop) })
	<-b.done
}

// submit queues one sensor's records and waits for their commit.
func (b *batcher) submit(ctx context.Context, rep *fsmpb.SensorReport) (uint64, uint64, error) {
	p := &pending{rep: rep, done: make(chan batchResult, 1)}
	select {
	case b.in <- p:
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-b.stop:
		return 0, 0, errors.New("coordinator shutting down")
	}
	select {
	case r := <-p.done:
		return r.acked, r.index, r.err
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
}

func (b *batcher) run() {
	defer close(b.done)
	for {
		var batch []*pending
		select {
		case p := <-b.in:
			batch = append(batch, p)
		case <-b.stop:
			return
		}
		n := len(batch[0].rep.GetRecords())
		timer := time.NewTimer(b.maxDelay)
	collect:
		for n < b.maxRecords {
			select {
			case p := <-b.in:
				batch = append(batch, p)
				n += len(p.rep.GetRecords())
			case <-timer.C:
				break collect
			}
		}
		timer.Stop()
		b.commit(batch)
	}
}

func (b *batcher) commit(batch []*pending) {
	cmd := &fsmpb.SensorBatch{}
	for _, p := range batch {
		cmd.Reports = append(cmd.Reports, p.rep)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := b.apply(ctx, &fsmpb.Command{Time: nowPB(), Command: &fsmpb.Command_SensorBatch{SensorBatch: cmd}})
	for _, p := range batch {
		r := batchResult{err: err}
		if err == nil {
			r.acked, r.index = res.Acks[p.rep.GetSensorId()], res.Index
		}
		p.done <- r
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
	ctx := stream.Context()
	if !s.b.IsLeader() {
		return s.proxyReport(stream)
	}
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
		last := s.b.FSM().SensorSeq(req.GetSensorId())
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
		acked, index, err := s.batch.submit(ctx, &fsmpb.SensorReport{SensorId: req.GetSensorId(), Records: req.GetRecords()})
		if err != nil {
			return toStatus(err)
		}
		if err := stream.Send(&medmeshv1.ReportResponse{AckedSeq: acked, Index: index}); err != nil {
			return err
		}
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
