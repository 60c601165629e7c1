package coordinator

import (
	"testing"

	"go.uber.org/goleak"
)

// hashicorp/raft leaves a future queued in its buffered verify channel
// unanswered at shutdown; Coordinator.await stops waiting for it, but the
// goroutine reading it stays parked until the process exits.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/raft.(*deferError).Error"))
}
