"""The model store: fetching by path and URL, hash verification, caching, errors, and describe()."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import logging
import os
import pathlib
import pickle
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness import cli
from harness.model import builder
from harness.model.store import LocalModel, ModelError, ModelStore, create_session, describe, redact


def _tiny_classifier(
    shape: list[int | str], layout: str, classes: int = 10, meta: dict[str, str] | None = None
) -> bytes:
    """A small image classifier: (optional NHWC->NCHW transpose), conv, global pool, dense."""
    rng = np.random.default_rng(0)
    channels = shape[1] if layout == "NCHW" else shape[3]
    nodes = []
    x = "image"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    nodes += [
        helper.make_node("Conv", [x, "w", "b"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["scores"], transB=1),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, channels, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b"),
        numpy_helper.from_array(rng.normal(size=(classes, 8)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for key, value in (meta or {}).items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


class _Server:
    """A local HTTP server over a directory that counts the requests it serves."""

    def __init__(self, root: pathlib.Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

            def do_GET(self) -> None:
                server.requests.append(self.path)
                name = self.path.rsplit("/", 1)[-1]
                if self.path.startswith("/slow/"):
                    time.sleep(1.0)  # longer than the tests' timeout
                elif self.path.startswith("/gzip/"):
                    return self.reply(gzip.compress((root / name).read_bytes()), {"Content-Encoding": "gzip"})
                elif self.path.startswith("/trickle/"):
                    # Each byte well within any read timeout, the whole far beyond the download's deadline.
                    data = (root / name).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    for i in range(len(data)):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        time.sleep(0.05)
                    return None
                elif self.path.startswith("/stall/"):
                    # A byte every 1.5 s: each read just under a 2 s read timeout, the whole never ending.
                    self.send_response(200)
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    for _ in range(100):
                        time.sleep(1.5)
                        try:
                            self.wfile.write(b"x")
                            self.wfile.flush()
                        except OSError:
                            return None
                    return None
                elif self.path.startswith("/chunked/"):
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    data = (root / name).read_bytes()
                    self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
                    return None
                elif self.path.startswith("/to-localhost/"):
                    port = self.server.server_address[1]
                    return self.reply(b"", {"Location": f"http://localhost:{port}/{name}"}, status=302)
                elif self.path.startswith("/to-same/"):
                    return self.reply(b"", {"Location": f"/{name}"}, status=301)
                super().do_GET()
                return None

            def reply(self, body: bytes, headers: dict[str, str], status: int = 200) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path: pathlib.Path) -> Iterator[tuple[_Server, pathlib.Path]]:
    root = tmp_path / "www"
    root.mkdir()
    server = _Server(root)
    yield server, root
    server.close()


@pytest.fixture
def tiny(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "tiny-nchw.onnx"
    path.write_bytes(_tiny_classifier(["n", 3, 64, 48], "NCHW"))
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Fetching local files


def test_fetch_local_path(tiny, tmp_path):
    model = ModelStore(tmp_path / "cache").fetch(str(tiny))
    assert model == LocalModel(str(tiny), tiny.resolve(), _sha(tiny.read_bytes()), tiny.stat().st_size)
    assert not (tmp_path / "cache").exists()  # local files are used in place, not copied


def test_fetch_local_path_verifies_hash(tiny, tmp_path):
    store = ModelStore(tmp_path / "cache")
    good = _sha(tiny.read_bytes())
    assert store.fetch(str(tiny), good.upper()).sha256 == good
    with pytest.raises(ModelError) as err:
        store.fetch(str(tiny), "ab" * 32)
    assert err.value.model == str(tiny)
    assert str(err.value) == f"model {str(tiny)!r}: sha256 mismatch: expected {'ab' * 32}, got {good}"


def test_model_error_names_the_model_and_pickles():
    err = ModelError("http://x/m.onnx", "download failed: HTTP 404 Not Found")
    assert str(err) == "model 'http://x/m.onnx': download failed: HTTP 404 Not Found"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.model, copy.message, str(copy)) == (err.model, err.message, str(err))


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelError, match=r"model '.*nope\.onnx': file not found: .*nope\.onnx"):
        ModelStore(tmp_path).fetch(str(missing))


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(ModelError, match="is a directory"):
        ModelStore(tmp_path).fetch(str(tmp_path))


def test_malformed_expected_hash(tiny, tmp_path):
    with pytest.raises(ModelError, match="64 hex digits"):
        ModelStore(tmp_path).fetch(str(tiny), "abc")


def test_file_url(tiny, tmp_path):
    assert ModelStore(tmp_path).fetch(tiny.as_uri()).path == tiny.resolve()


def test_unsupported_scheme(tmp_path):
    with pytest.raises(ModelError, match="unsupported URL scheme 'ftp'"):
        ModelStore(tmp_path).fetch("ftp://example.invalid/m.onnx")


def test_not_onnx_file(tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    model = ModelStore(tmp_path).fetch(str(bogus))
    with pytest.raises(ModelError, match=r"model '.*model\.onnx': not a loadable ONNX model") as err:
        create_session(model, intra_op_threads=1)
    assert err.value.model == str(bogus)


# Fetching URLs


def test_download_verifies_and_caches(served, tmp_path):
    server, root = served
    data = _tiny_classifier(["n", 3, 32, 32], "NCHW")
    (root / "m.onnx").write_bytes(data)
    cache = tmp_path / "cache"
    url = f"{server.url}/m.onnx"

    model = ModelStore(cache).fetch(url, _sha(data))
    assert model.path == cache / f"{_sha(data)}.onnx"
    assert model.path.read_bytes() == data
    assert (model.source, model.sha256, model.size_bytes) == (url, _sha(data), len(data))
    assert server.requests == ["/m.onnx"]
    assert [p.name for p in cache.iterdir()] == [model.path.name]  # no temp files left

    # A second fetch with the hash, even from a new store, does not download again.
    assert ModelStore(cache).fetch(url, _sha(data)) == model
    assert server.requests == ["/m.onnx"]

    # A damaged cache entry is downloaded again rather than trusted.
    model.path.write_bytes(b"damaged")
    assert ModelStore(cache).fetch(url, _sha(data)).path.read_bytes() == data
    assert len(server.requests) == 2


def test_download_without_hash_still_caches_by_hash(served, tmp_path):
    server, root = served
    data = _tiny_classifier(["n", 3, 32, 32], "NCHW")
    (root / "m.onnx").write_bytes(data)
    model = ModelStore(tmp_path / "cache", allow_unverified_urls=True).fetch(f"{server.url}/m.onnx")
    assert model.path.name == f"{_sha(data)}.onnx" and model.sha256 == _sha(data)


def test_download_hash_mismatch(served, tmp_path):
    server, root = served
    data = b"not what you expected"
    (root / "m.onnx").write_bytes(data)
    cache = tmp_path / "cache"
    url = f"{server.url}/m.onnx"
    with pytest.raises(ModelError) as err:
        ModelStore(cache).fetch(url, "0" * 64)
    assert str(err.value) == f"model {url!r}: sha256 mismatch: expected {'0' * 64}, got {_sha(data)}"
    assert list(cache.iterdir()) == []  # nothing cached, no partial file


def test_download_404(served, tmp_path):
    server, _ = served
    url = f"{server.url}/missing.onnx"
    with pytest.raises(ModelError, match=r"download failed: HTTP 404") as err:
        ModelStore(tmp_path / "cache").fetch(url, "0" * 64)
    assert err.value.model == url
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_unreachable(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/m.onnx"
    with pytest.raises(ModelError, match=r"download failed: ConnectError: .*[Rr]efused") as err:
        ModelStore(tmp_path / "cache", timeout_s=5).fetch(url, "0" * 64)
    assert err.value.model == url


def test_download_timeout(served, tmp_path):
    server, _ = served
    url = f"{server.url}/slow/m.onnx"
    with pytest.raises(ModelError, match=r"download timed out: not complete within 0.2 s") as err:
        ModelStore(tmp_path / "cache", timeout_s=0.2).fetch(url, "0" * 64)
    assert err.value.model == url
    # The download's thread notices its deadline at its next read and removes its partial file.
    deadline = time.monotonic() + 5
    while list((tmp_path / "cache").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((tmp_path / "cache").iterdir()) == []


# Downloads bounded and verified (issue 14)


def test_an_http_model_needs_its_sha256_unless_insecure_is_allowed(served, tmp_path, caplog):
    server, root = served
    data = _tiny_classifier(["n", 3, 32, 32], "NCHW")
    (root / "m.onnx").write_bytes(data)
    url = f"{server.url}/m.onnx"
    with pytest.raises(ModelError, match=r"needs its expected sha256 \(serve: --model-sha256"):
        ModelStore(tmp_path / "cache").fetch(url)
    assert server.requests == []
    with caplog.at_level(logging.WARNING, logger="harness.model.store"):
        model = ModelStore(tmp_path / "cache", allow_unverified_urls=True).fetch(url)
    assert model.sha256 == _sha(data)
    assert "without verifying its sha256" in caplog.text


def test_download_size_cap_declared_and_streamed(served, tmp_path):
    server, root = served
    data = _tiny_classifier(["n", 3, 32, 32], "NCHW")
    (root / "m.onnx").write_bytes(data)
    store = ModelStore(tmp_path / "cache", max_bytes=len(data) - 1)
    with pytest.raises(ModelError, match=rf"{len(data)} bytes, larger than the limit of {len(data) - 1} bytes"):
        store.fetch(f"{server.url}/m.onnx", _sha(data))
    with pytest.raises(ModelError, match=rf"larger than the limit of {len(data) - 1} bytes"):
        store.fetch(f"{server.url}/chunked/m.onnx", _sha(data))  # no Content-Length: counted as it streams
    assert list((tmp_path / "cache").iterdir()) == []
    assert ModelStore(tmp_path / "cache", max_bytes=len(data)).fetch(f"{server.url}/chunked/m.onnx", _sha(data))
    # A local file past the cap is refused too.
    with pytest.raises(ModelError, match=r"larger than the limit"):
        store.fetch(str(root / "m.onnx"))


def test_download_asks_for_identity_and_refuses_an_encoded_body(served, tmp_path):
    server, root = served
    data = _tiny_classifier(["n", 3, 32, 32], "NCHW")
    (root / "m.onnx").write_bytes(data)
    with pytest.raises(ModelError, match=r"Content-Encoding 'gzip'; a model must come as identity"):
        ModelStore(tmp_path / "cache").fetch(f"{server.url}/gzip/m.onnx", _sha(data))


def test_download_deadline_is_for_the_whole_download(served, tmp_path):
    server, root = served
    (root / "m.onnx").write_bytes(b"x" * 400)  # 400 bytes at 20 a second: 20 s, each read quick
    started = time.monotonic()
    with pytest.raises(ModelError, match=r"download timed out: not complete within 1 s"):
        ModelStore(tmp_path / "cache", timeout_s=1.0).fetch(f"{server.url}/trickle/m.onnx", "0" * 64)
    assert time.monotonic() - started < 2.0
    deadline = time.monotonic() + 5
    while list((tmp_path / "cache").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((tmp_path / "cache").iterdir()) == []  # the partial file went with the download


def test_a_download_past_its_deadline_ends_its_thread_and_its_partial_file_at_once(served, tmp_path):
    server, _root = served
    before = {t for t in threading.enumerate() if t.name == "model-download"}
    store = ModelStore(tmp_path / "cache", timeout_s=2.0)
    with pytest.raises(ModelError, match=r"download timed out: not complete within 2 s"):
        store.fetch(f"{server.url}/stall/m.onnx", "0" * 64)
    # The read in flight at the deadline (begun at 1.5 s, with a 2 s read timeout of its own before) does
    # not keep the thread, its socket and its partial file for another second and more.
    ended_by = time.monotonic() + 0.5
    while time.monotonic() < ended_by and (
        {t for t in threading.enumerate() if t.name == "model-download"} - before
        or list((tmp_path / "cache").iterdir())
    ):
        time.sleep(0.02)
    assert {t for t in threading.enumerate() if t.name == "model-download"} - before == set()
    assert list((tmp_path / "cache").iterdir()) == []


def test_one_download_per_source_runs_at_a_time(served, tmp_path):
    server, _root = served
    store = ModelStore(tmp_path / "cache", timeout_s=2.0)
    url = f"{server.url}/stall/m.onnx"
    errors: list[Exception] = []

    def fetch() -> None:
        try:
            store.fetch(url, "0" * 64)
        except ModelError as exc:
            errors.append(exc)

    most = 0
    sampling = True

    def sample() -> None:
        nonlocal most
        while sampling:
            most = max(most, sum(t.name == "model-download" for t in threading.enumerate()))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    fetchers = [threading.Thread(target=fetch) for _ in range(3)]
    for thread in fetchers:
        thread.start()
    for thread in fetchers:
        thread.join(15)
    sampling = False
    sampler.join()
    assert len(errors) == 3 and all("timed out" in str(e) or "deadline" in str(e) for e in errors), errors
    # The later fetches waited for the one in flight instead of opening downloads of their own beside it.
    assert most == 1


def test_redirects_stay_on_the_host_and_never_leave_https(served, tmp_path):
    server, root = served
    data = _tiny_classifier(["n", 3, 32, 32], "NCHW")
    (root / "m.onnx").write_bytes(data)
    assert ModelStore(tmp_path / "a").fetch(f"{server.url}/to-same/m.onnx", _sha(data)).sha256 == _sha(data)
    with pytest.raises(ModelError, match=r"refused a redirect to another host \(http://localhost:\d+/m.onnx\)"):
        ModelStore(tmp_path / "b").fetch(f"{server.url}/to-localhost/m.onnx", _sha(data))
    anywhere = ModelStore(tmp_path / "c", redirects_anywhere=True)
    assert anywhere.fetch(f"{server.url}/to-localhost/m.onnx", _sha(data)).sha256 == _sha(data)
    import httpx

    store = ModelStore(tmp_path / "d")
    with pytest.raises(ModelError, match=r"refused a redirect from https to http"):
        store._redirect_target("https://cdn.test/m.onnx", httpx.URL("https://cdn.test/m.onnx"), "http://cdn.test/m")
    # An upgrade to https on the same host is followed; to another host it is not.
    upgraded = store._redirect_target(
        "http://cdn.test/m.onnx", httpx.URL("http://cdn.test/m.onnx"), "https://cdn.test/m"
    )
    assert str(upgraded) == "https://cdn.test/m"
    with pytest.raises(ModelError, match=r"refused a redirect to another host"):
        store._redirect_target("http://cdn.test/m.onnx", httpx.URL("http://cdn.test/m.onnx"), "https://other.test/m")


def test_the_model_loaded_is_the_file_that_was_hashed(tiny, tmp_path):
    model = ModelStore(tmp_path).fetch(str(tiny))
    assert model.content is not None and hashlib.sha256(model.content).hexdigest() == model.sha256
    tiny.write_bytes(b"swapped after the hash")  # the file changes between the hash and the load
    session = create_session(model, intra_op_threads=1)
    assert describe(session, model).input_name == "image"


def test_orphaned_partial_downloads_are_removed(served, tmp_path):
    server, root = served
    data = _tiny_classifier(["n", 3, 32, 32], "NCHW")
    (root / "m.onnx").write_bytes(data)
    cache = tmp_path / "cache"
    cache.mkdir()
    orphan, fresh = cache / ".download-dead.part", cache / ".download-live.part"
    orphan.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(orphan, (time.time() - 3600, time.time() - 3600))
    ModelStore(cache).fetch(f"{server.url}/m.onnx", _sha(data))
    assert not orphan.exists() and fresh.exists()  # another download may own a fresh one


def test_a_url_s_credentials_and_query_never_show(served, tmp_path):
    server, _ = served
    secret_url = server.url.replace("http://", "http://user:hunter2@") + "/missing.onnx?sig=s3cr3t"
    assert redact(secret_url) == f"{server.url}/missing.onnx?<redacted>"
    with pytest.raises(ModelError) as err:
        ModelStore(tmp_path / "cache").fetch(secret_url, "0" * 64)
    assert "hunter2" not in str(err.value) and "s3cr3t" not in str(err.value)
    assert f"{server.url}/missing.onnx?<redacted>" in str(err.value)


# describe()


def test_describe_reference_model(tmp_path):
    out = tmp_path / "models"
    builder.build_reference_models(out)
    for precision in ("fp32", "int8"):
        path = out / f"mobilenetv2-{precision}.onnx"
        model = ModelStore(tmp_path).fetch(str(path))
        session = create_session(model, intra_op_threads=1)
        info = describe(session, model)
        assert info.name == f"mobilenetv2-{precision}"
        assert info.version == builder.MODEL_VERSION
        assert (info.input_name, info.layout, info.height, info.width, info.channels) == ("input", "NHWC", 224, 224, 3)
        assert info.input_dtype == "uint8"
        assert info.num_classes == len(info.labels) == 1000 and info.labels[7] == "class-0007"
        assert info.mean == (0.485, 0.456, 0.406) and info.std == (0.229, 0.224, 0.225)
        assert info.sha256 == model.sha256
        x = np.zeros((1, info.height, info.width, 3), dtype=info.input_dtype)
        assert session.run(None, {info.input_name: x})[0].shape == (1, 1000)


def test_describe_nhwc_without_metadata(tmp_path):
    path = tmp_path / "tiny-nhwc.onnx"
    path.write_bytes(_tiny_classifier([1, 96, 128, 3], "NHWC", classes=5))
    model = ModelStore(tmp_path).fetch(str(path))
    info = describe(create_session(model, intra_op_threads=1), model)
    assert (info.layout, info.height, info.width, info.channels) == ("NHWC", 96, 128, 3)
    assert info.input_name == "image"
    assert info.labels == ("class-0", "class-1", "class-2", "class-3", "class-4") and info.num_classes == 5
    assert info.name == "tiny-nhwc" and info.version == model.sha256[:12]
    assert info.mean == (0.485, 0.456, 0.406)


def test_describe_dynamic_size_defaults_to_224(tmp_path):
    path = tmp_path / "dyn.onnx"
    path.write_bytes(_tiny_classifier(["n", 3, "h", "w"], "NCHW"))
    model = ModelStore(tmp_path).fetch(str(path))
    info = describe(create_session(model, intra_op_threads=1), model)
    assert (info.layout, info.height, info.width) == ("NCHW", 224, 224)


def test_describe_reads_metadata_and_checks_labels(tmp_path):
    meta = {"edgeharness.labels": json.dumps(["cat", "dog"]), "edgeharness.mean": "[0.5, 0.5, 0.5]"}
    path = tmp_path / "pets.onnx"
    path.write_bytes(_tiny_classifier(["n", 1, 28, 28], "NCHW", classes=2, meta=meta))
    model = ModelStore(tmp_path).fetch(str(path))
    info = describe(create_session(model, intra_op_threads=1), model)
    assert (info.labels, info.mean, info.channels) == (("cat", "dog"), (0.5, 0.5, 0.5), 1)

    path.write_bytes(_tiny_classifier(["n", 3, 28, 28], "NCHW", classes=3, meta=meta))
    model = ModelStore(tmp_path).fetch(str(path))
    with pytest.raises(ModelError, match="metadata has 2 labels but output 'scores' has 3"):
        describe(create_session(model, intra_op_threads=1), model)


def test_describe_rejects_non_image_input(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    model.ir_version = 8
    path = tmp_path / "vector.onnx"
    onnx.save(model, str(path))
    local = ModelStore(tmp_path).fetch(str(path))
    with pytest.raises(ModelError, match=r"expected one 4-D image input, found: x\[1, 10\]"):
        describe(create_session(local, intra_op_threads=1), local)


def test_describe_model_from_url_is_named_after_the_url(served, tmp_path):
    server, root = served
    (root / "resnet-tiny.onnx").write_bytes(_tiny_classifier(["n", 3, 32, 32], "NCHW"))
    model = ModelStore(tmp_path / "cache", allow_unverified_urls=True).fetch(f"{server.url}/resnet-tiny.onnx")
    assert describe(create_session(model, intra_op_threads=1), model).name == "resnet-tiny"


# CLI


def test_cli_inspect(tiny, tmp_path, capsys):
    assert cli.main(["model", "inspect", str(tiny), "--cache-dir", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout"] == "NCHW" and info["height"] == 64 and info["width"] == 48 and len(info["labels"]) == 10


def test_cli_inspect_error_is_one_line_and_exit_2(tiny, tmp_path, capsys):
    assert cli.main(["model", "inspect", str(tiny), "--sha256", "0" * 64, "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sha256 mismatch" in err and str(tiny) in err
