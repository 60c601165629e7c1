package api

import (
	"bufio"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/medmesh/medmesh/internal/authz"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// snapshotChunk is the size of one SaveSnapshotResponse chunk.
const snapshotChunk = 256 << 10

// SaveSnapshot streams a backup archive made on the leader; a follower
// relays the leader's stream.
func (s *Server) SaveSnapshot(req *medmeshv1.SaveSnapshotRequest, stream grpc.ServerStreamingServer[medmeshv1.SaveSnapshotResponse]) error {
	ctx := stream.Context()
	who, err := caller(ctx)
	if err != nil {
		return err
	}
	if !s.b.IsLeader() {
		if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedKey)) > 0 {
			return toStatus(ErrNotLeader)
		}
		conn, err := s.b.LeaderConn()
		if err != nil {
			return toStatus(err)
		}
		out := metadata.AppendToOutgoingContext(authz.ForwardContext(ctx), forwardedKey, s.b.ID())
		cl, err := medmeshv1.NewClusterServiceClient(conn).SaveSnapshot(out, req)
		if err != nil {
			return err
		}
		for {
			m, err := cl.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := stream.Send(m); err != nil {
				return err
			}
		}
	}
	bw := bufio.NewWriterSize(chunkSender{stream}, snapshotChunk)
	sum, err := s.b.SaveSnapshot(ctx, bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return toStatus(err)
	}
	s.log.Info("snapshot archive sent", "to", who.String(), "index", sum.GetIndex(), "state_hash", sum.GetStateHash())
	return stream.Send(&medmeshv1.SaveSnapshotResponse{Summary: sum})
}

// chunkSender sends what is written as archive chunks.
type chunkSender struct {
	stream grpc.ServerStreamingServer[medmeshv1.SaveSnapshotResponse]
}

func (c chunkSender) Write(p []byte) (int, error) {
	if err := c.stream.Send(&medmeshv1.SaveSnapshotResponse{Chunk: p}); err != nil {
		return 0, err
	}
	return len(p), nil
}
