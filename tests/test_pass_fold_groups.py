"""fold-constants: slices of a shared constant, dequantize chains (--fold-dequantize),
and what the model's opset allows (issue 12 item 3)."""

from __future__ import annotations

import numpy as np
import onnx
from helpers import (
    apply,
    apply_to_fixed_point,
    assert_interface_kept,
    assert_same_outputs,
    check_idempotent,
    ops,
    parse,
)
from onnx import helper as oh

RNG_SEED = 15
rng = np.random.default_rng(RNG_SEED)  # re-seeded before every test (conftest.py)


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every tensor the model stores (initializers, also in subgraphs, and Constants)."""
    total = 0
    for graph in [model.graph, *(a.g for n in _all_nodes(model.graph) for a in n.attribute if a.g.name)]:
        total += sum(onnx.numpy_helper.to_array(i).nbytes for i in graph.initializer)
    for node in _all_nodes(model.graph):
        if node.op_type == "Constant":
            total += sum(onnx.numpy_helper.to_array(a.t).nbytes for a in node.attribute if a.name == "value")
    return total


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.g.name:
                yield from _all_nodes(a.g)


# An LSTM-style weight [4 gates x 64, 64] split into its 4 gates by 4 Slices
GATES = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 64] x) => (float[N, 64] y) {
        wi = Slice (w, s0, s1, ax)
        wo = Slice (w, s1, s2, ax)
        wf = Slice (w, s2, s3, ax)
        wc = Slice (w, s3, s4, ax)
        a = MatMul (x, wi)
        b = MatMul (x, wo)
        c = MatMul (x, wf)
        d = MatMul (x, wc)
        ab = Add (a, b)
        cd = Add (c, d)
        y = Add (ab, cd)
    }"""


def _gate_inits(**extra):
    inits = {
        "w": rng.standard_normal((64, 256)).astype(np.float32),
        "ax": np.array([1], np.int64),
        **{f"s{i}": np.array([64 * i], np.int64) for i in range(5)},
    }
    inits.update(extra)
    return inits


def test_all_slices_of_a_shared_weight_fold_and_the_file_does_not_grow():
    src = parse(GATES, _gate_inits())
    out, (p,), modified = apply(src, "fold-constants")
    assert modified and "Slice" not in ops(out)
    assert "w" not in {i.name for i in out.graph.initializer}  # the source is freed
    assert weight_bytes(out) <= weight_bytes(src)
    assert out.ByteSize() <= src.ByteSize() + 1024  # names and inferred value_info only
    # the first three by the group rule; the last is then the weight's only consumer
    assert p.stats.get("slices of a shared constant folded") == 3 and p.stats["nodes folded"] == 4
    onnx.checker.check_model(out, full_check=True)
    assert_interface_kept(src, out)
    assert_same_outputs(src, out, {"x": rng.standard_normal((3, 64)).astype(np.float32)})
    check_idempotent(out, "fold-constants")


def test_slices_inside_an_if_branch_of_an_outer_weight_fold():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 64] x, bool c) => (float[N, 64] y) {
            y = If (c) <
                then_branch = t () => (float[N, 64] o1) {
                    lo = Slice (w, s0, s1, ax)
                    o1 = MatMul (x, lo)
                },
                else_branch = e () => (float[N, 64] o2) {
                    hi = Slice (w, s1, s2, ax)
                    o2 = MatMul (x, hi)
                }
            >
        }""",
        {
            "w": rng.standard_normal((64, 128)).astype(np.float32),
            "ax": np.array([1], np.int64),
            "s0": np.array([0], np.int64),
            "s1": np.array([64], np.int64),
            "s2": np.array([128], np.int64),
        },
    )
    out, _ = apply_to_fixed_point(src, "fold-constants", "remove-dead-code")
    branches = [a.g for a in out.graph.node[0].attribute]
    assert all("Slice" not in [n.op_type for n in b.node] for b in branches)
    assert weight_bytes(out) <= weight_bytes(src)
    assert out.ByteSize() <= src.ByteSize() + 1024  # names and inferred value_info only
    onnx.checker.check_model(out, full_check=True)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    for c in (True, False):
        assert_same_outputs(src, out, {"x": x, "c": np.array(c)})


def test_the_same_slices_in_both_branches_are_stored_once():
    # both branches of an If split the outer weight into the same two halves
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 64] x, bool c) => (float[N, 64] y) {
            y = If (c) <
                then_branch = t () => (float[N, 64] o1) {
                    lo = Slice (w, s0, s1, ax)
                    hi = Slice (w, s1, s2, ax)
                    a = MatMul (x, lo)
                    b = MatMul (x, hi)
                    o1 = Add (a, b)
                },
                else_branch = e () => (float[N, 64] o2) {
                    lo2 = Slice (w, s0, s1, ax)
                    hi2 = Slice (w, s1, s2, ax)
                    a2 = MatMul (x, lo2)
                    b2 = MatMul (x, hi2)
                    o2 = Sub (a2, b2)
                }
            >
        }""",
        {
            "w": rng.standard_normal((64, 128)).astype(np.float32),
            "ax": np.array([1], np.int64),
            "s0": np.array([0], np.int64),
            "s1": np.array([64], np.int64),
            "s2": np.array([128], np.int64),
        },
    )
    out, records = apply_to_fixed_point(src, "fold-constants", "remove-dead-code")
    stats = records[0].stats
    assert stats.get("equal folded constants shared across subgraphs") == 2
    branches = [a.g for a in out.graph.node[0].attribute]
    assert all("Slice" not in [n.op_type for n in b.node] for b in branches)
    assert not any(b.initializer for b in branches)  # both halves live once, in the main graph
    assert weight_bytes(out) <= weight_bytes(src)
    onnx.checker.check_model(out, full_check=True)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    for c in (True, False):
        assert_same_outputs(src, out, {"x": x, "c": np.array(c)})
    check_idempotent(out, "fold-constants")


def test_slices_are_kept_when_the_weight_has_another_consumer():
    # w is also used whole: folding the slices would store the weight twice
    text = GATES.replace("y = Add (ab, cd)", "s = Add (ab, cd)\n        y = MatMul (s, wsq)").replace(
        "wi = Slice", "wsq = Slice (w, s0, s1, ax)\n        wall = MatMul (x, w)\n        wi = Slice"
    )
    text = text.replace("=> (float[N, 64] y)", "=> (float[N, 64] y, float[N, 256] wall)")
    src = parse(text, _gate_inits())
    out, (p,), _ = apply(src, "fold-constants")
    assert ops(out).count("Slice") == 5
    assert out.ByteSize() <= src.ByteSize() + 1024
    assert any("grow the model" in n for n in p.notes)
    assert_same_outputs(src, out, {"x": rng.standard_normal((2, 64)).astype(np.float32)})


def test_overlapping_slices_that_add_up_to_more_than_the_weight_are_kept():
    # two slices that each take 3/4 of the weight: together 1.5x its size
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 64] x) => (float[N, 192] y) {
            a = Slice (w, s0, s3, ax)
            b = Slice (w, s1, s4, ax)
            ya = MatMul (x, a)
            yb = MatMul (x, b)
            y = Add (ya, yb)
        }""",
        _gate_inits(),
    )
    out, _, _ = apply(src, "fold-constants")
    assert ops(out).count("Slice") == 2
    assert out.ByteSize() <= src.ByteSize() + 1024
    assert_same_outputs(src, out, {"x": rng.standard_normal((2, 64)).astype(np.float32)})


DEQUANT = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 128] x) => (float[N, 128] y) {
        wf = Cast <to = 1> (wq)
        w = Mul (wf, scale)
        y = MatMul (x, w)
    }"""


def _dequant_src():
    return parse(
        DEQUANT,
        {"wq": rng.integers(-127, 127, (128, 128)).astype(np.int8), "scale": np.array(0.01, np.float32)},
    )


def test_dequantize_chain_left_by_default_and_the_report_says_why():
    src = _dequant_src()
    out, records = apply_to_fixed_point(src, "fold-constants")
    assert ops(out) == ["Cast", "Mul", "MatMul"]
    (rec,) = records
    assert rec.stats == {"dequantize chains left (would grow the file; --fold-dequantize folds them)": 1}
    assert any("--fold-dequantize" in n and "4x" in n for n in rec.notes)


def test_fold_dequantize_option_folds_the_chain():
    src = _dequant_src()
    out, (p,), modified = apply(src, "fold-constants", options={"fold-constants": {"fold_dequantize": True}})
    assert modified and ops(out) == ["MatMul"]
    assert p.stats.get("dequantize casts folded") == 1
    (w,) = out.graph.initializer
    assert w.data_type == onnx.TensorProto.FLOAT and list(w.dims) == [128, 128]
    onnx.checker.check_model(out, full_check=True)
    assert_same_outputs(src, out, {"x": rng.standard_normal((2, 128)).astype(np.float32)})
    _, _, again = apply(out, "fold-constants", options={"fold-constants": {"fold_dequantize": True}})
    assert not again


def _shape_model(opset: int) -> onnx.ModelProto:
    """Reshape(z, Shape(x)) with x static: fold-constants turns the Shape into a constant."""
    model = oh.make_model(
        oh.make_graph(
            [oh.make_node("Shape", ["x"], ["s"]), oh.make_node("Reshape", ["z", "s"], ["y"])],
            "g",
            [oh.make_tensor_value_info("x", 1, [2, 3, 5]), oh.make_tensor_value_info("z", 1, [30])],
            [oh.make_tensor_value_info("y", 1, [2, 3, 5])],
        ),
        opset_imports=[oh.make_opsetid("", opset)],
    )
    model.ir_version = 5
    onnx.checker.check_model(model, full_check=True)
    return model


def test_folded_shape_on_opset_10_writes_only_what_opset_10_allows():
    src = _shape_model(10)
    out, (p,), modified = apply(src, "fold-constants")
    assert modified and "Shape" not in ops(out)
    for node in out.graph.node:
        assert not {a.name for a in node.attribute} & {
            "value_ints",
            "value_int",
            "value_floats",
            "value_float",
        }
    onnx.checker.check_model(out, full_check=True)  # value_ints exists only from opset 12
    assert p.stats.get("constants rewritten for the opset", 0) >= 1
    feeds = {"x": np.zeros((2, 3, 5), np.float32), "z": rng.standard_normal(30).astype(np.float32)}
    assert_same_outputs(src, out, feeds)
    check_idempotent(out, "fold-constants")


def test_opset_12_keeps_value_ints():
    out, _, _ = apply(_shape_model(12), "fold-constants")
    onnx.checker.check_model(out, full_check=True)
    assert [a.name for n in out.graph.node if n.op_type == "Constant" for a in n.attribute] == ["value_ints"]


def test_cli_fold_dequantize_flag(tmp_path):
    import json

    from typer.testing import CliRunner

    from tensorsmith.cli import app

    src = _dequant_src()
    path = tmp_path / "q.onnx"
    onnx.save(src, path)
    runner = CliRunner()
    reports = {}
    for flag in ([], ["--fold-dequantize"]):
        out = tmp_path / f"out{len(flag)}.onnx"
        result = runner.invoke(app, ["optimize", str(path), "-o", str(out), "--json", *flag])
        assert result.exit_code == 0, result.output
        reports[bool(flag)] = (json.loads(result.stdout), onnx.load(out))
    (left, left_model), (folded, folded_model) = reports[False], reports[True]
    stats = {p["name"]: p["stats"] for p in left["passes"]}["fold-constants"]
    assert stats == {"dequantize chains left (would grow the file; --fold-dequantize folds them)": 1}
    assert "Cast" in ops(left_model) and ops(folded_model) == ["MatMul"]
    assert {p["name"]: p["stats"] for p in folded["passes"]}["fold-constants"]["dequantize casts folded"] == 1
    assert folded["status"] == "ok" and folded["verification"]["passed"]
