#!/usr/bin/env bash
# Installs Debian's prometheus package when no `prometheus` is on PATH (native stack and CI). Never
# starts the system service: the harness and the tests start their own Prometheus with the flags in
# collector/prometheus-flags. Needs root (or sudo) and apt-get. Idempotent.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
  echo "install-prometheus.sh: $(prometheus --version 2>&1 | head -n1)"
  exit 0
fi
command -v apt-get >/dev/null 2>&1 || { echo "install-prometheus.sh: apt-get not found; install Prometheus >= 2.42 by hand" >&2; exit 1; }

sudo=""
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-prometheus.sh: run as root (or install sudo)" >&2; exit 1; }
  sudo="sudo"
fi

# policy-rc.d answering 101 tells invoke-rc.d and deb-systemd-invoke not to start services from the
# package's postinst. Keep whatever policy the machine had and put it back afterwards.
policy=/usr/sbin/policy-rc.d
backup=""
if [[ -e "$policy" ]]; then
  backup="$(mktemp)"
  $sudo cp -p "$policy" "$backup"
fi
restore_policy() {
  if [[ -n "$backup" ]]; then
    $sudo cp -p "$backup" "$policy"
    rm -f "$backup"
  else
    $sudo rm -f "$policy"
  fi
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
$sudo chmod 755 "$policy"

export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold prometheus

# Belt and braces on a systemd machine: if the service came up anyway, stop it (it would hold :9090).
if [[ -d /run/systemd/system ]] && systemctl is-active --quiet prometheus 2>/dev/null; then
  $sudo systemctl stop prometheus || true
fi

echo "install-prometheus.sh: $(prometheus --version 2>&1 | head -n1)"
