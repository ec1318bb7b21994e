"""fuse-conv-affine: constant per-channel Mul/Add after Conv folded into it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import apply, assert_interface_kept, assert_same_outputs, check_idempotent, ops, parse

RNG_SEED = 3
rng = np.random.default_rng(RNG_SEED)  # re-seeded before every test (conftest.py)
X = {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}
W = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)


def model(scale_shape, shift_shape, bias=True):
    b = ", B" if bias else ""
    inits = {
        "W": W,
        "s": rng.uniform(0.5, 2, scale_shape).astype(np.float32),
        "t": rng.standard_normal(shift_shape).astype(np.float32),
    }
    if bias:
        inits["B"] = rng.standard_normal(4).astype(np.float32)
    return parse(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {{
            c = Conv <pads = [1, 1, 1, 1]> (x, W{b})
            m = Mul (c, s)
            y = Add (t, m)
        }}""",
        inits,
    )


@pytest.mark.parametrize(
    "scale_shape, shift_shape", [((1,), (1,)), ((4, 1, 1), (1, 4, 1, 1)), ((), (4, 1, 1))]
)
@pytest.mark.parametrize("bias", [True, False])
def test_mul_add_folded(scale_shape, shift_shape, bias):
    src = model(scale_shape, shift_shape, bias)
    out, (p,), modified = apply(src, "fuse-conv-affine")
    assert modified and ops(out) == ["Conv"]
    assert p.stats == {"Mul->Conv": 1, "Add->Conv": 1}
    onnx.checker.check_model(out)
    assert_interface_kept(src, out)
    assert_same_outputs(src, out, X)
    check_idempotent(src, "fuse-conv-affine")


def test_spatially_varying_constant_is_left_alone():
    src = model((1, 4, 8, 8), (1,))
    out, (p,), _ = apply(src, "fuse-conv-affine")
    assert "Mul" in ops(out)  # the Mul varies along H, W: not per-channel
    assert any("not per-channel" in n for n in p.notes)
    assert_same_outputs(src, out, X)


def test_broadcasting_constant_is_left_alone():
    # a [2,1,1,1] constant broadcasts along the batch axis
    src = model((2, 1, 1, 1), (1,))
    out, _, _ = apply(src, "fuse-conv-affine")
    assert "Mul" in ops(out)


def test_conv_output_with_other_consumer_is_left_alone():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y, float[N, 4, 8, 8] z) {
            c = Conv <pads = [1, 1, 1, 1]> (x, W)
            y = Mul (c, s)
            z = Relu (c)
        }""",
        {"W": W, "s": np.array([2.0], np.float32)},
    )
    out, (p,), modified = apply(src, "fuse-conv-affine")
    assert not modified and any("other consumers" in n for n in p.notes)


def test_shared_weight_keeps_other_conv_intact():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y, float[N, 4, 8, 8] z) {
            c = Conv <pads = [1, 1, 1, 1]> (x, W)
            y = Mul (c, s)
            z = Conv <pads = [1, 1, 1, 1]> (x, W)
        }""",
        {"W": W, "s": np.array([2.0], np.float32)},
    )
    out, _, modified = apply(src, "fuse-conv-affine", "remove-dead-code")
    assert modified and ops(out) == ["Conv", "Conv"]
    assert_same_outputs(src, out, X)
