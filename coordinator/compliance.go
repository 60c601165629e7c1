package coordinator

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	compreport "github.com/medmesh/medmesh/compliance/report"
	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func (c *Coordinator) clock() time.Time {
	if c.cfg.Clock != nil {
		return c.cfg.Clock()
	}
	return time.Now()
}

// runComplianceClock is the leader's compliance clock: every tick it
// proposes ExceptionsExpire when an exception in force reached its expiry
// (so the expiry is applied and audited at a leader time even when
// nothing else is written), and TrendRecord when the day (UTC, leader
// time) has no trend point yet, computed from the committed state.
func (c *Coordinator) runComplianceClock() {
	defer c.wg.Done()
	tick := c.cfg.ComplianceTick
	if tick <= 0 {
		tick = time.Minute
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		if !c.IsLeader() || c.leaderReady.Load() != c.leaderGen.Load() {
			continue
		}
		if err := c.complianceStep(); err != nil {
			c.log.Warn("compliance clock", "err", err)
		}
	}
}

func (c *Coordinator) complianceStep() error {
	now := c.clock()
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ApplyTimeout)
	defer cancel()
	if c.fsm.ExceptionDue(now) {
		if _, err := c.Apply(ctx, &fsmpb.Command{Time: timestamppb.New(now), Command: &fsmpb.Command_ExceptionsExpire{ExceptionsExpire: &fsmpb.ExceptionsExpire{}}}); err != nil {
			return err
		}
	}
	if c.fsm.HasTrendDay(fsm.TrendDay(now)) {
		return nil
	}
	rep, _, err := c.complianceReport(ctx, medmeshv1.ComplianceFramework_COMPLIANCE_FRAMEWORK_UNSPECIFIED)
	if err != nil {
		return err
	}
	exc, _ := c.fsm.Exceptions()
	_, err = c.Apply(ctx, &fsmpb.Command{Time: timestamppb.New(now), Command: &fsmpb.Command_TrendRecord{TrendRecord: &fsmpb.TrendRecord{Point: compreport.Point(rep, exc, now)}}})
	return err
}

// complianceReport is the report the trend point is computed from: every
// device's committed posture band and the campus risk. Control counts
// come from compliance.Evaluate once the coordinator serves it
// (ComplianceBackend); until then they are zero.
func (c *Coordinator) complianceReport(ctx context.Context, fw medmeshv1.ComplianceFramework) (*medmeshv1.ComplianceReport, uint64, error) {
	ps, idx := c.fsm.Postures()
	devs := c.fsm.Devices()
	score := map[string]uint32{}
	for _, p := range ps {
		score[p.GetDeviceMac()] = p.GetScore().GetScore()
	}
	rep := &medmeshv1.ComplianceReport{Framework: fw, RaftIndex: idx, Coverage: &medmeshv1.ComplianceCoverage{Devices: uint32(len(devs))}, Plan: &medmeshv1.RemediationPlan{}}
	for _, d := range devs {
		s := score[d.GetMac()]
		rep.Plan.CampusRisk += float64(s)
		rep.Devices = append(rep.Devices, &medmeshv1.DeviceCompliance{DeviceMac: d.GetMac(), RiskScore: s, Posture: compreport.Band(s)})
	}
	return rep, idx, nil
}

// EvaluateCompliance serves ComplianceService.GetReport (api.ComplianceBackend).
func (c *Coordinator) EvaluateCompliance(ctx context.Context, fw medmeshv1.ComplianceFramework) (*medmeshv1.ComplianceReport, uint64, error) {
	return c.complianceReport(ctx, fw)
}
