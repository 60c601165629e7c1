// Package auditlog is the coordinator's audit trail on disk: an
// append-only, hash-chained store of JSON Lines segments
// (<dir>/NNNNNNNN.seg). Every record carries its sequence number, the
// SHA-256 of the record before it and its own hash; Verify recomputes the
// whole chain and reports the first break.
//
// The FSM computes the chain (Next) while it applies the Raft log, so every
// replica derives the same hashes; only the chain's head lives in Raft state.
// The Store writes what the FSM computed.
package auditlog

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Head is the end of a chain: the number of records and the last hash
// (zero for an empty chain).
type Head struct {
	Seq  uint64
	Hash [32]byte
}

func (h Head) String() string { return fmt.Sprintf("%d:%x", h.Seq, h.Hash[:8]) }

// Body is what a record says, in a stable JSON form (encoding/json of this
// struct; protojson output is deliberately unstable, and the bytes are
// hashed).
type Body struct {
	Index    uint64 `json:"index"`
	Time     string `json:"time"`
	Actor    string `json:"actor,omitempty"`
	Action   string `json:"action"`
	Resource string `json:"resource,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Rule     string `json:"rule,omitempty"`
	AlertID  string `json:"alert_id,omitempty"`
	Comment  string `json:"comment,omitempty"`
	// Note is set on anchor records only.
	Note string `json:"note,omitempty"`
}

// BodyOf converts an audit record. Times are UTC with nanoseconds.
func BodyOf(r *medmeshv1.AuditRecord) Body {
	return Body{
		Index: r.GetIndex(), Time: r.GetTime().AsTime().UTC().Format(time.RFC3339Nano),
		Actor: r.GetActor(), Action: r.GetAction(), Resource: r.GetResource(), Reason: r.GetReason(),
		Rule: r.GetRule(), AlertID: r.GetAlertId(), Comment: r.GetComment(),
	}
}

// Record converts a body back to the API's audit record.
func (b Body) Record() *medmeshv1.AuditRecord {
	r := &medmeshv1.AuditRecord{
		Index: b.Index, Actor: b.Actor, Action: b.Action, Resource: b.Resource,
		Reason: b.Reason, Rule: b.Rule, AlertId: b.AlertID, Comment: b.Comment,
	}
	if t, err := time.Parse(time.RFC3339Nano, b.Time); err == nil {
		r.Time = timestamppb.New(t)
	}
	return r
}

// Entry is one record of the chain as it is written: Body holds the exact
// bytes that were hashed.
type Entry struct {
	Seq  uint64
	Prev [32]byte
	Hash [32]byte
	Body []byte
	// Anchor marks a continuation record: the store did not hold the
	// records before Seq+1 and adopted (Seq, Hash) from the replicated head.
	Anchor bool
	// Time is the record's time, the one in Body, kept decoded by Next so
	// the store need not parse every body it writes (zero for an anchor
	// and for an entry read back from disk).
	Time time.Time
}

// Head is the chain's head after e.
func (e Entry) Head() Head { return Head{Seq: e.Seq, Hash: e.Hash} }

// Next chains r after head: the entry to write and, through its Head, the
// new head. It is a pure function, so every replica computes the same.
func Next(head Head, r *medmeshv1.AuditRecord) Entry {
	body, err := json.Marshal(BodyOf(r))
	if err != nil {
		panic(fmt.Sprintf("auditlog: marshal body: %v", err)) // a struct of strings always marshals
	}
	e := Entry{Seq: head.Seq + 1, Prev: head.Hash, Body: body, Time: r.GetTime().AsTime()}
	e.Hash = hash(e.Seq, e.Prev, body)
	return e
}

// hash is SHA-256(prev || seq as 8 big-endian bytes || body).
func hash(seq uint64, prev [32]byte, body []byte) [32]byte {
	h := sha256.New()
	h.Write(prev[:])
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	h.Write(b[:])
	h.Write(body)
	return [32]byte(h.Sum(nil))
}

// line is the on-disk form of an entry.
type line struct {
	Seq    uint64          `json:"seq"`
	Prev   string          `json:"prev"`
	Hash   string          `json:"hash"`
	Anchor bool            `json:"anchor,omitempty"`
	Body   json.RawMessage `json:"body"`
}

// marshal writes e as one line, the body verbatim.
func (e Entry) marshal() []byte {
	b := make([]byte, 0, len(e.Body)+200)
	b = fmt.Appendf(b, `{"seq":%d,"prev":"%x","hash":"%x",`, e.Seq, e.Prev, e.Hash)
	if e.Anchor {
		b = append(b, `"anchor":true,`...)
	}
	b = append(b, `"body":`...)
	b = append(b, e.Body...)
	return append(b, "}\n"...)
}

func parseLine(b []byte) (Entry, error) {
	var l line
	if err := json.Unmarshal(b, &l); err != nil {
		return Entry{}, fmt.Errorf("malformed record: %w", err)
	}
	e := Entry{Seq: l.Seq, Anchor: l.Anchor, Body: l.Body}
	if err := decodeHash(l.Prev, &e.Prev); err != nil {
		return Entry{}, fmt.Errorf("prev: %w", err)
	}
	if err := decodeHash(l.Hash, &e.Hash); err != nil {
		return Entry{}, fmt.Errorf("hash: %w", err)
	}
	return e, nil
}

func decodeHash(s string, out *[32]byte) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return fmt.Errorf("not a SHA-256 in hex: %q", s)
	}
	copy(out[:], b)
	return nil
}

// bodyTime is the record time of a body, zero when it has none.
func bodyTime(body []byte) time.Time {
	var b Body
	if json.Unmarshal(body, &b) != nil {
		return time.Time{}
	}
	t, _ := time.Parse(time.RFC3339Nano, b.Time)
	return t
}
