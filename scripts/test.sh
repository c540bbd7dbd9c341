#!/usr/bin/env bash
# Runs every check and test of imlite, as CI does on a fresh machine:
#   1. installs what the tests need (redis-server, docker-compose, buf),
#   2. checks that gen/ matches the protos, gofmt, go vet and the Compose file,
#   3. runs all Go tests with the race detector against real backends,
#   4. runs each fuzz target briefly.
# Set FUZZTIME (default 10s) to change step 4, or FUZZTIME=0 to skip it.
set -euo pipefail
cd "$(dirname "$0")/.."

export IMLITE_REQUIRE_BACKENDS=1
FUZZTIME=${FUZZTIME:-10s}

step() { printf '\n=== %s\n' "$*"; }

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
		echo "need root to run: $*" >&2
		return 1
	fi
}

step "install test dependencies"
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v docker-compose >/dev/null || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
redis-server --version
go version

step "generated code is up to date"
make --no-print-directory check-generate

step "gofmt and go vet"
make --no-print-directory lint

step "deploy files (docker-compose config, manifests in go test)"
docker-compose -f deploy/docker-compose.yaml config -q

step "go test -race"
go test -race -count=1 -timeout 15m ./...

if [ "$FUZZTIME" != 0 ]; then
	step "fuzz ($FUZZTIME per target)"
	./scripts/fuzz.sh "$FUZZTIME"
fi

step "all checks passed"
