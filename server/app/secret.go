package app

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/imlite/imlite/server/config"
)

// SecretFile is the name of the generated token secret in Embedded.Dir.
const SecretFile = "token.secret"

// LoadSecret returns the token signing secret: Auth.AccessSecret when set;
// otherwise, in embedded mode, the secret kept in Embedded.Dir, generated
// with mode 0600 on first use. The server calls it; tools that sign tokens
// for a running server call ReadSecret.
func LoadSecret(cfg *config.Config) ([]byte, error) {
	existing, err := ReadSecret(cfg)
	if !errors.Is(err, fs.ErrNotExist) {
		return existing, err
	}
	path := filepath.Join(cfg.Embedded.Dir, SecretFile)
	if err := os.MkdirAll(cfg.Embedded.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generate token secret: %w", err)
	}
	secret := hex.EncodeToString(raw)
	// Write a temporary file and link it into place: of two first starts
	// on a fresh directory, one wins the link and the other reads the
	// complete file of the winner.
	tmp, err := os.CreateTemp(cfg.Embedded.Dir, SecretFile+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create token secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("create token secret: %w", err)
	}
	if _, err := tmp.WriteString(secret + "\n"); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write token secret: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write token secret: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return LoadSecret(cfg)
		}
		return nil, fmt.Errorf("store token secret: %w", err)
	}
	return []byte(secret), nil
}

// ReadSecret returns the token signing secret as LoadSecret does, but never
// generates one. A tool that signs tokens for a running server needs the
// server's secret, because a new one made in the wrong directory signs
// tokens that the server rejects. A missing secret file yields an error
// wrapping fs.ErrNotExist that names the path.
func ReadSecret(cfg *config.Config) ([]byte, error) {
	if cfg.Auth.AccessSecret != "" {
		return []byte(cfg.Auth.AccessSecret), nil
	}
	if cfg.Distributed() {
		return nil, errors.New("Auth.AccessSecret is empty; distributed mode needs the same secret on every pod")
	}
	path := filepath.Join(cfg.Embedded.Dir, SecretFile)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		abs, absErr := filepath.Abs(path)
		if absErr != nil {
			abs = path
		}
		return nil, fmt.Errorf("no token secret at %s (%w): the embedded server creates it at its first start in Embedded.Dir; "+
			"start the server first, run this command in the directory the server runs in, or pass the server's configuration with -f",
			abs, fs.ErrNotExist)
	case err != nil:
		return nil, fmt.Errorf("read token secret: %w", err)
	}
	secret := strings.TrimSpace(string(data))
	if len(secret) < 32 {
		return nil, fmt.Errorf("token secret %s is %d bytes, need at least 32; delete it to generate a new one (tokens signed with it stop working)", path, len(secret))
	}
	return []byte(secret), nil
}
