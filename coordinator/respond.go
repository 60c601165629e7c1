package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// respond runs the response engine while this node leads (generation gen):
// it reads committed alerts in commit order, evaluates the response rules
// and proposes their decisions. A decision's id is derived from its alert
// and rule, so a new leader that re-reads alerts an old leader already
// handled proposes nothing twice: the proposal is skipped when the decision
// is already applied, and rejected by the FSM if it raced in. Life-critical
// devices get pending decisions (the FSM enforces that too).
func (c *Coordinator) respond(gen uint64) {
	defer c.wg.Done()
	var pos uint64
	backoff := c.cfg.JoinInterval
	for c.ctx.Err() == nil && c.leaderGen.Load() == gen {
		changed := c.fsm.Changed()
		alerts, first, _ := c.fsm.AlertsFrom(pos, 256)
		pos = first // past alerts evicted by retention
		failed := false
		for _, a := range alerts {
			if err := c.respondTo(a); err != nil {
				c.log.Warn("response engine: proposal failed; retrying", "alert", a.GetId(), "err", err)
				failed = true
				break
			}
			pos++
		}
		if failed {
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(backoff):
			}
			continue
		}
		if len(alerts) > 0 {
			continue
		}
		select {
		case <-c.ctx.Done():
			return
		case <-changed:
		case <-time.After(time.Second):
		}
	}
}

func (c *Coordinator) respondTo(a *medmeshv1.Alert) error {
	for _, d := range c.responder.Evaluate(a, c.fsm.Device(a.GetDeviceMac())) {
		d.Id = responseID(a.GetId(), d.GetRule())
		if c.fsm.Decision(d.Id) != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ApplyTimeout)
		got, err := c.ProposeDecision(ctx, d, true)
		cancel()
		switch {
		case errors.Is(err, fsm.ErrFailedPrecondition):
			continue // committed by an earlier attempt
		case err != nil:
			return err
		}
		c.metrics.responses.Inc()
		c.log.Info("response engine: decision committed", "id", got.GetId(), "index", got.GetIndex(),
			"action", got.GetAction(), "state", got.GetState(), "device", got.GetDeviceMac(), "rule", got.GetRule(), "alert", a.GetId())
	}
	return nil
}

// responseID is the decision id of rule's response to alert: deterministic,
// so the response to one alert is committed once whoever leads.
func responseID(alertID, rule string) string {
	h := sha256.Sum256([]byte(alertID + "\x00" + rule))
	return "r-" + hex.EncodeToString(h[:10])
}
