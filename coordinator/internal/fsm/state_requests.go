package fsm

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
)

// Bounds of the table of remembered client requests. A retry comes within
// seconds (a client retries within its timeout); ten minutes covers an
// operator who retries by hand.
const (
	// RequestWindow is how long (in leader time) a request is remembered.
	RequestWindow = 10 * 60 // seconds
	// MaxRequests bounds the table; the oldest requests go first.
	MaxRequests = 100_000
	// MaxRequestIDLength bounds a client request id, in bytes.
	MaxRequestIDLength = 64
)

// request is a client request the FSM applied, and what it answered.
type request struct {
	key     string // identity + "\x00" + id
	req     *fsmpb.ClientRequest
	index   uint64
	time    *timestamppb.Timestamp
	command int32 // the command's oneof field number
	res     *Result
}

// requestTable remembers applied client requests, oldest first, so a retry
// gets the first result instead of a second application. It is replicated
// state: it changes only in apply and is in every snapshot, so every
// replica and every future leader dedups the same way.
type requestTable struct {
	byKey map[string]*request
	order []*request // by index; order[head:] are remembered
	head  int
	// window (seconds of leader time) and max bound the table; tests
	// shrink them.
	window int64
	max    int
}

func newRequestTable() requestTable {
	return requestTable{byKey: map[string]*request{}, window: RequestWindow, max: MaxRequests}
}

// all returns the remembered requests, oldest first.
func (t *requestTable) all() []*request { return t.order[t.head:] }

func (t *requestTable) copy() requestTable {
	c := requestTable{byKey: make(map[string]*request, len(t.byKey)), order: append([]*request(nil), t.all()...), window: t.window, max: t.max}
	for k, v := range t.byKey {
		c.byKey[k] = v
	}
	return c
}

func requestKey(r *fsmpb.ClientRequest) string { return r.GetIdentity() + "\x00" + r.GetId() }

// evict forgets the requests older than the window before now (leader
// time of the entry being applied), and the oldest ones while the table is
// full. It depends only on the log, so every replica evicts the same
// entries. Leaders' clocks may disagree a little: an entry stamped earlier
// than its predecessor only waits for them.
func (t *requestTable) evict(now *timestamppb.Timestamp) {
	for t.head < len(t.order) {
		r := t.order[t.head]
		if len(t.order)-t.head < t.max && now.GetSeconds()-r.time.GetSeconds() <= t.window {
			break
		}
		delete(t.byKey, r.key)
		t.order[t.head] = nil
		t.head++
	}
	if t.head > 1024 && t.head > len(t.order)/2 {
		t.order = append([]*request(nil), t.order[t.head:]...)
		t.head = 0
	}
}

func (t *requestTable) add(r *request) {
	t.byKey[r.key] = r
	t.order = append(t.order, r)
}

// commandNumber is the oneof field number of cmd's command.
func commandNumber(cmd *fsmpb.Command) int32 {
	m := cmd.ProtoReflect()
	od := m.Descriptor().Oneofs().ByName("command")
	if fd := m.WhichOneof(od); fd != nil {
		return int32(fd.Number())
	}
	return 0
}

// checkRequest validates a command's client request.
func checkRequest(r *fsmpb.ClientRequest) error {
	if r.GetIdentity() == "" || r.GetId() == "" || len(r.GetId()) > MaxRequestIDLength {
		return fmt.Errorf("client request %q of %q: identity and an id of 1-%d bytes are required: %w", r.GetId(), r.GetIdentity(), MaxRequestIDLength, ErrInvalid)
	}
	return nil
}

// errorKinds names the sentinel errors a remembered result may carry, so a
// result restored from a snapshot maps to the same gRPC code.
var errorKinds = []struct {
	name string
	err  error
}{
	{"not_found", ErrNotFound},
	{"version_mismatch", ErrVersionMismatch},
	{"failed_precondition", ErrFailedPrecondition},
	{"invalid", ErrInvalid},
	{"permission_denied", ErrPermissionDenied},
}

func errorKind(err error) string {
	for _, k := range errorKinds {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return "other"
}

// restoredError is a remembered error read back from a snapshot: the same
// message, wrapping the same sentinel.
type restoredError struct {
	msg      string
	sentinel error
}

func (e *restoredError) Error() string { return e.msg }
func (e *restoredError) Unwrap() error { return e.sentinel }

func restoreError(kind, msg string) error {
	if kind == "" {
		return nil
	}
	for _, k := range errorKinds {
		if k.name == kind {
			return &restoredError{msg: msg, sentinel: k.err}
		}
	}
	return &restoredError{msg: msg}
}

func (r *request) item() *fsmpb.DedupEntry {
	e := &fsmpb.DedupEntry{
		Request: r.req, Index: r.index, Time: r.time, Command: r.command,
		Device: r.res.Device, Policy: r.res.Policy, Decision: r.res.Decision, Alert: r.res.Alert, Rule: r.res.Rule,
		Intel: r.res.Intel, Sbom: r.res.SBOM, Exception: r.res.Exception, Mds2: r.res.MDS2, Sink: r.res.Sink, Account: r.res.Account, Import: r.res.Import,
	}
	if r.res.Err != nil {
		e.ErrorKind, e.Error = errorKind(r.res.Err), r.res.Err.Error()
	}
	return e
}

func requestFromItem(e *fsmpb.DedupEntry) (*request, error) {
	if err := checkRequest(e.GetRequest()); err != nil {
		return nil, err
	}
	return &request{
		key: requestKey(e.GetRequest()), req: e.GetRequest(), index: e.GetIndex(), time: e.GetTime(), command: e.GetCommand(),
		res: &Result{Index: e.GetIndex(), Device: e.GetDevice(), Policy: e.GetPolicy(), Decision: e.GetDecision(), Alert: e.GetAlert(), Rule: e.GetRule(),
			Intel: e.GetIntel(), SBOM: e.GetSbom(), Exception: e.GetException(), MDS2: e.GetMds2(), Sink: e.GetSink(), Account: e.GetAccount(), Import: e.GetImport(),
			Err: restoreError(e.GetErrorKind(), e.GetError())},
	}, nil
}

// replay answers a request applied before: a copy of its first result,
// marked Duplicate. A request id reused for another kind of command is
// refused.
func (r *request) replay(cmd int32) *Result {
	if r.command != cmd {
		return &Result{Err: fmt.Errorf("request id %q was used at index %d for another command: %w", r.req.GetId(), r.index, ErrFailedPrecondition)}
	}
	res := *r.res
	res.Duplicate = true
	return &res
}

// RequestApplied reports the index at which the client request (identity,
// id) was applied, if the table still remembers it.
func (f *FSM) RequestApplied(identity, id string) (uint64, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r, ok := f.st.requests.byKey[requestKey(&fsmpb.ClientRequest{Identity: identity, Id: id})]
	if !ok {
		return 0, false
	}
	return r.index, true
}
