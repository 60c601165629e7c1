package api

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/internal/authz"
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

// Report accepts a sensor's record stream. On a follower it is proxied to
// the leader.
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
		if err := required("sensor_id", req.GetSensorId()); err != nil {
			return err
		}
		if len(req.GetRecords()) > s.cfg.MaxRecordsPerReport {
			return invalid("records", "more than %d records in one request", s.cfg.MaxRecordsPerReport)
		}
		var prev uint64
		for i, r := range req.GetRecords() {
			if r.GetSeq() == 0 || r.GetSeq() <= prev {
				return invalid("records", "records[%d].seq %d is not positive and increasing", i, r.GetSeq())
			}
			prev = r.GetSeq()
			if d := r.GetDevice().GetDevice(); d != nil {
				mac, err := normalizeMAC("records.device.device.mac", d.GetMac())
				if err != nil {
					return err
				}
				d.Mac = mac
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
	// The leader authorizes the stream as the sensor it comes from.
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
