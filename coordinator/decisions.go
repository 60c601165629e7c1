package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// ProposeDecision appends a decision to the decision log (leader only; an
// error wrapping api.ErrNotLeader on a follower). A decision that already
// carries an id keeps it, so a retried proposal is rejected as a duplicate
// (fsm.ErrFailedPrecondition) rather than committed twice; otherwise the
// leader stamps an id. The leader stamps the time; the committed decision carries its Raft index. An automatic
// decision (the response engine's) against a life-critical device is
// committed as PENDING_APPROVAL: it waits for an operator.
func (c *Coordinator) ProposeDecision(ctx context.Context, d *medmeshv1.Decision, automatic bool) (*medmeshv1.Decision, error) {
	d = proto.CloneOf(d)
	now := time.Now()
	if d.Id == "" {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("decision id: %w", err)
		}
		d.Id = fmt.Sprintf("d-%013x-%s", now.UnixMilli(), hex.EncodeToString(b[:]))
	}
	res, err := c.Apply(ctx, &fsmpb.Command{Time: timestamppb.New(now), Command: &fsmpb.Command_DecisionCreate{
		DecisionCreate: &fsmpb.DecisionCreate{Decision: d, Automatic: automatic},
	}})
	if err != nil {
		return nil, fmt.Errorf("propose decision: %w", err)
	}
	return res.Decision, nil
}
