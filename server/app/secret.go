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
// with mode 0600 on first use. The `imlite token` command and the server
// share it this way.
func LoadSecret(cfg *config.Config) ([]byte, error) {
	if cfg.Auth.AccessSecret != "" {
		return []byte(cfg.Auth.AccessSecret), nil
	}
	if cfg.Distributed() {
		return nil, errors.New("Auth.AccessSecret is empty; distributed mode needs the same secret on every pod")
	}
	path := filepath.Join(cfg.Embedded.Dir, SecretFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		secret := strings.TrimSpace(string(data))
		if len(secret) < 32 {
			return nil, fmt.Errorf("token secret %s is %d bytes, need at least 32; delete it to generate a new one (tokens signed with it stop working)", path, len(secret))
		}
		return []byte(secret), nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read token secret: %w", err)
	}

	if err := os.MkdirAll(cfg.Embedded.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generate token secret: %w", err)
	}
	secret := hex.EncodeToString(raw)
	// Write a temporary file and link it into place: a concurrent start
	// (the server and `imlite token` on a fresh directory) either wins the
	// link or reads the complete file of the winner.
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
