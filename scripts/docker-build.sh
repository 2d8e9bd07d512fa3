#!/usr/bin/env bash
# `docker build ARGS` with BuildKit (build secrets and RUN --mount need it): through the buildx plugin
# when it is installed, else through Debian's Docker client (/usr/bin/docker, 20.10), which drives
# the engine's built-in BuildKit itself. A newer client without buildx only has the legacy builder.
set -euo pipefail

if docker buildx version >/dev/null 2>&1; then
  exec docker build "$@"
elif [[ -x /usr/bin/docker ]] && DOCKER_BUILDKIT=1 /usr/bin/docker build --help 2>/dev/null | grep -q -- '--secret'; then
  DOCKER_BUILDKIT=1 exec /usr/bin/docker build "$@"
fi
echo "docker-build.sh: no BuildKit-capable docker client: install the buildx plugin or Debian's Docker engine package" >&2
exit 1
