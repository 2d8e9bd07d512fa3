"""The project image, built with the real engine from the Dockerfile on a local Debian base image.

The build itself is the first check: it once failed at `edgeharness model build` (a stale, empty
`harness` package from setuptools' build/ shadowed the real one). Then what compose.yaml relies on:
the CLI, the installed package, the reference models, an unprivileged user, and no trace of the build
machine's pip configuration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from container_fixtures import BASE_IMAGE, REPO, build_project_image, docker, require_base_image

import harness

pytestmark = pytest.mark.timeout(1800)

TAG = "edgeharness:image-test"
MODELS = ("mobilenetv2-fp32.onnx", "mobilenetv2-int8.onnx")


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    base = require_base_image()
    build_project_image(TAG, base=base)
    yield TAG
    # The tag only: its layers stay cached for the next build (and are shared with edgeharness:offline).
    docker("image", "rm", TAG, check=False)


def run(image: str, *argv: str, workdir: str | None = None) -> str:
    options = ["--workdir", workdir] if workdir else []
    return docker("run", "--rm", "--network", "none", *options, image, *argv).stdout


def test_the_cli_runs(image):
    out = run(image, "edgeharness", "--help")
    for command in ("serve", "model", "run"):
        assert command in out


def test_the_installed_package_is_the_real_one(image):
    # From /, so the import finds the installed package, not /app/harness beside the working directory.
    out = run(image, "python", "-c", "import harness, json; print(json.dumps([harness.__version__, harness.__file__]))",
              workdir="/")  # fmt: skip
    version, location = json.loads(out)
    assert version == harness.__version__
    assert "site-packages" in location


def test_the_reference_models_are_built_in(image):
    listing = run(image, "ls", "/app/models").split()
    for model in MODELS:
        assert model in listing
        assert model.replace(".onnx", ".manifest.json") in listing
    size = run(image, "stat", "-c", "%s", f"/app/models/{MODELS[1]}")
    assert int(size) > 1_000_000


def test_it_runs_unprivileged(image):
    assert run(image, "id", "-u").strip() == "10001"
    assert docker("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip() == "app"


def test_the_build_machines_pip_configuration_stays_out(image):
    out = run(image, "sh", "-c", "ls -A /run/secrets 2>/dev/null; test -e /etc/pip.conf && echo pip.conf; env")
    assert "pip.conf" not in out.split()
    assert "pip-ca" not in out and "PIP_CERT" not in out
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "BEGIN CERTIFICATE" not in history


def test_the_base_is_the_local_one_by_build_argument(image):
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11.13-slim-bookworm\nFROM ${BASE_IMAGE}" in dockerfile
    base_layers = docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", BASE_IMAGE).stdout
    image_layers = docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", image).stdout
    assert json.loads(image_layers)[: len(json.loads(base_layers))] == json.loads(base_layers)
