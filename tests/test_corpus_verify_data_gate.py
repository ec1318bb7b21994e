"""--verify-data also serves as the precision gate's validation data (no --val given).

Silero VAD's fp16/int8 runs in the corpus were refused because the gate's random
validation samples are not valid inputs (its sample rate must be 16000); the inputs a
user already gave for verification are valid ones.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper
from typer.testing import CliRunner

from tensorsmith.cli import app


def _log_model(path) -> None:
    """y = Log(x) @ W: defined only for x > 0 (random N(0, 1) samples give NaN)."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor(
        "W", TensorProto.FLOAT, [16, 8], rng.standard_normal((16, 8)).astype(np.float32).ravel()
    )
    graph = helper.make_graph(
        [helper.make_node("Log", ["x"], ["l"]), helper.make_node("MatMul", ["l", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _run(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, [*args, "--json"])
    text = result.output
    return result.exit_code, json.loads(text[text.index("{") : text.rindex("}") + 1])


def test_verify_data_is_the_gate_s_validation_data_without_val(tmp_path):
    src, data, out = tmp_path / "log.onnx", tmp_path / "x.npz", tmp_path / "out.onnx"
    _log_model(src)
    rng = np.random.default_rng(1)
    np.savez(data, x=rng.uniform(0.5, 2.0, (1, 16)).astype(np.float32))
    code, rep = _run("optimize", str(src), "-o", str(out), "--precision", "fp16", "--verify-data", str(data))
    assert code == 0, rep
    validation = rep["precision"]["validation"]
    assert validation["source"] == str(data) and not validation["random"], validation
    assert not any("random inputs" in w for w in rep["precision"]["warnings"])
    assert rep["precision"]["gate"]["passed"]


def test_without_verify_data_the_gate_still_uses_random_inputs_and_says_so(tmp_path):
    src, out = tmp_path / "log.onnx", tmp_path / "out.onnx"
    _log_model(src)
    code, rep = _run("optimize", str(src), "-o", str(out), "--precision", "fp16", "--no-verify")
    validation = (rep.get("precision") or {}).get("validation") or {}
    assert code != 0 or validation.get("random"), rep


def test_a_separate_val_wins_over_verify_data(tmp_path):
    src, data, val, out = (
        tmp_path / "log.onnx",
        tmp_path / "x.npz",
        tmp_path / "val.npz",
        tmp_path / "out.onnx",
    )
    _log_model(src)
    rng = np.random.default_rng(2)
    np.savez(data, x=rng.uniform(0.5, 2.0, (1, 16)).astype(np.float32))
    np.savez(val, x=rng.uniform(0.5, 2.0, (1, 16)).astype(np.float32))
    code, rep = _run(
        "optimize",
        str(src),
        "-o",
        str(out),
        "--precision",
        "fp16",
        "--verify-data",
        str(data),
        "--val",
        str(val),
    )
    assert code == 0, rep
    assert rep["precision"]["validation"]["source"] == str(val)
