#!/usr/bin/env bash
# Builds the project image from the Dockerfile with a chosen base image, passing the machine's pip
# configuration (pip.conf and the CA bundle it names) as build secrets, so pip reaches its index from
# inside the build while no layer of the image keeps them.
#
#   scripts/build-project-image.sh [--base IMAGE] [--tag TAG] [--dockerfile FILE] [-- extra build args]
#
# Defaults: --base edgeharness/debian-python:bookworm (scripts/debian-base.sh), --tag edgeharness:offline,
# --dockerfile Dockerfile. The build runs on the host network (the engine's bridge may not reach the
# index), with BuildKit (scripts/docker-build.sh).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base="${EDGE_BASE_IMAGE:-edgeharness/debian-python:bookworm}"
tag="edgeharness:offline"
dockerfile="$root/Dockerfile"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --base) base="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --dockerfile) dockerfile="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [--base IMAGE] [--tag TAG] [--dockerfile FILE] [-- docker build args]" >&2; exit 2 ;;
  esac
done

# The machine's pip configuration, as pip itself finds it: PIP_CONFIG_FILE or /etc/pip.conf, and the CA
# bundle of PIP_CERT or the file's `cert =` line.
secrets=()
conf="${PIP_CONFIG_FILE:-/etc/pip.conf}"
ca="${PIP_CERT:-}"
if [[ -f "$conf" ]]; then
  secrets+=(--secret "id=pip.conf,src=$conf")
  [[ -n "$ca" ]] || ca="$(sed -nE 's/^\s*cert\s*=\s*(\S+)\s*$/\1/p' "$conf" | tail -n1)"
fi
if [[ -n "$ca" && -f "$ca" ]]; then
  secrets+=(--secret "id=pip-ca,src=$ca")
fi

start=$SECONDS
"$root/scripts/docker-build.sh" --network host --progress plain --build-arg "BASE_IMAGE=$base" "${secrets[@]}" \
  -f "$dockerfile" -t "$tag" "$@" "$root"
echo "build-project-image.sh: built $tag on $base in $((SECONDS - start)) s"
