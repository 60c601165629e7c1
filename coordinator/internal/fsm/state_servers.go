package fsm

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
)

// applyServerRegister records a coordinator's API and Raft addresses, so
// followers know where to forward writes.
func (s *state) applyServerRegister(c *fsmpb.ServerRegister) *Result {
	if c.GetId() == "" {
		return &Result{Err: fmt.Errorf("server id: %w", ErrInvalid)}
	}
	s.servers[c.GetId()] = proto.CloneOf(c)
	return &Result{}
}

// Servers returns the registered coordinators by id.
func (f *FSM) Servers() map[string]*fsmpb.ServerRegister {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]*fsmpb.ServerRegister, len(f.st.servers))
	for k, v := range f.st.servers {
		out[k] = v
	}
	return out
}
