package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medmesh/medmesh/internal/grpcx"
)

// clientFlags are the API client flags of bench, as medmesh's operator
// commands spell them (--addr, -o, --timeout, --tls-*, and their
// environment variables).
type clientFlags struct {
	addr    string
	output  string
	timeout time.Duration
	tlsCA   string
	tlsCert string
	tlsKey  string
}

func (o *clientFlags) register(c *cobra.Command) {
	addr := "127.0.0.1:7400"
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
	c.PersistentPreRunE = func(*cobra.Command, []string) error { return o.validate() }
}

func (o *clientFlags) validate() error {
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
	return nil
}

func (o *clientFlags) tlsFiles() grpcx.TLSFiles {
	return grpcx.TLSFiles{CAFile: o.tlsCA, CertFile: o.tlsCert, KeyFile: o.tlsKey}
}

func (o *clientFlags) json() bool { return o.output == "json" }

// dial connects to the coordinator(s) named by --addr.
func (o *clientFlags) dial() (*grpc.ClientConn, error) {
	cfg := grpcx.DefaultClientConfig()
	cfg.TLS = o.tlsFiles()
	cfg.DialTimeout = o.timeout
	conn, err := grpcx.Dial(o.addr, cfg, nil)
	if err != nil {
		return nil, usageError{err}
	}
	return conn, nil
}

// newRequestID is a random request id: 128 bits, hex.
func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// Retries of a write whose outcome is unknown, as medmesh's CLI retries.
const (
	writeAttempts = 5
	writeBackoff  = 100 * time.Millisecond
)

// rpcError renders a gRPC error as one line: "cannot reach coordinator at
// ADDR: REASON" for connection failures, "Code: message" otherwise.
func (o *clientFlags) rpcError(err error) error {
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
		for _, hint := range []string{"connection refused", "no such host", "i/o timeout", "connection reset", "EOF", "tls:", "certificate", "handshake", "connection error", "dial tcp"} {
			if strings.Contains(msg, hint) {
				return fmt.Errorf("cannot reach coordinator at %s: %s", o.addr, msg)
			}
		}
	}
	if st.Code() == codes.DeadlineExceeded {
		return fmt.Errorf("%s: %s (--timeout %s)", st.Code(), msg, o.timeout)
	}
	return fmt.Errorf("%s: %s", st.Code(), msg)
}
