"""remove-dropout and remove-identity."""

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

RNG_SEED = 1
rng = np.random.default_rng(RNG_SEED)  # re-seeded before every test (conftest.py)
X = {"x": rng.standard_normal((2, 4)).astype(np.float32)}

DROPOUT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 4] y) {
    r = Relu (x)
    d = Dropout (r, ratio)
    y = Sigmoid (d)
}"""


def test_dropout_removed_any_ratio():
    for ratio in (0.1, 0.5, 0.9):
        src = parse(DROPOUT, {"ratio": np.array(ratio, np.float32)})
        out, _, modified = apply(src, "remove-dropout", "remove-dead-code")
        assert modified and ops(out) == ["Relu", "Sigmoid"]
        assert "ratio" not in {i.name for i in out.graph.initializer}
        onnx.checker.check_model(out)
        assert_same_outputs(src, out, X)


def test_dropout_idempotent():
    check_idempotent(parse(DROPOUT, {"ratio": np.array(0.5, np.float32)}), "remove-dropout")


def test_used_mask_becomes_all_true():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y, int32[N, 4] mi) {
            d, mask = Dropout (x, ratio)
            y = Relu (d)
            mi = Cast <to = 6> (mask)
        }""",
        {"ratio": np.array(0.3, np.float32)},
    )
    out, _, modified = apply(src, "remove-dropout")
    assert modified and "Dropout" not in ops(out)
    assert "ConstantOfShape" in ops(out)
    onnx.checker.check_model(out)
    y, mi = __import__("helpers").run(out, X)
    assert (mi == 1).all() and mi.shape == (2, 4)
    assert_same_outputs(src, out, X)


def test_training_mode_true_is_kept():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) {
            d = Dropout (x, ratio, t)
            y = Relu (d)
        }""",
        {"ratio": np.array(0.5, np.float32), "t": np.array(True)},
    )
    _, (p,), modified = apply(src, "remove-dropout")
    assert not modified and any("training_mode is true" in n for n in p.notes)


def test_training_mode_from_input_is_kept():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x, bool t) => (float[N, 4] y) {
            d = Dropout (x, ratio, t)
            y = Relu (d)
        }""",
        {"ratio": np.array(0.5, np.float32)},
    )
    _, _, modified = apply(src, "remove-dropout")
    assert not modified


def test_identity_chain_removed_and_output_name_kept():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) {
            a = Relu (x)
            b = Identity (a)
            c = Identity (b)
            y = Identity (c)
        }"""
    )
    out, _, modified = apply(src, "remove-identity")
    assert modified and ops(out) == ["Relu"]
    assert out.graph.node[0].output[0] == "y"
    assert_interface_kept(src, out)
    assert_same_outputs(src, out, X)
    check_idempotent(src, "remove-identity")


def test_identity_between_input_and_output_is_kept():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) {
            y = Identity (x)
        }"""
    )
    out, _, modified = apply(src, "remove-identity")
    assert not modified and ops(out) == ["Identity"]


def test_identity_of_another_graph_output_is_kept():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] a, float[N, 4] y) {
            a = Relu (x)
            y = Identity (a)
        }"""
    )
    out, _, modified = apply(src, "remove-identity")
    assert not modified
    assert_interface_kept(src, out)


def test_declared_output_shape_survives():
    # the inner value has a static shape; the declared output keeps its symbolic batch
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) {
            a = Relu (x)
            y = Identity (a)
        }"""
    )
    src.graph.value_info.append(onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1, 4]))
    out, _, _ = apply(src, "remove-identity")
    assert_interface_kept(src, out)


def test_cast_to_same_type_removed_other_cast_kept():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (double[N, 4] y) {
            a = Relu (x)
            b = Cast <to = 1> (a)
            y = Cast <to = 11> (b)
        }"""
    )
    # the type of `a` is unknown until fold-constants' node-level inference has run:
    # at the fixed point the no-op Cast is gone
    out, _, modified = apply(src, "remove-identity")
    assert not modified
    out, records = apply_to_fixed_point(src, "fold-constants", "remove-identity")
    assert ops(out) == ["Relu", "Cast"]
    assert out.graph.node[1].attribute[0].i == 11
    assert_same_outputs(src, out, X)


def test_identity_inside_if_branch():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x, bool c) => (float[N, 4] y) {
            y = If (c) <
                then_branch = t () => (float[N, 4] o1) { i1 = Identity (x)  o1 = Relu (i1) },
                else_branch = e () => (float[N, 4] o2) { o2 = Identity (x) }
            >
        }"""
    )
    out, (p,), modified = apply(src, "remove-identity")
    assert modified
    then_ops = [n.op_type for n in out.graph.node[0].attribute[0].g.node] + [
        n.op_type for n in out.graph.node[0].attribute[1].g.node
    ]
    assert then_ops.count("Identity") == 1  # the else-branch one returns an outer value: kept
    onnx.checker.check_model(out)
    for c in (True, False):
        assert_same_outputs(src, out, {**X, "c": np.array(c)})
