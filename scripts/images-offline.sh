#!/usr/bin/env bash
# Every image compose.offline.yaml runs, built on this machine from what it can reach (Debian packages,
# PyPI, Go modules), under local names (never re-tagged as upstream images):
#
#   edgeharness/debian-python:bookworm   Debian bookworm (debootstrap) + Python 3.11  scripts/debian-base.sh
#   edgeharness/otelcol:$OTELCOL_VERSION  the OCB-built collector/dist/otelcol           collector/build.sh
#   edgeharness/prometheus:$PROMETHEUS_VERSION  prometheus + promtool from the Go module  collector/build-prometheus.sh
#   edgeharness:offline                   the project image (Dockerfile) on the Debian base
#
# Needs a running engine (scripts/engine.sh start), Go, and root for the first debootstrap. Idempotent:
# the base image is kept when present, the binaries are reused by their build scripts' stamps, and the
# image builds hit the engine's cache when nothing changed. Prints each step's time.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
base="${EDGE_BASE_IMAGE:-edgeharness/debian-python:bookworm}"
contexts="${EDGE_CACHE:-$root/.cache}/images/contexts"
label="edgeharness.build=images-offline"

docker info >/dev/null 2>&1 || { echo "images-offline.sh: no Docker engine answers: scripts/engine.sh start (as root)" >&2; exit 1; }

# shellcheck source=../collector/versions.env
. collector/versions.env
: "${OTELCOL_VERSION:?missing in collector/versions.env}"
# The Prometheus pin: collector/versions.env, else the tag of compose.yaml's prom/prometheus image.
if [[ -z "${PROMETHEUS_VERSION:-}" ]]; then
  PROMETHEUS_VERSION="$(sed -nE 's|^\s*image:\s*prom/prometheus:v([0-9.]+)\s*$|\1|p' compose.yaml | head -n1)"
fi
: "${PROMETHEUS_VERSION:?no Prometheus version in collector/versions.env or compose.yaml}"

# Each step's output goes to a log under .cache/images/logs/; a failed step prints its tail.
logs="${EDGE_CACHE:-$root/.cache}/images/logs"
mkdir -p "$logs"
step() {
  local name="$1"; shift
  local start=$SECONDS log="$logs/${name//[\/:]/_}.log"
  local rc=0
  # Not `if ! cmd`: errexit would be off inside the step's functions.
  set +e
  ("$@") >"$log" 2>&1
  rc=$?
  set -e
  if [[ $rc -ne 0 ]]; then
    tail -n 40 "$log" >&2
    echo "images-offline.sh: $name failed (log: $log)" >&2
    exit 1
  fi
  echo "images-offline.sh: $name ready in $((SECONDS - start)) s"
}

# A build context holding just the named files (hard links when possible): the binaries' folders hold
# sources and other binaries the build does not need.
stage() {
  local dir="$contexts/$1"; shift
  rm -rf "$dir"
  mkdir -p "$dir"
  local file
  for file in "$@"; do
    ln -f "$file" "$dir/" 2>/dev/null || cp -p "$file" "$dir/"
  done
  echo "$dir"
}

require_version() {  # binary, expected version
  local got
  got="$("$1" --version 2>&1 | head -n1)"
  [[ "$got" == *"version $2"* ]] || { echo "images-offline.sh: $1 is '$got', want version $2" >&2; exit 1; }
}

collector_image() {
  collector/build.sh
  require_version collector/dist/otelcol "$OTELCOL_VERSION"
  scripts/docker-build.sh --progress plain --label "$label" --build-arg "BASE_IMAGE=$base" --build-arg "OTELCOL_VERSION=$OTELCOL_VERSION" \
    -f offline/otelcol.Dockerfile -t "edgeharness/otelcol:$OTELCOL_VERSION" \
    "$(stage otelcol collector/dist/otelcol)"
}

prometheus_image() {
  local dist=collector/dist/prometheus
  if [[ -x collector/build-prometheus.sh ]]; then
    collector/build-prometheus.sh
  fi
  [[ -x "$dist/prometheus" && -x "$dist/promtool" ]] \
    || { echo "images-offline.sh: $dist/{prometheus,promtool} missing: build them with collector/build-prometheus.sh" >&2; exit 1; }
  require_version "$dist/prometheus" "$PROMETHEUS_VERSION"
  require_version "$dist/promtool" "$PROMETHEUS_VERSION"
  scripts/docker-build.sh --progress plain --label "$label" --build-arg "BASE_IMAGE=$base" --build-arg "PROMETHEUS_VERSION=$PROMETHEUS_VERSION" \
    -f offline/prometheus.Dockerfile -t "edgeharness/prometheus:$PROMETHEUS_VERSION" \
    "$(stage prometheus "$dist/prometheus" "$dist/promtool")"
}

started=$SECONDS
step "$base" scripts/debian-base.sh
step "edgeharness/otelcol:$OTELCOL_VERSION" collector_image
step "edgeharness/prometheus:$PROMETHEUS_VERSION" prometheus_image
step "edgeharness:offline" scripts/build-project-image.sh --base "$base" --tag edgeharness:offline -- --label "$label"
# A rebuild leaves the image it replaced untagged: remove those of ours (the build cache stays).
docker image prune --force --filter "label=$label" >/dev/null
echo "images-offline.sh: every offline image ready in $((SECONDS - started)) s"
docker image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^  edgeharness' | grep -v image-test || true
