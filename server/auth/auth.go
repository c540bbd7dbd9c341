// Package auth issues and verifies imlite access tokens: JWTs signed with
// HS256 and a shared secret, carrying the user id, the platform and a role.
//
// Revocation (after a kick) is not checked here, because it needs a store;
// the service core checks it after Verify.
package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
)

// Issuer is the "iss" claim of every token.
const Issuer = "imlite"

// MinSecretBytes is the shortest accepted signing secret. HS256 wants at least
// as many key bytes as the hash output.
const MinSecretBytes = 32

// MaxTTL bounds every token's lifetime. Kicks are kept only as long as a
// token they revoke can live.
const MaxTTL = 365 * 24 * time.Hour

func init() {
	// Kicks revoke tokens issued before a point in time. Whole seconds would
	// also revoke a token issued in the same second right after the kick, so
	// "iat" and "exp" carry microseconds. Parsers of other libraries accept
	// fractional NumericDate values (RFC 7519 section 2).
	jwt.TimePrecision = time.Microsecond
}

var (
	// ErrMissing means no bearer token was sent.
	ErrMissing = errors.New("missing bearer token")
	// ErrExpired means the token's expiry has passed.
	ErrExpired = errors.New("token expired")
	// ErrInvalid means the token is malformed, wrongly signed or has bad claims.
	ErrInvalid = errors.New("invalid token")
)

// Principal is the verified identity behind a request.
type Principal struct {
	UserID   string
	Platform string
	Role     imlitev1.Role
	// IssuedAt is compared with kick times to find revoked tokens.
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// IsAdmin reports whether the principal may act for any user.
func (p Principal) IsAdmin() bool { return p.Role == imlitev1.Role_ROLE_ADMIN }

type claims struct {
	Platform string `json:"plt"`
	Role     string `json:"role"`
	jwt.RegisteredClaims
}

// Signer issues and verifies tokens with one secret. It is safe for
// concurrent use.
type Signer struct {
	secret     []byte
	defaultTTL time.Duration
	now        func() time.Time
}

// NewSigner returns a Signer. defaultTTL is the lifetime of tokens issued
// without an explicit one and must be positive.
func NewSigner(secret []byte, defaultTTL time.Duration) (*Signer, error) {
	if len(secret) < MinSecretBytes {
		return nil, fmt.Errorf("signing secret is %d bytes, need at least %d", len(secret), MinSecretBytes)
	}
	if defaultTTL <= 0 || defaultTTL > MaxTTL {
		return nil, fmt.Errorf("default token lifetime %v is outside 1s to %v", defaultTTL, MaxTTL)
	}
	return &Signer{secret: secret, defaultTTL: defaultTTL, now: time.Now}, nil
}

// SetClock replaces the clock, for tests of expiry.
func (s *Signer) SetClock(now func() time.Time) { s.now = now }

// DefaultTTL returns the lifetime of tokens issued with ttl zero.
func (s *Signer) DefaultTTL() time.Duration { return s.defaultTTL }

// Issue signs a token. A zero ttl means the default lifetime. The caller
// validates userID and platform.
func (s *Signer) Issue(userID, platform string, role imlitev1.Role, ttl time.Duration) (string, time.Time, error) {
	if ttl == 0 {
		ttl = s.defaultTTL
	}
	if ttl < 0 || ttl > MaxTTL {
		return "", time.Time{}, fmt.Errorf("token lifetime %v is outside 0 to %v", ttl, MaxTTL)
	}
	if role == imlitev1.Role_ROLE_UNSPECIFIED {
		role = imlitev1.Role_ROLE_USER
	}
	roleName, err := roleToClaim(role)
	if err != nil {
		return "", time.Time{}, err
	}
	now := s.now()
	exp := now.Add(ttl)
	c := claims{
		Platform: platform,
		Role:     roleName,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    Issuer,
			Subject:   userID,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
		},
	}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(s.secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return signed, exp.Truncate(time.Microsecond), nil
}

// Verify checks the signature, algorithm, issuer and expiry of token and
// returns its principal. Errors wrap ErrExpired or ErrInvalid.
func (s *Signer) Verify(token string) (Principal, error) {
	var c claims
	parsed, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return s.secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(Issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(s.now),
		jwt.WithLeeway(0),
	)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Principal{}, fmt.Errorf("%w at %s", ErrExpired, c.ExpiresAt.Time.UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return Principal{}, fmt.Errorf("%w: signature does not match the server's secret", ErrInvalid)
	case err != nil:
		return Principal{}, fmt.Errorf("%w: %s", ErrInvalid, describeParseError(err))
	case !parsed.Valid:
		return Principal{}, ErrInvalid
	}
	role, err := roleFromClaim(c.Role)
	if err != nil {
		return Principal{}, err
	}
	if c.Subject == "" || c.Platform == "" || c.IssuedAt == nil {
		return Principal{}, fmt.Errorf("%w: claims sub, plt and iat are required", ErrInvalid)
	}
	return Principal{
		UserID:    c.Subject,
		Platform:  c.Platform,
		Role:      role,
		IssuedAt:  c.IssuedAt.Time,
		ExpiresAt: c.ExpiresAt.Time,
	}, nil
}

// describeParseError shortens jwt's wrapped errors to their first cause,
// which names the problem (malformed, wrong algorithm, bad issuer).
func describeParseError(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "unsupported signing algorithm, want HS256"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "issuer is not " + Issuer
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "issued in the future"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "required claim missing"
	}
	return err.Error()
}

func roleToClaim(r imlitev1.Role) (string, error) {
	switch r {
	case imlitev1.Role_ROLE_USER:
		return "user", nil
	case imlitev1.Role_ROLE_ADMIN:
		return "admin", nil
	}
	return "", fmt.Errorf("unknown role %v", r)
}

func roleFromClaim(s string) (imlitev1.Role, error) {
	switch s {
	case "user":
		return imlitev1.Role_ROLE_USER, nil
	case "admin":
		return imlitev1.Role_ROLE_ADMIN, nil
	}
	return imlitev1.Role_ROLE_UNSPECIFIED, fmt.Errorf("%w: role claim %q is neither user nor admin", ErrInvalid, s)
}

// ParseBearer extracts the token from an Authorization header value.
func ParseBearer(header string) (string, error) {
	if header == "" {
		return "", ErrMissing
	}
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: Authorization header must be \"Bearer <token>\"", ErrInvalid)
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return "", ErrMissing
	}
	return token, nil
}

type principalKey struct{}
type tokenKey struct{}

// WithPrincipal returns ctx carrying an already verified principal, as the
// websocket adapter attaches after the upgrade.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the verified principal in ctx, if any.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// WithAuthorization returns ctx carrying a raw Authorization header value,
// to be verified by the service core when a call needs the caller.
func WithAuthorization(ctx context.Context, header string) context.Context {
	return context.WithValue(ctx, tokenKey{}, header)
}

// AuthorizationFrom returns the raw Authorization header value in ctx.
func AuthorizationFrom(ctx context.Context) string {
	s, _ := ctx.Value(tokenKey{}).(string)
	return s
}

// Subject returns the user id and platform a token names, without checking
// its signature or expiry. Clients use it to show whom a token they hold
// belongs to; only Verify makes a token trustworthy.
func Subject(token string) (userID, platform string, err error) {
	var c claims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &c); err != nil {
		return "", "", fmt.Errorf("malformed token: %w", err)
	}
	if c.Subject == "" {
		return "", "", errors.New("malformed token: it names no user (empty sub claim)")
	}
	return c.Subject, c.Platform, nil
}
