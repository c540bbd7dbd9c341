package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/app"
	"github.com/imlite/imlite/server/auth"
	"github.com/imlite/imlite/server/config"
	"github.com/imlite/imlite/server/logging"
	"github.com/imlite/imlite/server/redisstore"
)

// loadConfig reads the file, or returns the embedded defaults for "".
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("imlite", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "configuration `file` (YAML); without it, embedded mode with defaults")
	// -h on the bare command is where people look for the subcommands.
	fs.Usage = func() {
		usage(stderr)
		fmt.Fprintln(stderr, "\nFlags of the server:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		return err
	}
	log, closer, err := logging.New(cfg.Log, cfg.PodName, stderr)
	if err != nil {
		return fmt.Errorf("Log: %w", err)
	}
	defer closer.Close()
	redisstore.LogClientTo(log)

	ctx, stop := signalContext()
	defer stop()
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

func token(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("imlite token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "configuration `file` of the server; without it, the embedded defaults (the secret the server created in ./data)")
	user := fs.String("user", "", "user `id` the token is for (required)")
	platform := fs.String("platform", "web", "`platform` of the token: ios, android, web, desktop, ...")
	admin := fs.Bool("admin", false, "issue an admin token, which may call every RPC and act for any user")
	ttl := fs.Duration("ttl", 0, "token lifetime, such as 24h; 0 means Auth.AccessExpire")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if err := server.ValidateID("--user", *user); err != nil {
		return usageError(err)
	}
	if err := server.ValidatePlatform("--platform", *platform); err != nil {
		return usageError(err)
	}
	if *ttl < 0 {
		return fmt.Errorf("%w: --ttl %v is negative", errUsage, *ttl)
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		return err
	}
	secret, err := app.ReadSecret(cfg)
	if err != nil {
		return err
	}
	signer, err := auth.NewSigner(secret, time.Duration(cfg.Auth.AccessExpire)*time.Second)
	if err != nil {
		return err
	}
	role := imlitev1.Role_ROLE_USER
	if *admin {
		role = imlitev1.Role_ROLE_ADMIN
	}
	tok, _, err := signer.Issue(*user, *platform, role, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
