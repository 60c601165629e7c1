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
// its index, or a heartbeat carrying the applied index.
type watchEvent[T any] struct {
	item    T
	index   uint64
	applied uint64
	isItem  bool
}

// watchStream opens a stream of entries with index > from.
type watchStream[T any] func(ctx context.Context, conn *grpc.ClientConn, from uint64) (func() (watchEvent[T], error), error)

// watch streams until Ctrl-C (or ctx ends), printing each entry once, in
// index order. After a disconnect it reconnects with backoff and resumes
// from the last index seen, so nothing is skipped or repeated.
func watch[T any](cmd *cobra.Command, o *opFlags, from uint64, open watchStream[T], emit func(T) error) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	conn, err := o.dial()
	if err != nil {
		return err
	}
	defer conn.Close()

	last := from
	backoff := 100 * time.Millisecond
	for {
		recv, err := open(ctx, conn, last)
		for err == nil {
			var ev watchEvent[T]
			ev, err = recv()
			if err != nil {
				break
			}
			backoff = 100 * time.Millisecond // a message means the stream is healthy
			if !ev.isItem {
				last = max(last, ev.applied)
				continue
			}
			if ev.index <= last {
				continue // a replay across a reconnect
			}
			last = ev.index
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
