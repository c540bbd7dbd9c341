package testenv

import (
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// devStackEnv names the variable that turns TestDevStack on. Its value is
// the Kafka port to listen on. devStackMongoEnv optionally names
// FerretDB's port.
const (
	devStackEnv      = "IMLITE_DEVSTACK_KAFKA_PORT"
	devStackMongoEnv = "IMLITE_DEVSTACK_MONGO_PORT"
)

// TestDevStack runs a one-broker Kafka-protocol cluster and FerretDB on
// 127.0.0.1 until SIGINT or SIGTERM, so that distributed-mode pods can run
// on a machine without Kafka or MongoDB (with a local redis-server beside).
// It is skipped unless IMLITE_DEVSTACK_KAFKA_PORT is set:
//
//	IMLITE_DEVSTACK_KAFKA_PORT=9092 IMLITE_DEVSTACK_MONGO_PORT=27017 \
//	  go test ./internal/testenv -run '^TestDevStack$' -v -timeout 0
//
// It prints the broker address and the MongoDB URI of FerretDB, which
// listens on a free port unless IMLITE_DEVSTACK_MONGO_PORT names one. The
// data is deleted when the test ends.
func TestDevStack(t *testing.T) {
	if os.Getenv(devStackEnv) == "" {
		t.Skipf("set %s to a Kafka port to run the development stack", devStackEnv)
	}
	kafkaPort := devStackPort(t, devStackEnv)
	mongoPort := 0
	if os.Getenv(devStackMongoEnv) != "" {
		mongoPort = devStackPort(t, devStackMongoEnv)
	}
	k := StartKafka(t, kfake.NumBrokers(1), kfake.Ports(kafkaPort))
	f := StartFerretDBOn(t, "127.0.0.1:"+strconv.Itoa(mongoPort))
	t.Logf("kafka %v", k.Addrs())
	t.Logf("mongo %s", f.URI())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	sig := <-stop
	t.Logf("%v received, stopping", sig)
}

// devStackPort returns the TCP port in the environment variable name.
func devStackPort(t *testing.T, name string) int {
	t.Helper()
	raw := os.Getenv(name)
	port, err := strconv.Atoi(raw)
	if err != nil || port < 1 || port > 65535 {
		t.Fatalf("%s=%q is invalid: want a TCP port from 1 to 65535", name, raw)
	}
	return port
}
