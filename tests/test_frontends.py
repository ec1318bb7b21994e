"""TensorFlow and PyTorch frontends: every format of the sample CNN into verified ONNX.

Each conversion runs through the CLI (in process); the test then checks the
written ONNX against the *source framework itself* at batch 1 and 4 with its own
code (not the frontend's runner), so a frontend that ran the wrong thing, froze
the batch, or mislabelled outputs fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from tensorsmith.cli import app

REPO = Path(__file__).resolve().parents[1]
FW = REPO / "sample_models" / "frameworks"
RTOL, ATOL = 1e-4, 1e-5

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not built (python sample_models/build.py)")
    return path


def cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def convert_json(*args: str) -> dict:
    result = cli("convert", *args, "--json")
    assert result.exit_code == 0, result.output
    start = result.output.index("{")
    return json.loads(result.output[start : result.output.rindex("}") + 1])


def ort_run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def nhwc(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 32, 32, 3)).astype(np.float32)


def nchw(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)).astype(np.float32)


def io_names(path: Path) -> tuple[list[str], list[str]]:
    m = onnx.load(str(path), load_external_data=False)
    return [i.name for i in m.graph.input], [o.name for o in m.graph.output]


def dims(path: Path, which: str = "input") -> list:
    m = onnx.load(str(path), load_external_data=False)
    vi = (m.graph.input if which == "input" else m.graph.output)[0]
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def check_batches(onnx_path: Path, input_name: str, source, make) -> float:
    """ONNX vs ``source(x)`` at batch 1 and 4; returns the max abs diff."""
    worst = 0.0
    for batch, seed in ((1, 11), (4, 12)):
        x = make(batch, seed)
        (got,) = ort_run(onnx_path, {input_name: x})
        ref = np.asarray(source(x))
        assert got.shape == ref.shape == (batch, 10)
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


# ------------------------------------------------------------------ one test per format


def test_savedmodel(tf, tmp_path):
    src = _need(FW / "cnn_savedmodel")
    out = tmp_path / "sm.onnx"
    rep = convert_json(src, "-o", out)
    assert rep["status"] == "ok" and rep["source_format"] == "savedmodel"
    assert rep["framework"].startswith("TensorFlow ") and rep["converter"].startswith("tf2onnx")
    assert rep["verification"]["passed"] and rep["conversion_verification"]["passed"]
    assert rep["passes_verification"]["passed"]
    assert io_names(out) == (["input"], ["output_0"])
    assert dims(out)[0] == "batch"
    serve = tf.saved_model.load(str(src)).signatures["serving_default"]
    check_batches(out, "input", lambda x: serve(input=tf.constant(x))["output_0"].numpy(), nhwc)


def test_keras(tf, tmp_path):
    import keras

    src = _need(FW / "cnn.keras")
    out = tmp_path / "k.onnx"
    rep = convert_json(src, "-o", out)
    assert rep["source_format"] == "keras" and rep["verification"]["passed"]
    assert io_names(out) == (["input"], ["logits"])
    model = keras.models.load_model(src, compile=False)
    check_batches(out, "input", lambda x: model(x, training=False).numpy(), nhwc)


def test_h5(tf, tmp_path):
    import keras

    src = _need(FW / "cnn.h5")
    out = tmp_path / "h.onnx"
    rep = convert_json(src, "-o", out)
    assert rep["source_format"] == "h5" and rep["verification"]["passed"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = keras.models.load_model(src, compile=False)
    check_batches(out, "input", lambda x: model(x, training=False).numpy(), nhwc)


def _session_for_pb(tf, path: Path):
    gd = tf.compat.v1.GraphDef()
    gd.ParseFromString(path.read_bytes())
    g = tf.Graph()
    with g.as_default():
        tf.graph_util.import_graph_def(gd, name="")
    return tf.compat.v1.Session(graph=g)


def test_graphdef(tf, tmp_path):
    src = _need(FW / "cnn_frozen.pb")
    out = tmp_path / "g.onnx"
    rep = convert_json(src, "-o", out)
    assert rep["source_format"] == "graphdef" and rep["verification"]["passed"]
    # inputs = the Placeholder, outputs = the node nothing consumes
    assert io_names(out) == (["input"], ["Identity"])
    assert any("Placeholders input" in n for n in rep["notes"])
    sess = _session_for_pb(tf, src)
    check_batches(out, "input", lambda x: sess.run("Identity:0", {"input:0": x}), nhwc)


def test_tflite(tf, tmp_path):
    src = _need(FW / "cnn.tflite")
    out = tmp_path / "t.onnx"
    rep = convert_json(src, "-o", out)
    assert rep["source_format"] == "tflite" and rep["verification"]["passed"]
    (inp,), (outp,) = io_names(out)
    assert inp == "serving_default_input"

    def tflite(x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            it = tf.lite.Interpreter(model_path=str(src))
        d = it.get_input_details()[0]
        it.resize_tensor_input(d["index"], list(x.shape))
        it.allocate_tensors()
        it.set_tensor(d["index"], x)
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"])

    check_batches(out, inp, tflite, nhwc)


def test_torchscript(torch, tmp_path):
    src = _need(FW / "cnn_torchscript.pt")
    out = tmp_path / "ts.onnx"
    rep = convert_json(src, "-o", out, "--input-shape", "x=1x3x32x32")
    assert rep["source_format"] == "torchscript" and rep["verification"]["passed"]
    assert "TorchScript exporter" in rep["converter"]
    assert io_names(out) == (["x"], ["output"])
    assert dims(out) == ["batch", 3, 32, 32]
    module = torch.jit.load(str(src))
    check_batches(out, "x", lambda x: module(torch.from_numpy(x)).detach().numpy(), nchw)


def test_torch_export(torch, tmp_path):
    src = _need(FW / "cnn_export.pt2")
    out = tmp_path / "ep.onnx"
    rep = convert_json(src, "-o", out)
    assert rep["source_format"] == "torch-export" and rep["verification"]["passed"]
    assert "dynamo exporter" in rep["converter"]
    assert dims(out)[0] == "batch"
    module = torch.export.load(str(src)).module()
    check_batches(out, "x", lambda x: module(torch.from_numpy(x)).detach().numpy(), nchw)


def test_module_factory_with_weights(torch, tmp_path, monkeypatch):
    from sample_models.torch_cnn import build_cnn

    sd = _need(FW / "cnn_state_dict.pth")
    monkeypatch.chdir(REPO)
    out = tmp_path / "f.onnx"
    rep = convert_json(
        "sample_models.torch_cnn:build_cnn", "--weights", sd, "--input-shape", "x=1x3x32x32", "-o", out
    )
    assert rep["source_format"] == "torch-factory" and rep["verification"]["passed"]
    assert any("weights_only=True" in n for n in rep["notes"])
    assert rep["ops_before"].get("BatchNormalization") == 2 and "BatchNormalization" not in rep["ops_after"]
    model = build_cnn(seed=123)
    model.load_state_dict(torch.load(sd, weights_only=True))
    with torch.no_grad():
        check_batches(out, "x", lambda x: model(torch.from_numpy(x)).numpy(), nchw)
    # the factory's fresh weights differ: the .pth really was loaded
    fresh = build_cnn(seed=123)
    with torch.no_grad():
        (got,) = ort_run(out, {"x": nchw(1, 3)})
        assert not np.allclose(got, fresh(torch.from_numpy(nchw(1, 3))).numpy(), atol=1e-3)


def test_all_formats_compute_the_same_cnn(tf, torch, tmp_path):
    """The TF files take NHWC, the PyTorch ones NCHW: with --nchw-inputs the SavedModel matches cnn.onnx."""
    src = _need(FW / "cnn_savedmodel")
    out = tmp_path / "nchw.onnx"
    rep = convert_json(src, "--nchw-inputs", "-o", out)
    assert dims(out) == ["batch", 3, 32, 32]
    assert any("NCHW" in n for n in rep["notes"])
    x = nchw(4, 5)
    (got,) = ort_run(out, {"input": x})
    (ref,) = ort_run(REPO / "sample_models" / "cnn.onnx", {"input": x})
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------ options


def test_static_fixes_every_dim(tf, tmp_path):
    out = tmp_path / "static.onnx"
    rep = convert_json(_need(FW / "cnn.keras"), "--static", "--input-shape", "input=2x32x32x3", "-o", out)
    assert dims(out) == [2, 32, 32, 3]
    assert dims(out, "output") == [2, 10]
    assert rep["verification"]["samples"] == 1  # no second batch size for a static model


def test_opset_and_no_optimize(torch, tmp_path):
    out = tmp_path / "o17.onnx"
    rep = convert_json(
        _need(FW / "cnn_torchscript.pt"),
        "--opset",
        "17",
        "--no-optimize",
        "--input-shape",
        "x=1x3x32x32",
        "-o",
        out,
    )
    m = onnx.load(str(out))
    assert {o.domain: o.version for o in m.opset_import}[""] == 17
    assert rep["passes"] == [] and rep["ops_before"] == rep["ops_after"]
    assert rep["passes_verification"] is None and rep["conversion_verification"]["passed"]


@pytest.fixture(scope="session")
def toy_graphdef(tf, tmp_path_factory) -> Path:
    """x -> scaled = 2x -> shifted = scaled + 1 -> out = tanh(shifted); aux = x * x (also unconsumed)."""
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        scaled = tf.multiply(x, 2.0, name="scaled")
        shifted = tf.add(scaled, 1.0, name="shifted")
        tf.tanh(shifted, name="out")
        tf.multiply(x, x, name="aux")
    path = tmp_path_factory.mktemp("gd") / "toy.pb"
    path.write_bytes(g.as_graph_def().SerializeToString())
    return path


def test_graphdef_defaults_find_every_output(toy_graphdef, tmp_path):
    out = tmp_path / "toy.onnx"
    convert_json(toy_graphdef, "-o", out)
    ins, outs = io_names(out)
    assert ins == ["x"] and sorted(outs) == ["aux", "out"]
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    sess = ort.InferenceSession(str(out))
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x}), strict=False))
    np.testing.assert_allclose(got["out"], np.tanh(2 * x + 1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["aux"], x * x, rtol=1e-6)


def test_graphdef_inputs_outputs_override(toy_graphdef, tmp_path):
    out = tmp_path / "cut.onnx"
    rep = convert_json(toy_graphdef, "--inputs", "scaled", "--outputs", "out:0", "-o", out)
    assert io_names(out) == (["scaled"], ["out"])
    assert rep["verification"]["passed"]
    s = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    (got,) = ort_run(out, {"scaled": s})
    np.testing.assert_allclose(got, np.tanh(s + 1), rtol=1e-6, atol=1e-6)


def test_graphdef_override_unknown_node(toy_graphdef, tmp_path):
    result = cli("convert", toy_graphdef, "--outputs", "nope", "-o", tmp_path / "x.onnx")
    assert result.exit_code == 2 and "--outputs names no node nope" in result.output


@pytest.fixture(scope="session")
def scripted_with_int(torch, tmp_path_factory) -> Path:
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, x: torch.Tensor, scale: int, flip: bool = False) -> torch.Tensor:
            y = self.fc(x)
            if scale > 2:
                y = y * float(scale)
            if flip:
                y = -y
            return y

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ts") / "net.pt"
    torch.jit.script(Net().eval()).save(str(path))
    return path


def test_input_value_binds_a_constant(torch, scripted_with_int, tmp_path):
    out = tmp_path / "bound.onnx"
    rep = convert_json(scripted_with_int, "--input-shape", "x=1x8", "--input-value", "scale=3", "-o", out)
    assert io_names(out)[0] == ["x"]  # scale became a constant, flip kept its default
    assert any("scale" in n and "constant 3" in n for n in rep["notes"])
    assert "If" not in rep["ops_after"]  # the constant condition was folded away
    module = torch.jit.load(str(scripted_with_int))
    for batch in (1, 4):
        x = np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)
        (got,) = ort_run(out, {"x": x})
        ref = module(torch.from_numpy(x), 3).detach().numpy()
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
        assert not np.allclose(got, module(torch.from_numpy(x), 1).detach().numpy())


def test_optional_tensor_left_at_none(torch, tmp_path):
    """The TorchScript exporter refuses None arguments: they are bound through a wrapper."""
    from typing import Optional

    class Net(torch.nn.Module):
        def forward(
            self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, scale: int = 2
        ) -> torch.Tensor:
            out = x * scale
            if mask is not None:
                out = out * mask
            return out

    src = tmp_path / "opt.pt"
    torch.jit.script(Net()).save(str(src))
    out = tmp_path / "opt.onnx"
    rep = convert_json(src, "--input-shape", "x=1x4", "-o", out)
    assert io_names(out)[0] == ["x"]
    assert any("scale (int) left at its default 2" in n for n in rep["notes"])
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(ort_run(out, {"x": x})[0], x * 2)
    # given a shape, the optional tensor becomes an input
    out2 = tmp_path / "opt2.onnx"
    convert_json(src, "--input-shape", "x=1x4", "--input-shape", "mask=1x4", "-o", out2)
    assert io_names(out2)[0] == ["x", "mask"]
    np.testing.assert_array_equal(ort_run(out2, {"x": x, "mask": x})[0], x * 2 * x)


def test_non_tensor_argument_needs_input_value(torch, scripted_with_int, tmp_path):
    result = cli("convert", scripted_with_int, "--input-shape", "x=1x8", "-o", tmp_path / "x.onnx")
    assert result.exit_code == 2
    assert "--input-value scale=VALUE" in result.output


def test_torchscript_needs_input_shape(torch, tmp_path):
    result = cli("convert", _need(FW / "cnn_torchscript.pt"), "-o", tmp_path / "x.onnx")
    assert result.exit_code == 2 and "--input-shape x=" in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_factory_input_value_and_cwd_import(torch, tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        textwrap.dedent("""
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(6, 2)

            def forward(self, x, temperature: float, mode: str = "plain"):
                y = self.fc(x) / temperature
                return (y.softmax(-1), y) if mode == "both" else y

        def build():
            torch.manual_seed(0)
            return Net()
    """)
    )
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "net.onnx"
    rep = convert_json(
        "my_nets:build",
        "--input-shape",
        "x=1x6",
        "--input-value",
        "temperature=2.5",
        "--input-value",
        "mode=both",
        "-o",
        out,
    )
    assert io_names(out) == (["x"], ["output_0", "output_1"])
    assert any("temperature" in n and "2.5" in n for n in rep["notes"])
    sys.path.insert(0, str(tmp_path))
    try:
        import my_nets
    finally:
        sys.path.remove(str(tmp_path))
    net = my_nets.build().eval()
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    got = ort_run(out, {"x": x})
    with torch.no_grad():
        ref = net(torch.from_numpy(x), 2.5, "both")
    for g, r in zip(got, ref, strict=False):
        np.testing.assert_allclose(g, r.numpy(), rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------ inspect


@pytest.mark.parametrize(
    "name,fmt,inp",
    [
        ("cnn_savedmodel", "savedmodel", "input"),
        ("cnn.keras", "keras", "input"),
        ("cnn.h5", "h5", "input"),
        ("cnn_frozen.pb", "graphdef", "input"),
        ("cnn.tflite", "tflite", "serving_default_input"),
        ("cnn_torchscript.pt", "torchscript", "x"),
        ("cnn_export.pt2", "torch-export", "x"),
    ],
)
def test_inspect_every_format(tf, torch, name, fmt, inp):
    result = cli("inspect", _need(FW / name), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output[result.output.index("{") :])
    assert info["format"] == fmt
    assert info["inputs"][0]["name"] == inp
    assert info["outputs"], info
    assert info["file_bytes"] > 0
    assert info["parameters"] in (5610, 5612, 5420, 5622)  # 5612/5622 count BN counters / shape consts
    if fmt in ("savedmodel", "keras", "h5", "torch-export"):
        assert info["framework_version"], info


def test_inspect_module_factory(torch, monkeypatch):
    monkeypatch.chdir(REPO)
    result = cli("inspect", "sample_models.torch_cnn:build_cnn", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output[result.output.index("{") :])
    assert info["format"] == "torch-factory" and info["parameters"] == 5612
    assert [i["name"] for i in info["inputs"]] == ["x"]


# ------------------------------------------------------------------- lazy imports


def test_help_and_onnx_work_do_not_import_frameworks(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from typer.testing import CliRunner
        from tensorsmith.cli import app
        r = CliRunner()
        assert r.invoke(app, ["--help"]).exit_code == 0
        assert r.invoke(app, ["convert", "--help"]).exit_code == 0
        res = r.invoke(app, ["convert", {str(REPO / "sample_models" / "cnn.onnx")!r}, "-o", {str(tmp_path / "o.onnx")!r}])
        assert res.exit_code == 0, res.output
        assert r.invoke(app, ["inspect", {str(REPO / "sample_models" / "cnn.onnx")!r}]).exit_code == 0
        print(sorted(m for m in ("torch", "tensorflow", "tf2onnx", "keras") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
