// Command imlite runs the imlite server and its helper commands.
//
//	imlite [-f FILE]                 run the server (embedded mode without a file)
//	imlite token [-f FILE] --user ID mint an access token
//	imlite chat ...                  terminal chat client
//	imlite version                   print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/imlite/imlite/server/apierr"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the exit code: 0 success,
// 1 runtime failure, 2 usage error.
func run(args []string, stdout, stderr io.Writer) int {
	cmd, rest := "serve", args
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, rest = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(rest, stderr)
	case "token":
		err = token(rest, stdout, stderr)
	case "chat":
		err = chat(rest, os.Stdin, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "imlite", version)
	case "help":
		usage(stdout)
	default:
		fmt.Fprintf(stderr, "imlite: unknown command %q\n\n", cmd)
		usage(stderr)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "imlite:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "imlite:", err)
		return 1
	}
}

var errUsage = errors.New("usage")

// usageError marks a rejected flag value as a usage error. It keeps only
// the message of a validation error, without its gRPC code.
func usageError(err error) error {
	return fmt.Errorf("%w: %s", errUsage, apierr.From(err).Message)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `imlite: a lightweight, distributed instant-messaging server

Usage:
  imlite [-f FILE]                     run the server; without -f, embedded mode with defaults
  imlite token [-f FILE] --user ID [--platform web] [--admin] [--ttl 24h]
                                       print an access token signed with the server's secret
  imlite chat --user ID [flags]        chat from the terminal over the websocket
  imlite version                       print the version

Run "imlite COMMAND -h" for the flags of a command.
`)
}

// signalContext returns a context cancelled by SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
