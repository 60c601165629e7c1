package api

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/fsm"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/internal/passwd"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// hashSlots bounds the argon2id computations (19 MiB each) a coordinator
// runs at once: a flood of logins queues instead of exhausting memory.
var hashSlots = make(chan struct{}, 2)

func withHashSlot[T any](ctx context.Context, f func() (T, error)) (T, error) {
	var zero T
	select {
	case hashSlots <- struct{}{}:
	case <-ctx.Done():
		return zero, toStatus(ctx.Err())
	}
	defer func() { <-hashSlots }()
	return f()
}

// dummyHash is checked when a login names no account, so that an unknown
// name costs as long as a wrong password and does not reveal itself.
var dummyHash = func() string {
	h, err := passwd.Hash("medmesh-no-such-account")
	if err != nil {
		panic(err)
	}
	return h
}()

// ListAccounts lists the console accounts (approvers only: the table).
func (s *Server) ListAccounts(ctx context.Context, req *medmeshv1.ListAccountsRequest) (*medmeshv1.ListAccountsResponse, error) {
	if resp, done, err := route(ctx, s, medmeshv1.AccountService_ListAccounts_FullMethodName, kindRead, req, &medmeshv1.ListAccountsResponse{}); done {
		return resp, err
	}
	return &medmeshv1.ListAccountsResponse{Accounts: s.b.FSM().Accounts()}, nil
}

// PutAccount creates or changes an account. A new password is hashed on
// the leader, after forwarding: only the hash enters the log.
func (s *Server) PutAccount(ctx context.Context, req *medmeshv1.PutAccountRequest) (*medmeshv1.PutAccountResponse, error) {
	a := req.GetAccount()
	if a == nil {
		return nil, invalid("account", "required")
	}
	if err := fsm.ValidateAccount(a); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if strings.HasPrefix(a.GetName(), fsm.ExternalNamePrefix) {
		return nil, invalid("account.name", "names starting with %q are single sign-on identities, not accounts", fsm.ExternalNamePrefix)
	}
	if req.GetPassword() != "" {
		if err := passwd.Check(req.GetPassword()); err != nil {
			return nil, invalid("password", "%v", err)
		}
	}
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	creq, err := clientRequest(id, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.AccountService_PutAccount_FullMethodName, kindWrite, req, &medmeshv1.PutAccountResponse{}); done {
		return resp, err
	}
	var hash string
	if req.GetPassword() != "" {
		if hash, err = withHashSlot(ctx, func() (string, error) { return passwd.Hash(req.GetPassword()) }); err != nil {
			return nil, status.Error(codes.Internal, "hash password: "+err.Error())
		}
	}
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_AccountPut{AccountPut: &fsmpb.AccountPut{
		Account: &medmeshv1.Account{Name: a.GetName(), Role: a.GetRole()}, PasswordHash: hash,
		ExpectedVersion: req.ExpectedVersion, Actor: id.String(), Reason: req.GetReason(),
	}}})
	if err != nil {
		return nil, err
	}
	return &medmeshv1.PutAccountResponse{Account: res.Account, Index: res.Index}, nil
}

// DeleteAccount removes an account and ends its sessions.
func (s *Server) DeleteAccount(ctx context.Context, req *medmeshv1.DeleteAccountRequest) (*medmeshv1.DeleteAccountResponse, error) {
	if err := required("name", req.GetName()); err != nil {
		return nil, err
	}
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	creq, err := clientRequest(id, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.AccountService_DeleteAccount_FullMethodName, kindWrite, req, &medmeshv1.DeleteAccountResponse{}); done {
		return resp, err
	}
	res, err := s.apply(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_AccountDelete{AccountDelete: &fsmpb.AccountDelete{
		Name: req.GetName(), Actor: id.String(), Reason: req.GetReason(),
	}}})
	if err != nil {
		return nil, err
	}
	return &medmeshv1.DeleteAccountResponse{Index: res.Index}, nil
}

// Authenticate checks a login on the leader, against the committed hash,
// and commits the outcome: the FSM counts failures, locks the account out
// and opens the session. Every refusal reads the same to the client
// (PERMISSION_DENIED, "login refused"), whatever the reason.
func (s *Server) Authenticate(ctx context.Context, req *medmeshv1.AuthenticateRequest) (*medmeshv1.AuthenticateResponse, error) {
	if len(req.GetSessionHash()) != 32 {
		return nil, invalid("session_hash", "want the 32-byte SHA-256 of the session token")
	}
	if len(req.GetSource()) > maxTextField || len(req.GetName()) > 64 {
		return nil, invalid("name", "too long")
	}
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.AccountService_Authenticate_FullMethodName, kindWrite, req, &medmeshv1.AuthenticateResponse{}); done {
		return resp, err
	}
	// Read after the barrier: the hash checked is the committed one.
	if err := s.b.VerifyRead(ctx); err != nil {
		return nil, toStatus(err)
	}
	acct, hash := s.b.FSM().AccountHash(req.GetName())
	if acct == nil {
		hash = dummyHash
	}
	ok, err := withHashSlot(ctx, func() (bool, error) {
		err := passwd.Verify(hash, req.GetPassword())
		if err != nil && !errors.Is(err, passwd.ErrMismatch) {
			s.log.Error("account password hash unusable", "account", req.GetName(), "err", err)
		}
		return err == nil && acct != nil, nil
	})
	if err != nil {
		return nil, err
	}
	login := &fsmpb.AccountLogin{Name: req.GetName(), Success: ok, Actor: id.String(), Source: req.GetSource()}
	if ok {
		login.SessionHash = req.GetSessionHash()
	}
	identity, expire, index, err := s.applyLogin(ctx, &fsmpb.Command{Command: &fsmpb.Command_AccountLogin{AccountLogin: login}})
	if err != nil {
		return nil, err
	}
	return &medmeshv1.AuthenticateResponse{Identity: identity, ExpireTime: expire, Index: index}, nil
}

// applyLogin commits a login (password or single sign-on) and returns the
// session's identity and expiry; every refusal reads "login refused".
func (s *Server) applyLogin(ctx context.Context, cmd *fsmpb.Command) (string, *timestamppb.Timestamp, uint64, error) {
	res, err := s.apply(ctx, cmd)
	if err != nil {
		if status.Code(err) == codes.PermissionDenied {
			return "", nil, 0, status.Error(codes.PermissionDenied, "login refused")
		}
		return "", nil, 0, err
	}
	a := res.Account
	return a.GetRole() + "/" + a.GetName(), timestamppb.New(a.GetLastLogin().AsTime().Add(fsm.SessionLifetime)), res.Index, nil
}

// EndSession ends a console session (logout).
func (s *Server) EndSession(ctx context.Context, req *medmeshv1.EndSessionRequest) (*medmeshv1.EndSessionResponse, error) {
	if len(req.GetSessionHash()) != 32 {
		return nil, invalid("session_hash", "want 32 bytes")
	}
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.AccountService_EndSession_FullMethodName, kindWrite, req, &medmeshv1.EndSessionResponse{}); done {
		return resp, err
	}
	res, err := s.apply(ctx, &fsmpb.Command{Command: &fsmpb.Command_SessionEnd{SessionEnd: &fsmpb.SessionEnd{SessionHash: req.GetSessionHash(), Actor: id.String()}}})
	if err != nil {
		return nil, err
	}
	return &medmeshv1.EndSessionResponse{Index: res.Index}, nil
}

// OpenExternalSession records a single sign-on login that the calling
// coordinator verified (the ID token) and mapped (the role): a refusal is
// audited, a success opens the session whose token hash the caller chose.
// Every refusal reads PERMISSION_DENIED to the client.
func (s *Server) OpenExternalSession(ctx context.Context, req *medmeshv1.OpenExternalSessionRequest) (*medmeshv1.OpenExternalSessionResponse, error) {
	if req.GetRefused() == "" && len(req.GetSessionHash()) != 32 {
		return nil, invalid("session_hash", "want the 32-byte SHA-256 of the session token")
	}
	login := &fsmpb.ExternalLogin{Role: req.GetRole(), Name: req.GetName(), Issuer: req.GetIssuer(), Subject: req.GetSubject(),
		Username: req.GetUsername(), Source: req.GetSource(), Refused: req.GetRefused()}
	if req.GetRefused() == "" {
		login.SessionHash = req.GetSessionHash()
	}
	if err := fsm.ValidateExternalLogin(login); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	creq, err := clientRequest(id, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	if resp, done, err := route(ctx, s, medmeshv1.AccountService_OpenExternalSession_FullMethodName, kindWrite, req, &medmeshv1.OpenExternalSessionResponse{}); done {
		return resp, err
	}
	login.Actor = id.String()
	identity, expire, index, err := s.applyLogin(ctx, &fsmpb.Command{Request: creq, Command: &fsmpb.Command_ExternalLogin{ExternalLogin: login}})
	if err != nil {
		return nil, err
	}
	return &medmeshv1.OpenExternalSessionResponse{Identity: identity, ExpireTime: expire, Index: index}, nil
}
