package coordinator

import (
	"cmp"
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/compliance"
	compreport "github.com/medmesh/medmesh/compliance/report"
	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func (c *Coordinator) trendRefresh() time.Duration {
	if c.cfg.TrendRefresh > 0 {
		return c.cfg.TrendRefresh
	}
	return time.Hour
}

func (c *Coordinator) clock() time.Time {
	if c.cfg.Clock != nil {
		return c.cfg.Clock()
	}
	return time.Now()
}

// runComplianceClock is the leader's compliance clock: every tick it
// proposes ExceptionsExpire when an exception in force reached its expiry
// (so the expiry is applied and audited at a leader time even when
// nothing else is written), and TrendRecord, computed from the committed
// state, when the day (UTC, leader time) has no trend point yet or its
// point is older than TrendRefresh: a day's point is its latest state.
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
	if p := c.fsm.TrendPointOf(fsm.TrendDay(now)); p != nil && now.Sub(p.GetRecordTime().AsTime()) < c.trendRefresh() {
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

// complianceReport evaluates the committed state with compliance.Evaluate:
// every device with its alerts still kept, its committed posture and its
// device policy's mode, against the active bundle.
func (c *Coordinator) complianceReport(_ context.Context, fw medmeshv1.ComplianceFramework) (*medmeshv1.ComplianceReport, uint64, error) {
	v := c.fsm.ComplianceView() // one applied index for all of it
	idx := v.Index
	var in compliance.Input
	for _, d := range v.Devices {
		mode := ""
		switch v.DevicePolicies[d.GetMac()].GetMode() {
		case medmeshv1.PolicyMode_POLICY_MODE_ENFORCE:
			mode = "enforce"
		case medmeshv1.PolicyMode_POLICY_MODE_MONITOR:
			mode = "monitor"
		}
		source := "sensor"
		as := v.Alerts[d.GetMac()]
		if len(as) > 0 {
			source = cmp.Or(as[len(as)-1].GetSensorId(), source)
		}
		in.Devices = append(in.Devices, compliance.Device{
			Device: d, Alerts: as, Posture: v.Postures[d.GetMac()], Policy: mode, PolicyKnown: true, Source: source,
		})
	}
	for _, a := range v.MDS2 {
		in.MDS2 = append(in.MDS2, mds2Form(a))
	}
	in.Framework, in.Now, in.RaftIndex = fw, c.clock(), idx
	if b := v.Intel; b != nil {
		in.BundleDigest, in.BundleDate = b.GetDigest(), b.GetCreated().AsTime()
	}
	rep, err := compliance.Evaluate(in)
	if err != nil {
		return nil, 0, err
	}
	return rep, idx, nil
}

// EvaluateCompliance serves ComplianceService.GetReport
// (api.ComplianceBackend): the committed state evaluated against the
// framework's controls, stamped with the index it read and the active
// bundle, and completed with the exceptions and the trend
// (compliance/report.ApplyState) at the leader's compliance clock.
func (c *Coordinator) EvaluateCompliance(ctx context.Context, fw medmeshv1.ComplianceFramework) (*medmeshv1.ComplianceReport, uint64, error) {
	rep, idx, err := c.complianceReport(ctx, fw)
	if err != nil {
		return nil, 0, err
	}
	exc, _ := c.fsm.Exceptions()
	trend, _ := c.fsm.Trend()
	return compreport.ApplyState(rep, exc, trend, c.clock()), idx, nil
}

// mds2Form is an attached MDS2's answers as compliance reads them.
func mds2Form(a *medmeshv1.MDS2Attachment) *compliance.MDS2 {
	f := &compliance.MDS2{Name: a.GetName(), Manufacturer: a.GetManufacturer(), Model: a.GetModel(), Items: map[string]compliance.MDS2Item{}}
	for _, x := range a.GetAnswers() {
		it := compliance.MDS2Item{ID: x.GetId(), Question: x.GetQuestion(), Text: x.GetText(), Note: x.GetNote()}
		setString(&it.Answer, x.GetAnswer())
		f.Items[x.GetId()] = it
	}
	return f
}

// setString sets a string-kinded value (the MDS2 answer's type is the
// compliance package's own).
func setString[S ~string](p *S, v string) { *p = S(v) }
