//go:build e2e && linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/medmesh/medmesh/deploy/lab"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Leader targets the current Raft leader (lab coordinators are named by
// their ids: c1, c2, c3).
func Leader(cs medmeshv1.ClusterServiceClient) Target {
	return func(ctx context.Context) (string, error) {
		r, err := cs.GetClusterStatus(ctx, &medmeshv1.GetClusterStatusRequest{})
		if err != nil {
			return "", fmt.Errorf("cluster status: %w", err)
		}
		if r.GetLeader() == "" {
			return "", errors.New("no leader")
		}
		return r.GetLeader(), nil
	}
}

// Follower targets a coordinator that is not the leader.
func Follower(cs medmeshv1.ClusterServiceClient) Target {
	return func(ctx context.Context) (string, error) {
		r, err := cs.GetClusterStatus(ctx, &medmeshv1.GetClusterStatusRequest{})
		if err != nil {
			return "", fmt.Errorf("cluster status: %w", err)
		}
		for _, m := range r.GetMembers() {
			if m.GetRole() == "coordinator" && m.GetId() != r.GetLeader() {
				return m.GetId(), nil
			}
		}
		return "", errors.New("no follower")
	}
}

// CoordinatorPartition cuts coordinator i (1-based; 127.0.0.i on the host)
// from the other coordinators and from every lab namespace, TCP and UDP,
// with rules in the host namespace.
func CoordinatorPartition(cfg lab.Config, i int) *Partition {
	p := &Partition{Table: fmt.Sprintf("mm_e2e_part_c%d", i)}
	for j := 1; j <= 3; j++ {
		a := netip.PrefixFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(j)}), 32)
		if j == i {
			p.A = append(p.A, a)
		} else {
			p.B = append(p.B, a)
		}
	}
	p.B = append(p.B, cfg.Block())
	return p
}

// SensorPartition cuts the sensor of floor n from the coordinators and the
// other sensors, with rules in its own namespace.
func SensorPartition(cfg lab.Config, n int) *Partition {
	return &Partition{
		Netns: cfg.SensorNS(n),
		Table: fmt.Sprintf("mm_e2e_part_s%d", n),
		A:     []netip.Prefix{netip.PrefixFrom(cfg.SensorMgmt(n), 32)},
		B:     []netip.Prefix{cfg.Block()},
	}
}

// EnforcerPartition cuts the enforcer of floor n from the coordinators.
// Only its control plane is cut: it keeps routing its floor (fail-static).
func EnforcerPartition(cfg lab.Config, n int) *Partition {
	var vips []netip.Prefix
	for i := 1; i <= 3; i++ {
		vips = append(vips, netip.PrefixFrom(cfg.CoordinatorVIP(i), 32))
	}
	return &Partition{
		Netns: cfg.EnforcerNS(n),
		Table: fmt.Sprintf("mm_e2e_part_e%d", n),
		A:     []netip.Prefix{netip.PrefixFrom(cfg.EnforcerUplink(n), 32)},
		B:     vips,
	}
}

// LeaderPartition cuts the coordinator that leads when it is injected from
// the other coordinators and the lab (CoordinatorPartition).
type LeaderPartition struct {
	Cfg    lab.Config
	Leader Target
	part   *Partition
	victim string
}

var _ Nemesis = (*LeaderPartition)(nil)

func (p *LeaderPartition) Name() string     { return "partition" }
func (p *LeaderPartition) Available() error { return nftAvailable() }

// Victim is the coordinator the last Inject cut off.
func (p *LeaderPartition) Victim() string { return p.victim }

func (p *LeaderPartition) Inject(ctx context.Context) error {
	name, err := p.Leader(ctx)
	if err != nil {
		return fmt.Errorf("partition: pick target: %w", err)
	}
	var i int
	if _, err := fmt.Sscanf(name, "c%d", &i); err != nil || i < 1 || i > 3 {
		return fmt.Errorf("partition: leader %q is not c1..c3", name)
	}
	p.part, p.victim = CoordinatorPartition(p.Cfg, i), name
	return p.part.Inject(ctx)
}

func (p *LeaderPartition) Heal(ctx context.Context) error {
	if p.part == nil {
		return nil
	}
	err := p.part.Heal(ctx)
	p.part = nil
	return err
}
