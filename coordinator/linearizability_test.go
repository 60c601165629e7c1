package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// The register model: one register per policy name, holding the policy's
// version and its description (the value clients write).

type regOp int

const (
	opGet regOp = iota
	opPut
	opCAS
)

type regInput struct {
	op       regOp
	key      string
	value    string
	expected uint64 // CAS: required stored version (0 = absent)
}

type regOutput struct {
	ok      bool // CAS applied; get: policy exists
	version uint64
	value   string
	unknown bool // the write may or may not have happened
}

type regState struct {
	version uint64
	value   string
}

var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(regInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return regState{} },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(regState), input.(regInput), output.(regOutput)
		next := regState{version: st.version + 1, value: in.value}
		switch in.op {
		case opGet:
			return out.version == st.version && out.value == st.value, st
		case opPut:
			if out.unknown {
				return true, next
			}
			return out.version == next.version, next
		default: // CAS
			match := st.version == in.expected
			if out.unknown {
				if match {
					return true, next
				}
				return true, st
			}
			if out.ok {
				return match && out.version == next.version, next
			}
			return !match, st
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		switch in.op {
		case opGet:
			return fmt.Sprintf("get(%s) -> v%d %q", in.key, out.version, out.value)
		case opPut:
			return fmt.Sprintf("put(%s, %q) -> v%d unknown=%v", in.key, in.value, out.version, out.unknown)
		default:
			return fmt.Sprintf("cas(%s, v%d, %q) -> ok=%v v%d unknown=%v", in.key, in.expected, in.value, out.ok, out.version, out.unknown)
		}
	},
}

// ambiguous reports whether a failed write may still have been committed.
func ambiguous(err error) bool {
	switch status.Code(err) {
	case codes.Aborted, codes.InvalidArgument, codes.NotFound:
		return false
	}
	return !notSent(err)
}

// notSent reports errors of requests that never reached Raft: the client
// could not connect, or the coordinator refused them before proposing
// ("no leader", "not the leader").
func notSent(err error) bool {
	msg := status.Convert(err).Message()
	return status.Code(err) == codes.Unavailable &&
		(strings.Contains(msg, "Error while dialing") || strings.Contains(msg, "connection refused") ||
			strings.HasSuffix(msg, "no leader") || strings.HasSuffix(msg, "not the leader"))
}

// nemesis injects one fault at a time: it kills the leader (and restarts it
// from its data directory) or cuts the leader off the Raft network (and
// heals it).
func (cl *cluster) nemesis(ctx context.Context, t *testing.T, log func(string)) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(600+rnd.IntN(600)) * time.Millisecond):
		}
		var leader *node
		for _, n := range cl.nodes {
			if n.up && n.c.IsLeader() {
				leader = n
			}
		}
		if leader == nil {
			continue
		}
		if i%2 == 0 {
			log(fmt.Sprintf("kill leader %s", leader.cfg.ID))
			leader.stop(true)
			time.Sleep(time.Duration(300+rnd.IntN(500)) * time.Millisecond)
			leader.start()
			log(fmt.Sprintf("restart %s", leader.cfg.ID))
		} else {
			log(fmt.Sprintf("partition leader %s", leader.cfg.ID))
			leader.c.layer.SetIsolated(true)
			time.Sleep(time.Duration(300+rnd.IntN(500)) * time.Millisecond)
			leader.c.layer.SetIsolated(false)
			log(fmt.Sprintf("heal %s", leader.cfg.ID))
		}
	}
}

func TestLinearizablePoliciesUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: fault-injection history takes ~10 s")
	}
	cl := newCluster(t, 3, nil)
	const (
		clients  = 6
		keys     = 8 // ambiguous (pending) operations make checking exponential per key: spread them
		duration = 8 * time.Second
	)
	start := time.Now()
	now := func() int64 { return time.Since(start).Nanoseconds() }

	var (
		mu      sync.Mutex
		history []porcupine.Operation
		acked   = map[string]int{} // definite successful writes per key
		unknown = map[string]int{}
		events  []string
	)
	record := func(op porcupine.Operation) {
		mu.Lock()
		history = append(history, op)
		mu.Unlock()
	}

	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cl.nemesis(ctx, t, func(s string) {
			mu.Lock()
			events = append(events, fmt.Sprintf("%6.2fs %s", time.Since(start).Seconds(), s))
			mu.Unlock()
		})
	}()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(c), 7))
			n := cl.nodes[c%len(cl.nodes)]
			pc := medmeshv1.NewPolicyServiceClient(n.raw) // every outcome recorded, no retries
			seen := map[string]uint64{}
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("k%d", rnd.IntN(keys))
				in := regInput{key: key, value: fmt.Sprintf("c%d-%d", c, i)}
				opCtx, opCancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
				call := now()
				switch r := rnd.IntN(10); {
				case r < 4:
					in.op = opGet
					resp, err := pc.GetPolicy(opCtx, &medmeshv1.GetPolicyRequest{Name: key})
					ret := now()
					switch {
					case err == nil:
						seen[key] = resp.GetPolicy().GetVersion()
						record(porcupine.Operation{ClientId: c, Input: in, Call: call, Return: ret,
							Output: regOutput{ok: true, version: resp.GetPolicy().GetVersion(), value: resp.GetPolicy().GetDescription()}})
					case status.Code(err) == codes.NotFound:
						record(porcupine.Operation{ClientId: c, Input: in, Call: call, Return: ret, Output: regOutput{}})
					default:
						time.Sleep(20 * time.Millisecond)
					}
				default:
					req := &medmeshv1.PutPolicyRequest{Policy: classPolicy(key, in.value), Actor: "porcupine"}
					in.op = opPut
					if r >= 7 {
						in.op, in.expected = opCAS, seen[key]
						req.ExpectedVersion = ptr(in.expected)
					}
					resp, err := pc.PutPolicy(opCtx, req)
					ret := now()
					out := regOutput{}
					switch {
					case err == nil:
						out.ok, out.version = true, resp.GetPolicy().GetVersion()
						seen[key] = out.version
						mu.Lock()
						acked[key]++
						mu.Unlock()
					case notSent(err):
						time.Sleep(20 * time.Millisecond) // refused before Raft: nothing happened
						opCancel()
						continue
					case ambiguous(err):
						if os.Getenv("MEDMESH_TEST_LOG") != "" {
							t.Logf("ambiguous: %v", err)
						}
						out.unknown = true
						ret = 1 << 62 // may take effect at any time after the call
						mu.Lock()
						unknown[key]++
						mu.Unlock()
					case status.Code(err) != codes.Aborted:
						t.Errorf("unexpected definite error: %v", err)
					}
					record(porcupine.Operation{ClientId: c, Input: in, Call: call, Return: ret, Output: out})
					if err != nil {
						time.Sleep(20 * time.Millisecond)
					}
				}
				opCancel()
			}
		}()
	}
	wg.Wait()
	for _, n := range cl.nodes {
		if !n.up {
			n.start()
		}
		n.c.layer.SetIsolated(false)
	}
	cl.waitReady()

	// Final reads: every acknowledged write is there.
	for k := 0; k < keys; k++ {
		key := fmt.Sprintf("k%d", k)
		var (
			call int64
			resp *medmeshv1.GetPolicyResponse
			err  error
		)
		for try := 0; ; try++ { // the client may still be reconnecting
			call = now()
			resp, err = cl.nodes[k%3].policies().GetPolicy(ctxT(t, 2*time.Second), &medmeshv1.GetPolicyRequest{Name: key})
			if err == nil || status.Code(err) == codes.NotFound {
				break
			}
			if try == 100 {
				t.Fatalf("final read %s: %v", key, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		v := resp.GetPolicy().GetVersion()
		record(porcupine.Operation{ClientId: clients, Input: regInput{op: opGet, key: key}, Call: call, Return: now(),
			Output: regOutput{ok: err == nil, version: v, value: resp.GetPolicy().GetDescription()}})
		if v < uint64(acked[key]) || v > uint64(acked[key]+unknown[key]) {
			t.Errorf("%s: final version %d, want between %d acknowledged and %d acknowledged+ambiguous writes", key, v, acked[key], acked[key]+unknown[key])
		}
	}
	// Replicas converge to the same state.
	var h0 [32]byte
	for i, n := range cl.nodes {
		want := cl.leader().c.FSM().AppliedIndex()
		var h [32]byte
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && n.c.FSM().AppliedIndex() < want {
			time.Sleep(10 * time.Millisecond)
		}
		h, _ = n.c.FSM().Hash()
		if i == 0 {
			h0 = h
		} else if h != h0 {
			t.Errorf("replica %s state differs from %s", n.cfg.ID, cl.nodes[0].cfg.ID)
		}
	}

	total := 0
	for _, v := range acked {
		total += v
	}
	unk := 0
	for _, v := range unknown {
		unk += v
	}
	for _, e := range events {
		t.Log("nemesis:", e)
	}
	t.Logf("history: %d operations, %d acknowledged writes, %d ambiguous", len(history), total, unk)
	if total < 50 {
		t.Errorf("only %d acknowledged writes: the workload did not run", total)
	}
	res, info := porcupine.CheckOperationsVerbose(registerModel, history, 30*time.Second)
	if res != porcupine.Ok {
		// Kept after the test (a failure under CI's load has not been
		// reproduced alone), and the offending keys' operations logged.
		if f, err := os.CreateTemp("", "medmesh-linearizability-*.html"); err == nil {
			f.Close()
			if err := porcupine.VisualizePath(registerModel, info, f.Name()); err == nil {
				t.Logf("visualization: %s", f.Name())
			}
		}
		logIllegalKeys(t, history)
		t.Fatalf("history is not linearizable: %v", res)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		t.Log("workload cancelled early")
	}
}

// logIllegalKeys logs, for every key whose own history is not
// linearizable, its operations in call order (times in ms from the start;
// "?" for a write whose outcome is unknown).
func logIllegalKeys(t *testing.T, history []porcupine.Operation) {
	byKey := map[string][]porcupine.Operation{}
	for _, op := range history {
		k := op.Input.(regInput).key
		byKey[k] = append(byKey[k], op)
	}
	for k, ops := range byKey {
		if porcupine.CheckOperationsTimeout(registerModel, ops, 10*time.Second) == porcupine.Ok {
			continue
		}
		slices.SortFunc(ops, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
		for _, op := range ops {
			ret := fmt.Sprintf("%.1f", float64(op.Return)/1e6)
			if op.Return == 1<<62 {
				ret = "?"
			}
			t.Logf("%s: client %d [%.1f..%s] %+v -> %+v", k, op.ClientId, float64(op.Call)/1e6, ret, op.Input, op.Output)
		}
	}
}
