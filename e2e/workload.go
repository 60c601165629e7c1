//go:build e2e && linux

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Workload is several clients doing GetPolicy, PutPolicy and CAS
// (PutPolicy with expected_version) against random coordinators, recording
// every outcome with its call and return times. Every write carries a
// request id of its own; a write whose outcome is unknown (UNAVAILABLE
// after it may have been sent, UNKNOWN, a deadline) is retried with that
// id through random coordinators, as the CLI does, and is one operation
// from its first call to its last answer. An operation either definitely
// happened, definitely did not, or is recorded as unknown when no retry
// settled it. CheckNoDuplicatedEffects then checks, in the audit trail,
// that no request took effect twice.
type Workload struct {
	// Clients[i] are the coordinators' policy clients (c1..c3).
	Coordinators []medmeshv1.PolicyServiceClient
	Names        []string // coordinator names, parallel to Coordinators
	NClients     int
	Keys         []string
	Seed         uint64
	// Epoch is time zero of the history's timestamps.
	Epoch     time.Time
	OpTimeout time.Duration

	mu  sync.Mutex
	ops []Op
	// refused are the writes that failed before reaching Raft (not in the
	// history: they did not happen), kept for the report.
	refused []Op
}

// Refused returns the writes judged never proposed, with their errors.
func (w *Workload) Refused() []Op {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Op(nil), w.refused...)
}

// Run runs the clients until ctx ends and returns the history.
func (w *Workload) Run(ctx context.Context) []Op {
	var wg sync.WaitGroup
	for c := 0; c < w.NClients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.client(ctx, c)
		}()
	}
	wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Op(nil), w.ops...)
}

func (w *Workload) now() int64 { return time.Since(w.Epoch).Nanoseconds() }

func (w *Workload) record(op Op) {
	w.mu.Lock()
	w.ops = append(w.ops, op)
	w.mu.Unlock()
}

// RegisterPolicy is the policy a workload write stores: a monitor-mode,
// inactive policy for a device class the lab does not have, so writes never
// change what an enforcer does.
func RegisterPolicy(name, value string) *medmeshv1.Policy {
	return &medmeshv1.Policy{
		Name:        name,
		Subject:     &medmeshv1.Policy_DeviceClass{DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_BUILDING_AUTOMATION},
		Mode:        medmeshv1.PolicyMode_POLICY_MODE_MONITOR,
		Description: value,
		Rules: []*medmeshv1.Rule{{
			Name: "bacnet", Peer: &medmeshv1.Rule_PeerCidr{PeerCidr: "10.98.0.0/24"}, Protocol: 17, PortMin: 47808, PortMax: 47808,
		}},
	}
}

func (w *Workload) client(ctx context.Context, c int) {
	rnd := rand.New(rand.NewPCG(w.Seed, uint64(c)))
	seen := map[string]uint64{}
	for i := 0; ctx.Err() == nil; i++ {
		srv := rnd.IntN(len(w.Coordinators))
		pc := w.Coordinators[srv]
		op := Op{Client: c, Key: w.Keys[rnd.IntN(len(w.Keys))], Server: w.Names[srv]}
		opCtx, cancel := context.WithTimeout(context.Background(), w.OpTimeout)
		op.Call = w.now()
		var err error
		switch r := rnd.IntN(10); {
		case r < 4:
			op.Kind = OpGet
			var resp *medmeshv1.GetPolicyResponse
			resp, err = pc.GetPolicy(opCtx, &medmeshv1.GetPolicyRequest{Name: op.Key})
			op.Return = w.now()
			switch {
			case err == nil:
				op.OK, op.Version, op.Read = true, resp.GetPolicy().GetVersion(), resp.GetPolicy().GetDescription()
				seen[op.Key] = op.Version
				w.record(op)
			case status.Code(err) == codes.NotFound:
				w.record(op) // a read of the absent register
			}
			// Any other failed read tells nothing: not recorded.
		default:
			op.Kind, op.Value = OpPut, fmt.Sprintf("c%d-%d", c, i)
			op.RequestID = fmt.Sprintf("%x-%x-c%d-%d", w.Epoch.UnixNano(), w.Seed, c, i) // unique, at most 64 bytes
			req := &medmeshv1.PutPolicyRequest{Policy: RegisterPolicy(op.Key, op.Value), Actor: "e2e", RequestId: op.RequestID}
			if r >= 7 {
				op.Kind, op.Expected = OpCAS, seen[op.Key]
				req.ExpectedVersion = &op.Expected
			}
			var resp *medmeshv1.PutPolicyResponse
			resp, err = pc.PutPolicy(opCtx, req)
			op.Attempts = 1
			// Retry an ambiguous outcome with the same request id: applied
			// at most once, and the answer is the first application's.
			sent := !notSent(err)
			for err != nil && op.Attempts < writeAttempts && ctx.Err() == nil && retryable(err) {
				select {
				case <-ctx.Done():
				case <-time.After(time.Duration(op.Attempts) * 50 * time.Millisecond):
				}
				rc, rcancel := context.WithTimeout(context.Background(), w.OpTimeout)
				srv := rnd.IntN(len(w.Coordinators))
				resp, err = w.Coordinators[srv].PutPolicy(rc, req)
				rcancel()
				op.Attempts++
				if err == nil || !notSent(err) {
					sent = true
				}
			}
			op.Return = w.now()
			if err != nil && notSent(err) && sent {
				// This attempt was refused, but an earlier one may have
				// been proposed.
				err = status.Error(codes.Unknown, "outcome unknown after retries: "+err.Error())
			}
			switch {
			case err == nil:
				op.OK, op.Version = true, resp.GetPolicy().GetVersion()
				seen[op.Key] = op.Version
				w.record(op)
			case notSent(err),
				status.Code(err) == codes.InvalidArgument, status.Code(err) == codes.NotFound,
				status.Code(err) == codes.FailedPrecondition:
				// Refused before Raft, or rejected: nothing happened.
				op.Err = err.Error()
				w.mu.Lock()
				w.refused = append(w.refused, op)
				w.mu.Unlock()
			case status.Code(err) == codes.Aborted:
				// The version did not match: definitely not applied.
				op.Err = err.Error()
				w.record(op)
			default:
				op.Unknown, op.Err = true, err.Error()
				w.record(op)
			}
		}
		cancel()
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// writeAttempts bounds the attempts of one workload write.
const writeAttempts = 4

// retryable reports whether a write's failure leaves its outcome open, or
// says it was refused before Raft: both are retried with the request id.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Unknown, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return false
}

// notSent reports errors of requests that never reached Raft: the client
// could not connect, or the coordinator refused them before proposing.
//
// A follower forwards writes to the leader through a connection whose
// service config retries UNAVAILABLE (internal/grpcx): its final error
// ("max retries exhausted: ... connection refused") hides whether an
// earlier attempt reached the leader, so such an error is ambiguous.
func notSent(err error) bool {
	msg := status.Convert(err).Message()
	if strings.Contains(msg, "max retries exhausted") {
		return false
	}
	return status.Code(err) == codes.Unavailable &&
		(strings.Contains(msg, "Error while dialing") || strings.Contains(msg, "connection refused") ||
			strings.HasSuffix(msg, "no leader") || strings.HasSuffix(msg, "not the leader"))
}
