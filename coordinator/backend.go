package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/coordinator/internal/api"
	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
)

var _ api.Backend = (*Coordinator)(nil)

// ID is this coordinator's id.
func (c *Coordinator) ID() string { return c.cfg.ID }

// FSM is the local replicated state.
func (c *Coordinator) FSM() *fsm.FSM { return c.fsm }

// IsLeader reports whether this replica is the Raft leader.
func (c *Coordinator) IsLeader() bool { return c.raft.State() == raft.Leader }

// Apply is the one raftApply helper: it commits cmd and turns the future's
// error and the FSM's response into ordinary errors.
func (c *Coordinator) Apply(ctx context.Context, cmd *fsmpb.Command) (*fsm.Result, error) {
	return c.Propose(ctx, cmd)()
}

// Propose hands cmd to Raft and returns at once; the function it returns
// waits for the commit as Apply does. Commands proposed one after another
// by one goroutine take their places in the log in that order.
func (c *Coordinator) Propose(ctx context.Context, cmd *fsmpb.Command) func() (*fsm.Result, error) {
	fail := func(err error) func() (*fsm.Result, error) {
		return func() (*fsm.Result, error) { return nil, err }
	}
	if !c.IsLeader() {
		return fail(api.ErrNotLeader)
	}
	data, err := proto.Marshal(cmd)
	if err != nil {
		return fail(fmt.Errorf("encode command: %w", err))
	}
	timeout := c.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		if timeout = time.Until(dl); timeout <= 0 {
			return fail(context.DeadlineExceeded)
		}
	}
	start := time.Now()
	f := c.raft.Apply(data, timeout)
	return func() (*fsm.Result, error) {
		if err := c.await(f); err != nil {
			c.metrics.applyErrors.Inc()
			return nil, fmt.Errorf("raft apply: %w", err)
		}
		c.metrics.applyDuration.Observe(time.Since(start).Seconds())
		res, ok := f.Response().(*fsm.Result)
		if !ok {
			return nil, fmt.Errorf("raft apply: unexpected response %T", f.Response())
		}
		if res.Err != nil {
			return res, res.Err
		}
		return res, nil
	}
}

// spawn runs f in a goroutine that shutdown waits for, unless shutdown has
// begun; it reports whether it did.
func (c *Coordinator) spawn(f func()) bool {
	if c.ctx.Err() != nil {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// VerifyRead makes a linearizable read safe here: this node is the leader,
// its post-election barrier has been applied (so every entry committed by
// earlier leaders is in the FSM), and a quorum still confirms its
// leadership.
func (c *Coordinator) VerifyRead(ctx context.Context) error {
	for {
		if !c.IsLeader() {
			return api.ErrNotLeader
		}
		gen := c.leaderGen.Load()
		if c.leaderReady.Load() == gen {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.ctx.Done():
			return raft.ErrRaftShutdown
		case <-time.After(2 * time.Millisecond):
		}
	}
	if err := c.await(c.raft.VerifyLeader()); err != nil {
		return fmt.Errorf("verify leader: %w", err)
	}
	return nil
}

// await waits for a Raft future, or for this node's shutdown: hashicorp/raft
// never answers a future still queued in one of its buffered channels when
// it shuts down, and a handler must not hang on one.
func (c *Coordinator) await(f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-c.ctx.Done():
		return raft.ErrRaftShutdown
	}
}

// LastContact is the time since the leader was last heard from.
func (c *Coordinator) LastContact() time.Duration {
	if c.IsLeader() {
		return 0
	}
	lc := c.raft.LastContact()
	if lc.IsZero() {
		return 0
	}
	return time.Since(lc)
}

// LeaderConn returns a connection to the leader's API.
func (c *Coordinator) LeaderConn() (*grpc.ClientConn, error) {
	_, id := c.raft.LeaderWithID()
	if id == "" {
		return nil, api.ErrNoLeader
	}
	if string(id) == c.cfg.ID {
		return nil, api.ErrNotLeader
	}
	srv, ok := c.fsm.Servers()[string(id)]
	if !ok || srv.GetApiAddr() == "" {
		return nil, fmt.Errorf("leader %s has not registered its API address: %w", id, api.ErrNoLeader)
	}
	return c.conn(srv.GetApiAddr())
}

func (c *Coordinator) conn(addr string) (*grpc.ClientConn, error) {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	cc, err := c.cfg.Dial(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c.conns[addr] = cc
	return cc, nil
}

// watchLeadership follows leadership changes. On gaining leadership it
// applies a barrier (so reads see every entry of earlier terms), registers
// its own API address and, once in a cluster's life, seeds the default
// response rules.
func (c *Coordinator) watchLeadership() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case leader := <-c.notify:
			gen := c.leaderGen.Add(1)
			c.metrics.leaderChanges.Inc()
			if !leader {
				c.log.Info("lost leadership")
				continue
			}
			c.log.Info("gained leadership")
			c.wg.Add(1)
			go c.establish(gen)
		}
	}
}

func (c *Coordinator) establish(gen uint64) {
	defer c.wg.Done()
	for c.ctx.Err() == nil && c.leaderGen.Load() == gen {
		if err := c.await(c.raft.Barrier(c.cfg.ApplyTimeout)); err != nil {
			c.log.Warn("post-election barrier failed", "err", err)
			if !c.IsLeader() {
				return
			}
			continue
		}
		c.leaderReady.Store(gen)
		c.ensureRegistered(c.cfg.ID, c.cfg.APIAddr, c.layer.Addr().String())
		c.seedRules(gen)
		return
	}
}

// ensureRegistered records a coordinator's addresses in the FSM if they
// differ (leader only).
func (c *Coordinator) ensureRegistered(id, apiAddr, raftAddr string) (uint64, error) {
	if srv, ok := c.fsm.Servers()[id]; ok && srv.GetApiAddr() == apiAddr && srv.GetRaftAddr() == raftAddr {
		return c.fsm.AppliedIndex(), nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ApplyTimeout)
	defer cancel()
	res, err := c.Apply(ctx, &fsmpb.Command{Command: &fsmpb.Command_ServerRegister{ServerRegister: &fsmpb.ServerRegister{
		Id: id, ApiAddr: apiAddr, RaftAddr: raftAddr,
	}}})
	if err != nil {
		c.log.Warn("register coordinator addresses", "id", id, "err", err)
		return 0, err
	}
	return res.Index, nil
}
