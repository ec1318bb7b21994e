"""INT8 layouts for onnxruntime CPU: per-node profiles mapped back to the source graph,
the measured-slower rule, and the candidate layouts (compute-only, +profiled)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tensorsmith.precision import int8 as i8
from tensorsmith.precision import profile as pf

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


@pytest.fixture(scope="module")
def mobile(tmp_path_factory):
    """The sample mobilenet block, prepared for INT8, and its all-ops INT8 model."""
    import tensorsmith

    d = tmp_path_factory.mktemp("profile")
    optimized = d / "fp32.onnx"  # what the precision step sees: BatchNormalization folded
    tensorsmith.optimize_file(SAMPLES / "mobilenet_block.onnx", optimized)
    prepared, _ = i8.prepare(onnx.load(str(optimized)))
    prep = d / "prep.onnx"
    onnx.save(prepared, str(prep))
    rng = np.random.default_rng(0)
    samples = [{"input": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)} for _ in range(8)]
    low = d / "int8.onnx"
    i8.quantize(
        prep, low, i8.Settings(), i8.Config("all-ops"), cache_path=d / "cal.json", calib_samples=samples
    )
    return prepared, prep, low, samples[0]


def test_profiles_map_every_conv_back_to_its_node(mobile):
    prepared, prep, low, feeds = mobile
    convs = [n.name for n in prepared.graph.node if n.op_type == "Conv"]
    assert convs
    fp32 = pf.Attribution(prepared.graph, pf.kernel_times(prep, feeds, runs=3))
    int8 = pf.Attribution(prepared.graph, pf.kernel_times(low, feeds, runs=3))
    # FP32: NCHWc kernels are named after the last fused output; INT8: QLinearConv keeps the name
    assert all(fp32.node_us.get(c, 0) > 0 for c in convs), (convs, dict(fp32.node_us))
    quantized = i8.quantized_nodes(onnx.load(str(low)))
    assert all(int8.node_us.get(c, 0) > 0 for c in convs if c in quantized)
    # the quantizer's Q/DQ nodes are attributed to the tensors they quantize
    tensors = {o for n in prepared.graph.node for o in n.output} | {i.name for i in prepared.graph.input}
    assert int8.q_us and set(int8.q_us) <= tensors
    assert int8.dq_us and set(int8.dq_us) <= tensors


def _attr(graph, node_us, q=None, dq=None):
    a = pf.Attribution(graph, {})
    a.node_us.update(node_us)
    a.q_us.update(q or {})
    a.dq_us.update(dq or {})
    return a


def test_slower_in_int8_counts_the_q_dq_around_a_node(mobile):
    prepared = mobile[0]
    convs = [n for n in prepared.graph.node if n.op_type == "Conv"][:3]
    a, b, c = (n.name for n in convs)
    fp32 = _attr(prepared.graph, {a: 10.0, b: 10.0, c: 10.0})
    # a: faster kernel, but its input Q makes it slower; b: faster even with Q/DQ; c: slower kernel
    int8 = _attr(
        prepared.graph,
        {a: 6.0, b: 4.0, c: 12.0},
        q={convs[0].input[0]: 5.0, convs[1].input[0]: 2.0},
        dq={convs[1].output[0]: 1.0},
    )
    slower = pf.slower_in_int8(prepared, fp32, int8, {a, b, c})
    assert set(slower) == {a, c}
    assert "Q/DQ 5 us" in slower[a]
    # a node that is not quantized, or that has no FP32 time, is never judged
    assert pf.slower_in_int8(prepared, fp32, int8, {b}) == {}
    assert pf.slower_in_int8(prepared, _attr(prepared.graph, {}), int8, {a, b, c}) == {}


def test_compute_only_layout_keeps_attention_matmuls_float():
    prepared, _ = i8.prepare(onnx.load(str(SAMPLES / "transformer.onnx")))
    configs = {c.name: c for c in i8.candidate_configs(prepared, {})}
    assert list(configs) == ["all-ops", "lean", "core", "compute-only"]
    compute = configs["compute-only"]
    assert set(compute.op_types) <= set(i8.COMPUTE_OPS)
    attention = i8.activation_matmuls(prepared)
    assert attention and set(attention) <= set(compute.exclude)
    # MatMuls with a weight stay candidates
    weights = {t.name for t in prepared.graph.initializer}
    weight_mm = [
        n.name for n in prepared.graph.node if n.op_type == "MatMul" and any(i in weights for i in n.input)
    ]
    assert weight_mm and not set(weight_mm) & set(compute.exclude)


def test_profiled_layouts_add_only_measured_nodes(mobile, monkeypatch):
    from tensorsmith.precision import lower_int8
    from tensorsmith.precision.progress import NullProgress

    prepared, prep, low, feeds = mobile
    configs = i8.candidate_configs(prepared, {"user-node": "--keep-fp32"})
    target = next(n.name for n in prepared.graph.node if n.op_type == "Conv")
    monkeypatch.setattr(pf, "slower_in_int8", lambda *a, **k: {target: "measured"})
    out = lower_int8.profiled_configs(prepared, prep, low, configs, feeds, NullProgress())
    names = {c.name for c in out}
    assert names <= {"all-ops+profiled", "compute-only+profiled"} and "all-ops+profiled" in names
    for cfg in out:
        base = next(c for c in configs if cfg.name.startswith(c.name + "+"))
        assert set(cfg.exclude) == set(base.exclude) | {target}
        assert cfg.exclude["user-node"] == "--keep-fp32" and cfg.op_types == base.op_types
    monkeypatch.setattr(pf, "slower_in_int8", lambda *a, **k: {})
    assert lower_int8.profiled_configs(prepared, prep, low, configs, feeds, NullProgress()) == []


def _const_model(value: float):
    """A model whose output is its input plus a constant (a stand-in for one quantized node)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    c = helper.make_tensor("c", TensorProto.FLOAT, [1], [value])
    g = helper.make_graph([helper.make_node("Add", ["x", "c"], ["y"])], "g", [x], [y], [c])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def test_sensitivity_ranks_by_error_at_the_outputs():
    from tensorsmith.precision import fallback as fb

    samples = [{"x": np.arange(4, dtype=np.float32) + 1}, {"x": np.full(4, 2.0, np.float32)}]
    refs = [{"y": s["x"]} for s in samples]
    offsets = {"small": 0.01, "big": 1.0, "none": 0.0, "mid": 0.1}
    seen = []
    ranked = fb.sensitivity(
        [(n, "Conv") for n in offsets],
        lambda n: _const_model(offsets[n]),
        refs,
        samples,
        on_node=lambda: seen.append(1),
    )
    assert [r.name for r in ranked] == ["big", "mid", "small", "none"]
    assert len(seen) == 4
    # the error is relative L2 over every sample: offset * sqrt(n) / ||ref||
    norm = np.sqrt(sum(float(np.sum(s["x"].astype(np.float64) ** 2)) for s in samples))
    assert ranked[0].added == pytest.approx(1.0 * np.sqrt(8) / norm, rel=1e-5)
    assert ranked[-1].added == 0.0
    assert fb.output_error(refs, refs) == 0.0


def test_slower_in_int8_charges_the_fusions_a_quantized_conv_breaks(mobile):
    """A Conv whose activation onnxruntime fuses in FP32 (no time of its own there) but
    runs as its own kernel after the QLinearConv: that kernel's time counts against int8."""
    prepared = mobile[0]
    consumers = {}
    for n in prepared.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    conv = next(
        n
        for n in prepared.graph.node
        if n.op_type == "Conv"
        and any(c.op_type in pf.FUSED_AFTER_CONV for c in consumers.get(n.output[0], []))
    )
    act = next(c for c in consumers[conv.output[0]] if c.op_type in pf.FUSED_AFTER_CONV)
    fp32 = _attr(prepared.graph, {conv.name: 10.0})  # the activation is fused: no time of its own
    fast = _attr(prepared.graph, {conv.name: 6.0, act.name: 1.0})
    assert pf.slower_in_int8(prepared, fp32, fast, {conv.name}) == {}
    broken = _attr(prepared.graph, {conv.name: 6.0, act.name: 5.0})
    why = pf.slower_in_int8(prepared, fp32, broken, {conv.name})
    assert set(why) == {conv.name} and "broken fusions 5 us" in why[conv.name]
    # an activation that costs the same in FP32 (not fused there) is not charged
    same = _attr(prepared.graph, {conv.name: 10.0, act.name: 5.0})
    assert pf.slower_in_int8(prepared, same, broken, {conv.name}) == {}


def test_kept_table_groups_long_lists_by_op_and_reason():
    from tensorsmith.precision.render import GROUP_OVER, kept_rows

    few = [{"name": f"c{i}", "op": "Conv", "reason": "depthwise"} for i in range(3)]
    assert kept_rows(few) == [(f"c{i}", "Conv", None, "depthwise") for i in range(3)]
    many = [{"name": f"d{i}", "op": "Conv", "reason": "depthwise"} for i in range(GROUP_OVER)]
    many += [
        {"name": f"m{i}", "op": "Conv", "reason": f"measured: int8 {i} us + Q/DQ 1 us >= fp32 3 us per run"}
        for i in range(4)
    ]
    many += [
        {"name": "fb", "op": "Mul", "reason": "fallback: quantized alone, output error 0.2", "error": 0.2}
    ]
    rows = kept_rows(many)
    assert rows[0] == (
        "fb",
        "Mul",
        0.2,
        "fallback: quantized alone, output error 0.2",
    )  # fallback nodes one each
    assert rows[1] == (f"{GROUP_OVER} nodes: d0, d1, d2, ...", "Conv", None, "depthwise")
    assert rows[2][0] == "4 nodes: m0, m1, m2, ..." and rows[2][3].startswith("measured slower in int8")
    assert len(rows) == 3
