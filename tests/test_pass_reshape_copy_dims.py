"""reshape-copy-dims."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import (
    apply,
    apply_to_fixed_point,
    assert_interface_kept,
    assert_same_outputs,
    check_idempotent,
    ops,
    parse,
)

RNG_SEED = 3
rng = np.random.default_rng(RNG_SEED)  # re-seeded before every test (conftest.py)

# attention's head split: x [B, S, 32] -> [B, S, 4, 8], B and S dynamic
HEADS = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[B, S, 32] x) => (float[B, S, 4, 8] y) {
        s = Shape (x)
        b = Gather <axis = 0> (s, i0)
        t = Gather <axis = 0> (s, i1)
        b1 = Unsqueeze (b, ax0)
        t1 = Unsqueeze (t, ax0)
        shp = Concat <axis = 0> (b1, t1, heads)
        y = Reshape (x, shp)
    }"""
INITS = {
    "i0": np.array(0, np.int64),
    "i1": np.array(1, np.int64),
    "ax0": np.array([0], np.int64),
    "heads": np.array([4, 8], np.int64),
}


def _target(model: onnx.ModelProto) -> list[int]:
    (reshape,) = [n for n in model.graph.node if n.op_type == "Reshape"]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return inits[reshape.input[1]].tolist()


def test_head_split_target_becomes_constant_with_copy_dims():
    src = parse(HEADS, INITS)
    out, (p, _), modified = apply(src, "reshape-copy-dims", "remove-dead-code")
    assert modified and ops(out) == ["Reshape"]
    assert _target(out) == [0, 0, 4, 8]
    assert p.stats == {"reshape targets made constant": 1}
    onnx.checker.check_model(out, full_check=True)
    assert_interface_kept(src, out)
    for b, s in ((1, 5), (3, 7)):  # the dynamic dims stay dynamic
        assert_same_outputs(src, out, {"x": rng.standard_normal((b, s, 32)).astype(np.float32)})
    check_idempotent(out, "reshape-copy-dims")


def test_head_merge_with_gather_slice_and_minus_one():
    # [B, S, 4, 8] -> [B, S, -1] through Slice(Shape(x), 0, 2)
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[B, S, 4, 8] x) => (float[B, S, 32] y) {
            s = Shape (x)
            bs = Slice (s, z, two)
            shp = Concat <axis = 0> (bs, m1)
            y = Reshape (x, shp)
        }""",
        {"z": np.array([0], np.int64), "two": np.array([2], np.int64), "m1": np.array([-1], np.int64)},
    )
    # fold-constants' shape inference tells that Shape(k) is one element
    out, _ = apply_to_fixed_point(src, "fold-constants", "reshape-copy-dims", "remove-dead-code")
    assert ops(out) == ["Reshape"] and _target(out) == [0, 0, -1]
    onnx.checker.check_model(out, full_check=True)
    for b, s in ((1, 2), (2, 9)):
        assert_same_outputs(src, out, {"x": rng.standard_normal((b, s, 4, 8)).astype(np.float32)})


@pytest.mark.parametrize(
    "change",
    [
        ("b = Gather <axis = 0> (s, i0)", "b = Gather <axis = 0> (s, i1)"),  # dim 1 at position 0
        ("s = Shape (x)", "s = Shape (other)"),  # another tensor, its dims not known equal
        ("y = Reshape (x, shp)", "y = Reshape <allowzero = 1> (x, shp)"),  # 0 means 0
    ],
    ids=["wrong-position", "other-tensor", "allowzero"],
)
def test_targets_that_are_not_copies_are_left(change):
    text = HEADS.replace(*change).replace("(float[B, S, 32] x)", "(float[B, S, 32] x, float[P, Q, 32] other)")
    if "allowzero" in change[1]:
        text = text.replace('"" : 17', '"" : 14')
    if "i1)" in change[1]:
        text = (
            text.replace("=> (float[B, S, 4, 8] y)", "=> (float[S, S, 4, 8] y)")
            .replace("float[B, S, 32] x,", "float[S, S, 32] x,")
            .replace("float[P, Q, 32] other", "float[S, S, 32] other")
        )
    src = parse(text, INITS)
    _, _, modified = apply(src, "reshape-copy-dims")
    assert not modified


def test_inside_an_if_branch_and_in_the_default_pipeline():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[B, 32] x, bool c) => (float[B, 4, 8] y) {
            y = If (c) <
                then_branch = t () => (float[B, 4, 8] o1) {
                    s = Shape (x)
                    b = Gather <axis = 0> (s, i0)
                    b1 = Unsqueeze (b, ax0)
                    shp = Concat <axis = 0> (b1, heads)
                    o1 = Reshape (x, shp)
                },
                else_branch = e () => (float[B, 4, 8] o2) {
                    n = Neg (x)
                    o2 = Reshape (n, full)
                }
            >
        }""",
        {**INITS, "full": np.array([-1, 4, 8], np.int64)},
    )
    from tensorsmith.passes import DEFAULT_PIPELINE

    out, _ = apply_to_fixed_point(src, *DEFAULT_PIPELINE)
    then = out.graph.node[0].attribute[0].g
    assert [n.op_type for n in then.node] == ["Reshape"]
    onnx.checker.check_model(out, full_check=True)
    for c in (True, False):
        assert_same_outputs(
            src, out, {"x": rng.standard_normal((3, 32)).astype(np.float32), "c": np.array(c)}
        )


def test_shape_of_another_tensor_with_the_same_symbols_and_one_computed_dim():
    # the head merge of an attention block: Reshape(ctx, [B, S, h * d]) with B, S read from
    # the block's input x (same named dims as ctx's) and h * d computed: [0, 0, -1]
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[B, S, 32] x, float[B, S, 4, 8] ctx) => (float[B, S, 32] y) {
            s = Shape (x)
            b = Gather <axis = 0> (s, i0)
            t = Gather <axis = 0> (s, i1)
            b1 = Unsqueeze (b, ax0)
            t1 = Unsqueeze (t, ax0)
            sc = Shape (ctx)
            h = Gather <axis = 0> (sc, two)
            d = Gather <axis = 0> (sc, three)
            hd = Mul (h, d)
            hd1 = Unsqueeze (hd, ax0)
            shp = Concat <axis = 0> (b1, t1, hd1)
            y = Reshape (ctx, shp)
        }""",
        {**INITS, "two": np.array(2, np.int64), "three": np.array(3, np.int64)},
    )
    out, _ = apply_to_fixed_point(src, "fold-constants", "reshape-copy-dims", "remove-dead-code")
    assert ops(out) == ["Reshape"]
    assert _target(out) in ([0, 0, -1], [0, 0, 32])
    onnx.checker.check_model(out, full_check=True)
    for b, s in ((1, 3), (2, 5)):
        feeds = {
            "x": rng.standard_normal((b, s, 32)).astype(np.float32),
            "ctx": rng.standard_normal((b, s, 4, 8)).astype(np.float32),
        }
        assert_same_outputs(src, out, feeds)


def test_one_computed_dim_becomes_minus_one():
    # the last dim is computed from another input's shape (not foldable): -1
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[B, S, 4, 8] x, float[K] k) => (float[B, S, 32] y) {
            s = Shape (x)
            bs = Slice (s, z, two)
            sk = Shape (k)
            shp = Concat <axis = 0> (bs, sk)
            y = Reshape (x, shp)
        }""",
        {"z": np.array([0], np.int64), "two": np.array([2], np.int64)},
    )
    # fold-constants' shape inference tells that Shape(k) is one element
    out, _ = apply_to_fixed_point(src, "fold-constants", "reshape-copy-dims", "remove-dead-code")
    assert ops(out) == ["Reshape"] and _target(out) == [0, 0, -1]
    onnx.checker.check_model(out, full_check=True)
    feeds = {"x": rng.standard_normal((2, 3, 4, 8)).astype(np.float32), "k": np.zeros(32, np.float32)}
    assert_same_outputs(src, out, feeds)
