"""Shared helpers for the handler tests: the reference models, images, a running `edgeharness serve`."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from harness.load.processes import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference models: those `make setup` built, or built now for this session."""
    built = ROOT / "models"
    if (built / "mobilenetv2-int8.onnx").exists() and (built / "mobilenetv2-fp32.onnx").exists():
        return built
    out = tmp_path_factory.mktemp("models")
    from harness.model.builder import build_reference_models

    build_reference_models(out)
    return out


@pytest.fixture(scope="session")
def int8_model(models_dir: Path) -> Path:
    return models_dir / "mobilenetv2-int8.onnx"


def photo(width: int = 640, height: int = 480, seed: int = 1) -> Image.Image:
    from harness.images import synthetic_photo

    return synthetic_photo(width, height, seed)


def encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def jpeg(width: int = 640, height: int = 480, seed: int = 1) -> bytes:
    return encoded(photo(width, height, seed), "JPEG", quality=85)


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A tiny PNG whose header declares an enormous image: the classic decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def process_running(pid: int) -> bool:
    """Whether `pid` exists and has not exited (a zombie only waits to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class ServeProcess:
    """`edgeharness serve` in a subprocess on loopback, with its output kept for assertions."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "harness", "serve", "--host", "127.0.0.1", "--port", str(self.port), *args]
        self._log_file = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=self._log_file, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"edgeharness serve exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"edgeharness serve not ready in {timeout_s} s: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_file is not subprocess.DEVNULL:
            self._log_file.close()
        return self.proc.returncode


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[type[ServeProcess]]:
    started: list[ServeProcess] = []

    def factory(args: list[str], env: dict[str, str] | None = None) -> ServeProcess:
        proc = ServeProcess(args, env=env, log=tmp_path / f"serve-{len(started)}.log")
        started.append(proc)
        return proc

    yield factory  # type: ignore[misc]
    for proc in started:
        proc.stop()
