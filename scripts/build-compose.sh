#!/usr/bin/env bash
# Docker Compose, built from its Go module and installed as the docker CLI plugin `docker-compose`
# (no registry or release download here). The binary is cached under .cache/compose/ in the repository
# (ignored by git) and reused while the pin is unchanged, so a second run costs a copy; an installed
# plugin of the pinned version is reused as it is.
#
# Pinned to v5.6.0: v5.7 needs a newer Go than these machines have. `go install module/cmd@version`
# refuses the module (its go.mod has replace directives), so the module's source is downloaded, copied
# somewhere writable and built there. Needs Go on PATH or in /usr/local/go/bin. Honors GOFLAGS.
# Usage: scripts/build-compose.sh [--force]
set -euo pipefail

version="${COMPOSE_VERSION:-5.6.0}"
module="github.com/docker/compose/v5"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${EDGE_CACHE:-$root/.cache}/compose"
binary="$cache/docker-compose-v$version"
plugin_dir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"

# A clean clone on a machine that already has the pinned plugin installed (a CI machine's second run)
# reuses it: the plugin lives outside the clone.
installed="$(docker compose version --short 2>/dev/null || true)"
if [[ "${1:-}" != "--force" && ! -x "$binary" && "${installed#v}" == "$version" ]]; then
  echo "build-compose.sh: Docker Compose v$version is installed already ($plugin_dir/docker-compose or elsewhere)"
  exit 0
fi

if [[ "${1:-}" == "--force" || ! -x "$binary" ]]; then
  if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
    export PATH="/usr/local/go/bin:$PATH"
  fi
  command -v go >/dev/null 2>&1 || { echo "build-compose.sh: go not found (install Go >= 1.25)" >&2; exit 1; }
  export GOMODCACHE="${EDGE_CACHE:-$root/.cache}/go/mod" GOCACHE="${EDGE_CACHE:-$root/.cache}/go/build" GOPATH="${EDGE_CACHE:-$root/.cache}/go/path"
  export CGO_ENABLED=0 GOWORK=off
  mkdir -p "$cache" "$GOMODCACHE" "$GOCACHE"
  start=$SECONDS
  echo "build-compose.sh: building Docker Compose v$version with $(go env GOVERSION) (minutes from a cold cache)"
  dir="$(cd "$cache" && go mod download -json "$module@v$version" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$dir" ]] || { echo "build-compose.sh: go mod download gave no source directory for $module@v$version" >&2; exit 1; }
  src="$cache/src-v$version"
  rm -rf "$src"
  cp -a "$dir" "$src"
  chmod -R u+w "$src"
  (cd "$src" && go build -trimpath -ldflags "-s -w -X $module/internal.Version=v$version" -o "$binary.tmp" ./cmd)
  mv "$binary.tmp" "$binary"
  rm -rf "$src"
  echo "build-compose.sh: built $binary in $((SECONDS - start)) s"
fi

mkdir -p "$plugin_dir"
if ! cmp -s "$binary" "$plugin_dir/docker-compose"; then
  install -m 0755 "$binary" "$plugin_dir/docker-compose"
fi
echo "build-compose.sh: $(docker compose version 2>/dev/null || "$plugin_dir/docker-compose" version) ($plugin_dir/docker-compose)"
