"""fold-constants, eliminate-cse and remove-dead-code."""

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
    run,
    to_ir,
)

from tensorsmith import passes
from tensorsmith.passes import DEFAULT_PIPELINE

RNG_SEED = 2
rng = np.random.default_rng(RNG_SEED)  # re-seeded before every test (conftest.py)


def test_constant_subgraph_folded_to_initializer():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) {
            w2 = Mul (w, two)
            wt = Transpose <perm = [1, 0]> (w2)
            y = MatMul (x, wt)
        }""",
        {"w": rng.standard_normal((4, 4)).astype(np.float32), "two": np.array(2.0, np.float32)},
    )
    out, _, modified = apply(src, "fold-constants", "remove-dead-code")
    assert modified and ops(out) == ["MatMul"]
    onnx.checker.check_model(out)
    assert_interface_kept(src, out)
    assert_same_outputs(src, out, {"x": rng.standard_normal((3, 4)).astype(np.float32)})
    check_idempotent(out, "fold-constants")


def test_shape_computation_of_static_dims_folded():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4, 6] x) => (float[N, 24] y) {
            s = Shape (x)
            tail = Slice (s, one, three)
            p = ReduceProd <keepdims = 1> (tail)
            shp = Concat <axis = 0> (neg1, p)
            y = Reshape (x, shp)
        }""",
        {"one": np.array([1], np.int64), "three": np.array([3], np.int64), "neg1": np.array([-1], np.int64)},
    )
    out, records = apply_to_fixed_point(src, "fold-constants", "remove-dead-code")
    assert ops(out) == ["Reshape"]
    shape_init = {i.name: onnx.numpy_helper.to_array(i) for i in out.graph.initializer}[
        out.graph.node[0].input[1]
    ]
    assert shape_init.tolist() == [-1, 24]  # batch stays dynamic
    for n in (1, 3):  # batch really is dynamic afterwards
        assert_same_outputs(src, out, {"x": rng.standard_normal((n, 4, 6)).astype(np.float32)})


def test_if_with_constant_condition_is_inlined():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) {
            y = If (c) <
                then_branch = t () => (float[N, 4] o1) { o1 = Relu (x) },
                else_branch = e () => (float[N, 4] o2) { o2 = Neg (x) }
            >
        }""",
        {"c": np.array(True)},
    )
    out, _ = apply_to_fixed_point(src, "fold-constants", "remove-dead-code")
    assert "If" not in ops(out) and "Relu" in ops(out)
    assert_interface_kept(src, out)
    assert_same_outputs(src, out, {"x": rng.standard_normal((2, 4)).astype(np.float32)})


def test_constants_inside_loop_body_folded():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x, int64 n) => (float[4] y) {
            y = Loop (n, cond, x) <
                body = b (int64 i, bool ci, float[4] acc) => (bool co, float[4] nxt) {
                    co = Identity (ci)
                    k = Add (a, a)
                    nxt = Add (acc, k)
                }
            >
        }""",
        {"cond": np.array(True), "a": np.ones(4, np.float32)},
    )
    out, _ = apply_to_fixed_point(src, "fold-constants", "remove-dead-code")
    body = out.graph.node[0].attribute[0].g
    # `Add(a, a)` of the outer constant is gone from the body
    assert [n.op_type for n in body.node].count("Add") == 1
    onnx.checker.check_model(out)
    feeds = {"x": rng.standard_normal(4).astype(np.float32), "n": np.array(3, np.int64)}
    assert_same_outputs(src, out, feeds)


def test_fold_never_inflates_the_file():
    # Expand of a scalar to 1M elements: folding would add 4 MB of constants
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1000, 1000] x) => (float[1000, 1000] y) {
            big = Expand (one, shp)
            y = Add (x, big)
        }""",
        {"one": np.array([1.0], np.float32), "shp": np.array([1000, 1000], np.int64)},
    )
    out, _, _ = apply(src, "fold-constants")
    assert "Expand" in ops(out)
    assert out.ByteSize() < 10_000


def test_cse_merges_duplicates():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) {
            a = Relu (x)
            b = Relu (x)
            y = Add (a, b)
        }"""
    )
    out, _, modified = apply(src, "eliminate-cse")
    assert modified and ops(out) == ["Relu", "Add"]
    assert_same_outputs(src, out, {"x": rng.standard_normal((2, 4)).astype(np.float32)})
    check_idempotent(src, "eliminate-cse")


def test_cse_keeps_two_outputs_apart():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y, float[N, 4] z) {
            y = Relu (x)
            z = Relu (x)
        }"""
    )
    out, _ = apply_to_fixed_point(src, "eliminate-cse", "remove-identity", "remove-dead-code")
    assert_interface_kept(src, out)
    y, z = run(out, {"x": np.ones((1, 4), np.float32)})
    assert y.shape == z.shape == (1, 4)


def test_dead_code_removed_also_in_subgraphs():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x, bool c) => (float[N, 4] y) {
            unused = Sigmoid (x)
            y = If (c) <
                then_branch = t () => (float[N, 4] o1) { dead = Tanh (x)  o1 = Relu (x) },
                else_branch = e () => (float[N, 4] o2) { o2 = Neg (x) }
            >
        }""",
        {"spare": np.zeros(10, np.float32)},
    )
    out, (p,), modified = apply(src, "remove-dead-code")
    assert modified and ops(out) == ["If"]
    assert [n.op_type for n in out.graph.node[0].attribute[0].g.node] == ["Relu"]
    assert not out.graph.initializer
    assert p.stats["initializers"] == 1
    check_idempotent(src, "remove-dead-code")
    onnx.checker.check_model(out)


def test_gather_of_static_dim_folded_dynamic_dim_kept():
    # x.view(x.size(0), -1) as the TorchScript exporter writes it
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4, 6] x) => (float[N, 24] y) {
            s = Shape (x)
            d0 = Gather <axis = 0> (s, zero_s)
            d1 = Gather <axis = 0> (s, one)
            d2 = Gather <axis = 0> (s, two)
            p = Mul (d1, d2)
            a = Unsqueeze (d0, zero)
            b = Unsqueeze (p, zero)
            shp = Concat <axis = 0> (a, b)
            y = Reshape (x, shp)
        }""",
        {
            "zero_s": np.array(0, np.int64),
            "one": np.array(1, np.int64),
            "two": np.array(2, np.int64),
            "zero": np.array([0], np.int64),
        },
    )
    out, _ = apply_to_fixed_point(src, "fold-constants", "remove-dead-code")
    # the batch dim is still read at run time; the static 4*6 became a constant
    assert "Mul" not in ops(out) and "Shape" in ops(out)
    for n in (1, 5):
        assert_same_outputs(src, out, {"x": rng.standard_normal((n, 4, 6)).astype(np.float32)})


def test_dequantizing_cast_of_big_int8_weight_is_not_folded():
    # Cast(int8) * scale: folding would store the weight as float32, 4x the bytes
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 128] x) => (float[N, 128] y) {
            wf = Cast <to = 1> (wq)
            w = Mul (wf, scale)
            y = MatMul (x, w)
        }""",
        {"wq": rng.integers(-127, 127, (128, 128)).astype(np.int8), "scale": np.array(0.01, np.float32)},
    )
    out, (p,), _ = apply(src, "fold-constants")
    assert "Cast" in ops(out)
    assert out.ByteSize() < src.ByteSize() + 2048
    assert any("grow the model" in n for n in p.notes)
    assert_same_outputs(src, out, {"x": rng.standard_normal((2, 128)).astype(np.float32)})


def test_quantize_dequantize_kept():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) {
            w = DequantizeLinear (wq, s, z)
            y = MatMul (x, w)
        }""",
        {
            "wq": rng.integers(-127, 127, (4, 4)).astype(np.int8),
            "s": np.array(0.02, np.float32),
            "z": np.array(0, np.int8),
        },
    )
    out, _ = apply_to_fixed_point(src, "fold-constants", "remove-dead-code")
    assert ops(out) == ["DequantizeLinear", "MatMul"]


def test_shapes_of_equally_shaped_tensors_merge():
    # attention-style: Shape(q) and Shape(k) of two [N, S, 8] tensors; the reshape
    # targets end up computed once, and the dims stay dynamic
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, S, 8] x) => (float[N, S, 2, 4] yq, float[N, S, 2, 4] yk) {
            q = MatMul (x, wq)
            k = MatMul (x, wk)
            sq = Shape <end = 2> (q)
            sk = Shape <end = 2> (k)
            tq = Concat <axis = 0> (sq, tail)
            tk = Concat <axis = 0> (sk, tail)
            yq = Reshape (q, tq)
            yk = Reshape (k, tk)
        }""",
        {
            "wq": rng.standard_normal((8, 8)).astype(np.float32),
            "wk": rng.standard_normal((8, 8)).astype(np.float32),
            "tail": np.array([2, 4], np.int64),
        },
    )
    # off by default (it blocks onnxruntime's ReshapeFusion): nothing merged
    default, _ = apply_to_fixed_point(src, "fold-constants", "eliminate-cse", "remove-dead-code")
    assert ops(default).count("Shape") == 2
    from helpers import to_ir, to_proto

    from tensorsmith import passes as passes_mod
    from tensorsmith.passes.manager import PassManager

    model = to_ir(src)
    ps = passes_mod.create(
        ["fold-constants", "eliminate-cse", "remove-dead-code"],
        {"fold-constants": {"merge_equal_shapes": True}},
    )
    records = PassManager(ps).run(model)
    out = to_proto(model)
    assert ops(out).count("Shape") == 1 and ops(out).count("Concat") == 1
    stats = {r.name: r.stats for r in records}
    assert stats["fold-constants"].get("equal-shapes-merged") == 1
    for n, s in ((1, 3), (2, 5)):
        assert_same_outputs(src, out, {"x": rng.standard_normal((n, s, 8)).astype(np.float32)})


def test_shapes_with_unknown_dims_are_not_merged():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[?, 8] a, float[?, 8] b) => (int64[2] sa, int64[2] sb2) {
            sa = Shape (a)
            sb = Shape (b)
            sb2 = Identity (sb)
        }"""
    )
    out, _ = apply_to_fixed_point(src, "fold-constants", "remove-dead-code")
    assert ops(out).count("Shape") == 2
    ra, rb = run(out, {"a": np.zeros((2, 8), np.float32), "b": np.zeros((3, 8), np.float32)})
    assert ra.tolist() == [2, 8] and rb.tolist() == [3, 8]


def test_a_constant_read_only_by_a_dropped_if_branch_is_removed_in_the_same_run():
    # The folder inlines the inner If (constant condition); the dropped else branch still
    # listed itself as a user of k, so k stayed until a save and reload (Silero-VAD).
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x, bool c) => (float[2] y) {
            y = If (c) <
                then_branch = t () => (float[2] o1) { o1 = Neg (x) },
                else_branch = e () => (float[2] o2) {
                    k = Constant <value = float {5.0}> ()
                    yes = Constant <value = bool {1}> ()
                    o2 = If (yes) <
                        then_branch = t2 () => (float[2] p1) {
                            u = Unsqueeze (k, ax)
                            p1 = Add (x, u)
                        },
                        else_branch = e2 () => (float[2] p2) {
                            u2 = Unsqueeze (k, ax)
                            p2 = Sub (x, u2)
                        }
                    >
                }
            >
        }""",
        {"ax": np.array([0], np.int64)},
    )
    out, _ = apply_to_fixed_point(src, *DEFAULT_PIPELINE)
    else_branch = out.graph.node[0].attribute[1].g
    assert [n.op_type for n in else_branch.node] == ["Add"]
    model = to_ir(out)
    assert not [p.name for p in passes.create(list(DEFAULT_PIPELINE)) if p(model).modified]
    for c in (True, False):
        assert_same_outputs(src, out, {"x": np.array([1.0, -2.0], np.float32), "c": np.array(c)})


def test_an_unused_initializer_inside_an_if_branch_is_removed():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x, bool c) => (float[2] y) {
            y = If (c) <
                then_branch = t () => (float[2] o1) <float[2] w = {1.0, 2.0}, float[2] dead = {3.0, 4.0}> {
                    o1 = Add (x, w)
                },
                else_branch = e () => (float[2] o2) { o2 = Neg (x) }
            >
        }"""
    )
    out, (p,), modified = apply(src, "remove-dead-code")
    then_branch = out.graph.node[0].attribute[0].g
    assert modified and [i.name for i in then_branch.initializer] == ["w"]
    assert p.stats == {"subgraph initializers": 1}
    check_idempotent(out, "remove-dead-code")
    for c in (True, False):
        assert_same_outputs(src, out, {"x": np.array([1.0, -2.0], np.float32), "c": np.array(c)})
