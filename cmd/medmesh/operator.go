package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

const defaultAPIAddr = "127.0.0.1:7400"

// opFlags are the flags every operator command shares.
type opFlags struct {
	addr    string
	output  string
	timeout time.Duration
	tlsCA   string
	tlsCert string
	tlsKey  string
	stale   bool
	// requestID names this invocation's write (--request-id); empty: a
	// random one.
	requestID string
}

// addOperatorCommands adds the operator commands (cluster, devices, policies,
// decisions, rules, sinks, alerts, incidents, campus, accounts), all
// talking to the coordinator's gRPC API.
func addOperatorCommands(root *cobra.Command) {
	o := &opFlags{}
	for _, c := range []*cobra.Command{
		newClusterCmd(o),
		newDevicesCmd(o),
		newPoliciesCmd(o),
		newDecisionsCmd(o),
		newRulesCmd(o),
		newSinksCmd(o),
		newAlertsCmd(o),
		newIncidentsCmd(o),
		newCampusCmd(o),
		newAccountsCmd(o),
	} {
		o.register(c)
		root.AddCommand(c)
	}
}

func (o *opFlags) register(c *cobra.Command) {
	addr := defaultAPIAddr
	if env := os.Getenv("MEDMESH_ADDR"); env != "" {
		addr = env
	}
	f := c.PersistentFlags()
	f.StringVar(&o.addr, "addr", addr, "coordinator API address(es), comma-separated (env MEDMESH_ADDR)")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "deadline of each call")
	f.StringVar(&o.tlsCA, "tls-ca", os.Getenv("MEDMESH_TLS_CA"), "campus CA certificate file (env MEDMESH_TLS_CA); with --tls-cert and --tls-key enables mutual TLS")
	f.StringVar(&o.tlsCert, "tls-cert", os.Getenv("MEDMESH_TLS_CERT"), "your certificate file, made by 'medmesh tls cert create' (env MEDMESH_TLS_CERT)")
	f.StringVar(&o.tlsKey, "tls-key", os.Getenv("MEDMESH_TLS_KEY"), "your key file (env MEDMESH_TLS_KEY)")
	f.BoolVar(&o.stale, "stale", false, "serve reads from the contacted replica's local state (may be stale)")
	f.StringVar(&o.requestID, "request-id", "", "id of this write (default: a random one); a write retried with its id is applied at most once")
	c.PersistentPreRunE = func(*cobra.Command, []string) error { return o.validate() }
}

func (o *opFlags) validate() error {
	switch o.output {
	case "table", "json":
	default:
		return usagef("invalid -o %q: want table or json", o.output)
	}
	if o.timeout <= 0 {
		return usagef("invalid --timeout %s: must be positive", o.timeout)
	}
	if len(grpcx.SplitTargets(o.addr)) == 0 {
		return usagef("--addr is empty")
	}
	if err := o.tlsFiles().Validate(); err != nil {
		return usageError{err}
	}
	if len(o.requestID) > maxRequestIDLength {
		return usagef("invalid --request-id: longer than %d bytes", maxRequestIDLength)
	}
	return nil
}

func (o *opFlags) tlsFiles() grpcx.TLSFiles {
	return grpcx.TLSFiles{CAFile: o.tlsCA, CertFile: o.tlsCert, KeyFile: o.tlsKey}
}

func (o *opFlags) json() bool { return o.output == "json" }

func (o *opFlags) consistency() medmeshv1.ReadConsistency {
	if o.stale {
		return medmeshv1.ReadConsistency_READ_CONSISTENCY_STALE
	}
	return medmeshv1.ReadConsistency_READ_CONSISTENCY_LINEARIZABLE
}

// dial connects to the coordinator(s) named by --addr.
func (o *opFlags) dial() (*grpc.ClientConn, error) {
	cfg := grpcx.DefaultClientConfig()
	cfg.TLS = o.tlsFiles()
	cfg.DialTimeout = o.timeout
	conn, err := grpcx.Dial(o.addr, cfg, nil)
	if err != nil {
		return nil, usageError{err}
	}
	return conn, nil
}

// call runs fn with a connection and a context bounded by --timeout, and
// turns its error into one line.
func (o *opFlags) call(cmd *cobra.Command, fn func(ctx context.Context, conn *grpc.ClientConn) error) error {
	conn, err := o.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
	defer cancel()
	return o.rpcError(fn(ctx, conn))
}

// maxRequestIDLength is the coordinators' bound on a request id.
const maxRequestIDLength = 64

// newRequestID is a random request id: 128 bits, hex.
func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// Retries of a write whose outcome is unknown.
const (
	writeAttempts = 5
	writeBackoff  = 100 * time.Millisecond
)

// write runs a mutating call fn with one request id for the whole
// invocation, retrying it with the same id while it fails UNAVAILABLE or
// UNKNOWN or an attempt times out, a few times with backoff, within
// --timeout. An earlier attempt may have committed although its answer was
// lost; the coordinators apply a request id at most once and answer a
// retry with the first result, so retrying is safe.
func (o *opFlags) write(cmd *cobra.Command, fn func(ctx context.Context, conn *grpc.ClientConn, requestID string) error) error {
	id := o.requestID
	if id == "" {
		id = newRequestID()
	}
	conn, err := o.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
	defer cancel()
	// Each attempt gets a share of the deadline, so a leader that died
	// under one attempt leaves time to retry through another coordinator.
	per := max(o.timeout/3, time.Second)
	backoff := writeBackoff
	for attempt := 1; ; attempt++ {
		actx, acancel := context.WithTimeout(ctx, per)
		err = fn(actx, conn, id)
		acancel()
		if err == nil {
			return nil
		}
		c := status.Code(err)
		retry := c == codes.Unavailable || c == codes.Unknown || (c == codes.DeadlineExceeded && ctx.Err() == nil)
		if !retry || attempt == writeAttempts || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		if ctx.Err() != nil {
			break
		}
		backoff *= 2
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Unknown, codes.DeadlineExceeded:
		// The outcome is still open: say how to settle it safely.
		return fmt.Errorf("%w (request id %s: retrying with --request-id %s applies the write at most once)", o.rpcError(err), id, id)
	}
	return o.rpcError(err)
}

// rpcError renders a gRPC error as one line: "cannot reach coordinator at
// ADDR: REASON" for connection failures, "Code: message" otherwise.
func (o *opFlags) rpcError(err error) error {
	if err == nil {
		return nil
	}
	var ue usageError
	if errors.As(err, &ue) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	if st.Code() == codes.Unavailable {
		if reason, ok := connectFailure(msg); ok {
			if reason == "connection closed" && o.tlsCA == "" {
				reason += " (does the coordinator require TLS? --tls-ca, --tls-cert, --tls-key)"
			}
			return fmt.Errorf("cannot reach coordinator at %s: %s", o.addr, reason)
		}
	}
	if st.Code() == codes.DeadlineExceeded {
		return fmt.Errorf("%s: %s (--timeout %s)", st.Code(), msg, o.timeout)
	}
	return fmt.Errorf("%s: %s", st.Code(), msg)
}

// connectFailure recognises transport errors and gives their cause in a
// few words.
func connectFailure(msg string) (string, bool) {
	for _, r := range []struct{ hint, reason string }{
		{"connection refused", "connection refused"},
		{"no such host", "no such host"},
		{"i/o timeout", "i/o timeout"},
		{"network is unreachable", "network is unreachable"},
		{"no route to host", "no route to host"},
		{"graceful_stop", "the server is shutting down"},
		{"goaway", "the server is shutting down"},
		{"certificate required", "the server requires a client certificate (--tls-cert, --tls-key)"},
		{"connection reset", "connection closed"},
		{"broken pipe", "connection closed"},
		{"EOF", "connection closed"},
	} {
		if strings.Contains(msg, r.hint) {
			return r.reason, true
		}
	}
	for _, hint := range []string{"tls:", "certificate", "handshake", "connection error", "dial tcp"} {
		if strings.Contains(msg, hint) {
			if i := strings.Index(msg, `desc = "`); i >= 0 {
				msg = strings.TrimSuffix(msg[i+len(`desc = "`):], `"`)
			}
			return msg, true
		}
	}
	return "", false
}

// --- output ---

var jsonLine = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// printLine writes m as one line of JSON (JSON Lines, for watch streams).
func printLine(w io.Writer, m proto.Message) error {
	b, err := jsonLine.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	buf.WriteByte('\n')
	_, err = w.Write(buf.Bytes())
	return err
}

// printProto writes m as indented JSON with the proto field names. protojson
// varies its whitespace on purpose; re-indenting makes the output stable.
func printProto(w io.Writer, m proto.Message) error {
	b, err := jsonLine.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	buf.WriteByte('\n')
	_, err = w.Write(buf.Bytes())
	return err
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// table writes tab-separated rows aligned in columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(toAny(header)...)
	return t
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func (t *table) row(cols ...any) {
	parts := make([]string, len(cols))
	for i, c := range cols {
		s := fmt.Sprint(c)
		if s == "" {
			s = "-"
		}
		parts[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(s)
	}
	fmt.Fprintln(t.tw, strings.Join(parts, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// parseEnum reads an enum flag spelled as the CLI prints it ("infusion-pump").
func parseEnum(d protoreflect.EnumDescriptor, flag, s string) (protoreflect.EnumNumber, error) {
	n, err := names.Parse(d, s)
	if err != nil {
		return 0, usagef("invalid --%s: %w", flag, err)
	}
	return n, nil
}

func ts(t *timestamppb.Timestamp) string {
	if t == nil || (t.GetSeconds() == 0 && t.GetNanos() == 0) {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

func truncate(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

func defaultActor() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "operator"
}

// listAll fetches pages until limit items (0: all) or the last page.
func listAll[T any](limit int, fetch func(token string, size int32) ([]T, string, error)) ([]T, string, error) {
	return listPages(limit, 1000, fetch)
}

// listPages is listAll asking for at most pageSize items per call.
func listPages[T any](limit, pageSize int, fetch func(token string, size int32) ([]T, string, error)) ([]T, string, error) {
	var out []T
	token := ""
	for {
		size := int32(pageSize)
		if limit > 0 && limit-len(out) < pageSize {
			size = int32(limit - len(out))
		}
		items, next, err := fetch(token, size)
		if err != nil {
			return nil, "", err
		}
		out = append(out, items...)
		token = next
		if token == "" || (limit > 0 && len(out) >= limit) {
			if limit > 0 && len(out) > limit {
				out = out[:limit]
			}
			return out, token, nil
		}
	}
}
