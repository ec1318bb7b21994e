"""Scale search and learned rounding for INT8: MSE activation ranges (``--calib-method
mse``), MSE weight clipping (``mse-weights``) and AdaRound (``adaround``), each lowering
the error it targets on a constructed case, and the written weights exactly on the grid
onnxruntime's quantizer uses."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tensorsmith.precision import adaround as ar
from tensorsmith.precision import int8_steps as i8s
from tensorsmith.precision import scale_search as ss

# ---------------------------------------------------------------------------
# activations


def _quant_mse(x: np.ndarray, lo: float, hi: float, symmetric: bool) -> float:
    """Real quantize-dequantize of ``x`` on the grid the INT8 step writes for ``[lo, hi]``."""
    if symmetric:
        t = max(abs(lo), abs(hi))
        s = t / 127
        q = np.clip(np.round(x / s), -127, 127) * s
    else:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        s = (hi - lo) / 255
        z = np.round(-lo / s)
        q = (np.clip(np.round(x / s) + z, 0, 255) - z) * s
    return float(np.mean((q - x) ** 2))


def _outlier_activation(positive: bool) -> np.ndarray:
    """Long-tailed values (Student's t, 3 degrees of freedom): outliers 10-50x the typical
    value, as in real activations. (A handful of outliers in 10^5 values is not worth
    clipping by mean squared error: their clipping error outweighs the rounding noise they add.)"""
    x = np.random.default_rng(0).standard_t(3, 200_000).astype(np.float32)
    return np.maximum(x, 0) if positive else x


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("positive", [True, False])
def test_mse_range_beats_minmax_on_outliers(symmetric, positive):
    x = _outlier_activation(positive)
    t = float(np.abs(x).max())
    counts, edges = np.histogram(x, 2048, range=(-t, t))
    lo, hi = ss.mse_range(counts, edges, float(x.min()), float(x.max()), symmetric)
    assert hi < x.max() * 0.95  # it clips the tail
    if positive:
        assert lo == 0.0 or symmetric
    mm = _quant_mse(x, float(x.min()), float(x.max()), symmetric)
    got = _quant_mse(x, lo, hi, symmetric)
    assert got < 0.95 * mm  # measured 0.70-0.88
    # the histogram estimate agrees with the real error
    est = ss.range_error(counts, edges, lo, hi, symmetric)
    assert 0.8 < est / got < 1.25


def test_mse_range_keeps_minmax_without_outliers():
    x = np.random.default_rng(1).uniform(-1, 1, 100_000).astype(np.float32)
    counts, edges = np.histogram(x, 2048, range=(-1, 1))
    lo, hi = ss.mse_range(counts, edges, float(x.min()), float(x.max()), True)
    assert hi > 0.95  # uniform data: clipping only costs


def _conv_relu_model(rng, outlier_input=False):
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((4, 8, 1, 1)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], name="conv1", pads=[1] * 4),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 32, 32])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("target", ["ort", "trt"])
def test_mse_calibration_writes_the_cache_the_quantizer_reads(tmp_path, target):
    from tensorsmith.precision import int8 as i8

    rng = np.random.default_rng(0)
    path = tmp_path / "m.onnx"
    onnx.save(_conv_relu_model(rng), str(path))
    samples = [{"x": rng.standard_t(2, (1, 3, 32, 32)).astype(np.float32)} for _ in range(8)]  # long-tailed
    caches = {}
    for method in ("minmax", "mse"):
        settings = i8.Settings(target=target, method=method)
        cache = tmp_path / f"{method}.json"
        out = i8.quantize(
            path,
            tmp_path / f"{method}.onnx",
            settings,
            i8.Config("all-ops"),
            cache_path=cache,
            calib_samples=samples,
        )
        onnx.checker.check_model(onnx.load(str(out)))
        caches[method] = json.loads(cache.read_text())["data"]
    assert "x" in caches["mse"] and set(caches["mse"]) <= set(caches["minmax"]) | {"x"}

    def rng_of(entry):
        lo, hi = (entry[k]["data"] if isinstance(entry[k], dict) else entry[k] for k in ("lowest", "highest"))
        return float(np.atleast_1d(lo)[0]), float(np.atleast_1d(hi)[0])

    symmetric = target == "trt"
    x = np.concatenate([s["x"].ravel() for s in samples])
    mm, got = rng_of(caches["minmax"]["x"]), rng_of(caches["mse"]["x"])
    assert got[1] < mm[1]  # the tail is clipped
    assert _quant_mse(x, *got, symmetric) < _quant_mse(x, *mm, symmetric)
    if symmetric:
        assert got[0] == -got[1]


# ---------------------------------------------------------------------------
# weights


def test_weight_clip_lowers_each_channels_error_and_keeps_the_scale_rule():
    """Per channel, never worse than max|w|; clearly better on large long-tailed channels
    (on int8's 255 levels clipping pays only where many values share the rounding noise:
    measured 0-10% on channels of a few hundred weights, 6-15% on 32768)."""
    rng = np.random.default_rng(2)
    w = rng.standard_t(3, (8, 512, 8, 8)).astype(np.float32)
    out, thr, e0, e1 = ss.weight_clip(w, 0)
    amax = np.abs(w).reshape(8, -1).max(axis=1)
    assert (e1 <= e0).all() and (e1 < 0.95 * e0).all()
    assert (thr < amax).all()
    # the real quantization error of the clipped weights (onnxruntime's scale: max|w| / 127)
    real = (
        ((ss.fake_quant_channels(out, np.abs(out).reshape(8, -1).max(axis=1)) - w) ** 2)
        .reshape(8, -1)
        .mean(1)
    )
    assert np.allclose(real, e1, rtol=1e-6)
    # onnxruntime's scale on the clipped channel is threshold / 127
    assert np.array_equal(np.abs(out).reshape(8, -1).max(axis=1), thr)
    # Gemm/MatMul weights: channels on axis 1
    small = w[:, :, 0, 0]
    out1, _, _, _ = ss.weight_clip(small.T.copy(), 1)
    ref, _, _, _ = ss.weight_clip(small, 0)
    assert np.array_equal(out1.T, ref)


# ---------------------------------------------------------------------------
# AdaRound


def _layer_case(seed=1, o=32, d=144, m=4096):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((1, o, d)) * 0.1
    x = rng.standard_normal((1, d, m)) * np.linspace(0.1, 3, d)[None, :, None]
    x = x + 0.8 * x[:, ::-1, :]  # correlated inputs: what makes rounding to nearest suboptimal
    s = ss.grid_scale(np.abs(w).max(axis=2)[0]).reshape(1, o, 1)
    return w, s, x


def test_adaround_lowers_the_layer_output_error_below_nearest():
    w, s, x = _layer_case()
    q, e_near, e_ada = ar.round_layer(w, s, x)
    nearest = np.clip(np.round(w / s), -127, 127)
    assert e_ada < 0.8 * e_near
    assert (q != nearest).sum() > 0
    # every weight rounds down or up, never further
    assert (np.abs(q - w / s) < 1).all()
    # the channel's largest weight keeps its integer, so its scale
    assert (np.abs(q).max(axis=2) == 127).all()


def _conv_model(rng, group=1, cin=8, cout=16):
    w = (rng.standard_normal((cout, cin // group, 3, 3)) * 0.2).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    g = helper.make_graph(
        [
            helper.make_node(
                "Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1] * 4, strides=[2, 2], group=group
            )
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, 8, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _smooth_samples(rng, n, c=8):
    # spatially smooth, channel-correlated images (neighbouring pixels alike, as in photos)
    out = []
    for _ in range(n):
        base = rng.standard_normal((1, 1, 4, 4))
        up = np.kron(base, np.ones((1, 1, 4, 4)))
        x = up * rng.uniform(0.5, 2, (1, c, 1, 1)) + 0.2 * rng.standard_normal((1, c, 16, 16))
        out.append({"x": x.astype(np.float32)})
    return out


def _columns_match_conv(model, samples):
    """_columns must reproduce the convolution: W @ columns == the Conv's output at those positions."""
    layers, _ = ar.weight_layers(model)
    cols = ar.collect(model, layers, samples[:1])["conv"]
    w = numpy_helper.to_array(model.graph.initializer[0])
    groups = cols.shape[0]
    y_cols = np.matmul(w.reshape(groups, w.shape[0] // groups, -1), cols)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    b = numpy_helper.to_array(model.graph.initializer[1])
    y = sess.run(None, samples[0])[0][0] - b[:, None, None]
    flat = y.reshape(groups, w.shape[0] // groups, -1)
    # each column is one output position: it must be one of the conv's outputs
    for j in range(0, y_cols.shape[2], 37):
        d = np.abs(flat - y_cols[:, :, j : j + 1]).max(axis=(0, 1))
        assert d.min() < 1e-4


@pytest.mark.parametrize("group", [1, 8])
def test_adaround_step_writes_weights_onnxruntime_quantizes_exactly(tmp_path, group):
    """The weights AdaRound writes are on the grid of onnxruntime's quantizer: its int8
    values dequantize bit for bit to them, and each channel's scale is unchanged."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(3)
    model = _conv_model(rng, group=group)
    samples = _smooth_samples(rng, 16)
    _columns_match_conv(model, samples)
    original = numpy_helper.to_array(model.graph.initializer[0]).copy()
    result = ar.adaround(model, samples)
    [layer] = result.layers
    assert layer.error_adaround <= layer.error_nearest
    written = numpy_helper.to_array(model.graph.initializer[0])
    onnx.checker.check_model(model)
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])  # FP32 still loads

    def quantize(w: np.ndarray, name: str):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        m.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w"))
        src, dst = tmp_path / f"{name}.onnx", tmp_path / f"{name}.q.onnx"
        onnx.save(m, str(src))

        class Reader:
            def __init__(self):
                self.it = iter(samples[:2])

            def get_next(self):
                return next(self.it, None)

        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            extra_options={"WeightSymmetric": True},
        )
        q = onnx.load(str(dst))
        inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
        dq = next(
            n
            for n in q.graph.node
            if n.op_type == "DequantizeLinear"
            and inits.get(n.input[0]) is not None
            and inits[n.input[0]].ndim == 4
        )
        return inits[dq.input[0]], inits[dq.input[1]]

    q_w, scale = quantize(written, "ada")
    _, scale0 = quantize(original, "orig")
    assert np.array_equal(scale, scale0)  # max|w| kept: the scale is exactly the original one
    deq = (q_w.astype(np.float32) * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
    assert np.array_equal(deq, written)  # bit for bit on the grid
    # and the integers are AdaRound's: some differ from rounding to nearest
    nearest = np.clip(np.round(original / scale.reshape(-1, 1, 1, 1).astype(np.float64)), -127, 127)
    assert (q_w != nearest).sum() == layer.flipped


def test_grid_weights_keep_the_scale_when_127s_does_not_round_back():
    amax = np.array([0.1, 1.0, 3.3, 0.0123456], np.float32)
    q = np.array([[127, -3], [-127, 5], [127, 127], [-127, 0]])
    w = ar.grid_weights(q, amax, 0)
    assert np.array_equal(ss.grid_scale(np.abs(w).max(axis=1)), ss.grid_scale(amax))


def test_int8_steps_report_layers_and_errors_and_bias_correction_measures_against_fp32():
    rng = np.random.default_rng(4)
    model = _conv_relu_model(rng)
    samples = [{"x": s["x"][:, :3].repeat(2, axis=2).repeat(2, axis=3)} for s in _smooth_samples(rng, 12)]
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    rep = i8s.apply(model, ["mse-weights", "adaround", "bias-correction"], samples)
    runs = {r["step"]: r for r in rep["runs"]}
    assert list(runs) == ["mse-weights", "adaround", "bias-correction"]
    assert {x["node"] for x in runs["mse-weights"]["layers"]} == {"conv1", "conv2"}
    for x in runs["adaround"]["layers"]:
        assert x["output_error_after"] <= x["output_error_before"]
    assert {x["node"] for x in runs["adaround"]["layers"]} == {"conv1", "conv2"}
    # bias correction after adaround still sees the shift from the FP32 weights (not zero)
    assert any(x["mean_shift_before"] > 0 for x in runs["bias-correction"]["layers"])
    assert all("weight_quant_cosine_after" in r for r in rep["runs"])


def test_cli_runs_mse_calibration_and_adaround_end_to_end(tmp_path, samples):
    from typer.testing import CliRunner

    from tensorsmith.cli import app

    out = tmp_path / "mb.int8.onnx"
    args = ["optimize", str(samples / "mobilenet_block.onnx"), "-o", str(out), "--precision", "int8"]
    args += ["--calib", "random", "--calib-method", "mse", "--target", "trt", "--json"]
    args += ["--int8-steps", "adaround", "--fallback-budget", "0"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code in (0, 4), r.output
    prec = json.loads(r.stdout)["precision"]
    assert prec["calibration"]["method"] == "mse"
    search = prec["calibration"]["search"]
    assert search["method"] == "mse" and search["tensors"] > 0
    assert 0 < search["mean_error_ratio_vs_minmax"] <= 1.0  # never worse than min/max, by its estimate
    [run] = prec["int8_steps"]["runs"]
    assert run["step"] == "adaround" and run["layers"]
    assert all({"node", "output_error_before", "output_error_after"} <= set(x) for x in run["layers"])
    if r.exit_code == 0:
        onnx.checker.check_model(onnx.load(str(out)))


@pytest.mark.parametrize("target", ["ort", "trt"])
def test_nodes_left_in_float_get_their_fp32_weights_back(tmp_path, target):
    """A node the INT8 build leaves in float (a layout's exclusion, --keep-fp32, the
    fallback) reads its original weights, not AdaRound's grid; the quantized node reads
    AdaRound's integers; no kept copy is left in the written model."""
    from tensorsmith.precision import int8 as i8

    rng = np.random.default_rng(5)
    model = _conv_relu_model(rng)
    w2 = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w2")).copy()
    samples = [{"x": s["x"][:, :3].repeat(2, axis=2).repeat(2, axis=3)} for s in _smooth_samples(rng, 12)]
    rep = i8s.apply(model, ["adaround"], samples)
    assert rep["fp32_weights_kept"] == 2
    learned = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in ("w1", "w2")}
    assert not np.array_equal(learned["w2"], w2)
    path = tmp_path / "prep.onnx"
    onnx.save(model, str(path))
    out = i8.quantize(
        path,
        tmp_path / "q.onnx",
        i8.Settings(target=target),
        i8.Config("all-ops", exclude={"conv2": "kept FP32 by the test"}),
        cache_path=tmp_path / "cache.json",
        calib_samples=samples,
    )
    q = onnx.load(str(out))
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    assert not any(n.endswith(ar.ORIGINAL) for n in inits)
    assert np.array_equal(inits["w2"], w2)  # conv2 stayed float: its FP32 weights
    conv1 = next(n for n in q.graph.node if n.name == "conv1")
    dq = next(n for n in q.graph.node if n.output[0] == conv1.input[1])
    deq = inits[dq.input[0]].astype(np.float32) * inits[dq.input[1]].reshape(-1, 1, 1, 1)
    assert np.array_equal(deq.astype(np.float32), learned["w1"])  # conv1: AdaRound's integers
