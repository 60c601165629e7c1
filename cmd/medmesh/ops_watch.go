package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// watchEvent is one message of a watch stream: an entry (item non-nil) with
// its index, or a heartbeat carrying the applied index. token is the
// server's resume token after this message, if it sends one.
type watchEvent[T any] struct {
	item    T
	index   uint64
	applied uint64
	token   string
	isItem  bool
}

// watchStream opens a stream of entries after a resume point: the resume
// token when the server gave one, else index > from.
type watchStream[T any] func(ctx context.Context, conn *grpc.ClientConn, from uint64, token string) (func() (watchEvent[T], error), error)

// watch streams until Ctrl-C (or ctx ends), printing each entry once, in
// commit order. After a disconnect it reconnects with backoff and resumes
// from the server's last resume token (or, for a server without tokens,
// after the last index seen), so nothing is skipped or repeated. Many
// entries may share one Raft index (alerts of one sensor batch): an entry
// that comes with a resume token is never dropped for its index; index
// deduplication applies only to streams without tokens.
func watch[T any](cmd *cobra.Command, o *opFlags, from uint64, open watchStream[T], emit func(T) error) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	conn, err := o.dial()
	if err != nil {
		return err
	}
	defer conn.Close()

	last, token := from, ""
	backoff := 100 * time.Millisecond
	for {
		recv, err := open(ctx, conn, last, token)
		for err == nil {
			var ev watchEvent[T]
			ev, err = recv()
			if err != nil {
				break
			}
			backoff = 100 * time.Millisecond // a message means the stream is healthy
			if ev.token != "" {
				token = ev.token
			}
			if !ev.isItem {
				last = max(last, ev.applied)
				continue
			}
			if ev.token == "" && ev.index <= last {
				continue // a replay across a reconnect
			}
			last = max(last, ev.index)
			if err = emit(ev.item); err != nil {
				return err
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if !retryableWatch(err) {
			return o.rpcError(err)
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "medmesh: watch interrupted (%v); resuming after index %d in %s\n",
			o.rpcError(err), last, backoff.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff + rand.N(backoff/2)):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func retryableWatch(err error) bool {
	if errors.Is(err, io.EOF) {
		return true // the server ended the stream (e.g. shutting down)
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.Aborted, codes.DeadlineExceeded, codes.ResourceExhausted:
		return true
	}
	return false
}
