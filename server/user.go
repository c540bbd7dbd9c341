package server

import (
	"context"
	"strconv"
	"time"

	busv1 "github.com/imlite/imlite/gen/imlite/bus/v1"
	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server/apierr"
	"github.com/imlite/imlite/server/auth"
)

const maxReasonBytes = 256

// IssueToken signs a token for any user. Admin tokens only.
func (s *Service) IssueToken(ctx context.Context, req *imlitev1.IssueTokenRequest) (*imlitev1.IssueTokenResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := requireAdmin(p, "IssueToken"); err != nil {
		return nil, err
	}
	if err := ValidateID("user_id", req.GetUserId()); err != nil {
		return nil, err
	}
	if err := ValidatePlatform("platform", req.GetPlatform()); err != nil {
		return nil, err
	}
	switch req.GetRole() {
	case imlitev1.Role_ROLE_UNSPECIFIED, imlitev1.Role_ROLE_USER, imlitev1.Role_ROLE_ADMIN:
	default:
		return nil, apierr.InvalidArgument("role %d is not a known Role value", int32(req.GetRole()))
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	switch {
	case req.GetTtlSeconds() < 0:
		return nil, apierr.InvalidArgument("ttl_seconds %d is negative", req.GetTtlSeconds())
	case ttl > auth.MaxTTL:
		return nil, apierr.InvalidArgument("ttl_seconds %d exceeds the maximum %d (one year)", req.GetTtlSeconds(), int64(auth.MaxTTL/time.Second))
	}
	token, exp, err := s.signer.Issue(req.GetUserId(), req.GetPlatform(), req.GetRole(), ttl)
	if err != nil {
		return nil, apierr.Internal("issue token", err)
	}
	return &imlitev1.IssueTokenResponse{Token: token, ExpiresAt: exp.UnixMilli()}, nil
}

// KickUser revokes the user's tokens issued before now on the platforms (all
// when empty) and closes the matching connections on every pod. Admin
// tokens only.
func (s *Service) KickUser(ctx context.Context, req *imlitev1.KickUserRequest) (*imlitev1.KickUserResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := requireAdmin(p, "KickUser"); err != nil {
		return nil, err
	}
	if err := ValidateID("user_id", req.GetUserId()); err != nil {
		return nil, err
	}
	for i, pl := range req.GetPlatforms() {
		if err := ValidatePlatform("platforms["+strconv.Itoa(i)+"]", pl); err != nil {
			return nil, err
		}
	}
	if err := validateText("reason", req.GetReason(), maxReasonBytes); err != nil {
		return nil, err
	}
	reason := req.GetReason()
	if reason == "" {
		reason = "kicked by admin"
	}

	// 1. Revoke first: once KickUser returns, no old token gets back in.
	at := time.Now()
	if err := s.b.Revocations.Revoke(ctx, req.GetUserId(), req.GetPlatforms(), at); err != nil {
		return nil, s.backendError("revoke tokens", err)
	}

	// 2. Tell every pod to close the user's connections.
	rec := &busv1.PushRecord{Event: &busv1.PushRecord_Kick{Kick: &busv1.Kick{
		UserId: req.GetUserId(), Platforms: req.GetPlatforms(), Reason: reason, KickedAtMicros: at.UnixMicro(),
	}}}
	if err := s.b.PushProducer.PublishPush(ctx, []KeyedPush{{Key: req.GetUserId(), Record: rec}}); err != nil {
		// The tokens are revoked, but live connections stay open until
		// they reconnect; the caller may retry the kick.
		return nil, s.publishError(err, "")
	}
	s.obs.Kicked(req.GetUserId())
	s.log.Info("user kicked", "user_id", req.GetUserId(), "platforms", req.GetPlatforms(), "by", p.UserID)
	return &imlitev1.KickUserResponse{KickedAt: at.UnixMilli()}, nil
}

// GetOnlineStatus returns the platforms each user is connected from,
// across all pods.
func (s *Service) GetOnlineStatus(ctx context.Context, req *imlitev1.GetOnlineStatusRequest) (*imlitev1.GetOnlineStatusResponse, error) {
	if _, err := s.caller(ctx); err != nil {
		return nil, err
	}
	ids, err := validateUserIDs("user_ids", req.GetUserIds(), false, s.limits.MaxBatchUserIDs)
	if err != nil {
		return nil, err
	}
	platforms, err := s.b.Presence.Platforms(ctx, ids)
	if err != nil {
		return nil, s.backendError("load online status", err)
	}
	resp := &imlitev1.GetOnlineStatusResponse{Statuses: make([]*imlitev1.UserOnlineStatus, len(ids))}
	for i, id := range ids {
		pl := platforms[id]
		resp.Statuses[i] = &imlitev1.UserOnlineStatus{UserId: id, Online: len(pl) > 0, Platforms: pl}
	}
	return resp, nil
}

// ConnectionOpened records a new local connection in presence and closes
// the user's older connections on the same platform, on every pod.
func (s *Service) ConnectionOpened(ctx context.Context, p auth.Principal, connID string, openedAt time.Time) error {
	if err := s.b.Presence.Connect(ctx, p.UserID, p.Platform, connID); err != nil {
		return s.backendError("record presence", err)
	}
	rec := &busv1.PushRecord{Event: &busv1.PushRecord_ConnReplaced{ConnReplaced: &busv1.ConnReplaced{
		UserId: p.UserID, Platform: p.Platform, KeepPod: s.pod, KeepConn: connID, ConnectedAtMicros: openedAt.UnixMicro(),
	}}}
	if err := s.b.PushProducer.PublishPush(ctx, []KeyedPush{{Key: p.UserID, Record: rec}}); err != nil {
		return s.publishError(err, "")
	}
	return nil
}

// ConnectionClosed removes a closed local connection from presence.
func (s *Service) ConnectionClosed(ctx context.Context, p auth.Principal, connID string) {
	if err := s.b.Presence.Disconnect(ctx, p.UserID, p.Platform, connID); err != nil {
		s.log.Error("remove presence failed", "user_id", p.UserID, "conn_id", connID, "err", err)
	}
}
