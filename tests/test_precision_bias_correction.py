"""Empirical bias correction: it lowers the mean output shift of weight quantization and
the output error it causes; wired into the INT8 step through ``int8_steps``."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tensorsmith.errors import UsageError
from tensorsmith.precision import bias_correction as bc
from tensorsmith.precision import int8_steps as i8s
from tensorsmith.precision import options_from_cli

C = 8


def _model(with_bias=True):
    """Conv -> Relu -> Conv -> Gemm-free head; weights whose rounding is biased:
    most entries sit just under half a quantization step, so int8 rounds them all to 0."""
    rng = np.random.default_rng(0)
    w1 = rng.uniform(0.0, 0.0035, (C, 3, 3, 3)).astype(np.float32)
    w1[:, 0, 0, 0] = 1.0  # the channel max: step 1/127 = 0.0079, so the rest rounds to 0
    w2 = rng.uniform(-0.5, 0.5, (C, C, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    conv1_in = ["x", "w1"]
    if with_bias:
        inits.append(numpy_helper.from_array(np.zeros(C, np.float32), "b1"))
        conv1_in.append("b1")
    nodes = [
        helper.make_node("Conv", conv1_in, ["h"], name="conv1", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2", kernel_shape=[1, 1]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, 16, 16])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


def _samples(n, seed):
    rng = np.random.default_rng(seed)
    # image-like inputs: positive mean, so a weight error has a mean effect
    return [{"x": rng.uniform(0.0, 1.0, (1, 3, 16, 16)).astype(np.float32)} for _ in range(n)]


def _run(m, feeds):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return [s.run(None, f)[0] for f in feeds]


def _weight_quant_error(corrected, original, feeds):
    nodes, _ = bc.layers(corrected)
    got = _run(bc.quantized_copy(corrected, nodes), feeds)
    ref = _run(original, feeds)
    return float(np.mean([np.mean((g - r) ** 2) for g, r in zip(got, ref, strict=True)]))


def test_fake_quant_is_symmetric_int8_per_channel():
    w = np.array([[1.0, 0.5, -0.25], [0.01, -0.02, 0.003]], np.float32)
    q = bc.fake_quant(w, 0)
    # each row's largest magnitude is exact; the rest on that row's grid of max/127
    assert q[0, 0] == pytest.approx(1.0) and q[1, 1] == pytest.approx(-0.02)
    assert np.allclose(np.round(q[1] / (0.02 / 127)), q[1] / (0.02 / 127))
    # per tensor: the small row collapses to the big row's grid
    assert np.count_nonzero(bc.fake_quant(w, None)[1]) < 3


@pytest.mark.parametrize("with_bias", [True, False])
def test_bias_correction_lowers_the_shift_and_the_error_on_held_out_data(with_bias):
    original = _model(with_bias)
    m = _model(with_bias)
    calib, held = _samples(16, 1), _samples(8, 2)
    before = _weight_quant_error(m, original, held)
    res = bc.correct(m, calib)
    onnx.checker.check_model(m)
    assert [layer.name for layer in res.layers] == ["conv1", "conv2"]
    first = res.layers[0]
    assert first.shift_before > 0.01
    assert first.shift_after < first.shift_before / 10
    after = _weight_quant_error(m, original, held)
    assert after < before / 4, (before, after)
    # every Conv now has a bias (one was added where there was none)
    assert all(len(n.input) == 3 and n.input[2] for n in m.graph.node if n.op_type == "Conv")


def test_apply_reports_each_step_with_the_error_before_and_after():
    m = _model()
    rep = i8s.apply(m, ["equalize", "bias-correction"], _samples(8, 3))
    assert [r["step"] for r in rep["runs"]] == ["equalize", "bias-correction"]
    bcr = rep["runs"][1]
    assert bcr["weight_quant_cosine_after"] > bcr["weight_quant_cosine_before"]
    assert {layer["node"] for layer in bcr["layers"]} == {"conv1", "conv2"}
    assert i8s.apply(_model(), [], _samples(2, 3))["runs"] == []


def test_int8_steps_option():
    opts = options_from_cli("int8", calib="random", int8_steps=["equalize", "bias-correction"])
    assert opts.int8_steps == ["equalize", "bias-correction"]
    assert options_from_cli("int8", calib="random").int8_steps is None
    with pytest.raises(UsageError, match="int8-steps"):
        options_from_cli("int8", calib="random", int8_steps=["qat"])


def test_int8_step_runs_them_and_reports(tmp_path):
    import tensorsmith
    from tensorsmith.errors import VerificationError

    src = tmp_path / "m.onnx"
    onnx.save(_model(), str(src))
    np.savez(tmp_path / "calib.npz", x=np.stack([s["x"] for s in _samples(24, 4)]))
    opts = options_from_cli(
        "int8",
        calib=str(tmp_path / "calib.npz"),
        target="trt",
        fallback_budget=0,
        int8_steps=["bias-correction"],
    )
    opts.measure_latency = False
    try:
        rep = tensorsmith.optimize_file(src, tmp_path / "out.onnx", precision=opts).precision
    except VerificationError as exc:  # the gate's verdict is not what this test is about
        rep = exc.precision_report  # type: ignore[attr-defined]
    runs = rep["int8_steps"]["runs"]
    assert runs[0]["step"] == "bias-correction" and len(runs[0]["layers"]) == 2


def test_int8_steps_flag_reaches_the_report(tmp_path, samples):
    import json

    from typer.testing import CliRunner

    from tensorsmith.cli import app

    out = tmp_path / "mb.int8.onnx"
    args = ["optimize", str(samples / "mobilenet_block.onnx"), "-o", str(out), "--precision", "int8"]
    args += ["--calib", "random", "--min-speedup", "0", "--json", "--int8-steps", "equalize,bias-correction"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    steps = json.loads(r.stdout)["precision"]["int8_steps"]
    assert steps["steps"] == ["equalize", "bias-correction"]
    assert [run["step"] for run in steps["runs"]] == ["equalize", "bias-correction"]
    r = CliRunner().invoke(app, [*args[:-1], "qat"])
    assert r.exit_code == 2 and "--int8-steps" in r.output
