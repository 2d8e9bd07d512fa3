#!/usr/bin/env bash
# The Docker engine for the compose stack and its tests: Debian's Docker engine package, started by hand (these
# machines have no init system that would start it). Idempotent: an engine that already answers is
# left alone, so a second CI run on the same machine does not fail.
#
#   scripts/engine.sh start    install Debian's Docker engine if dockerd is missing (root + apt-get), start dockerd
#                              in the background (log: $EDGE_DOCKERD_LOG), wait until `docker info` answers
#   scripts/engine.sh stop     stop the dockerd this script started (by its pid file), nothing else
#   scripts/engine.sh status   exit 0 when an engine answers
set -euo pipefail

log="${EDGE_DOCKERD_LOG:-/var/log/edgeharness-dockerd.log}"
pidfile="${EDGE_DOCKERD_PIDFILE:-/run/edgeharness-dockerd.pid}"
wait_s="${EDGE_DOCKERD_WAIT_S:-60}"

answers() { docker info >/dev/null 2>&1; }

install_engine() {
  command -v apt-get >/dev/null 2>&1 || { echo "engine.sh: no dockerd and no apt-get: install Docker by hand" >&2; exit 1; }
  [[ "$(id -u)" -eq 0 ]] || { echo "engine.sh: installing the Docker engine needs root" >&2; exit 1; }
  echo "engine.sh: installing Debian's Docker engine"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends docker.io >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends docker.io >/dev/null; }
}

start() {
  if answers; then
    echo "engine.sh: engine already running ($(docker info --format '{{.ServerVersion}} {{.Driver}}' 2>/dev/null))"
    return 0
  fi
  command -v dockerd >/dev/null 2>&1 || install_engine
  command -v docker >/dev/null 2>&1 || { echo "engine.sh: no docker client on PATH" >&2; exit 1; }
  [[ "$(id -u)" -eq 0 ]] || { echo "engine.sh: starting dockerd needs root" >&2; exit 1; }
  mkdir -p "$(dirname "$log")" "$(dirname "$pidfile")"
  # A pid file left by a dockerd that died would make the next one refuse to start.
  rm -f /var/run/docker.pid
  setsid nohup dockerd >>"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  local deadline=$((SECONDS + wait_s))
  until answers; do
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "engine.sh: dockerd exited; last lines of $log:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "engine.sh: dockerd did not answer within ${wait_s} s; see $log" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "engine.sh: dockerd $(docker info --format '{{.ServerVersion}} {{.Driver}}') started (pid $(cat "$pidfile"), log $log)"
}

stop() {
  [[ -f "$pidfile" ]] || { echo "engine.sh: no dockerd started by this script"; return 0; }
  local pid
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -f "$pidfile"
  echo "engine.sh: dockerd (pid $pid) stopped"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) answers ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
