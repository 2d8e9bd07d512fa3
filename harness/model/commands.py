"""`edgeharness model build|inspect|prepare`: build the reference models, describe any ONNX image classifier, or
save one in ONNX Runtime's optimized form."""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
from typing import Any

DEFAULT_CACHE = pathlib.Path(".cache") / "models"


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    parser = subparsers.add_parser("model", help="build the reference models; inspect a model")
    commands = parser.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: _usage(parser))

    build = commands.add_parser(
        "build", help="build MobileNetV2 (fp32 and int8) with seeded weights, deterministically, from code"
    )
    build.add_argument("--out", type=pathlib.Path, default=pathlib.Path("models"), help="output directory")
    build.add_argument("--force", action="store_true", help="rebuild even if identical outputs exist")
    build.set_defaults(func=_build)

    inspect = commands.add_parser("inspect", help="fetch a model (path or URL) and print what it expects, as JSON")
    inspect.add_argument("source", metavar="SOURCE", help="model file path or http(s) URL")
    inspect.add_argument("--sha256", metavar="HEX", help="expected sha256 of the model file")
    inspect.add_argument(
        "--insecure-model-url", action="store_true", help="allow an http(s) model without --sha256 (not verified)"
    )
    inspect.add_argument(
        "--cache-dir", type=pathlib.Path, default=DEFAULT_CACHE, help=f"download cache (default {DEFAULT_CACHE})"
    )
    inspect.add_argument("--brief", action="store_true", help="abbreviate the label list to its first five")
    inspect.set_defaults(func=_inspect)

    prepare = commands.add_parser(
        "prepare",
        help="save a model with its graph optimizations done ahead of time (ORT format), for faster session starts",
        description=(
            "Runs every ONNX Runtime graph optimization once and saves the result (default: beside the model, "
            "with the .ort suffix) and a manifest. The file may hold optimizations for this CPU and this ONNX "
            "Runtime version: prepare on the machine that serves it. Serve it with --model PATH.ort."
        ),
    )
    prepare.add_argument("source", metavar="MODEL", type=pathlib.Path, help="ONNX model file")
    prepare.add_argument("--out", type=pathlib.Path, help="output file (default: MODEL with .ort or .prepared.onnx)")
    prepare.add_argument("--format", choices=("ort", "onnx"), default="ort", help="ORT format or optimized ONNX")
    prepare.set_defaults(func=_prepare)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _build(args: argparse.Namespace) -> int:
    from harness.model.builder import build_reference_models

    try:
        manifests = build_reference_models(args.out, force=args.force)
    except OSError as exc:
        print(f"edgeharness model build: cannot write to {args.out}: {exc}", file=sys.stderr)
        return 2
    for m in manifests:
        print(f"{args.out / m.file}  {m.precision}  {m.size_bytes} bytes  sha256 {m.sha256}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from harness.model.store import ModelError, ModelStore, create_session, describe

    try:
        store = ModelStore(args.cache_dir, allow_unverified_urls=args.insecure_model_url)
        model = store.fetch(args.source, args.sha256)
        info = describe(create_session(model, intra_op_threads=1), model)
    except ModelError as exc:
        print(f"edgeharness model inspect: {exc}", file=sys.stderr)
        return 2
    data = dataclasses.asdict(info)
    if args.brief:
        data["labels"] = list(info.labels[:5]) + (["..."] if len(info.labels) > 5 else [])
    print(json.dumps(data, indent=2))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from harness.model.prepare import PrepareError, prepare

    try:
        prepared = prepare(args.source, args.out, args.format)
    except PrepareError as exc:
        print(f"edgeharness model prepare: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"edgeharness model prepare: cannot write {args.out or 'beside ' + str(args.source)}: {exc}",
            file=sys.stderr,
        )
        return 2
    print(f"{prepared.path}  {prepared.format}  from {prepared.source} (sha256 {prepared.source_sha256[:12]})")
    return 0
