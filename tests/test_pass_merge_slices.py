"""merge-slices, and fold-constants' small ConstantOfShape (both from Silero-VAD's 16 kHz
sequence model, where they were the whole node gap to onnxsim and onnxslim)."""

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

rng = np.random.default_rng(5)  # re-seeded before every test (conftest.py)

# Silero's STFT magnitude: y = x[:, :129][:, :, 1:] as two one-axis Slices
STFT = """
    <ir_version: 8, opset_import: ["" : 16]>
    g (float[N, 258, T] x) => (float[N, 129, U] y) {
        a = Slice (x, s0, e129, ax1, one)
        y = Slice (a, one, big, ax2, one)
    }"""
STFT_INITS = {
    "s0": np.array([0], np.int64),
    "e129": np.array([129], np.int64),
    "ax1": np.array([1], np.int64),
    "ax2": np.array([2], np.int64),
    "one": np.array([1], np.int64),
    "big": np.array([np.iinfo(np.int64).max], np.int64),
}


def _slice_params(model: onnx.ModelProto) -> list[list[int]]:
    (node,) = [n for n in model.graph.node if n.op_type == "Slice"]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[name].tolist() for name in node.input[1:]]


def _feeds(n: int, t: int) -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((n, 258, t)).astype(np.float32)}


def test_two_slices_on_different_axes_become_one():
    src = parse(STFT, STFT_INITS)
    out, (p,), modified = apply(src, "merge-slices")
    assert modified and ops(out) == ["Slice"]
    assert p.stats == {"Slice pairs merged": 1}
    assert _slice_params(out) == [[0, 1], [129, np.iinfo(np.int64).max], [1, 2], [1, 1]]
    assert out.graph.node[0].input[0] == "x" and out.graph.node[0].output[0] == "y"
    onnx.checker.check_model(out, full_check=True)
    assert_interface_kept(src, out)
    for n, t in ((1, 5), (3, 9)):  # the dynamic dims stay dynamic
        assert_same_outputs(src, out, _feeds(n, t))
    check_idempotent(out, "merge-slices")


def test_a_chain_of_three_with_negative_axes_and_steps_merges_in_one_run():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[N, 258, T] x) => (float[N, M, U, 4] y) {
            a = Slice (x, s0, e129, ax1, one)
            b = Slice (a, one, big, axm1, two)
            r = Unsqueeze (b, ax3)
            c = Slice (r, s0, four, ax3)
            y = Identity (c)
        }""",
        {**STFT_INITS, "axm1": np.array([-1], np.int64), "two": np.array([2], np.int64),
         "ax3": np.array([3], np.int64), "four": np.array([4], np.int64)},
    )  # fmt: skip
    out, _, modified = apply(src, "merge-slices")
    assert modified and ops(out) == ["Slice", "Unsqueeze", "Slice", "Identity"]
    assert _first_slice_axes(out) == [1, 2]  # -1 resolved with the input's rank
    assert_same_outputs(src, out, _feeds(2, 11))
    check_idempotent(out, "merge-slices")

    src3 = parse(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[N, 258, T] x) => (float[P, M, U] y) {
            a = Slice (x, s0, e129, ax1)
            b = Slice (a, one, big, axm1, two)
            y = Slice (b, one, big, ax0, one)
        }""",
        {**STFT_INITS, "axm1": np.array([-1], np.int64), "two": np.array([2], np.int64),
         "ax0": np.array([0], np.int64)},
    )  # fmt: skip
    out3, (p,), modified = apply(src3, "merge-slices")
    assert modified and ops(out3) == ["Slice"] and p.stats == {"Slice pairs merged": 2}
    assert _slice_params(out3)[2] == [1, 2, 0]
    assert_same_outputs(src3, out3, _feeds(3, 9))
    check_idempotent(out3, "merge-slices")


def _first_slice_axes(model: onnx.ModelProto) -> list[int]:
    node = next(n for n in model.graph.node if n.op_type == "Slice")
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return inits[node.input[3]].tolist()


@pytest.mark.parametrize(
    "change",
    [
        ("y = Slice (a, one, big, ax2, one)", "y = Slice (a, one, big, ax1, one)"),  # same axis
        ("y = Slice (a, one, big, ax2, one)", "y = Slice (a, one, big, ax2, dyn)"),  # not constant
        (
            "y = Slice (a, one, big, ax2, one)",
            "y = Slice (a, one, big, ax2, one)\n z = Neg (a)",
        ),  # a used twice
        ("float[N, 129, U] y", "float[N, 129, U] y, float[N, 129, T] a"),  # a is a graph output
    ],
    ids=["same-axis", "runtime-step", "shared-inner", "inner-is-output"],
)
def test_slices_that_must_stay_apart(change):
    text = STFT.replace(*change)
    if "dyn" in change[1]:
        text = text.replace("float[N, 258, T] x)", "float[N, 258, T] x, int64[1] dyn)")
    if "Neg" in change[1]:
        text = text.replace("float[N, 129, U] y)", "float[N, 129, U] y, float[N, 129, T] z)")
    src = parse(text, STFT_INITS)
    out, (p,), modified = apply(src, "merge-slices")
    assert not modified and ops(out) == ops(src)
    if "dyn" not in change[1]:
        assert p.notes  # --explain says why


def test_opset_9_attribute_slices_are_left():
    src = parse(
        """
        <ir_version: 4, opset_import: ["" : 9]>
        g (float[2, 258, 5] x) => (float[2, 129, 4] y) {
            a = Slice <starts = [0], ends = [129], axes = [1]> (x)
            y = Slice <starts = [1], ends = [5], axes = [2]> (a)
        }"""
    )
    _, _, modified = apply(src, "merge-slices")
    assert not modified


# The padding computation of Silero's STFT: pads = [0, 0, 128, 128] built at run time
# from ConstantOfShape([2]) -> Concat -> Reshape -> Slice(reverse) -> Transpose -> Reshape.
PADS = """
    <ir_version: 8, opset_import: ["" : 16]>
    g (float[N, 576] x) => (float[N, 832] y) {
        z = ConstantOfShape <value = int64[1] {0}> (two)
        cat = Concat <axis = 0> (sides, z)
        r = Reshape (cat, m1x2)
        rev = Slice (r, m1, lowest, zero, m1)
        t = Transpose <perm = [1, 0]> (rev)
        pads = Reshape (t, m1)
        y = Pad <mode = "reflect"> (x, pads)
    }"""
PADS_INITS = {
    "two": np.array([2], np.int64),
    "sides": np.array([128, 128], np.int64),
    "m1x2": np.array([-1, 2], np.int64),
    "m1": np.array([-1], np.int64),
    "lowest": np.array([-(2**63) + 1], np.int64),
    "zero": np.array([0], np.int64),
}


def test_a_small_constant_of_shape_folds_and_its_chain_with_it():
    src = parse(PADS, PADS_INITS)
    out, _ = apply_to_fixed_point(src, "fold-constants", "remove-dead-code")
    assert ops(out) == ["Pad"]
    (pads,) = [
        onnx.numpy_helper.to_array(i) for i in out.graph.initializer if i.name == out.graph.node[0].input[1]
    ]
    assert pads.tolist() == [0, 128, 0, 128]
    assert out.ByteSize() <= src.ByteSize()
    assert_interface_kept(src, out)
    for n in (1, 3):
        assert_same_outputs(src, out, {"x": rng.standard_normal((n, 576)).astype(np.float32)})
    check_idempotent(out, "fold-constants")


def test_a_big_constant_of_shape_is_left():
    # 4096 zeros would be 16 KiB in the file instead of a 1-element shape
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 16]>
        g (float[64, 64] x) => (float[64, 64] y) {
            z = ConstantOfShape <value = float[1] {0.5}> (shape)
            y = Add (x, z)
        }""",
        {"shape": np.array([64, 64], np.int64)},
    )
    out, (p,), _ = apply(src, "fold-constants")
    assert "ConstantOfShape" in ops(out)
    assert any("ConstantOfShape left" in n for n in p.notes)
    assert out.ByteSize() <= src.ByteSize() + 64
