"""`edgeharness serve`: run the reference inference handler."""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from typing import Any


def register(subparsers: Any) -> None:
    from harness.handler.settings import add_arguments

    parser = subparsers.add_parser(
        "serve",
        help="run the reference inference handler (one PoP of one region)",
        description=(
            "Serve POST /v1/classify (an ONNX Runtime image classifier), /healthz, /readyz, /metrics and "
            "/openapi.json. Every flag can also be set by the EDGE_* environment variable shown."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    # No cyclic garbage collection until ready (server.py turns it back on): the imports alone would run
    # dozens of collections, scanning every module object again and again, to find a few hundred
    # unreachable objects, which the freeze at ready would keep anyway.
    gc.disable()
    # The handler does no BLAS work (ONNX Runtime has its own threads); OpenBLAS's thread pool would only
    # add ~60 ms to every process cold start.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from harness.handler.settings import SettingsError, from_sources

    try:
        settings = from_sources(args)
    except SettingsError as exc:
        print(f"edgeharness serve: {exc}", file=sys.stderr)
        return 2
    if settings.start_strategy == "zygote":
        from harness.handler.zygote import run_zygote

        return run_zygote(settings, started)
    # The heavy imports (numpy, Pillow, ONNX Runtime, Starlette, uvicorn) are the first init phase. An
    # eager model load begins as soon as ONNX Runtime is in, and runs beside the rest of them.
    from harness.handler.lifecycle import model_store, start_loading
    from harness.model.store import ModelError

    store = model_store(settings)
    loading = None
    if settings.load == "eager":
        loading = start_loading(store, settings.model, settings.model_sha256 or None, settings.threads)
    import harness.handler.app  # noqa: F401
    from harness.handler.server import serve

    imports_done = time.perf_counter()
    try:
        return serve(settings, started, imports_done, store=store, loading=loading)
    except ModelError as exc:
        print(f"edgeharness serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"edgeharness serve: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 2
