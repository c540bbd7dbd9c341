package mongostore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/imlite/imlite/server"
)

// allPlatforms is the platform of a kick of every platform. Platform names
// are lowercase letters, digits, '_' and '-', so it cannot clash with one.
const allPlatforms = "*"

var _ server.RevocationStore = (*Store)(nil)

// revocationDoc is one document of the revocations collection. Times keep
// microseconds as an int64, because BSON dates hold milliseconds only and
// a kick must not revoke a token issued in the same millisecond after it.
type revocationDoc struct {
	ID       string `bson:"_id"`
	UserID   string `bson:"user_id"`
	Platform string `bson:"platform"`
	AtMicros int64  `bson:"at_us"`
}

func revocationID(userID, platform string) string { return userID + "\x00" + platform }

// Revoke records that tokens of userID issued before at are revoked on the
// platforms; no platforms means all. $max keeps a later stored time.
func (s *Store) Revoke(ctx context.Context, userID string, platforms []string, at time.Time) error {
	const op = "revoke tokens"
	if err := checkID("user id", userID); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if at.IsZero() {
		return fmt.Errorf("%s of user %s: revocation time is zero", op, userID)
	}
	if len(platforms) == 0 {
		platforms = []string{allPlatforms}
	}
	models := make([]mongo.WriteModel, 0, len(platforms))
	for _, p := range platforms {
		if p == "" {
			return fmt.Errorf("%s of user %s: platform name is empty", op, userID)
		}
		models = append(models, mongo.NewUpdateOneModel().
			SetFilter(bson.D{{Key: "_id", Value: revocationID(userID, p)}}).
			SetUpdate(bson.D{
				{Key: "$max", Value: bson.D{{Key: "at_us", Value: at.UnixMicro()}}},
				{Key: "$setOnInsert", Value: bson.D{{Key: "user_id", Value: userID}, {Key: "platform", Value: p}}},
			}).
			SetUpsert(true))
	}
	cctx, cancel := s.opCtx(ctx)
	defer cancel()
	_, err := s.revocations.BulkWrite(cctx, models, options.BulkWrite().SetOrdered(false))
	return wrap(fmt.Sprintf("%s of user %s", op, userID), err)
}

// RevokedBefore returns the later of the user's revocation on platform and
// on all platforms, or the zero time.
func (s *Store) RevokedBefore(ctx context.Context, userID, platform string) (time.Time, error) {
	const op = "load token revocation"
	if err := checkID("user id", userID); err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", op, err)
	}
	ids := bson.A{revocationID(userID, platform), revocationID(userID, allPlatforms)}
	docs, err := s.findRevocations(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
	if err != nil {
		return time.Time{}, wrap(fmt.Sprintf("%s of user %s", op, userID), err)
	}
	var latest time.Time
	for _, d := range docs {
		if t := time.UnixMicro(d.AtMicros).UTC(); t.After(latest) {
			latest = t
		}
	}
	return latest, nil
}

// RevocationsSince returns every revocation recorded after since, for
// refilling a cache that lost them. A kick older than the longest token
// lifetime revokes nothing, so callers pass now minus that lifetime.
func (s *Store) RevocationsSince(ctx context.Context, since time.Time) ([]server.Revocation, error) {
	docs, err := s.findRevocations(ctx, bson.D{{Key: "at_us", Value: bson.D{{Key: "$gt", Value: since.UnixMicro()}}}})
	if err != nil {
		return nil, wrap("list token revocations", err)
	}
	out := make([]server.Revocation, 0, len(docs))
	for _, d := range docs {
		r := server.Revocation{UserID: d.UserID, Platform: d.Platform, At: time.UnixMicro(d.AtMicros).UTC()}
		if r.Platform == allPlatforms {
			r.Platform = ""
		}
		out = append(out, r)
	}
	return out, nil
}

func (s *Store) findRevocations(ctx context.Context, filter bson.D) ([]revocationDoc, error) {
	cctx, cancel := s.opCtx(ctx)
	defer cancel()
	cur, err := s.revocations.Find(cctx, filter)
	if err != nil {
		return nil, err
	}
	var docs []revocationDoc
	if err := cur.All(cctx, &docs); err != nil {
		return nil, err
	}
	for _, d := range docs {
		if d.UserID == "" || d.AtMicros <= 0 {
			return nil, errors.New("revocation document " + fmt.Sprintf("%q", d.ID) + " lacks user_id or at_us")
		}
	}
	return docs, nil
}
