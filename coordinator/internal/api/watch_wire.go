package api

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// decisionWire holds recently sent decisions as prepared gRPC messages
// (grpc.PreparedMsg: encoded and framed, ready to write), so that a
// decision every watch stream sends is marshaled once per coordinator,
// not once per stream, and sending it allocates nothing: with a hundred
// enforcers watching, each stream's marshal of the same response was
// about a third of the CPU a stream spent sending it, and the copies most
// of what the coordinator allocated per decision (fewer collections, each
// of which can hold up every stream the coordinator serves).
//
// The message is the whole WatchDecisionsResponse, prepared by the first
// stream that sends the decision: its applied_index is the replica's
// applied index at that moment, which every later sender has applied too
// (applied_index on a response that carries a decision is a lower bound;
// watchers resume from resume_token and count heartbeats' applied index).
// The FSM never changes a decision it holds: an update replaces it (see
// applyDecisionReview), so the decision's pointer is its key, and an entry
// cannot outlive a change.
//
// A prepared message carries the compression of the stream that prepared
// it. Only streams that send uncompressed share them (shareable): every
// stream does, unless its client compressed its request with a compressor
// registered in this binary, and such a stream marshals its own.
type decisionWire struct {
	mu   sync.Mutex
	m    map[*medmeshv1.Decision]*grpc.PreparedMsg
	ring []*medmeshv1.Decision // the keys in insertion order, for eviction
	next int                   // the ring slot the next key replaces
}

// decisionWireSize is how many decisions the cache holds: well above the
// decisions a burst applies before every caught-up stream has sent them.
// A stream catching up from further back marshals its own.
const decisionWireSize = 256

func newDecisionWire() *decisionWire {
	return &decisionWire{m: make(map[*medmeshv1.Decision]*grpc.PreparedMsg, decisionWireSize), ring: make([]*medmeshv1.Decision, decisionWireSize)}
}

// shareable reports whether a stream sends its messages uncompressed, so
// that it may send and prepare shared messages.
func shareable(ctx context.Context) bool {
	st, ok := grpc.ServerTransportStreamFromContext(ctx).(interface{ RecvCompress() string })
	if !ok {
		return false
	}
	rc := st.RecvCompress()
	return rc == "" || rc == encoding.Identity || encoding.GetCompressor(rc) == nil
}

// send sends d on stream, which the replica serves having applied through
// applied: the shared message when shared is set (see shareable),
// otherwise a response marshaled for this stream.
func (w *decisionWire) send(stream grpc.ServerStream, shared bool, d *medmeshv1.Decision, applied uint64) error {
	if !shared {
		return stream.SendMsg(decisionResponse(d, applied))
	}
	m, err := w.message(stream, d, applied)
	if err != nil {
		return err
	}
	return stream.SendMsg(m)
}

// decisionResponse is the response carrying d, sent when the replica had
// applied through applied.
func decisionResponse(d *medmeshv1.Decision, applied uint64) *medmeshv1.WatchDecisionsResponse {
	return &medmeshv1.WatchDecisionsResponse{Decision: d, AppliedIndex: applied, ResumeToken: indexToken(d.GetIndex())}
}

// message returns d's shared message, prepared on stream if no stream has
// yet.
func (w *decisionWire) message(stream grpc.ServerStream, d *medmeshv1.Decision, applied uint64) (*grpc.PreparedMsg, error) {
	w.mu.Lock()
	m, ok := w.m[d]
	w.mu.Unlock()
	if ok {
		return m, nil
	}
	m = &grpc.PreparedMsg{}
	if err := m.Encode(stream, decisionResponse(d, applied)); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if prev, ok := w.m[d]; ok {
		return prev, nil
	}
	if old := w.ring[w.next]; old != nil {
		delete(w.m, old)
	}
	w.ring[w.next], w.m[d] = d, m
	w.next = (w.next + 1) % len(w.ring)
	return m, nil
}
