"""The real container engine in tests: find it, require it (skip outside CI, fail in CI), run images.

Images are built by the scripts the README names (scripts/*.sh), never by hand-written steps here, so a
test exercises what a user runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
BASE_IMAGE = os.environ.get("EDGE_BASE_IMAGE", "edgeharness/debian-python:bookworm")

HOW_TO_GET_ENGINE = "install and start Docker: `scripts/engine.sh start` (as root; installs Debian's Docker engine)"
HOW_TO_GET_BASE_IMAGE = f"build {BASE_IMAGE} with `scripts/debian-base.sh` (as root; or `make images-offline`)"
HOW_TO_GET_COMPOSE = "build the Docker Compose plugin with `scripts/build-compose.sh` (needs Go)"


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`docker ARGS` with its output captured; a failure raises with what the command printed."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} exited with {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return docker("info", "--format", "{{.ServerVersion}}", timeout=20, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return docker("compose", "version", timeout=20, check=False).returncode == 0


def image_exists(name: str) -> bool:
    return docker("image", "inspect", name, timeout=20, check=False).returncode == 0


def require(present: bool, what: str, how: str) -> None:
    """Skip (with how to get it) when a component is missing; in CI (CI=true) fail instead."""
    if present:
        return
    message = f"{what} not found: {how}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: the container tests must run in CI)", pytrace=False)
    pytest.skip(message)


def require_engine() -> None:
    require(engine_answers(), "a running Docker engine", HOW_TO_GET_ENGINE)


def require_base_image() -> str:
    require_engine()
    require(image_exists(BASE_IMAGE), f"the base image {BASE_IMAGE}", HOW_TO_GET_BASE_IMAGE)
    return BASE_IMAGE


def require_compose() -> None:
    require_engine()
    require(compose_available(), "the Docker Compose plugin", HOW_TO_GET_COMPOSE)


def build_project_image(tag: str, *, base: str, dockerfile: Path | None = None, timeout: float = 1800) -> None:
    """Build the project image with scripts/build-project-image.sh; a failed build fails with its log tail."""
    argv = [str(SCRIPTS / "build-project-image.sh"), "--base", base, "--tag", tag]
    if dockerfile is not None:
        argv += ["--dockerfile", str(dockerfile)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).splitlines()
        pytest.fail(f"the image build failed ({result.returncode}):\n" + "\n".join(output[-60:]), pytrace=False)
