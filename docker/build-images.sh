#!/usr/bin/env bash
# Builds fastlb's images with no registry: fastlb-base:bookworm (from Debian packages, cached by
# tag: see base-image.sh), then fastlb-replica:latest (the demo replica the docker provider
# starts) and fastlb:latest (the balancer, as the docker-compose.yml stack runs it).
# Needs root, a running Docker engine, mmdebstrap and python3-pip (for base-image.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

bash docker/base-image.sh
# The classic builder: it uses the local base image as it is and never looks for it in a
# registry (and needs no buildx plugin).
export DOCKER_BUILDKIT=0
started=$SECONDS
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
build() {  # quiet unless it fails (newer CLIs also warn that the classic builder is deprecated)
  docker build -f "$1" -t "$2" . >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
}
build replica/Dockerfile fastlb-replica:latest
build Dockerfile fastlb:latest
echo "build-images: fastlb-replica:latest and fastlb:latest built in $((SECONDS - started)) s"
