package api

import (
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// decisionWire holds the wire encoding of recently sent decisions, so that
// a decision every watch stream sends is marshaled once per coordinator,
// not once per stream: with a hundred enforcers watching, marshaling the
// same decision for each of them was about a third of the CPU a watch
// stream spent sending it.
//
// What is cached is the part of a WatchDecisionsResponse that depends on
// the decision alone, fields decision and resume_token, already encoded as
// fields; a stream sends it as the unknown fields of a response that sets
// only applied_index (which differs with the moment a stream reads). The
// bytes on the wire are the fields a marshal of the whole response writes,
// in another order, which protobuf decoders accept (a message's fields may
// come in any order). The FSM never changes a decision it holds: an update
// replaces it (see applyDecisionReview), so the decision's pointer is its
// key, and an entry cannot outlive a change.
type decisionWire struct {
	mu   sync.Mutex
	m    map[*medmeshv1.Decision][]byte
	ring []*medmeshv1.Decision // the keys in insertion order, for eviction
	next int                   // the ring slot the next key replaces
}

// decisionWireSize is how many decisions the cache holds: well above the
// decisions a burst applies before every caught-up stream has sent them.
// A stream catching up from further back marshals its own.
const decisionWireSize = 256

func newDecisionWire() *decisionWire {
	return &decisionWire{m: make(map[*medmeshv1.Decision][]byte, decisionWireSize), ring: make([]*medmeshv1.Decision, decisionWireSize)}
}

// Field numbers of WatchDecisionsResponse that decisionWire encodes.
var (
	wireDecisionField = fieldNumber("decision")
	wireTokenField    = fieldNumber("resume_token")
)

func fieldNumber(name string) protowire.Number {
	fd := (&medmeshv1.WatchDecisionsResponse{}).ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
	if fd == nil {
		panic("WatchDecisionsResponse has no field " + name)
	}
	return fd.Number()
}

// response returns the WatchDecisionsResponse carrying d, sent when the
// replica had applied through applied.
func (w *decisionWire) response(d *medmeshv1.Decision, applied uint64) (*medmeshv1.WatchDecisionsResponse, error) {
	b, err := w.fields(d)
	if err != nil {
		return nil, err
	}
	r := &medmeshv1.WatchDecisionsResponse{AppliedIndex: applied}
	r.ProtoReflect().SetUnknown(b)
	return r, nil
}

// fields returns d's decision and resume_token fields, encoded.
func (w *decisionWire) fields(d *medmeshv1.Decision) ([]byte, error) {
	w.mu.Lock()
	b, ok := w.m[d]
	w.mu.Unlock()
	if ok {
		return b, nil
	}
	enc, err := proto.Marshal(d)
	if err != nil {
		return nil, err
	}
	tok := indexToken(d.GetIndex())
	b = make([]byte, 0, protowire.SizeTag(wireDecisionField)+protowire.SizeBytes(len(enc))+
		protowire.SizeTag(wireTokenField)+protowire.SizeBytes(len(tok)))
	b = protowire.AppendTag(b, wireDecisionField, protowire.BytesType)
	b = protowire.AppendBytes(b, enc)
	b = protowire.AppendTag(b, wireTokenField, protowire.BytesType)
	b = protowire.AppendString(b, tok)
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.m[d]; !ok {
		if old := w.ring[w.next]; old != nil {
			delete(w.m, old)
		}
		w.ring[w.next], w.m[d] = d, b
		w.next = (w.next + 1) % len(w.ring)
	}
	return b, nil
}
