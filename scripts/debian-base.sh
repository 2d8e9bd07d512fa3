#!/usr/bin/env bash
# A local stand-in for python:3.11-slim-bookworm, for machines without a container registry: Debian
# bookworm from debootstrap (minbase) against the mirror the machine's apt uses, with Debian's
# python3 (3.11) in a virtual environment at /opt/venv that is first on PATH (so `python` and `pip`
# work as in the upstream image, and pip installs do not touch Debian's own python3 packages).
# Imported as $EDGE_BASE_IMAGE (default edgeharness/debian-python:bookworm): an honest local name,
# never an upstream one. Needs root, debootstrap (installed with apt-get when missing) and an engine.
#
# Idempotent: an existing image is kept; the root filesystem tarball is cached under .cache/images/
# so a fresh engine re-imports it in seconds. Usage: scripts/debian-base.sh [--force]
set -euo pipefail

image="${EDGE_BASE_IMAGE:-edgeharness/debian-python:bookworm}"
suite=bookworm
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${EDGE_CACHE:-$root/.cache}/images"
tarball="$cache/debian-python-$suite.tar"
force=0
[[ "${1:-}" == "--force" ]] && force=1

if [[ $force -eq 0 ]] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "debian-base.sh: $image exists"
  exit 0
fi

# The first Debian mirror apt is configured with (deb822 .sources or one-line .list format).
mirror() {
  local found
  found="$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -vE 'security' | head -n1 || true)"
  [[ -n "$found" ]] || found="$(grep -hsE '^deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)"
  [[ -n "$found" ]] || { echo "debian-base.sh: no Debian mirror configured for apt (set EDGE_DEBIAN_MIRROR)" >&2; exit 1; }
  echo "$found"
}

if [[ $force -eq 1 || ! -s "$tarball" ]]; then
  [[ "$(id -u)" -eq 0 ]] || { echo "debian-base.sh: debootstrap needs root" >&2; exit 1; }
  if ! command -v debootstrap >/dev/null 2>&1; then
    # On a fresh machine (a new CI runner) apt's package lists may be empty: update once, then retry.
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends debootstrap >/dev/null \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends debootstrap >/dev/null; }
  fi
  url="${EDGE_DEBIAN_MIRROR:-$(mirror)}"
  rootfs="$(mktemp -d "${TMPDIR:-/tmp}/edgeharness-rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
  start=$SECONDS
  echo "debian-base.sh: debootstrap $suite from $url"
  debootstrap --variant=minbase \
    --include=python3,python3-venv,ca-certificates,passwd,tzdata \
    "$suite" "$rootfs" "$url" >"$rootfs.log" 2>&1 \
    || { tail -n 20 "$rootfs.log" >&2; exit 1; }
  chroot "$rootfs" python3 -m venv /opt/venv
  # A slim image: no apt lists, docs or caches (apt-get in a derived image runs `apt-get update` first).
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  mkdir -p "$cache"
  tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  echo "debian-base.sh: root filesystem in $((SECONDS - start)) s ($(du -h "$tarball" | cut -f1))"
fi

docker import \
  --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "Debian $suite (debootstrap minbase) with python3 in /opt/venv: a local stand-in for python:3.11-slim-bookworm" \
  "$tarball" "$image" >/dev/null
echo "debian-base.sh: $image ($(docker run --rm "$image" python --version))"
