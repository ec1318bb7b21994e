"""Cross-layer equalization: FP32 function kept (onnxruntime), ranges matched, quantized error lowered."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tensorsmith.precision import bias_correction as bc
from tensorsmith.precision import equalize as eq

C = 8


def _conv(name, x, y, w, b, group=1, pads=0):
    k = w.shape[-1]
    return helper.make_node(
        "Conv",
        [x, f"{name}_w", f"{name}_b"] if b is not None else [x, f"{name}_w"],
        [y],
        name=name,
        group=group,
        kernel_shape=[k, k],
        pads=[pads] * 4,
    ), [numpy_helper.from_array(w, f"{name}_w")] + (
        [numpy_helper.from_array(b, f"{name}_b")] if b is not None else []
    )


def _model(nodes_inits, extra_nodes=(), out="y", out_c=C, opset=17, extra_inits=()):
    nodes, inits = [], list(extra_inits)
    for n, i in nodes_inits:
        nodes.append(n)
        inits += i
    nodes = _topo(nodes + list(extra_nodes), {"x"} | {t.name for t in inits})
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 12, 12])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["n", "c", "h", "w"])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return m


def _topo(nodes, have):
    out, left = [], list(nodes)
    while left:
        ready = next(n for n in left if all(i in have for i in n.input if i))
        out.append(ready)
        have.update(ready.output)
        left.remove(ready)
    return out


def _mismatched(shape, rng, spread=1000.0, out=None):
    """Weights whose output channels have ranges from 1/sqrt(spread) to sqrt(spread)
    (what folding a BatchNorm with very different gammas gives); ``out`` gets the scales."""
    w = rng.standard_normal(shape).astype(np.float32)
    scales = np.geomspace(1 / np.sqrt(spread), np.sqrt(spread), shape[0]).astype(np.float32)
    rng.shuffle(scales)
    if out is not None:
        out[:] = scales
    return w * scales.reshape((-1,) + (1,) * (len(shape) - 1))


def _compensated(shape, scales, rng, group=1):
    """Second-layer weights whose input channel c is divided by scales[c]: the pair as trained
    (the first layer's small channels are amplified by the next), which per-tensor INT8 ruins."""
    w = rng.standard_normal(shape).astype(np.float32)
    return eq.scale_second(w, group, 1.0 / scales.astype(np.float64)).astype(np.float32)


def _run(m, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def _copy(m):
    c = onnx.ModelProto()
    c.CopyFrom(m)
    return c


def _weight_quant(m, per_tensor=True):
    q = _copy(m)
    nodes, _ = bc.layers(q)
    inits = {t.name: t for t in q.graph.initializer}
    for n in nodes:
        t = inits[n.input[1]]
        w = numpy_helper.to_array(t)
        t.CopyFrom(
            numpy_helper.from_array(bc.fake_quant(w, None if per_tensor else 0).astype(np.float32), t.name)
        )
    return q


def _pair_models(rng):
    """name -> model: the pair kinds CLE handles (all with badly mismatched per-channel ranges)."""
    s1, s2, s3 = np.ones(C), np.ones(C), np.ones(C)
    dw = _mismatched((C, 1, 3, 3), rng, out=s1)
    pw = _compensated((C, C, 1, 1), s1, rng)
    b = rng.standard_normal(C).astype(np.float32)
    slope = numpy_helper.from_array(np.full((C, 1, 1), 0.2, np.float32), "slope")
    models = {
        # depthwise -> ReLU -> pointwise
        "dw-relu-pw": _model(
            [
                _conv("a", "x", "h", dw, b * s1.astype(np.float32), group=C, pads=1),
                _conv("b", "r", "y", pw, b),
            ],
            [helper.make_node("Relu", ["h"], ["r"], name="relu")],
        ),
        # pointwise -> PRelu -> depthwise
        "pw-prelu-dw": _model(
            [
                _conv("a", "x", "h", _mismatched((C, C, 1, 1), rng, out=s2), b * s2.astype(np.float32)),
                _conv("b", "r", "y", _compensated((C, 1, 3, 3), s2, rng, group=C), b, group=C, pads=1),
            ],
            [helper.make_node("PRelu", ["h", "slope"], ["r"], name="prelu")],
            extra_inits=[slope],
        ),
        # Conv -> Conv directly, grouped second conv (2 groups), no bias on the first
        "conv-conv-grouped": _model(
            [
                _conv("a", "x", "h", _mismatched((C, C, 3, 3), rng, out=s3), None, pads=1),
                _conv("b", "h", "y", _compensated((C, C // 2, 3, 3), s3, rng, group=2), b, group=2),
            ],
        ),
        # LeakyRelu, and a Clip without an upper bound
        "leaky-clip": _model(
            [
                _conv("a", "x", "h", dw, b, group=C, pads=1),
                _conv("b", "r", "h2", pw, b),
                _conv("c", "r2", "y", pw, b),
            ],
            [
                helper.make_node("LeakyRelu", ["h"], ["r"], name="leaky", alpha=0.1),
                helper.make_node("Clip", ["h2", "zero"], ["r2"], name="clip"),
            ],
            extra_inits=[numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
        ),
    }
    return models


@pytest.mark.parametrize("kind", ["dw-relu-pw", "pw-prelu-dw", "conv-conv-grouped", "leaky-clip"])
def test_equalization_keeps_fp32_and_matches_ranges(kind):
    rng = np.random.default_rng(0)
    m = _pair_models(rng)[kind]
    x = rng.standard_normal((1, C, 12, 12)).astype(np.float32)
    ref = _run(m, x)
    eqm = _copy(m)
    res = eq.equalize(eqm)
    onnx.checker.check_model(eqm)
    assert len(res.pairs) == (2 if kind == "leaky-clip" else 1), res.describe()
    got = _run(eqm, x)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    # the first layer's per-channel ranges are much closer after (spread 1000 before)
    p = res.pairs[0]
    assert p.range_ratio_before > 100
    assert p.range_ratio_after < p.range_ratio_before / 10
    # a second run has almost nothing left to do (idempotent up to fp32 rounding)
    again = eq.equalize(_copy(eqm))
    assert all(abs(q.scale_min - 1) < 1e-2 and abs(q.scale_max - 1) < 1e-2 for q in again.pairs)


@pytest.mark.parametrize("kind", ["dw-relu-pw", "pw-prelu-dw", "conv-conv-grouped"])
def test_equalization_lowers_per_tensor_quantized_error(kind):
    rng = np.random.default_rng(1)
    m = _pair_models(rng)[kind]
    xs = [rng.standard_normal((1, C, 12, 12)).astype(np.float32) for _ in range(4)]
    refs = [_run(m, x) for x in xs]
    eqm = _copy(m)
    eq.equalize(eqm)

    def err(model):
        q = _weight_quant(model, per_tensor=True)
        return sum(float(np.mean((_run(q, x) - r) ** 2)) for x, r in zip(xs, refs, strict=True))

    before, after = err(m), err(eqm)
    assert after < before / 4, (before, after)


def _act_model(op, rng, **attrs):
    dw = _mismatched((C, 1, 3, 3), rng)
    pw = rng.standard_normal((C, C, 1, 1)).astype(np.float32)
    b = np.zeros(C, np.float32)
    extra_inits = []
    inputs = ["h"]
    if op == "Clip":
        extra_inits = [
            numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
            numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
        ]
        inputs = ["h", "lo", "hi"]
    return _model(
        [_conv("a", "x", "h", dw, b, group=C, pads=1), _conv("b", "r", "y", pw, b)],
        [helper.make_node(op, inputs, ["r"], name="act", **attrs)],
        extra_inits=extra_inits,
    )


@pytest.mark.parametrize(
    ("op", "why"),
    [
        ("Tanh", "not positively homogeneous"),
        ("HardSwish", "not positively homogeneous"),
        ("Sigmoid", "not positively homogeneous"),
    ],
)
def test_non_homogeneous_activations_are_left_alone_with_the_reason(op, why):
    m = _act_model(op, np.random.default_rng(2))
    before = [numpy_helper.to_array(t).copy() for t in m.graph.initializer]
    res = eq.equalize(m)
    assert res.pairs == []
    assert len(res.skipped) == 1 and res.skipped[0]["via"] == op and why in res.skipped[0]["reason"]
    after = [numpy_helper.to_array(t) for t in m.graph.initializer]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def _relu6_model(rng, form):
    """depthwise -> ReLU6 -> pointwise, the ReLU6 as ``Clip(0, 6)`` or ``Min(Relu(x), 6)``."""
    s1 = np.ones(C)
    dw = _mismatched((C, 1, 3, 3), rng, out=s1)
    pw = _compensated((C, C, 1, 1), s1, rng)
    b = (rng.standard_normal(C) * s1).astype(np.float32)
    six = numpy_helper.from_array(np.array(6.0, np.float32), "six")
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    if form == "clip":
        acts = [helper.make_node("Clip", ["h", "zero", "six"], ["r"], name="relu6")]
    else:
        acts = [
            helper.make_node("Relu", ["h"], ["h2"], name="relu"),
            helper.make_node("Min", ["h2", "six"], ["r"], name="min6"),
        ]
    return _model(
        [_conv("a", "x", "h", dw, b, group=C, pads=1), _conv("b", "r", "y", pw, b)],
        acts,
        extra_inits=[six, zero],
    )


@pytest.mark.parametrize("form", ["clip", "relu-min"])
def test_relu6_is_equalized_with_a_per_channel_bound(form):
    rng = np.random.default_rng(5)
    m = _relu6_model(rng, form)
    # inputs large enough that the bound of 6 is reached on many channels
    xs = [(4 * rng.standard_normal((1, C, 12, 12))).astype(np.float32) for _ in range(3)]
    r = _run(_with_output(m, "r"), xs[0])
    assert (r >= 6.0 - 1e-6).any() and (r < 6.0).any()
    refs = [_run(m, x) for x in xs]
    eqm = _copy(m)
    res = eq.equalize(eqm)
    onnx.checker.check_model(eqm)
    assert len(res.pairs) == 1 and res.skipped == [], res.describe()
    assert res.pairs[0].range_ratio_after < res.pairs[0].range_ratio_before / 10
    ops = [n.op_type for n in eqm.graph.node]
    assert "Clip" not in ops and ops.count("Min") == 1 and ops.count("Relu") == 1
    mn = next(n for n in eqm.graph.node if n.op_type == "Min")
    bound = next(numpy_helper.to_array(t) for t in eqm.graph.initializer if t.name == mn.input[1])
    assert bound.shape == (C, 1, 1) and np.ptp(bound) > 1.0  # 6 / s_c: one bound per channel
    assert bound.max() <= 6.0 + 1e-6  # s_c >= 1 behind a bound: no channel's range grows past 6
    for x, ref in zip(xs, refs, strict=True):
        got = _run(eqm, x)
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    # a second run finds the Relu + Min pair and has almost nothing left to do
    again = eq.equalize(_copy(eqm))
    assert len(again.pairs) == 1
    assert abs(again.pairs[0].scale_min - 1) < 1e-2 and abs(again.pairs[0].scale_max - 1) < 1e-2

    # and the per-tensor weight-quantized error goes down, as for ReLU
    def err(model):
        q = _weight_quant(model, per_tensor=True)
        return sum(float(np.mean((_run(q, x) - r) ** 2)) for x, r in zip(xs, refs, strict=True))

    assert err(eqm) < err(m) / 4
    # high-bias absorption leaves a bounded pair alone, with the reason
    absorbed, skipped = eq.absorb_high_bias(eqm, [{"x": x} for x in xs])
    assert absorbed == [] and skipped[0]["reason"] == "bounded activation (ReLU6/Min)"


def test_relu6_then_zero_pad_then_depthwise_is_equalized():
    """EfficientNet-Lite's form: pointwise -> ReLU6 -> Pad (spatial, zeros) -> depthwise."""
    rng = np.random.default_rng(6)
    s2 = np.ones(C)
    pw = _mismatched((C, C, 1, 1), rng, out=s2)
    dw = _compensated((C, 1, 3, 3), s2, rng, group=C)
    b = (rng.standard_normal(C) * s2).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(6.0, np.float32), "six"),
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
    ]
    m = _model(
        [_conv("a", "x", "h", pw, b), _conv("b", "p", "y", dw, b, group=C)],
        [
            helper.make_node("Clip", ["h", "zero", "six"], ["r"], name="relu6"),
            helper.make_node("Pad", ["r", "pads"], ["p"], name="pad"),
        ],
        extra_inits=inits,
    )
    xs = [(4 * rng.standard_normal((1, C, 12, 12))).astype(np.float32) for _ in range(2)]
    refs = [_run(m, x) for x in xs]
    eqm = _copy(m)
    res = eq.equalize(eqm)
    assert [(p.first, p.second, p.via) for p in res.pairs] == [("a", "b", "Clip+Pad")], res.describe()
    for x, ref in zip(xs, refs, strict=True):
        assert np.abs(_run(eqm, x) - ref).max() <= 1e-5 * np.abs(ref).max()
    # a Pad of the channel axis is not per-channel: left alone with the reason
    bad = _copy(m)
    next(t for t in bad.graph.initializer if t.name == "pads").CopyFrom(
        numpy_helper.from_array(np.array([0, 1, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    )
    pairs, skipped = eq.find_pairs(bad)
    assert pairs == [] and skipped[0]["reason"] == "Pad of the batch or channel axis"


def _with_output(m, name):
    c = _copy(m)
    c.graph.output.append(helper.make_empty_tensor_value_info(name))
    return c


def test_branching_output_and_shared_weights_are_not_paired():
    rng = np.random.default_rng(3)
    dw = _mismatched((C, 1, 3, 3), rng)
    pw = rng.standard_normal((C, C, 1, 1)).astype(np.float32)
    b = np.zeros(C, np.float32)
    # the first conv's output also feeds an Add: scaling it would change the Add
    m = _model(
        [_conv("a", "x", "h", dw, b, group=C, pads=1), _conv("b", "h", "p", pw, b)],
        [helper.make_node("Add", ["h", "p"], ["y"], name="add")],
    )
    assert eq.find_pairs(m) == ([], [])
    # the same weights used by two convolutions
    a, ia = _conv("a", "x", "h", dw, b, group=C, pads=1)
    b2, ib = _conv("b", "h", "y", pw, b)
    c = helper.make_node("Conv", ["x", "a_w"], ["z"], name="c", group=C, kernel_shape=[3, 3], pads=[1] * 4)
    g = helper.make_graph(
        [a, b2, c],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 12, 12])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", "c", "h", "w"]),
        ],
        ia + ib,
    )
    pairs, _ = eq.find_pairs(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert pairs == []


def test_high_bias_absorption_keeps_fp32_and_shrinks_the_range():
    rng = np.random.default_rng(4)
    dw = (0.1 * rng.standard_normal((C, 1, 3, 3))).astype(np.float32)
    pw = rng.standard_normal((C, C, 1, 1)).astype(np.float32)
    high = np.full(C, 5.0, np.float32)  # every channel far above 0: ReLU never clips it
    m = _model(
        [_conv("a", "x", "h", dw, high, group=C, pads=1), _conv("b", "r", "y", pw, None)],
        [helper.make_node("Relu", ["h"], ["r"], name="relu")],
    )
    calib = [{"x": rng.uniform(-1, 1, (1, C, 12, 12)).astype(np.float32)} for _ in range(4)]
    held = rng.uniform(-1, 1, (1, C, 12, 12)).astype(np.float32)
    ref = _run(m, held)
    absorbed, skipped = eq.absorb_high_bias(m, calib)
    assert skipped == [] and len(absorbed) == 1 and absorbed[0].channels == C
    assert absorbed[0].range_after < absorbed[0].range_before / 3
    got = _run(m, held)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    # a padded second Conv would see -c at its border: left alone
    m2 = _model(
        [_conv("a", "x", "h", dw, high, group=C, pads=1), _conv("b", "r", "y", _pw3(rng), None, pads=1)],
        [helper.make_node("Relu", ["h"], ["r"], name="relu")],
    )
    absorbed, skipped = eq.absorb_high_bias(m2, calib)
    assert absorbed == [] and skipped[0]["reason"] == "second Conv pads its input"


def _pw3(rng):
    return rng.standard_normal((C, C, 3, 3)).astype(np.float32)
