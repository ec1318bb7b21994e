"""Activation smoothing (SmoothQuant): FP32 function kept (onnxruntime), INT8 error lowered on an outlier channel."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tensorsmith.precision import int8_steps as i8s
from tensorsmith.precision import smooth as sm

C = 16


def _model(nodes, inits, x_shape, out_shape):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


def _outlier_conv(rng, act="Relu"):
    """Conv -> act -> Conv where channel 0 of the middle activation is ~100x the others (a large
    weight and bias) and the next layer reads it with small weights: one channel sets the
    per-tensor activation scale and the other 15 lose their resolution. ``Clip``: a bounded
    activation (ReLU6's form, with a bound above the outlier)."""
    w1 = (0.3 * rng.standard_normal((C, C, 3, 3))).astype(np.float32)
    b1 = np.abs(rng.standard_normal(C)).astype(np.float32)
    w1[0] *= 100
    b1[0] = 200.0
    w2 = rng.standard_normal((C, C, 1, 1)).astype(np.float32)
    w2[:, 0] *= 0.01
    b2 = rng.standard_normal(C).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="a", pads=[1] * 4)]
    if act == "Clip":
        inits += [
            numpy_helper.from_array(np.array(v, np.float32), n) for v, n in ((0.0, "lo"), (500.0, "hi"))
        ]
        nodes.append(helper.make_node("Clip", ["h", "lo", "hi"], ["r"], name="act"))
    else:
        nodes.append(helper.make_node(act, ["h"], ["r"], name="act"))
    nodes.append(helper.make_node("Conv", ["r", "w2", "b2"], ["y"], name="b"))
    return _model(nodes, inits, [1, C, 10, 10], [1, C, 10, 10])


def _run(m, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]


def _copy(m):
    c = onnx.ModelProto()
    c.CopyFrom(m)
    return c


def _int8_error(m, calib, held, refs, tmp_path, tag):
    """Relative L2 error vs ``refs`` of ``m`` quantized by onnxruntime (QDQ, per-tensor symmetric
    int8 activations, per-channel int8 weights), as the INT8 step writes it for TensorRT."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": x} for x in calib])

        def get_next(self):
            return next(self.it, None)

    src, dst = tmp_path / f"{tag}.onnx", tmp_path / f"{tag}.q.onnx"
    onnx.save(m, str(src))
    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    q = onnx.load(str(dst))
    num = sum(float(np.sum((_run(q, x) - r) ** 2)) for x, r in zip(held, refs, strict=True))
    return np.sqrt(num / sum(float(np.sum(r**2)) for r in refs))


@pytest.mark.parametrize("act", ["Relu", "Clip"])
def test_smoothing_keeps_fp32_and_lowers_the_int8_error_of_an_outlier_channel(act, tmp_path):
    rng = np.random.default_rng(0)
    m = _outlier_conv(rng, act)
    calib = [rng.uniform(0, 1, (1, C, 10, 10)).astype(np.float32) for _ in range(8)]
    held = [rng.uniform(0, 1, (1, C, 10, 10)).astype(np.float32) for _ in range(4)]
    refs = [_run(m, x) for x in held]
    sq = _copy(m)
    res = sm.smooth(sq, [{"x": x} for x in calib])
    onnx.checker.check_model(sq)
    assert len(res.pairs) == 1, res.describe()
    p = res.pairs[0]
    assert (p.producer, p.consumer) == ("a", "b") and p.alpha in sm.ALPHAS
    assert p.act_ratio_before > 10 and p.act_ratio_after < p.act_ratio_before / 2
    assert p.error_after < p.error_before
    for x, ref in zip(held, refs, strict=True):
        assert np.abs(_run(sq, x) - ref).max() <= 1e-5 * np.abs(ref).max()
    if act == "Clip":  # ReLU6 became Relu + a per-channel Min, as in equalization
        ops = [n.op_type for n in sq.graph.node]
        assert "Clip" not in ops and "Min" in ops
    # the real INT8 graph (onnxruntime's quantizer, calibrated on the same data) is closer to FP32
    before = _int8_error(m, calib, held, refs, tmp_path, "before")
    after = _int8_error(sq, calib, held, refs, tmp_path, "after")
    assert after < before * 0.7, (before, after)


def test_gemm_pair_through_relu_keeps_fp32(tmp_path):
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((C, 32)).astype(np.float32)  # Gemm transB=1: [N, K]
    w1[3] *= 50
    w2 = rng.standard_normal((C, 8)).astype(np.float32)  # MatMul [K, N]
    b1 = rng.standard_normal(C).astype(np.float32)
    m = _model(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="a", transB=1),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="b"),
        ],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
        ],
        [4, 32],
        [4, 8],
    )
    calib = [{"x": rng.standard_normal((4, 32)).astype(np.float32)} for _ in range(6)]
    x = rng.standard_normal((4, 32)).astype(np.float32)
    ref = _run(m, x)
    res = sm.smooth(m, calib)
    assert [(p.producer, p.consumer, p.via) for p in res.pairs] == [("a", "b", "Relu")]
    assert np.abs(_run(m, x) - ref).max() <= 1e-5 * np.abs(ref).max()


def test_pairs_left_alone_say_why():
    rng = np.random.default_rng(2)
    # a HardSwish between: not positively homogeneous
    hs = _outlier_conv(rng, "HardSwish")
    before = [numpy_helper.to_array(t).copy() for t in hs.graph.initializer]
    res = sm.smooth(hs, [{"x": rng.uniform(0, 1, (1, C, 10, 10)).astype(np.float32)}])
    assert res.pairs == [] and "not positively homogeneous" in res.skipped[0]["reason"]
    assert all(
        np.array_equal(a, numpy_helper.to_array(b)) for a, b in zip(before, hs.graph.initializer, strict=True)
    )
    # even activation ranges: nothing to move
    w = (0.1 * np.eye(C)).reshape(C, C, 1, 1).astype(np.float32)  # every channel the same range
    even = _model(
        [
            helper.make_node("Conv", ["x", "w1"], ["h"], name="a"),
            helper.make_node("Conv", ["h", "w2"], ["y"], name="b"),
        ],
        [numpy_helper.from_array(w, "w1"), numpy_helper.from_array(w.copy(), "w2")],
        [1, C, 6, 6],
        [1, C, 6, 6],
    )
    res = sm.smooth(even, [{"x": np.ones((1, C, 6, 6), np.float32)}])
    assert res.pairs == [] and res.skipped[0]["reason"].startswith("activation ranges even")


def test_smooth_step_reports_through_int8_steps():
    rng = np.random.default_rng(3)
    m = _outlier_conv(rng)
    calib = [{"x": rng.uniform(0, 1, (1, C, 10, 10)).astype(np.float32)} for _ in range(4)]
    rep = i8s.apply(m, ["smooth"], calib)
    assert "smooth" in i8s.STEPS and [r["step"] for r in rep["runs"]] == ["smooth"]
    run = rep["runs"][0]
    assert len(run["pairs"]) == 1 and run["pairs"][0]["error_after"] < run["pairs"][0]["error_before"]
    assert run["weight_quant_cosine_before"] is not None and run["weight_quant_cosine_after"] is not None
