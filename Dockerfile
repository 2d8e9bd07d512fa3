# The edgeharness project image: the reference handler (`edgeharness serve`), the model server
# (`python -m http.server` over /app/models) and Locust (loadtests/) all run from it in compose.yaml.
#
# BASE_IMAGE: any Debian-based image whose `python` and `pip` on PATH are Python 3.11 to 3.13. The
# default is the pinned upstream image; scripts/images-offline.sh passes a local debootstrap one.
# No `# syntax=` line on purpose: it would pull a frontend image; the engine's built-in Dockerfile
# frontend (BuildKit) already supports the RUN --mount=type=secret used below.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Downloaded models are cached here (the handler fetches its model over HTTP, like from a CDN).
    EDGE_MODEL_CACHE=/app/.cache/models

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them: pyproject.toml alone, with an empty
# package, is enough for pip to resolve and install every dependency. This happens in a throwaway folder:
# setuptools leaves build/lib (and egg-info) behind, and a later `pip install .` in the same folder would
# copy that stale empty package instead of the real sources (its files are newer than the copied ones).
# README.md is left out (an empty one stands in), so editing it does not reinstall every dependency.
# pip's own configuration may come in as the optional build secrets `pip.conf` (an index, a proxy) and
# `pip-ca` (a CA bundle, used in place of the one pip.conf names, which is a path on the build machine):
# mounted for the RUN only, so no layer of the image holds them. Without them pip uses its defaults.
COPY pyproject.toml /tmp/deps/
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-ca \
    if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && cd /tmp/deps && mkdir -p harness && touch harness/__init__.py README.md \
    && pip install . \
    && pip uninstall -y edgeharness \
    && cd / && rm -rf /tmp/deps

COPY pyproject.toml README.md* ./
COPY harness ./harness
COPY loadtests ./loadtests
# The build backend (setuptools) is fetched by pip too, hence the secrets again.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-ca \
    if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && pip install --no-deps . && rm -rf build ./*.egg-info

# The reference models are built from code (no download), deterministically, at image build time.
RUN edgeharness model build --out /app/models

RUN useradd --create-home --uid 10001 app \
    && mkdir -p /app/.cache/models /app/out \
    && chown -R app:app /app/.cache /app/out
USER app

EXPOSE 8080 8000 8089
CMD ["edgeharness", "serve"]
