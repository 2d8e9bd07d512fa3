# The edgeharness project image: the reference handler (`edgeharness serve`), the model server
# (`python -m http.server` over /app/models) and Locust (loadtests/) all run from it in compose.yaml.
FROM python:3.11.13-slim-bookworm

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
COPY pyproject.toml README.md* /tmp/deps/
RUN cd /tmp/deps && mkdir -p harness && touch harness/__init__.py README.md \
    && pip install . \
    && pip uninstall -y edgeharness \
    && cd / && rm -rf /tmp/deps

COPY pyproject.toml README.md* ./
COPY harness ./harness
COPY loadtests ./loadtests
RUN pip install --no-deps . && rm -rf build ./*.egg-info

# The reference models are built from code (no download), deterministically, at image build time.
RUN edgeharness model build --out /app/models

RUN useradd --create-home --uid 10001 app \
    && mkdir -p /app/.cache/models /app/out \
    && chown -R app:app /app/.cache /app/out
USER app

EXPOSE 8080 8000 8089
CMD ["edgeharness", "serve"]
