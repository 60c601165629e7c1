package coordinator

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/coordinator/internal/response"
)

// seedRules commits the default response rules while the cluster's rule
// table was never seeded (leader only). The FSM applies a seed once in the
// life of a cluster and ignores later ones, so two leaders racing, or a
// seed retried after a timeout, install the defaults once. The rules
// travel in the log: replaying it gives the same table whichever binary
// replays it. Until the seed commits, alerts find no rules and decide
// nothing; the seed is the first write of a new leader after the
// registration of its address.
func (c *Coordinator) seedRules(gen uint64) {
	for c.ctx.Err() == nil && c.leaderGen.Load() == gen && !c.fsm.RulesSeeded() {
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ApplyTimeout)
		_, err := c.Apply(ctx, &fsmpb.Command{Time: timestamppb.Now(), Command: &fsmpb.Command_RulesSeed{RulesSeed: &fsmpb.RulesSeed{
			Rules: response.DefaultRules(), Actor: "coordinator/" + c.cfg.ID,
		}}})
		cancel()
		if err == nil {
			c.log.Info("default response rules seeded", "rules", len(response.DefaultRules()))
			return
		}
		c.log.Warn("seed default response rules; retrying", "err", err)
		select {
		case <-c.ctx.Done():
		case <-time.After(c.cfg.JoinInterval):
		}
	}
}
