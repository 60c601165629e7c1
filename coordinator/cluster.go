package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/api"
	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// probeTimeout bounds one status probe of another coordinator.
const probeTimeout = 500 * time.Millisecond

// ClusterStatus reports the Raft configuration. With fanout, every other
// coordinator is asked for its own state and applied index.
func (c *Coordinator) ClusterStatus(ctx context.Context, fanout bool) (*medmeshv1.GetClusterStatusResponse, error) {
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	_, leader := c.raft.LeaderWithID()
	servers := c.fsm.Servers()
	resp := &medmeshv1.GetClusterStatusResponse{
		Leader:        string(leader),
		LeaderApiAddr: servers[string(leader)].GetApiAddr(),
		CommitIndex:   c.raft.CommitIndex(),
	}
	resp.Term, _ = strconv.ParseUint(c.raft.Stats()["term"], 10, 64)
	cfgServers := f.Configuration().Servers
	if len(cfgServers) == 0 { // not bootstrapped yet: show ourselves
		cfgServers = []raft.Server{{ID: raft.ServerID(c.cfg.ID), Address: raft.ServerAddress(c.layer.Addr().String())}}
	}
	var wg sync.WaitGroup
	for _, s := range cfgServers {
		m := &medmeshv1.Member{
			Id: string(s.ID), Role: "coordinator", RaftAddr: string(s.Address),
			ApiAddr: servers[string(s.ID)].GetApiAddr(), Suffrage: "voter",
		}
		if s.Suffrage == raft.Nonvoter {
			m.Suffrage = "nonvoter"
		}
		if m.Id == c.cfg.ID {
			m.ApiAddr = c.cfg.APIAddr
			m.State = strings.ToLower(c.raft.State().String())
			m.AppliedIndex = c.fsm.AppliedIndex()
			m.Health = "ok"
			if t := c.raft.LastContact(); !t.IsZero() {
				m.LastSeen = timestamppb.New(t) // last contact with a leader
			}
		} else {
			m.State = "follower"
			if m.Id == string(leader) {
				m.State = "leader"
			}
			if fanout && m.ApiAddr != "" {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c.probeInto(ctx, m)
				}()
			}
		}
		resp.Members = append(resp.Members, m)
	}
	wg.Wait()
	sort.Slice(resp.Members, func(i, j int) bool { return resp.Members[i].Id < resp.Members[j].Id })
	return resp, nil
}

// probe asks a coordinator's API for its own view, without fan-out.
func (c *Coordinator) probe(ctx context.Context, addr string) (*medmeshv1.GetClusterStatusResponse, error) {
	cc, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-medmesh-probe", c.cfg.ID), probeTimeout)
	defer cancel()
	return medmeshv1.NewClusterServiceClient(cc).GetClusterStatus(ctx, &medmeshv1.GetClusterStatusRequest{
		Consistency: medmeshv1.ReadConsistency_READ_CONSISTENCY_STALE,
	})
}

func (c *Coordinator) probeInto(ctx context.Context, m *medmeshv1.Member) {
	resp, err := c.probe(ctx, m.ApiAddr)
	if err != nil {
		m.State, m.Health = "unreachable", err.Error()
		return
	}
	for _, o := range resp.GetMembers() {
		if o.GetId() == m.Id {
			m.State, m.AppliedIndex, m.Health = o.GetState(), o.GetAppliedIndex(), o.GetHealth()
		}
	}
}

// Joining never costs the cluster its quorum: a new coordinator must answer
// on its Raft address, then it joins as a non-voter and becomes a voter only
// once it has caught up with the leader (as Consul's autopilot promotes
// servers). One that never catches up is removed again.
const (
	joinDialTimeout    = 2 * time.Second
	joinCatchUpTimeout = 30 * time.Second
	joinCatchUpPoll    = 20 * time.Millisecond
)

// errJoin is why a join was refused; the cluster is unchanged.
var errJoin = fmt.Errorf("join refused: %w", fsm.ErrFailedPrecondition)

// Join adds a coordinator as a voter (or non-voter) and records its API
// address. Idempotent. A voter is added as a non-voter first and promoted
// once caught up; the leader never replaces itself.
func (c *Coordinator) Join(ctx context.Context, id, raftAddr, apiAddr string, nonvoter bool) (uint64, error) {
	if !c.IsLeader() {
		return 0, api.ErrNotLeader
	}
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return 0, err
	}
	present, voter := false, false
	var stale []raft.ServerID
	for _, s := range f.Configuration().Servers {
		switch {
		case string(s.ID) == id && string(s.Address) == raftAddr:
			present, voter = true, s.Suffrage == raft.Voter
		case string(s.ID) == id || string(s.Address) == raftAddr:
			if string(s.ID) == c.cfg.ID {
				return 0, fmt.Errorf("%s at %s would replace the leader %s at %s: %w", id, raftAddr, s.ID, s.Address, errJoin)
			}
			stale = append(stale, s.ID)
		}
	}
	if !present {
		// Reachable first: nothing is changed for an address nobody answers.
		conn, err := (&net.Dialer{Timeout: joinDialTimeout}).DialContext(ctx, "tcp", raftAddr)
		if err != nil {
			return 0, fmt.Errorf("raft_addr %s of %s does not answer: %v: %w", raftAddr, id, err, errJoin)
		}
		conn.Close()
		for _, sid := range stale {
			if err := c.await(c.raft.RemoveServer(sid, 0, c.cfg.ApplyTimeout)); err != nil {
				return 0, fmt.Errorf("remove stale server %s: %w", sid, err)
			}
		}
		if err := c.await(c.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, c.cfg.ApplyTimeout)); err != nil {
			return 0, fmt.Errorf("add server %s: %w", id, err)
		}
		c.log.Info("coordinator joined as non-voter", "id", id, "raft", raftAddr, "api", apiAddr)
	}
	if !nonvoter && !voter {
		if err := c.awaitCaughtUp(ctx, id, apiAddr); err != nil {
			if rerr := c.await(c.raft.RemoveServer(raft.ServerID(id), 0, c.cfg.ApplyTimeout)); rerr != nil {
				c.log.Warn("remove non-voter that did not catch up", "id", id, "err", rerr)
			}
			return 0, err
		}
		if err := c.await(c.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, c.cfg.ApplyTimeout)); err != nil {
			return 0, fmt.Errorf("promote %s to voter: %w", id, err)
		}
		c.log.Info("coordinator promoted to voter", "id", id, "raft", raftAddr)
	}
	return c.ensureRegistered(id, apiAddr, raftAddr)
}

// awaitCaughtUp waits until coordinator id, asked on its API, has applied
// what this leader had applied when the wait began.
func (c *Coordinator) awaitCaughtUp(ctx context.Context, id, apiAddr string) error {
	target := c.fsm.AppliedIndex()
	ctx, cancel := context.WithTimeout(ctx, joinCatchUpTimeout)
	defer cancel()
	var last error
	for {
		resp, err := c.probe(ctx, apiAddr)
		if err == nil {
			err = fmt.Errorf("%s at %s answers as %s", id, apiAddr, resp.GetReadInfo().GetServedBy())
			for _, m := range resp.GetMembers() {
				if m.GetId() == id && resp.GetReadInfo().GetServedBy() == id {
					if m.GetAppliedIndex() >= target {
						return nil
					}
					err = fmt.Errorf("%s has applied %d of %d", id, m.GetAppliedIndex(), target)
				}
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not catch up (%v); not made a voter: %w", id, last, errJoin)
		case <-time.After(joinCatchUpPoll):
		}
	}
}

// Remove removes a coordinator from the configuration.
func (c *Coordinator) Remove(ctx context.Context, id string) (uint64, error) {
	if !c.IsLeader() {
		return 0, api.ErrNotLeader
	}
	f := c.raft.RemoveServer(raft.ServerID(id), 0, c.cfg.ApplyTimeout)
	if err := c.await(f); err != nil {
		return 0, fmt.Errorf("remove server %s: %w", id, err)
	}
	res, err := c.Apply(ctx, &fsmpb.Command{Command: &fsmpb.Command_ServerDeregister{ServerDeregister: &fsmpb.ServerDeregister{Id: id}}})
	if err != nil {
		return f.Index(), nil // removed from Raft; the address entry is harmless
	}
	return res.Index, nil
}

// Transfer hands leadership to target ("" lets Raft choose) and returns
// the new leader once known.
func (c *Coordinator) Transfer(ctx context.Context, target string) (string, error) {
	if !c.IsLeader() {
		return "", api.ErrNotLeader
	}
	var fut raft.Future
	if target == "" {
		fut = c.raft.LeadershipTransfer()
	} else {
		cf := c.raft.GetConfiguration()
		if err := cf.Error(); err != nil {
			return "", err
		}
		addr := raft.ServerAddress("")
		for _, s := range cf.Configuration().Servers {
			if string(s.ID) == target {
				addr = s.Address
			}
		}
		if addr == "" {
			return "", fmt.Errorf("target_id %q is not a coordinator: %w", target, errNotFound)
		}
		fut = c.raft.LeadershipTransferToServer(raft.ServerID(target), addr)
	}
	if err := c.await(fut); err != nil {
		return "", fmt.Errorf("leadership transfer: %w", err)
	}
	for {
		if _, id := c.raft.LeaderWithID(); id != "" && string(id) != c.cfg.ID {
			return string(id), nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

var errNotFound = fsm.ErrNotFound

// bootstrapLoop is the --bootstrap-expect handshake. It asks every --join
// address for its id and Raft address until BootstrapExpect coordinators
// are known; the one with the lowest id bootstraps all of them. If a peer
// already has a leader, this node joins that cluster instead.
func (c *Coordinator) bootstrapLoop() {
	defer c.wg.Done()
	backoff := c.cfg.JoinInterval
	for c.ctx.Err() == nil {
		if c.hasConfiguration() {
			return
		}
		peers := map[string]string{c.cfg.ID: c.layer.Addr().String()}
		leaderAddr := ""
		for _, addr := range c.cfg.Join {
			resp, err := c.probe(c.ctx, addr)
			if err != nil {
				c.log.Debug("bootstrap: peer not answering", "addr", addr, "err", err)
				continue
			}
			if resp.GetLeader() != "" {
				leaderAddr = addr
				break
			}
			for _, m := range resp.GetMembers() {
				if m.GetId() == resp.GetReadInfo().GetServedBy() && m.GetRaftAddr() != "" {
					peers[m.GetId()] = m.GetRaftAddr()
				}
			}
		}
		if leaderAddr != "" {
			if err := c.joinVia(leaderAddr); err == nil {
				return
			}
		} else if len(peers) >= c.cfg.BootstrapExpect {
			ids := make([]string, 0, len(peers))
			for id := range peers {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			if ids[0] == c.cfg.ID {
				var conf raft.Configuration
				for _, id := range ids {
					conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(peers[id]), Suffrage: raft.Voter})
				}
				err := c.raft.BootstrapCluster(conf).Error()
				if err == nil || errors.Is(err, raft.ErrCantBootstrap) {
					c.log.Info("bootstrapped cluster", "servers", ids)
					return
				}
				c.log.Warn("bootstrap failed", "err", err)
			}
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// joinLoop joins an existing cluster through the --join addresses.
func (c *Coordinator) joinLoop() {
	defer c.wg.Done()
	backoff := c.cfg.JoinInterval
	for c.ctx.Err() == nil {
		if c.hasConfiguration() {
			return
		}
		for _, addr := range c.cfg.Join {
			if c.joinVia(addr) == nil {
				return
			}
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (c *Coordinator) joinVia(addr string) error {
	cc, err := c.conn(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ApplyTimeout)
	defer cancel()
	_, err = medmeshv1.NewClusterServiceClient(cc).JoinCluster(ctx, &medmeshv1.JoinClusterRequest{
		Id: c.cfg.ID, RaftAddr: c.layer.Addr().String(), ApiAddr: c.cfg.APIAddr,
	})
	if err != nil {
		c.log.Debug("join failed", "via", addr, "err", err)
	}
	return err
}

// registerLoop makes sure the leader has recorded this follower's API
// address, asking it (JoinCluster is idempotent) when it has not.
func (c *Coordinator) registerLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(c.cfg.JoinInterval):
		}
		if c.IsLeader() {
			continue
		}
		srv, ok := c.fsm.Servers()[c.cfg.ID]
		if ok && srv.GetApiAddr() == c.cfg.APIAddr && srv.GetRaftAddr() == c.layer.Addr().String() {
			continue
		}
		if !c.inConfiguration() {
			continue
		}
		cc, err := c.LeaderConn()
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ApplyTimeout)
		_, err = medmeshv1.NewClusterServiceClient(cc).JoinCluster(ctx, &medmeshv1.JoinClusterRequest{
			Id: c.cfg.ID, RaftAddr: c.layer.Addr().String(), ApiAddr: c.cfg.APIAddr,
		})
		cancel()
		if err != nil {
			c.log.Debug("register with leader", "err", err)
		}
	}
}

func (c *Coordinator) hasConfiguration() bool {
	f := c.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

func (c *Coordinator) inConfiguration() bool {
	f := c.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == c.cfg.ID {
			return true
		}
	}
	return false
}
