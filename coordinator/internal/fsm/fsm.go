// Package fsm is the coordinator's replicated state machine: the Raft FSM,
// its command envelope and the state store it maintains, split by resource.
//
// Apply is deterministic: every time and identifier comes from the command,
// stamped by the leader. Values stored in the state are never mutated after
// they are stored (copy on write), so readers and snapshots can share them.
package fsm

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/coordinator/internal/auditlog"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Sentinel errors returned in Result.Err; the API maps them to gRPC codes.
var (
	ErrNotFound           = errors.New("not found")
	ErrVersionMismatch    = errors.New("version mismatch")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrInvalid            = errors.New("invalid command")
	// ErrPermissionDenied: the identity the leader stamped may not do this
	// (an operator's enforce-mode policy, an approver reviewing a decision
	// its own identity caused).
	ErrPermissionDenied = errors.New("permission denied")
)

// Result is what Apply returns for one command.
type Result struct {
	// Index is the Raft index that committed the command.
	Index  uint64
	Err    error
	Device *medmeshv1.Device
	Policy *medmeshv1.Policy
	// Decision is the first of Decisions.
	Decision *medmeshv1.Decision
	// Decisions are the decisions the command appended, in log order (a
	// class policy fans out into one per device).
	Decisions []*medmeshv1.Decision
	Alert     *medmeshv1.Alert
	Rule      *medmeshv1.ResponseRule
	// Intel is the bundle an IntelActivate made active.
	Intel *medmeshv1.IntelBundle
	// Sink is the sink a SinkPut stored or a SinkDelete removed.
	Sink *medmeshv1.Sink
	// SBOM is the attachment an SBOMAttach made.
	SBOM *medmeshv1.SBOMAttachment
	// Exception is the exception an ExceptionAccept or ExceptionRevoke
	// made or ended.
	Exception *medmeshv1.RiskException
	// MDS2 is the attachment an MDS2Attach made.
	MDS2 *medmeshv1.MDS2Attachment
	// Account is the account an account command stored or touched.
	Account *medmeshv1.Account
	// Import is the diff a DeviceImport made.
	Import *medmeshv1.ImportDevicesResponse
	// Acks holds, for a sensor batch, each sensor's last applied seq.
	Acks map[string]uint64
	// Duplicate: the command's client request was applied before, at
	// Index; this is that first result and nothing was applied again.
	Duplicate bool
}

func (r *Result) addDecisions(ds []*medmeshv1.Decision) {
	r.Decisions = append(r.Decisions, ds...)
	if r.Decision == nil && len(r.Decisions) > 0 {
		r.Decision = r.Decisions[0]
	}
}

// FSM is the raft.FSM of the coordinator.
type FSM struct {
	mu      sync.RWMutex
	st      *state
	changed chan struct{} // closed and replaced after every apply
	audit   AuditStore    // nil: the trail is kept in the state's window only

	// Risk changes collected for the leader's assessor (state_risk.go).
	riskDirty map[string]bool
	riskAll   bool
	riskCh    chan struct{}
}

// AuditStore is where the FSM writes the audit chain as it applies the log
// (auditlog.Store). Append skips entries it already holds and anchors after
// a gap; Adopt moves it to a restored snapshot's head; Sync makes what was
// written durable.
type AuditStore interface {
	Append(auditlog.Entry) error
	Adopt(auditlog.Head) error
	Sync() error
}

// SetAuditStore sets the audit store, before the FSM is used. The store
// receives every record from the next apply or restore on.
func (f *FSM) SetAuditStore(s AuditStore) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.audit = s
}

// SetRetention replaces DefaultRetention. Every replica must use the same
// value (tests and the soak use shorter ones); call it before the FSM is
// used.
func (f *FSM) SetRetention(r Retention) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.retention = r
}

var _ raft.FSM = (*FSM)(nil)

// New returns an empty FSM.
func New() *FSM {
	return &FSM{st: newState(), changed: make(chan struct{}), riskCh: make(chan struct{}, 1)}
}

// Apply applies one committed log entry.
func (f *FSM) Apply(l *raft.Log) any {
	var cmd fsmpb.Command
	if err := proto.Unmarshal(l.Data, &cmd); err != nil {
		// A log entry we cannot decode is skipped identically on every replica.
		f.mu.Lock()
		f.st.applied = l.Index
		f.notifyLocked()
		f.mu.Unlock()
		return &Result{Index: l.Index, Err: fmt.Errorf("decode command at index %d: %w", l.Index, ErrInvalid)}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	res := f.st.apply(l.Index, &cmd)
	f.writeAuditLocked(l.Index)
	f.collectRiskLocked()
	f.st.applied = l.Index
	f.notifyLocked()
	return res
}

// writeAuditLocked writes the entries the last command chained to the audit
// store. The audit trail fails closed: an entry that cannot be written
// stops this coordinator (a panic in Apply), because Apply cannot refuse a
// committed entry without diverging from the other replicas. The leader
// answers a write only after applying it, so an unaudited change is never
// acknowledged by this coordinator; the entry stays in the Raft log and is
// applied again, and audited, when the coordinator restarts with a working
// disk. Replicas whose disks work apply and audit it meanwhile.
func (f *FSM) writeAuditLocked(index uint64) {
	out := f.st.auditOut
	f.st.auditOut = nil
	if f.audit == nil {
		return
	}
	for _, e := range out {
		if err := f.audit.Append(e); err != nil {
			panic(fmt.Sprintf("medmesh: audit record %d of index %d cannot be written; stopping rather than apply an unaudited change: %v", e.Seq, index, err))
		}
	}
}

// ApplyCommand applies cmd at index directly, outside Raft (tests, replay).
func (f *FSM) ApplyCommand(index uint64, cmd *fsmpb.Command) *Result {
	data, err := proto.Marshal(cmd)
	if err != nil {
		return &Result{Index: index, Err: err}
	}
	return f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}).(*Result)
}

func (f *FSM) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Changed returns a channel closed at the next apply or restore.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

// AppliedIndex is the index of the last entry applied (or restored).
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.applied
}

// Snapshot captures the state cheaply: maps and slices of immutable values
// are copied, the values are shared.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	// Every record the snapshot covers must be durable: after the snapshot
	// Raft may drop the log entries that would derive them again.
	if f.audit != nil {
		if err := f.audit.Sync(); err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
	}
	return &snapshot{st: f.st.shallowCopy()}, nil
}

// Restore replaces the state with the snapshot read from rc.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := readSnapshot(rc)
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st.retention = f.st.retention
	if f.audit != nil {
		// Catch the store up with the snapshot's window; records before the
		// window that this replica never applied are marked by an anchor.
		for _, e := range st.auditEntries() {
			if err := f.audit.Append(e); err != nil {
				return fmt.Errorf("restore snapshot: audit store: %w", err)
			}
		}
		if err := f.audit.Adopt(st.auditHead); err != nil {
			return fmt.Errorf("restore snapshot: audit store: %w", err)
		}
	}
	f.st = st
	st.riskAll = true // everything may have changed
	f.collectRiskLocked()
	f.notifyLocked()
	return nil
}

// Hash returns a digest of the whole state, equal on replicas that applied
// the same log.
func (f *FSM) Hash() ([32]byte, error) {
	f.mu.RLock()
	st := f.st.shallowCopy()
	f.mu.RUnlock()
	return st.hash()
}
