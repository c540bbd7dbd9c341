package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/ws"
)

// errUsage marks errors in the command line, which exit with status 2.
var errUsage = errors.New("usage")

// Scenario names.
const (
	scenarioIdle   = "idle"
	scenarioSingle = "single"
	scenarioGroup  = "group"
	scenarioPull   = "pull"
	scenarioChurn  = "churn"
)

var scenarios = []string{scenarioIdle, scenarioSingle, scenarioGroup, scenarioPull, scenarioChurn}

// maxWindow is the server's bound on requests waiting on one connection;
// more get ResourceExhausted.
const maxWindow = 64

// maxSources bounds the source addresses, 127.0.0.2 up to 127.0.0.251.
const maxSources = 250

// options is the parsed command line.
type options struct {
	scenario string
	urls     []string
	// secret signs tokens; configFile is the server configuration it is
	// read from when -secret is not given.
	secret     string
	configFile string
	encoding   ws.Encoding
	tokenTTL   time.Duration

	conns     int
	pairs     int
	groupSize int
	groups    int
	senders   int
	rate      float64
	window    int
	size      int
	fill      int
	page      int
	lifetime  time.Duration

	duration        time.Duration
	warmup          time.Duration
	drain           time.Duration
	ramp            float64
	dialConcurrency int
	dialTimeout     time.Duration
	sources         int

	serverPID  int
	metricsURL string
	jsonPath   string
	prefix     string
	progress   time.Duration
}

// parseArgs reads "SCENARIO [flags]" or "-scenario NAME [flags]" and
// validates the result.
func parseArgs(args []string, stderr io.Writer) (options, error) {
	var o options
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		o.scenario, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("imlite-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(fs, stderr) }
	var urls, encoding string
	scenario := fs.String("scenario", "", "scenario to run, instead of the first argument: "+strings.Join(scenarios, ", "))
	fs.StringVar(&urls, "url", "ws://127.0.0.1:31000/ws", "websocket `URL` of the server; a comma-separated list spreads connections over several pods")
	fs.StringVar(&o.secret, "secret", "", "token signing `secret` of the server (Auth.AccessSecret); or use -f")
	fs.StringVar(&o.configFile, "f", "", "server configuration `file` to read the signing secret from, as `imlite token -f` does")
	fs.StringVar(&encoding, "encoding", "proto", "frame encoding: proto or json")
	fs.DurationVar(&o.tokenTTL, "token-ttl", 24*time.Hour, "lifetime of the tokens the tool signs")
	fs.IntVar(&o.conns, "n", 1000, "idle: connections to hold; pull: connections that pull")
	fs.IntVar(&o.pairs, "pairs", 100, "single: pairs of users chatting")
	fs.IntVar(&o.groupSize, "group-size", 1000, "group: members per group, all online")
	fs.IntVar(&o.groups, "groups", 1, "group: number of groups")
	fs.IntVar(&o.senders, "senders", 1, "group: members of each group that send")
	fs.Float64Var(&o.rate, "rate", 0, "single, group: total messages per second; pull: total pulls per second; churn: connects per second. 0 sends as fast as -window allows (churn needs a rate)")
	fs.IntVar(&o.window, "window", 32, "sends each connection may have waiting for a reply, 1 to 64")
	fs.IntVar(&o.size, "size", 100, "message content `bytes`, at least 24 (the send time travels in the content)")
	fs.IntVar(&o.fill, "fill", 1000, "pull: messages stored before pulling")
	fs.IntVar(&o.page, "page", 100, "pull: messages per PullMsg, 1 to 500")
	fs.DurationVar(&o.lifetime, "lifetime", time.Second, "churn: how long each connection stays open")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of the measured phase; idle: how long to hold the connections")
	fs.DurationVar(&o.warmup, "warmup", 0, "single, group, pull: leave requests sent in the first part of -duration out of the latency figures, while caches, seq counters and the store warm up")
	fs.DurationVar(&o.drain, "drain", 10*time.Second, "after sending stops, how long to wait for outstanding replies and pushes")
	fs.Float64Var(&o.ramp, "ramp", 0, "connections opened per second during setup; 0 means as fast as -dial-concurrency allows")
	fs.IntVar(&o.dialConcurrency, "dial-concurrency", 64, "connections being opened at once during setup")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", 10*time.Second, "bound on one TCP connect plus websocket handshake")
	fs.IntVar(&o.sources, "sources", 8, "loopback source addresses 127.0.0.2, 127.0.0.3, ... to spread connections over (each pair of addresses has about 28k ports); 0 lets the kernel choose")
	fs.IntVar(&o.serverPID, "server-pid", 0, "`pid` of the server process, to read its RSS and CPU time from /proc")
	fs.StringVar(&o.metricsURL, "metrics", "", "Prometheus `URL` of the server (such as http://127.0.0.1:8888/metrics) to read process_resident_memory_bytes and process_cpu_seconds_total from, when -server-pid is not given")
	fs.StringVar(&o.jsonPath, "json", "", "write the final JSON report to this `file` instead of stdout")
	fs.StringVar(&o.prefix, "prefix", "", "prefix of the user and group ids of this run; default b plus the start time, so runs never share conversations")
	fs.DurationVar(&o.progress, "progress", time.Second, "interval of the progress line on stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected argument %q; flags go after the scenario", errUsage, fs.Arg(0))
	}
	if *scenario != "" {
		if o.scenario != "" && o.scenario != *scenario {
			return o, fmt.Errorf("%w: scenario %q and -scenario %q differ", errUsage, o.scenario, *scenario)
		}
		o.scenario = *scenario
	}
	for _, u := range strings.Split(urls, ",") {
		if u = strings.TrimSpace(u); u != "" {
			o.urls = append(o.urls, u)
		}
	}
	var err error
	if o.encoding, err = parseEncoding(encoding); err != nil {
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	if o.prefix == "" {
		o.prefix = "b" + strconv.FormatInt(time.Now().UnixMilli(), 36)
	}
	if err := o.validate(); err != nil {
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	return o, nil
}

// parseEncoding accepts only the two names the help text lists, unlike the
// server's more lenient query parameter.
func parseEncoding(s string) (ws.Encoding, error) {
	switch s {
	case "proto":
		return ws.Binary, nil
	case "json":
		return ws.Text, nil
	}
	return 0, fmt.Errorf("-encoding %q is neither proto nor json", s)
}

// validate checks the options of the chosen scenario. Each error names the
// flag and the value.
func (o *options) validate() error {
	if err := o.validateCommon(); err != nil {
		return err
	}
	switch o.scenario {
	case scenarioIdle:
		return positive("-n", o.conns)
	case scenarioSingle:
		return errors.Join(positive("-pairs", o.pairs), o.validateSending())
	case scenarioGroup:
		return errors.Join(o.validateGroup(), o.validateSending())
	case scenarioPull:
		return o.validatePull()
	case scenarioChurn:
		if o.rate <= 0 {
			return fmt.Errorf("-rate %g: churn needs a connect rate above 0", o.rate)
		}
		if o.lifetime < 0 {
			return fmt.Errorf("-lifetime %v is negative", o.lifetime)
		}
	}
	return nil
}

func (o *options) validateCommon() error {
	switch {
	case o.scenario == "":
		return fmt.Errorf("no scenario; name one of %s", strings.Join(scenarios, ", "))
	case !contains(scenarios, o.scenario):
		return fmt.Errorf("unknown scenario %q; use one of %s", o.scenario, strings.Join(scenarios, ", "))
	case len(o.urls) == 0:
		return errors.New("-url is empty")
	case o.secret == "" && o.configFile == "":
		return errors.New("no signing secret: set -secret to the server's Auth.AccessSecret or -f to its configuration file")
	case o.secret != "" && o.configFile != "":
		return errors.New("-secret and -f both set; use one")
	case o.duration <= 0:
		return fmt.Errorf("-duration %v is not positive", o.duration)
	case o.warmup < 0 || o.warmup >= o.duration:
		return fmt.Errorf("-warmup %v is outside 0 to -duration %v", o.warmup, o.duration)
	case o.drain < 0:
		return fmt.Errorf("-drain %v is negative", o.drain)
	case o.ramp < 0:
		return fmt.Errorf("-ramp %g is negative", o.ramp)
	case o.dialConcurrency < 1:
		return fmt.Errorf("-dial-concurrency %d is below 1", o.dialConcurrency)
	case o.dialTimeout <= 0:
		return fmt.Errorf("-dial-timeout %v is not positive", o.dialTimeout)
	case o.tokenTTL <= 0:
		return fmt.Errorf("-token-ttl %v is not positive", o.tokenTTL)
	case o.sources < 0 || o.sources > maxSources:
		return fmt.Errorf("-sources %d is outside 0 to %d", o.sources, maxSources)
	case o.serverPID < 0:
		return fmt.Errorf("-server-pid %d is negative", o.serverPID)
	case o.progress <= 0:
		return fmt.Errorf("-progress %v is not positive", o.progress)
	}
	if err := server.ValidateID("-prefix", o.prefix+"-x"); err != nil {
		return err
	}
	for _, u := range o.urls {
		if err := o.validateURL(u); err != nil {
			return err
		}
	}
	if o.metricsURL != "" {
		u, err := url.Parse(o.metricsURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("-metrics %q is not an http:// or https:// URL", o.metricsURL)
		}
	}
	return nil
}

// validateURL checks one websocket URL. Source addresses on 127.0.0.0/8
// can reach only a loopback server.
func (o *options) validateURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return fmt.Errorf("-url %q is not a ws:// or wss:// URL", raw)
	}
	if o.sources == 0 {
		return nil
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback() || ip.To4() == nil) {
		return fmt.Errorf("-url %q: -sources %d binds 127.0.0.x source addresses, which reach only an IPv4 loopback server; use -sources 0 for host %s", raw, o.sources, host)
	}
	return nil
}

func (o *options) validateSending() error {
	switch {
	case o.rate < 0:
		return fmt.Errorf("-rate %g is negative", o.rate)
	case o.window < 1 || o.window > maxWindow:
		return fmt.Errorf("-window %d is outside 1 to %d, the requests the server lets wait on one connection", o.window, maxWindow)
	case o.size < minContentBytes || o.size > 64<<10:
		return fmt.Errorf("-size %d is outside %d to 65536 bytes", o.size, minContentBytes)
	}
	return nil
}

func (o *options) validateGroup() error {
	switch {
	case o.groupSize < 2 || o.groupSize > server.DefaultLimits.MaxGroupMembers:
		return fmt.Errorf("-group-size %d is outside 2 to %d", o.groupSize, server.DefaultLimits.MaxGroupMembers)
	case o.groups < 1:
		return fmt.Errorf("-groups %d is below 1", o.groups)
	case o.senders < 1 || o.senders > o.groupSize:
		return fmt.Errorf("-senders %d is outside 1 to -group-size %d", o.senders, o.groupSize)
	}
	return nil
}

func (o *options) validatePull() error {
	switch {
	case o.conns < 1:
		return fmt.Errorf("-n %d is below 1", o.conns)
	case o.page < 1 || o.page > server.DefaultLimits.MaxPullLimit:
		return fmt.Errorf("-page %d is outside 1 to %d", o.page, server.DefaultLimits.MaxPullLimit)
	case o.fill < o.page:
		return fmt.Errorf("-fill %d is below -page %d, so no full page exists", o.fill, o.page)
	case o.rate < 0:
		return fmt.Errorf("-rate %g is negative", o.rate)
	case o.size < minContentBytes || o.size > 64<<10:
		return fmt.Errorf("-size %d is outside %d to 65536 bytes", o.size, minContentBytes)
	}
	return nil
}

func positive(flagName string, v int) error {
	if v < 1 {
		return fmt.Errorf("%s %d is below 1", flagName, v)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// connsNeeded returns the connections the scenario opens at once, for the
// open-file check.
func (o *options) connsNeeded() int {
	switch o.scenario {
	case scenarioIdle, scenarioPull:
		return o.conns + 1
	case scenarioSingle:
		return 2 * o.pairs
	case scenarioGroup:
		return o.groups*o.groupSize + 1
	case scenarioChurn:
		return int(o.rate*(o.lifetime.Seconds()+o.dialTimeout.Seconds())) + 1
	}
	return 0
}

func usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, `imlite-bench drives an imlite server over websocket as real clients do and
reports throughput, latency, loss and the server's memory and CPU.

usage: imlite-bench SCENARIO [flags]

scenarios:
  idle    hold -n connections and report server memory per connection
  single  -pairs pairs of users chat at a total -rate of messages per second
  group   -groups groups of -group-size online members; -senders per group send at -rate
  pull    -n connections pull pages of -page messages from a conversation of -fill messages
  churn   open -rate connections per second, each kept for -lifetime

flags:
`)
	fs.PrintDefaults()
}
