#!/usr/bin/env bash
# Builds Prometheus and promtool at the version pinned in collector/versions.env (the one compose.yaml's
# prom/prometheus image tag names) from the Prometheus Go module, into collector/dist/prometheus/.
# Reuses the binaries while the pin, this script and the Go version are unchanged (stamp as build.sh).
#
# Prometheus 3.MM.P is the Go module github.com/prometheus/prometheus at v0.3MM.P. `go install` cannot
# build it (its go.mod has replace directives), so the module's source is downloaded, copied somewhere
# writable and built in place, with GOWORK=off because the module carries a go.work naming folders it
# does not ship. The web UI's assets are not in the module: the API, remote write and OTLP receivers and
# rule evaluation work without them (the UI answers with an error page).
#
# Needs Go on PATH or in /usr/local/go/bin and the Go module proxy. Module and build caches live under
# .cache/go in the repository (ignored by git), shared with build.sh, so CI can cache that one folder.
# Honors GOFLAGS (e.g. -p=1 on a shared machine). Usage: collector/build-prometheus.sh [--force]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
dist="$here/dist/prometheus"
stamp="$dist/.build-stamp"

# shellcheck source=versions.env
. "$here/versions.env"
: "${PROMETHEUS_VERSION:?missing in versions.env}"

force=0
[[ "${1:-}" == "--force" ]] && force=1

if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || { echo "build-prometheus.sh: go not found (install Go >= 1.25)" >&2; exit 1; }

# 3.MM.P -> v0.3MM.P (minor zero-padded to two digits: 3.5.0 -> v0.305.0).
IFS=. read -r major minor patch <<<"$PROMETHEUS_VERSION"
[[ "$major" == 3 && "$minor" =~ ^[0-9]+$ && "$patch" =~ ^[0-9]+$ ]] \
  || { echo "build-prometheus.sh: PROMETHEUS_VERSION=$PROMETHEUS_VERSION is not 3.MM.P" >&2; exit 1; }
module_version="$(printf 'v0.3%02d.%d' "$minor" "$patch")"

go_version="$(go env GOVERSION)"
want_stamp="$(printf '%s\n' "$PROMETHEUS_VERSION" "$go_version" | cat - "$here/build-prometheus.sh" | sha256sum | cut -d' ' -f1)"
if [[ $force -eq 0 && -x "$dist/prometheus" && -x "$dist/promtool" && -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]]; then
  echo "build-prometheus.sh: $dist is up to date (prometheus $PROMETHEUS_VERSION)"
  exit 0
fi

export GOMODCACHE="${EDGE_CACHE:-$root/.cache}/go/mod"
export GOCACHE="${EDGE_CACHE:-$root/.cache}/go/build"
export GOPATH="${EDGE_CACHE:-$root/.cache}/go/path"
export CGO_ENABLED=0
export GOWORK=off
mkdir -p "$GOMODCACHE" "$GOCACHE" "$dist"

echo "build-prometheus.sh: building prometheus $PROMETHEUS_VERSION ($module_version) with $go_version (minutes from a cold cache)"
rm -f "$stamp"
start=$SECONDS
module_dir="$(cd "$root" && go mod download -json "github.com/prometheus/prometheus@$module_version" \
  | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')"
[[ -n "$module_dir" && -d "$module_dir" ]] || { echo "build-prometheus.sh: module download failed" >&2; exit 1; }

# The module cache is read-only: build in a writable copy, kept under .cache/go/src so that later
# builds (another pin, or this script changed) reuse it and Go's build cache.
src="${EDGE_CACHE:-$root/.cache}/go/src/prometheus-$module_version"
if [[ ! -f "$src/go.mod" ]]; then
  rm -rf "$src.tmp"
  mkdir -p "$(dirname "$src")"
  cp -r "$module_dir" "$src.tmp"
  chmod -R u+w "$src.tmp"
  mv "$src.tmp" "$src"
fi

pkg=github.com/prometheus/common/version
ldflags="-s -w -X $pkg.Version=$PROMETHEUS_VERSION -X $pkg.Revision=$module_version -X $pkg.Branch=HEAD"
ldflags+=" -X $pkg.BuildUser=edgeharness -X $pkg.BuildDate=module-$module_version"
for cmd in prometheus promtool; do
  (cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$dist/$cmd.tmp" "./cmd/$cmd")
  mv "$dist/$cmd.tmp" "$dist/$cmd"
done
"$dist/prometheus" --version | head -n1
"$dist/promtool" --version | head -n1
echo "$want_stamp" >"$stamp"
echo "build-prometheus.sh: built $dist/{prometheus,promtool} in $((SECONDS - start)) s"
