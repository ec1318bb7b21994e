"""The per-layer precision ladder: INT8 -> FP16 -> FP32 on TensorRT, INT8 -> FP32 on
onnxruntime, with each node's precision and cause, counts and the INT8 weight fraction;
weights restored on nodes kept out of INT8 after bias correction.

The constructed model: three 1x1 convolutions (16 -> 32 -> 32 -> 32 channels) where
channel 0 of the first one's output carries a large offset (3000 + signal) that the
middle one (``mid``) subtracts again through its bias. A per-tensor activation scale at
``mid``'s input has to cover 3000, which rounds every other channel to zero: the gate
fails because of ``mid`` and only ``mid`` (known node). In float16 it passes, unless
``mid``'s weight on the offset channel needs more than float16's 11 bits (``fine``):
then FP16 fails the gate too. (The gate runs in onnxruntime CPU, which computes a
float16 Conv by casting to float32 and drops the float32 -> float16 -> float32 Cast
pair at the island's input: it sees the float16 rounding of the weights, not of the
activations.)
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorsmith
from tensorsmith.errors import VerificationError
from tensorsmith.precision import ladder, options_from_cli
from tensorsmith.precision import ladder_graph as lg

C = 32


def _model(path, *, offset=3000.0, fine=False, odd=False, seed=0):
    """``fine``: ``mid``'s weights on the offset channel need float32 (1 +- 1e-3);
    ``odd``: they are not multiples of the int8 step (0.9 +- 0.05), so INT8 weights shift
    ``mid``'s output mean by ~offset * step / 2: what bias correction corrects."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((C, 16, 1, 1)) * 0.25).astype(np.float32)
    b1 = np.zeros(C, np.float32)
    b1[0] = offset
    w2 = (rng.standard_normal((C, C, 1, 1)) / np.sqrt(C)).astype(np.float32)
    w2[:, 0, 0, 0] = 1.0
    if fine:
        w2[:, 0, 0, 0] = 1.0 + rng.uniform(-1e-3, 1e-3, C)
    if odd:
        w2[:, 0, 0, 0] = 0.9 + rng.uniform(-0.05, 0.05, C)
    b2 = (-offset * w2[:, 0, 0, 0]).astype(np.float32)
    w3 = (rng.standard_normal((C, C, 1, 1)) / np.sqrt(C)).astype(np.float32)
    b3 = np.zeros(C, np.float32)
    arrays = {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "w3": w3, "b3": b3}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h1"], name="first"),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["h2"], name="mid"),
        helper.make_node("Relu", ["h2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["y"], name="last"),
    ]
    graph = helper.make_graph(
        nodes,
        "ladder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, 8, 8])],
        [numpy_helper.from_array(a, n) for n, a in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return arrays


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    d = tmp_path_factory.mktemp("ladder")
    x = np.random.default_rng(1).standard_normal((48, 1, 16, 8, 8)).astype(np.float32)
    np.savez(d / "calib.npz", x=x[:40])
    np.savez(d / "val.npz", x=x[40:])
    return d


def _run(tmp_path, calib, target, **kw):
    src = tmp_path / "m.onnx"
    arrays = _model(src, **{k: kw.pop(k) for k in ("fine", "odd") if k in kw})
    out = tmp_path / f"m.{target}.onnx"
    opts = options_from_cli(
        "int8",
        calib=str(calib / "calib.npz"),
        val=str(calib / "val.npz"),
        target=target,
        min_speedup=0.0,
        **kw,
    ).model_copy(update={"measure_latency": False})
    report = tensorsmith.optimize_file(src, out, precision=opts)
    return src, out, report.precision, arrays


def _where(p: dict) -> dict[str, tuple[str, str]]:
    return {e["name"]: (e["precision"], e["cause"]) for e in p["precision_map"]}


def _cosine(src, out, calib) -> float:
    x = np.load(calib / "val.npz")["x"]
    a_s = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    b_s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    worst = 1.0
    for xi in x:
        a = a_s.run(None, {"x": xi})[0].ravel()
        b = b_s.run(None, {"x": xi})[0].ravel()
        worst = min(worst, float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
    return worst


def test_trt_keeps_the_sensitive_node_in_fp16(tmp_path, calib):
    src, out, p, _ = _run(tmp_path, calib, "trt")
    where = _where(p)
    assert where["mid"] == ("fp16", "sensitivity")
    assert where["relu2"] == ("fp16", "island")  # the activation TensorRT fuses into it
    assert where["first"][0] == where["last"][0] == "int8"
    lad = p["ladder"]
    assert lad["rungs"] == ["int8", "fp16", "fp32"]
    assert lad["counts"] == {"int8": 2, "fp16": 2, "fp32": 1}
    assert lad["compute_counts"] == {"int8": 2, "fp16": 1, "fp32": 0}
    assert lad["int8_weights"] == {"compute_nodes": 3, "int8_weights": 2, "fraction": 0.6667}
    assert lad["fp16_nodes"] == ["mid"] and lad["promoted_to_fp32"] == []
    assert p["gate"]["passed"] and p["fallback"]["rounds"][0]["passed"] is False
    assert {k["name"]: k["precision"] for k in p["kept"]} == {"mid": "fp16"}
    # the written graph: mid computes in float16 between Casts, reads no Q/DQ, is valid
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    nodes = {n.name: n for n in m.graph.node}
    inits = {t.name: t for t in m.graph.initializer}
    assert all(inits[i].data_type == TensorProto.FLOAT16 for i in nodes["mid"].input[1:])
    producer = {o: n for n in m.graph.node for o in n.output}
    assert producer[nodes["mid"].input[0]].op_type == "Cast"
    assert producer[nodes["relu2"].input[0]] is nodes["mid"]
    assert sum(n.op_type == "Cast" for n in m.graph.node) == 2
    assert _cosine(src, out, calib) >= 0.99
    # and TensorRT's lint finds nothing to say about it
    from tensorsmith.lint.trt import lint_trt

    lint = lint_trt(out, trt_version="11.x")
    assert lint.findings == [] and "fp16" in lint.precision and "int8" in lint.precision


def test_trt_moves_to_fp32_when_fp16_still_fails(tmp_path, calib):
    src, out, p, _ = _run(tmp_path, calib, "trt", fine=True)
    where = _where(p)
    assert where["mid"] == ("fp32", "fp16-failed")
    assert p["ladder"]["promoted_to_fp32"] == ["mid"] and p["ladder"]["fp16_nodes"] == []
    rnd = p["fallback"]["rounds"][1]
    assert rnd["to"] == "fp32" and rnd["fp16_error"] > 0.01 and rnd["passed"]
    assert p["ladder"]["counts"]["fp16"] == 0
    assert not any(n.op_type == "Cast" for n in onnx.load(str(out)).graph.node)
    assert _cosine(src, out, calib) >= 0.99


def test_ort_ladder_is_int8_then_fp32(tmp_path, calib):
    src, out, p, _ = _run(tmp_path, calib, "ort")
    where = _where(p)
    assert where["mid"] == ("fp32", "sensitivity")
    assert where["last"][0] == "int8"
    lad = p["ladder"]
    assert lad["rungs"] == ["int8", "fp32"] and "float16" in lad["note"]
    assert lad["counts"]["fp16"] == 0 and not any(n.op_type == "Cast" for n in onnx.load(str(out)).graph.node)
    assert lad["int8_weights"]["int8_weights"] == lad["compute_counts"]["int8"] >= 1
    assert _cosine(src, out, calib) >= 0.99


def test_user_exclusion_and_placement_reasons(tmp_path, calib):
    _, _, p, _ = _run(tmp_path, calib, "trt", keep_fp32=["mid"])
    where = _where(p)
    assert where["mid"] == ("fp32", "user")
    assert where["relu1"] == ("fp32", "not-quantizable")
    assert p["fallback"]["rounds"] == [p["fallback"]["rounds"][0]]  # nothing else had to leave INT8


def _offset_input_model(path, calib_dir, *, offset=3000.0):
    """``mid`` reads the input, whose channel 0 is ``offset`` + signal, with weights on it that
    are not multiples of their int8 step (0.9 +- 0.05; each channel's largest weight, which
    sets the step, is elsewhere) and a bias that cancels the offset:
    INT8 weights shift its output mean by ~offset x step / 2 (what bias correction corrects),
    a per-tensor scale at its input rounds the other channels to zero (what the fallback fixes)."""
    rng = np.random.default_rng(3)
    w2 = (rng.standard_normal((C, 16, 1, 1)) * 0.25).astype(np.float32)
    w2[:, 0, 0, 0] = 0.9 + rng.uniform(-0.05, 0.05, C)
    w2[:, 1, 0, 0] = 1.3 + rng.uniform(0.0, 0.2, C)  # the channel's largest: its int8 step is ~0.011
    b2 = (-offset * w2[:, 0, 0, 0]).astype(np.float32)
    w3 = (rng.standard_normal((C, C, 1, 1)) / np.sqrt(C)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w2", "b2"], ["h2"], name="mid"),
        helper.make_node("Relu", ["h2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["y"], name="last"),
    ]
    graph = helper.make_graph(
        nodes,
        "offset",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, 8, 8])],
        [numpy_helper.from_array(a, n) for n, a in (("w2", w2), ("b2", b2), ("w3", w3))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    x = np.random.default_rng(4).standard_normal((48, 1, 16, 8, 8)).astype(np.float32)
    x[:, :, 0] += offset
    np.savez(calib_dir / "calib.npz", x=x[:40])
    np.savez(calib_dir / "val.npz", x=x[40:])
    return b2


def _bias_corrected_run(tmp_path):
    src = tmp_path / "offset.onnx"
    b2 = _offset_input_model(src, tmp_path)
    out = tmp_path / "offset.int8.onnx"
    opts = options_from_cli(
        "int8",
        calib=str(tmp_path / "calib.npz"),
        val=str(tmp_path / "val.npz"),
        min_speedup=0.0,
        int8_steps=["bias-correction"],
    ).model_copy(update={"measure_latency": False})
    return src, out, tensorsmith.optimize_file(src, out, precision=opts).precision, b2


def test_bias_correction_is_undone_on_nodes_kept_out_of_int8(tmp_path):
    """Bias correction shifts ``mid``'s bias by its INT8 weights' mean error; the fallback
    keeps ``mid`` FP32, with its pre-correction bias, and the gate passes."""
    src, out, p, b2 = _bias_corrected_run(tmp_path)
    runs = p["int8_steps"]["runs"]
    assert runs[0]["step"] == "bias-correction" and {"mid", "last"} <= {r["node"] for r in runs[0]["layers"]}
    assert _where(p)["mid"] == ("fp32", "sensitivity") and _where(p)["last"][0] == "int8"
    assert p["ladder"]["restored"] == ["mid"]
    m = onnx.load(str(out))
    mid = next(n for n in m.graph.node if n.name == "mid")
    bias = next(t for t in m.graph.initializer if t.name == mid.input[2])
    np.testing.assert_array_equal(numpy_helper.to_array(bias), b2)
    assert p["gate"]["passed"] and _cosine(src, out, tmp_path) >= 0.99


def test_without_restoring_the_same_run_fails(tmp_path, monkeypatch):
    """The previous test's case needs the restore: with the corrected bias left on ``mid``
    (what the INT8 step did before the ladder) the gate fails."""
    steps = ladder.run_steps
    monkeypatch.setattr(ladder, "run_steps", lambda *a: (steps(*a)[0], {}))
    with pytest.raises(VerificationError, match="accuracy gate failed"):
        _bias_corrected_run(tmp_path)


def test_cli_json_and_precision_report(tmp_path, calib):
    from typer.testing import CliRunner

    from tensorsmith.cli import app

    _model(tmp_path / "m.onnx")
    args = ["optimize", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--precision", "int8"]
    args += ["--target", "trt", "--calib", str(calib / "calib.npz"), "--val", str(calib / "val.npz")]
    args += ["--min-speedup", "0", "--precision-report"]
    r = CliRunner().invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    p = json.loads(r.stdout)["precision"]
    assert p["ladder"]["counts"] == {"int8": 2, "fp16": 2, "fp32": 1}
    assert p["ladder"]["int8_weights"]["fraction"] == 0.6667
    ranked = p["sensitivity"]
    assert [s["name"] for s in ranked][0] == "mid" and len(ranked) == 3
    assert [s["precision"] for s in ranked] == ["fp16", "int8", "int8"]
    assert ranked[0]["error"] > 10 * ranked[1]["error"]
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0
    assert "precision report: 3 layer(s) by sensitivity" in text.stdout
    assert "2 of 3 read INT8" in " ".join(text.stdout.split())


def test_precision_report_ranks_even_when_the_gate_passes(tmp_path, calib):
    """Without --precision-report a passing model is not ranked (it costs a quantization per
    node); with it, every quantized node is, and each has its final precision."""
    _, _, p, _ = _run(tmp_path, calib, "trt", keep_fp32=["mid"])
    assert "sensitivity" not in p
    _, _, p, _ = _run(tmp_path, calib, "trt", keep_fp32=["mid"], precision_report=True)
    assert {s["name"]: s["precision"] for s in p["sensitivity"]} == {"first": "int8", "last": "int8"}


# ---------------------------------------------------------------------------
# graph edits


def test_to_fp16_bypasses_a_shared_qdq_and_shares_casts():
    """A tensor quantized for one reader: the FP16 reader takes the float tensor, not the
    int8 round trip; two FP16 readers share one Cast; only outside readers get Casts back."""
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    z = numpy_helper.from_array(np.array(0, np.int8), "z")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
        helper.make_node("MatMul", ["xd", "w"], ["a"], name="int8_mm"),
        helper.make_node("MatMul", ["xd", "w"], ["b"], name="half1"),
        helper.make_node("MatMul", ["xd", "w"], ["c"], name="half2"),
        helper.make_node("Relu", ["c"], ["cr"], name="act"),
        helper.make_node("Add", ["b", "cr"], ["d"], name="half3"),
        helper.make_node("Add", ["a", "d"], ["y"], name="out"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [w, s, z],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    stats = lg.to_fp16(m, {"half1", "half2", "half3"})
    onnx.checker.check_model(m, full_check=True)
    by = {n.name: n for n in m.graph.node}
    producer = {o: n for n in m.graph.node for o in n.output}
    assert producer[by["half1"].input[0]].input[0] == "x"  # the float tensor itself
    assert by["half1"].input[0] == by["half2"].input[0]  # one Cast for both
    assert "act" in lg.islands(m, {"half2"}) or by["act"].input[0].endswith("__fp16")
    assert by["int8_mm"].input[0] == "xd"  # the INT8 reader keeps its Q/DQ
    assert stats["casts"] == 2 and stats["qdq_bypassed"] == 2
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    got = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[
        0
    ]
    xd = np.clip(np.round(x / 0.1), -128, 127) * 0.1
    want = xd @ np.ones((4, 4)) + (x @ np.ones((4, 4)) + np.maximum(x @ np.ones((4, 4)), 0))
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


def test_weight_changes_and_restore_an_added_bias():
    """A step that gave a Conv a bias it did not have: restored as zeros; a changed weight
    shared with a quantized node is copied, not overwritten."""
    w = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    before = helper.make_model(
        helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"], name="c")],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 1, 1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 1, 1])],
            [w],
        )
    )
    after = onnx.ModelProto()
    after.CopyFrom(before)
    after.graph.node[0].input.append("b")
    after.graph.initializer.append(numpy_helper.from_array(np.array([0.5, -0.5], np.float32), "b"))
    changes = lg.weight_changes(before, after)
    assert list(changes) == ["c"] and list(changes["c"]) == [2]
    assert lg.restore(after, changes, keep={"c"}) == []  # an INT8 node keeps its correction
    assert lg.restore(after, changes, keep=set()) == ["c"]
    b = next(t for t in after.graph.initializer if t.name == "b")
    np.testing.assert_array_equal(numpy_helper.to_array(b), [0.0, 0.0])


def test_run_steps_snapshots_after_the_function_preserving_steps(tmp_path):
    """equalize + bias-correction: what a node out of INT8 gets back is its bias before bias
    correction, with equalization's scaling kept (undoing one layer of an equalized pair
    would change the FP32 function)."""
    from tensorsmith.precision import int8 as i8

    _model(tmp_path / "m.onnx", offset=0.0)
    prepared, _ = i8.prepare(onnx.load(str(tmp_path / "m.onnx")))
    original = {t.name: numpy_helper.to_array(t) for t in prepared.graph.initializer}
    x = np.random.default_rng(5).standard_normal((8, 1, 16, 8, 8)).astype(np.float32)
    entry, changes = ladder.run_steps(prepared, ["equalize", "bias-correction"], [{"x": s} for s in x])
    assert [r["step"] for r in entry["runs"]] == ["equalize", "bias-correction"]
    assert entry["steps"] == ["equalize", "bias-correction"]
    assert changes and all(set(fix) == {2} for fix in changes.values())  # biases only
    assert entry["runs"][0]["pairs"]  # equalization scaled weights, which are not undone:
    after = {t.name: numpy_helper.to_array(t) for t in prepared.graph.initializer}
    assert not np.array_equal(after["w2"], original["w2"])
    # restoring every node gives the equalized FP32 function back exactly
    lg.restore(prepared, changes, keep=set())
    ref = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(prepared.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        got.run(None, {"x": x[0]})[0], ref.run(None, {"x": x[0]})[0], rtol=1e-4, atol=1e-4
    )
    # bias correction alone: nothing to keep, everything it changed is restorable
    prepared2, _ = i8.prepare(onnx.load(str(tmp_path / "m.onnx")))
    _, only_bc = ladder.run_steps(prepared2, ["bias-correction"], [{"x": s} for s in x])
    assert set(only_bc) == set(changes)
    _, none = ladder.run_steps(prepared2, ["equalize"], [{"x": s} for s in x])
    assert none == {}
