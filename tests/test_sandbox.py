"""A native crash while loading a generated model: a message and an exit code, never a dead process."""

from __future__ import annotations

import json
import signal

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh
from typer.testing import CliRunner

from tensorsmith import sandbox
from tensorsmith.cli import app

# A stand-in for onnxruntime's optimizer bug: the child crashes (SIGSEGV) when a Transpose
# produces float16, as onnxruntime 1.32 does for the float16 bidirectional-GRU tagger.
CRASH_ON_FP16_TRANSPOSE = """
import os, signal, sys
import onnx
m = onnx.shape_inference.infer_shapes(onnx.load(sys.argv[1]))
types = {v.name: v.type.tensor_type.elem_type for v in list(m.graph.value_info) + list(m.graph.output)}
for n in m.graph.node:
    if n.op_type == "Transpose" and types.get(n.output[0]) == onnx.TensorProto.FLOAT16:
        os.kill(os.getpid(), signal.SIGSEGV)
"""
ALWAYS_CRASH = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(sandbox, "_cache", {})


def gru_tagger(path, hidden=8, features=4, classes=5):
    """A bidirectional GRU whose output is laid out as Paddle exports it: Transpose, Reshape [0,0,-1], MatMul."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array(rng.standard_normal((2, 3 * hidden, features)).astype(np.float32), "W"),
        nh.from_array(rng.standard_normal((2, 3 * hidden, hidden)).astype(np.float32), "R"),
        nh.from_array(rng.standard_normal((2, 6 * hidden)).astype(np.float32), "B"),
        nh.from_array(np.array([0, 0, -1], np.int64), "shape"),
        nh.from_array(rng.standard_normal((2 * hidden, classes)).astype(np.float32), "M"),
    ]
    nodes = [
        oh.make_node("GRU", ["x", "W", "R", "B"], ["Y"], hidden_size=hidden, direction="bidirectional"),
        oh.make_node("Transpose", ["Y"], ["Yt"], perm=[0, 2, 1, 3]),
        oh.make_node("Reshape", ["Yt", "shape"], ["Yr"]),
        oh.make_node("Transpose", ["Yr"], ["Yb"], perm=[1, 0, 2]),
        oh.make_node("MatMul", ["Yb", "M"], ["out"]),
    ]
    graph = oh.make_graph(
        nodes,
        "tagger",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["s", "b", features])],
        [oh.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        inits,
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(path))
    return path


def optimize_fp16(src, out, *extra):
    args = ["optimize", str(src), "-o", str(out), "--precision", "fp16", "--input-shape", "x=7x1x4", "--json"]
    return CliRunner().invoke(app, [*args, *extra])


def test_probe_passes_a_model_that_loads(samples):
    assert sandbox.probe(samples / "cnn.onnx") is None
    assert sandbox.probe((samples / "cnn.onnx").read_bytes(), optimize=False) is None


def test_probe_turns_a_crash_into_a_message(monkeypatch, samples):
    monkeypatch.setattr(sandbox, "_CHILD", ALWAYS_CRASH)
    msg = sandbox.probe(samples / "cnn.onnx")
    assert msg is not None and "crashed (SIGSEGV)" in msg
    with pytest.raises(sandbox.NativeCrash, match="the model: onnxruntime crashed"):
        sandbox.check(samples / "cnn.onnx", "the model")


def test_probe_results_are_cached_per_content(monkeypatch, samples):
    calls = []
    real = sandbox.subprocess.run

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(sandbox.subprocess, "run", counting)
    sandbox.probe(samples / "cnn.onnx")
    sandbox.probe(samples / "cnn.onnx")
    assert len(calls) == 1
    sandbox.probe(samples / "cnn.onnx", optimize=False)
    assert len(calls) == 2


def test_find_culprits_bisects_to_the_one_node():
    names = [f"n{i}" for i in range(37)]
    probes = []

    def crashes(removed):
        probes.append(removed)
        return "n23" not in removed

    assert sandbox.find_culprits(names, crashes) == ["n23"]
    assert len(probes) <= 3 + int(np.ceil(np.log2(len(names))))


def test_find_culprits_finds_every_node_needed():
    names = [f"n{i}" for i in range(40)]
    assert sorted(sandbox.find_culprits(names, lambda removed: not {"n3", "n31"} <= removed)) == ["n3", "n31"]


def test_find_culprits_gives_up():
    names = [f"n{i}" for i in range(8)]
    assert sandbox.find_culprits(names, lambda removed: True) is None  # not the candidates' doing
    assert sandbox.find_culprits(names, lambda removed: len(removed) < 8, limit=3) is None


def test_fp16_keeps_the_crashing_node_fp32_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "_CHILD", CRASH_ON_FP16_TRANSPOSE)
    src = gru_tagger(tmp_path / "tagger.onnx")
    out = tmp_path / "tagger.fp16.onnx"
    r = optimize_fp16(src, out)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    kept = {k["name"]: k["reason"] for k in report["precision"]["kept"]}
    crash_kept = [name for name, why in kept.items() if "crashed (SIGSEGV)" in why]
    assert crash_kept, kept
    model = onnx.shape_inference.infer_shapes(onnx.load(str(out)))
    types = {
        v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.output)
    }
    transposes = [n for n in model.graph.node if n.op_type == "Transpose"]
    assert transposes and all(types.get(n.output[0]) != TensorProto.FLOAT16 for n in transposes)
    assert any("kept FP32: onnxruntime crashed" in note for note in report["precision"]["notes"])


def test_a_crash_that_cannot_be_avoided_is_exit_3_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "_CHILD", ALWAYS_CRASH)
    src = gru_tagger(tmp_path / "tagger.onnx")
    out = tmp_path / "tagger.fp16.onnx"
    r = optimize_fp16(src, out)
    assert r.exit_code == 3, r.output
    report = json.loads(r.stdout)
    assert report["status"] != "ok" and "crashed (SIGSEGV)" in report["error"]
    assert not out.exists()


def test_real_gru_tagger_converts_to_fp16_and_loads(tmp_path):
    """The model class that crashed onnxruntime 1.32 in-process: whatever the installed
    onnxruntime does, the run ends with exit 0, and what it wrote loads with all optimizations."""
    src = gru_tagger(tmp_path / "tagger.onnx")
    out = tmp_path / "tagger.fp16.onnx"
    r = optimize_fp16(src, out)
    assert r.exit_code == 0, r.output
    assert sandbox.probe(out) is None
    assert json.loads(r.stdout)["precision"]["gate"]["passed"]


def test_signal_names():
    assert sandbox._signal_name(-signal.SIGSEGV) == "SIGSEGV"
    assert sandbox._signal_name(-99) == "signal 99"
