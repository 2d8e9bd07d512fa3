"""The model's start-up load begun in a thread of its own (`start_loading`), then installed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from handler_fixtures import int8_model, models_dir  # noqa: F401

from harness.handler import lifecycle
from harness.handler.lifecycle import ColdStart, ModelRuntime, start_loading
from harness.model.store import ModelError, ModelStore


def runtime(store: ModelStore, source: str, events: list[object]) -> ModelRuntime:
    return ModelRuntime(
        store=store,
        source=source,
        expected_sha256=None,
        threads=1,
        idle_timeout_s=0,
        on_cold_start=events.append,
        on_loaded_changed=events.append,
    )


def test_a_load_begun_in_a_thread_is_installed_at_startup(
    tmp_path: Path,
    int8_model: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaders: list[str] = []

    def load_model(*args: object) -> object:
        loaders.append(threading.current_thread().name)
        return real_load_model(*args)

    real_load_model = lifecycle.load_model
    monkeypatch.setattr(lifecycle, "load_model", load_model)
    store = ModelStore(tmp_path / "cache")
    began = time.perf_counter()
    loading = start_loading(store, str(int8_model), None, 1)
    events: list[object] = []
    rt = runtime(store, str(int8_model), events)
    cold = rt.load_at_startup(loading)
    assert rt.loaded is not None
    assert rt.loaded.info.name
    assert cold.reason == "startup"
    assert set(cold.phases_ms) == {"fetch", "session", "warmup"}
    assert began < cold.ended_at <= time.perf_counter()
    assert rt.cold_starts == 1
    assert events == [cold, True]
    # The caller's thread was free while the model loaded: the load ran on a thread of its own.
    assert loaders == ["model-load"]


def test_a_failed_threaded_load_raises_the_model_error_at_startup(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "cache")
    missing = str(tmp_path / "nowhere.onnx")
    loading = start_loading(store, missing, None, 1)
    events: list[object] = []
    rt = runtime(store, missing, events)
    with pytest.raises(ModelError, match=r"nowhere\.onnx"):
        rt.load_at_startup(loading)
    assert rt.loaded is None
    assert events == []


def test_without_a_threaded_load_startup_loads_in_place(tmp_path: Path, int8_model: Path) -> None:  # noqa: F811
    events: list[object] = []
    rt = runtime(ModelStore(tmp_path / "cache"), str(int8_model), events)
    cold = rt.load_at_startup()
    assert isinstance(cold, ColdStart) and cold.reason == "startup"
    assert rt.loaded is not None
