"""The model store: fetching by path and URL, hash verification, caching, errors, and describe()."""

from __future__ import annotations

import hashlib
import http.server
import json
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
from harness.model.store import LocalModel, ModelError, ModelStore, create_session, describe


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
                if self.path.startswith("/slow/"):
                    time.sleep(1.0)  # longer than the tests' timeout
                super().do_GET()

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
    model = ModelStore(tmp_path / "cache").fetch(f"{server.url}/m.onnx")
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
        ModelStore(tmp_path / "cache").fetch(url)
    assert err.value.model == url
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_unreachable(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/m.onnx"
    with pytest.raises(ModelError, match=r"download failed: ConnectError: .*[Rr]efused") as err:
        ModelStore(tmp_path / "cache", timeout_s=5).fetch(url)
    assert err.value.model == url


def test_download_timeout(served, tmp_path):
    server, _ = served
    url = f"{server.url}/slow/m.onnx"
    with pytest.raises(ModelError, match=r"download timed out after 0.2 s") as err:
        ModelStore(tmp_path / "cache", timeout_s=0.2).fetch(url)
    assert err.value.model == url
    assert list((tmp_path / "cache").iterdir()) == []


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
    model = ModelStore(tmp_path / "cache").fetch(f"{server.url}/resnet-tiny.onnx")
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
