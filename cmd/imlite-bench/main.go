// Command imlite-bench is imlite's load tool. It speaks the websocket
// protocol as real clients do, signs its own tokens with the server's
// secret, and measures what a client observes: connections held,
// send-to-deliver latency, messages accepted and delivered per second,
// lost and duplicated messages, and the server's memory and CPU time.
//
//	imlite-bench idle   -n 19000 -secret S -server-pid PID
//	imlite-bench single -pairs 500 -rate 10000 -secret S
//	imlite-bench group  -group-size 1000 -senders 1 -rate 1000 -secret S
//	imlite-bench pull   -n 4 -fill 1000 -page 100 -secret S
//	imlite-bench churn  -rate 500 -lifetime 1s -secret S
//
// A progress line goes to stderr every second; the final report is a JSON
// document on stdout or in the -json file. It exits with status 1 when the
// run could not be set up, and 2 for a bad command line.
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
	"time"

	"github.com/imlite/imlite/server/app"
	"github.com/imlite/imlite/server/auth"
	"github.com/imlite/imlite/server/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// runMain runs the tool and returns the exit status.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintln(stderr, "imlite-bench:", err)
		return 2
	}
	rep, err := run(ctx, o, stderr)
	if rep != nil {
		if werr := writeReport(rep, o.jsonPath, stdout); werr != nil {
			fmt.Fprintln(stderr, "imlite-bench:", werr)
			return 1
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "imlite-bench:", err)
		return 1
	}
	return 0
}

// run executes one scenario. It returns a report whenever the scenario
// started, also with an error that cut it short.
func run(ctx context.Context, o options, stderr io.Writer) (*report, error) {
	signer, err := newSigner(o)
	if err != nil {
		return nil, err
	}
	fdLimit, err := raiseOpenFileLimit()
	if err != nil {
		return nil, err
	}
	r, err := newRunner(o, signer, fdLimit, stderr)
	if err != nil {
		return nil, err
	}
	if need := o.connsNeeded(); need > r.maxConns() {
		r.note("the scenario needs about %d connections, but this process may open only %d files (hard limit %d, which needs CAP_SYS_RESOURCE to raise); it stops at the limit: run several tool processes, each against its own pod, for more",
			need, r.maxConns(), fdLimit)
	}
	switch o.scenario {
	case scenarioIdle:
		return r.runIdle(ctx)
	case scenarioSingle:
		return r.runSingle(ctx)
	case scenarioGroup:
		return r.runGroup(ctx)
	case scenarioPull:
		return r.runPull(ctx)
	case scenarioChurn:
		return r.runChurn(ctx)
	}
	return nil, fmt.Errorf("unknown scenario %q", o.scenario)
}

// newSigner builds the token signer from -secret, or from the secret of
// the -f configuration the way `imlite token -f` reads it.
func newSigner(o options) (*auth.Signer, error) {
	secret := []byte(o.secret)
	if o.configFile != "" {
		cfg, err := config.Load(o.configFile)
		if err != nil {
			return nil, err
		}
		if secret, err = app.ReadSecret(cfg); err != nil {
			return nil, err
		}
	}
	signer, err := auth.NewSigner(secret, time.Hour)
	if err != nil {
		return nil, fmt.Errorf("token signer: %w", err)
	}
	return signer, nil
}
