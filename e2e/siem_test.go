//go:build e2e && linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/deploy/lab"
	"github.com/medmesh/medmesh/internal/testutil/siem"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// siemSink names the sink the SIEM step puts (and removes after).
const siemSink = "e2e-siem"

// siemAcrossLeaderKill is issue 20's SIEM acceptance on the lab: Debian's
// rsyslogd listens with TLS (gtls, RFC 5425) on the host's loopback, where
// the lab's coordinators run; the lab's approver puts a CEF syslog sink
// from the start of the retained history (the scenario's alerts and the
// audit trail, thousands of records after the histories' workloads, are
// its backlog); the leader that runs it is killed with
// SIGKILL as soon as rsyslogd has the first line, and restarted once the
// new leader's sink is at the head. Then every alert of the cluster is at
// rsyslogd, an id sent twice is the same event (a receiver that dedupes by
// id sees each once), no id is foreign to the cluster, and every line
// parses as RFC 5424 with a CEF payload by siem's parsers, written from
// the specifications. scenarioRan: the compromised-device scenario ran
// before, so there are alerts to deliver.
func siemAcrossLeaderKill(t *testing.T, l *lab.Lab, r *Runner, rep *Report, scenarioRan bool) {
	res := &SIEMReport{ElectionMs: -1, CatchUpMs: -1}
	rep.SIEM = res
	bad := func(format string, args ...any) {
		v := fmt.Sprintf(format, args...)
		res.Violations = append(res.Violations, v)
		t.Logf("siem: %s", v) // finish reports it as an error
	}
	if err := siem.Available(); err != nil {
		bad("%v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := r.Healthy(ctx, time.Minute); err != nil {
		bad("lab unhealthy before: %v", err)
		return
	}
	dir := t.TempDir()
	logFile, err := os.Create(filepath.Join(dir, "rsyslogd.log"))
	if err != nil {
		bad("%v", err)
		return
	}
	defer logFile.Close()
	// Marked as the lab's, so `medmesh-lab down` stops it if this test
	// dies before it does.
	rcv, err := siem.Start(dir, siem.Options{Stderr: logFile, Env: []string{lab.EnvMarker + "=" + l.Config().Prefix}})
	if err != nil {
		bad("start rsyslogd: %v", err)
		return
	}
	defer func() {
		if err := rcv.Close(); err != nil {
			bad("%v", err)
		}
	}()
	res.Receiver = "rsyslogd (imtcp, gtls) on " + rcv.Addr

	// The sink, from the start of the retained history. A sink of that
	// name left by an earlier run on a reused lab is removed first: a
	// replaced sink keeps its positions.
	if err := r.deleteSink(ctx, "e2e: remove a SIEM sink left by an earlier run"); err != nil {
		bad("delete an earlier %s: %v", siemSink, err)
		return
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		if err := r.deleteSink(dctx, "e2e: SIEM step done"); err != nil {
			bad("delete %s: %v", siemSink, err)
		}
	}()
	// The leader runs the sinks: it is the one killed.
	st, err := r.status(ctx)
	if err != nil {
		bad("cluster status: %v", err)
		return
	}
	victim := st.GetLeader()
	vi := slices.Index(r.names, victim)
	if vi < 0 {
		bad("the leader %q is not one of %v", victim, r.names)
		return
	}
	res.Victim = victim
	put := &medmeshv1.PutSinkRequest{
		Sink: &medmeshv1.Sink{Name: siemSink, Kind: medmeshv1.SinkKind_SINK_KIND_SYSLOG, Format: medmeshv1.SinkFormat_SINK_FORMAT_CEF,
			Address: rcv.Addr, Tls: true, CaFile: rcv.CAFile},
		StartAtBeginning: true, Reason: "e2e: SIEM delivery across a leader kill (issue 20)", RequestId: requestID("siem-put"),
	}
	if err := r.write(ctx, func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := medmeshv1.NewSinkServiceClient(c).PutSink(ctx, put)
		return err
	}); err != nil {
		bad("put sink: %v", err)
		return
	}

	// Kill the leader once delivery has begun: its delivered positions
	// are committed every 500 ms, so the new leader resumes behind what
	// the receiver has and sends some events again.
	first := time.Now().Add(30 * time.Second)
	for size(rcv.Out) == 0 {
		if time.Now().After(first) {
			bad("nothing reached rsyslogd within 30s of the put")
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	kill := &Kill{Lab: r.Lab, Target: Fixed(victim), Restart: true}
	if err := kill.Inject(ctx); err != nil {
		bad("kill %s: %v", victim, err)
		return
	}
	killed := time.Now()
	healed := false
	heal := func() {
		if healed {
			return
		}
		healed = true
		if err := kill.Heal(ctx); err != nil {
			bad("restart %s: %v", victim, err)
		}
	}
	defer heal()
	res.LinesAtKill = lines(rcv.Out)
	var survivors []*grpc.ClientConn
	for i, c := range r.conns {
		if i != vi {
			survivors = append(survivors, c)
		}
	}
	// What the dead leader had committed: the survivors' state right after
	// the kill (no leader can commit until the election).
	res.CommittedAtKill = "unknown"
	for _, c := range survivors {
		lctx, lcancel := context.WithTimeout(ctx, time.Second)
		ls, err := medmeshv1.NewSinkServiceClient(c).ListSinks(lctx, &medmeshv1.ListSinksRequest{Consistency: medmeshv1.ReadConsistency_READ_CONSISTENCY_STALE})
		lcancel()
		if err != nil {
			res.CommittedAtKill = "unknown: " + err.Error()
			continue
		}
		for _, s := range ls.GetSinks() {
			if s.GetName() == siemSink {
				res.CommittedAtKill = fmt.Sprintf("alert position %d, audit seq %d", s.GetAlertPosition(), s.GetAuditSeq())
			}
		}
		break
	}
	t.Logf("siem: killed %s with %d lines at rsyslogd (committed: %s)", victim, res.LinesAtKill, res.CommittedAtKill)

	// The new leader (the first answer for the sinks from another
	// coordinator: elected, its first entry applied), and its sink at the
	// head. The sink status, not the cluster status: a leader's cluster
	// status probes every member, the dead one too.
	firstBacklog := int64(-1)
	deadline := killed.Add(time.Minute)
	var lastErr error
	for res.CatchUpMs < 0 {
		if time.Now().After(deadline) {
			bad("the new leader's sink is not at the head a minute after the kill (last error: %v)", lastErr)
			return
		}
		for _, c := range survivors {
			cctx, ccancel := context.WithTimeout(ctx, time.Second)
			st, err := medmeshv1.NewSinkServiceClient(c).GetSinkStatus(cctx, &medmeshv1.GetSinkStatusRequest{})
			ccancel()
			if err != nil {
				lastErr = err
				continue
			}
			if st.GetServedBy() == "" || st.GetServedBy() == victim {
				continue
			}
			if res.ElectionMs < 0 {
				res.ElectionMs = msSince(killed)
				res.NewLeader = st.GetServedBy()
			}
			for _, s := range st.GetSinks() {
				if s.GetName() != siemSink {
					continue
				}
				if firstBacklog < 0 {
					firstBacklog = int64(s.GetBacklog())
				}
				if s.GetBacklog() == 0 && res.CatchUpMs < 0 {
					res.CatchUpMs = msSince(killed)
					res.NewLeader = st.GetServedBy()
				}
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	heal()
	if err := r.Healthy(ctx, time.Minute); err != nil {
		bad("lab unhealthy after restarting %s: %v", victim, err)
	}

	// Every alert of the cluster reaches rsyslogd.
	var alerts []*medmeshv1.Alert
	var got *siem.Received
	var missing []string
	for end := time.Now().Add(20 * time.Second); ; {
		if alerts, err = listAlerts(ctx, survivors[0]); err == nil {
			if got, err = rcv.Read(); err != nil {
				bad("rsyslogd's lines: %v", err)
				return
			}
			missing = missing[:0]
			for _, a := range alerts {
				if got.ByID["alert/"+a.GetId()] == nil {
					missing = append(missing, a.GetId())
				}
			}
			if len(missing) == 0 {
				break
			}
		}
		if time.Now().After(end) {
			if err != nil {
				bad("list alerts: %v", err)
			} else {
				bad("%d of %d alerts never reached rsyslogd: %s", len(missing), len(alerts), firstN(missing, 10))
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Read the receiver, then the cluster: what rsyslogd has was committed
	// before this read.
	if got, err = rcv.Read(); err != nil {
		bad("rsyslogd's lines: %v", err)
		return
	}
	if alerts, err = listAlerts(ctx, survivors[0]); err != nil {
		bad("list alerts: %v", err)
		return
	}
	audit, err := listAudit(ctx, survivors[0])
	if err != nil {
		bad("list audit records: %v", err)
		return
	}
	for _, v := range CheckSIEM(got, alerts, audit) {
		bad("%s", v)
	}
	mac := ""
	if d, ok := l.Config().Device(l.Config().Compromised); ok {
		mac = strings.ToLower(d.MAC)
	}
	res.Alerts = len(alerts)
	for _, a := range alerts {
		if strings.EqualFold(a.GetDeviceMac(), mac) {
			res.DeviceAlerts++
		}
	}
	if scenarioRan && res.DeviceAlerts == 0 {
		bad("no alert of the compromised device %s in the cluster to deliver", mac)
	}
	res.Lines, res.Resent, res.LinesBy = got.Lines, got.Duplicates(), got.Hosts
	if got.Hosts[victim] == 0 {
		bad("%s, killed as the leader, had sent nothing: the kill did not interrupt delivery", victim)
	}
	for id := range got.ByID {
		if strings.HasPrefix(id, "audit/") {
			res.AuditRecords++
		}
	}
	// The kill interrupted delivery: the new leader sent again what the
	// old one had delivered past its committed position, or found events
	// not yet delivered.
	if res.Resent == 0 && firstBacklog <= 0 {
		bad("the kill came after %s had delivered and committed everything: resuming was not exercised", victim)
	}
	t.Logf("siem: %s", res.Summary())
}

// write runs a mutating call (with its request id set by the caller)
// until it succeeds or fails for good, retrying an open outcome through
// the coordinators in turn: the request id makes it apply once.
func (r *Runner) write(ctx context.Context, call func(context.Context, *grpc.ClientConn) error) error {
	var err error
	for attempt := range 8 {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = call(cctx, r.conns[attempt%len(r.conns)])
		cancel()
		if err == nil || !retryable(err) {
			return err
		}
		sleep(ctx, time.Duration(attempt+1)*250*time.Millisecond)
	}
	return err
}

// deleteSink removes the SIEM step's sink; absent is done.
func (r *Runner) deleteSink(ctx context.Context, reason string) error {
	req := &medmeshv1.DeleteSinkRequest{Name: siemSink, Reason: reason, RequestId: requestID("siem-delete")}
	err := r.write(ctx, func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := medmeshv1.NewSinkServiceClient(c).DeleteSink(ctx, req)
		return err
	})
	if status.Code(err) == codes.NotFound {
		return nil
	}
	return err
}

// requestID is a request id of its own for one e2e write.
func requestID(what string) string {
	return fmt.Sprintf("e2e-%s-%x", what, time.Now().UnixNano())
}

// size is a file's size (0 if absent).
func size(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// lines counts a file's complete lines.
func lines(path string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte{'\n'})
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

func firstN(s []string, n int) string {
	if len(s) <= n {
		return strings.Join(s, ", ")
	}
	return strings.Join(s[:n], ", ") + fmt.Sprintf(" and %d more", len(s)-n)
}
