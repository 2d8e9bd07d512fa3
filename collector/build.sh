#!/usr/bin/env bash
# Builds the native per-region collector, collector/dist/otelcol, with the official OpenTelemetry
# Collector Builder at the version pinned in collector/versions.env. Reuses the binary while the pin,
# the manifest and this script are unchanged (stamp: a hash of them and the Go version).
#
# Needs Go (>= the version the builder's go.mod asks for: 1.26 at 0.159.0) on PATH or in
# /usr/local/go/bin, and the Go module proxy. Module and build caches live under $EDGE_CACHE/go
# (default: .cache/go in the repository, ignored by git; .ci/run keeps them outside the clone). Honors
# GOFLAGS (e.g. -p=1 on a shared machine). Usage: collector/build.sh [--force]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
manifest="$here/builder-config.yaml"
dist="$here/dist"
binary="$dist/otelcol"
stamp="$dist/.build-stamp"

# shellcheck source=versions.env
. "$here/versions.env"
: "${OTELCOL_VERSION:?missing in versions.env}" "${OTELCOL_PROVIDERS_VERSION:?missing in versions.env}"

force=0
[[ "${1:-}" == "--force" ]] && force=1

if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || { echo "build.sh: go not found (install Go >= 1.26)" >&2; exit 1; }

# Every version in the manifest must be the pinned one: components and the distribution at
# v$OTELCOL_VERSION, config providers at v$OTELCOL_PROVIDERS_VERSION. A mismatch would build a
# collector that differs from the compose image, or fail deep inside `go mod tidy`.
check_manifest() {
  local bad=0 line module version
  while read -r line; do
    module="$(awk '{print $(NF-1)}' <<<"$line")"
    version="$(awk '{print $NF}' <<<"$line")"
    if [[ "$module" == */confmap/provider/* ]]; then
      [[ "$version" == "v$OTELCOL_PROVIDERS_VERSION" ]] || { echo "  $module $version (want v$OTELCOL_PROVIDERS_VERSION)" >&2; bad=1; }
    else
      [[ "$version" == "v$OTELCOL_VERSION" ]] || { echo "  $module $version (want v$OTELCOL_VERSION)" >&2; bad=1; }
    fi
  done < <(grep -E '^\s*-\s*gomod:' "$manifest" | sed -E 's/^\s*-\s*gomod:\s*//; s/["'\'']//g')
  grep -qE "^\s+version:\s*\"?$OTELCOL_VERSION\"?\s*$" "$manifest" \
    || { echo "  dist.version is not $OTELCOL_VERSION" >&2; bad=1; }
  if [[ $bad -ne 0 ]]; then
    echo "build.sh: $manifest disagrees with versions.env (above)" >&2
    exit 1
  fi
}
check_manifest

go_version="$(go env GOVERSION)"
want_stamp="$(printf '%s\n' "$OTELCOL_VERSION" "$OTELCOL_PROVIDERS_VERSION" "$go_version" \
  | cat - "$manifest" "$here/build.sh" | sha256sum | cut -d' ' -f1)"
if [[ $force -eq 0 && -x "$binary" && -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]]; then
  echo "build.sh: $binary is up to date (otelcol $OTELCOL_VERSION)"
  exit 0
fi

export GOMODCACHE="${EDGE_CACHE:-$root/.cache}/go/mod"
export GOCACHE="${EDGE_CACHE:-$root/.cache}/go/build"
export GOBIN="${EDGE_CACHE:-$root/.cache}/go/bin"
export GOPATH="${EDGE_CACHE:-$root/.cache}/go/path"
export CGO_ENABLED=0
mkdir -p "$GOMODCACHE" "$GOCACHE" "$GOBIN"

builder="$GOBIN/builder"
if [[ ! -x "$builder" ]] || [[ "$("$builder" version 2>/dev/null)" != *"v$OTELCOL_VERSION" ]]; then
  echo "build.sh: installing the collector builder v$OTELCOL_VERSION"
  go install "go.opentelemetry.io/collector/cmd/builder@v$OTELCOL_VERSION"
fi

echo "build.sh: building otelcol $OTELCOL_VERSION with $go_version (several minutes from a cold cache)"
rm -f "$stamp"
start=$SECONDS
# The builder compiles with -trimpath and -ldflags "-s -w" itself; CGO is off through the environment.
# It resolves output_path from the working directory, hence the cd.
(cd "$here" && "$builder" --config "$manifest")
"$binary" --version
echo "$want_stamp" >"$stamp"
echo "build.sh: built $binary in $((SECONDS - start)) s"
