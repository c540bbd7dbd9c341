#!/usr/bin/env bash
# Validates the files under deploy/ without a Docker engine or a cluster:
#   1. installs docker-compose (the Debian package) when it is missing,
#   2. checks deploy/docker-compose.yaml against the Compose schema,
#   3. renders deploy/k8s with kubectl's built-in kustomize, when kubectl is
#      installed (it reads local files only),
#   4. runs the Go checks in deploy/: ports, probes, pod environment,
#      shutdown bounds, security settings, configuration files loaded with
#      imlite's own loader, the Grafana dashboard and the Dockerfile.
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

# as_root runs a command as root: directly when this shell is root, else
# through sudo.
as_root() {
	if [ "$(id -u)" = 0 ]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		echo "need root to run: $*; run this script as root or install sudo" >&2
		return 1
	fi
}

step "docker-compose"
if ! command -v docker-compose >/dev/null; then
	echo "docker-compose not found; installing the Debian package"
	as_root env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq docker-compose >/dev/null
fi
docker-compose version --short
docker-compose -f deploy/docker-compose.yaml config -q
echo "deploy/docker-compose.yaml is valid"

step "kustomize"
if command -v kubectl >/dev/null; then
	kubectl kustomize deploy/k8s >/dev/null
	echo "deploy/k8s renders with kubectl kustomize"
else
	echo "kubectl not found; skipping the kustomize render (the Go checks below still read every manifest)"
fi

step "go test ./deploy/"
# IMLITE_REQUIRE_BACKENDS=1 makes a missing docker-compose fail the Go
# tests instead of skipping them.
IMLITE_REQUIRE_BACKENDS=1 go test -count=1 ./deploy/

step "deploy files are valid"
