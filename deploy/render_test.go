package deploy_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imlite/imlite/server/config"
)

// TestRenderConfig runs the render-config init container's script with the
// local sh and awk, on a copy of the ConfigMap, with good and bad secrets.
// The pod runs it with busybox, whose sh and awk are POSIX too.
func TestRenderConfig(t *testing.T) {
	sh := requireTool(t, "sh", "a POSIX shell")
	requireTool(t, "awk", "an awk such as mawk")
	f := loadFixture(t)
	example := f.secret.StringData["access-secret"]

	tests := []struct {
		name    string
		secret  string
		wantErr string // empty: the script must succeed
	}{
		{"hex secret", testSecret, ""},
		{"base64 secret", "q+8/Zx0Ab1c2d3e4f5g6h7i8j9k0lmnopqrstuvw==", ""},
		{"url-safe secret", "Ab_cD-ef.0123456789abcdefghijklmnopqrst", ""},
		{"example value", example, "need at least 32"},
		{"empty", "", "is 0 bytes, need at least 32"},
		{"31 bytes", strings.Repeat("a", 31), "is 31 bytes"},
		{"single quote", strings.Repeat("a", 40) + "'", "contains characters other than"},
		{"trailing newline", testSecret + "\n", "contains characters other than"},
		{"awk replacement characters", strings.Repeat("a", 40) + `&\1`, "contains characters other than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			out, stderr, err := runRender(t, sh, f, dir, tt.secret)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("render with secret %q succeeded, want failure containing %q", tt.secret, tt.wantErr)
				}
				if !strings.Contains(stderr, tt.wantErr) {
					t.Errorf("stderr = %q, want it to contain %q", stderr, tt.wantErr)
				}
				if _, statErr := os.Stat(out); statErr == nil {
					t.Errorf("render failed but wrote %s; imlite would start with it", out)
				}
				return
			}
			if err != nil {
				t.Fatalf("render with a valid secret: %v\n%s", err, stderr)
			}
			checkRendered(t, out, tt.secret)
		})
	}
}

// checkRendered loads the rendered file with imlite's loader and checks the
// secret arrived unchanged in a file only its owner can read.
func checkRendered(t *testing.T, path, secret string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read rendered config: %v", err)
	}
	cfg, err := config.Parse(data, func(string) string { return "" })
	if err != nil {
		t.Fatalf("rendered config does not load: %v", err)
	}
	if cfg.Auth.AccessSecret != secret {
		t.Errorf("Auth.AccessSecret = %q, want %q", cfg.Auth.AccessSecret, secret)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat rendered config: %v", err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("rendered config mode = %v, want -rw------- because it holds the secret", mode)
	}
}

// runRender runs the init container's script with its two mount paths
// moved under dir, and returns the output path and stderr.
func runRender(t *testing.T, sh string, f *fixture, dir, secret string) (string, string, error) {
	t.Helper()
	templateDir := filepath.Join(dir, "template")
	outDir := filepath.Join(dir, "out")
	for _, d := range []string{templateDir, outDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(templateDir, "websocket.yaml"), []byte(f.configMap.Data["websocket.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}

	inits := f.deployment.Spec.Template.Spec.InitContainers
	if len(inits) == 0 || len(inits[0].Args) == 0 {
		t.Fatal("Deployment has no init container script")
	}
	script := strings.NewReplacer(
		"/etc/imlite-template/", templateDir+"/",
		"/etc/imlite/", outDir+"/",
	).Replace(inits[0].Args[0])

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sh, "-c", script)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "IMLITE_ACCESS_SECRET=" + secret}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	return filepath.Join(outDir, "websocket.yaml"), stderr.String(), err
}
