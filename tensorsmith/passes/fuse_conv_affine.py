"""fuse-conv-affine: fold a constant Mul/Add after a Conv into its weights and bias.

Exporters (Paddle, some TensorFlow graphs) leave ``Conv -> Mul(scale) -> Add(shift)``
where the scale and shift are constants per output channel (or scalars). With
``y = conv(x, W) + B``: ``y * s = conv(x, W * s) + B * s`` and ``y + t = conv(x, W) +
(B + t)``. The results are new constant initializers; the Mul/Add nodes go away.

Only constants that broadcast over the output channel alone are folded (a scalar,
``[C]``-shaped in the trailing-ones layouts ``[C,1,..]`` / ``[1,C,1,..]``): anything that
varies along the batch or spatial axes, or would broadcast the output to a larger
shape, is left alone. The Conv's output must have no other consumer and not be a
graph output. A :class:`~tensorsmith.passes.base.RewritePass`: ``pattern`` finds
``Mul|Add(Conv(...), constant)``, ``check`` says why one is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from tensorsmith.passes.base import (
    LowPrecisionOptions,
    RewritePass,
    Site,
    const_array,
    drop_weight,
    low_precision_reason,
    new_initializer,
    replace_value,
)


def _per_channel(c: np.ndarray, out_channels: int, out_rank: int | None) -> np.ndarray | None:
    """The constant as a [C] vector if it only varies along the channel axis."""
    if c.size == 1 and c.ndim <= 1 + (out_rank or 1):
        if out_rank is not None and c.ndim > out_rank:
            return None
        return np.full(out_channels, c.reshape(-1)[0])
    if out_rank is None:
        return None
    shape = list(c.shape)
    # align to the output's rank (numpy broadcasting pads on the left)
    if len(shape) > out_rank:
        return None
    shape = [1] * (out_rank - len(shape)) + shape
    if shape[1] != out_channels or any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    return c.reshape(-1)


@dataclass
class AffineAfterConv:
    """``node = Mul|Add(Conv(...), c)`` (either operand order), with what ``check`` read."""

    node: ir.Node
    conv: ir.Node
    conv_out: ir.Value
    c: np.ndarray
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    vec: np.ndarray | None = None  # c as a [C] vector


class FuseConvAffine(RewritePass[AffineAfterConv]):
    name = "fuse-conv-affine"
    Options = LowPrecisionOptions
    description = "Fold a constant per-channel Mul/Add after a Conv into the Conv's weights and bias."
    anchors = ("Mul", "Add")
    in_functions = False  # functions have no initializers to hold folded weights

    def pattern(self, site: Site, node: ir.Node) -> AffineAfterConv | None:
        if len(node.inputs) != 2 or any(v is None for v in node.inputs):
            return None
        for a, b in ((0, 1), (1, 0)):
            conv_out, const_in = node.inputs[a], node.inputs[b]
            conv = conv_out.producer() if conv_out is not None else None
            if conv is not None and conv.op_type == "Conv" and conv.domain in ("", "ai.onnx"):
                c = const_array(const_in)
                if c is None or conv_out is None:
                    return None
                return AffineAfterConv(node, conv, conv_out, c)
        return None

    def check(self, site: Site, m: AffineAfterConv) -> str | None:
        conv, conv_out, c = m.conv, m.conv_out, m.c
        if conv_out.is_graph_output() or len(conv_out.uses()) != 1:
            return "the Conv output has other consumers or is a graph output"
        w = const_array(conv.inputs[1]) if len(conv.inputs) > 1 else None
        if w is None or not np.issubdtype(w.dtype, np.floating) or c.dtype != w.dtype:
            return "the Conv weight is not a floating-point constant of the same type"
        low = low_precision_reason(w, self.options, "the Conv")
        if low is not None:
            return low
        has_bias = len(conv.inputs) > 2 and conv.inputs[2] is not None
        b = const_array(conv.inputs[2]) if has_bias else np.zeros(w.shape[0], w.dtype)
        if b is None:
            return "the Conv bias is not a constant"
        out_rank = len(conv_out.shape) if conv_out.shape is not None else (w.ndim if w.ndim >= 3 else None)
        vec = _per_channel(c, w.shape[0], out_rank)
        if vec is None:
            return f"the constant of shape {list(c.shape)} is not per-channel"
        m.weight, m.bias, m.vec = w, b, vec
        return None

    def rewrite(self, site: Site, m: AffineAfterConv) -> str:
        graph, node, conv, conv_out = site.graph, m.node, m.conv, m.conv_out
        w, b, vec = m.weight, m.bias, m.vec
        assert w is not None and b is not None and vec is not None
        has_bias = len(conv.inputs) > 2 and conv.inputs[2] is not None
        cdt = np.promote_types(w.dtype, np.float32)
        if node.op_type == "Mul":
            new_w = np.multiply(w, vec.astype(cdt).reshape((-1,) + (1,) * (w.ndim - 1)), dtype=cdt).astype(
                w.dtype, copy=False
            )
            new_b = (b.astype(np.float64) * vec.astype(np.float64)).astype(w.dtype)
        else:
            new_w = None
            new_b = (b.astype(np.float64) + vec.astype(np.float64)).astype(w.dtype)

        old_w_value = conv.inputs[1]
        assert old_w_value is not None
        old_b_value = conv.inputs[2] if has_bias else None
        if new_w is not None:
            conv.replace_input_with(1, new_initializer(graph, (old_w_value.name or "W") + "_affine", new_w))
        bias_value = new_initializer(graph, (old_w_value.name or "W") + "_affine_bias", new_b)
        if not has_bias:
            conv.resize_inputs(3)
        conv.replace_input_with(2, bias_value)
        replace_value(node.outputs[0], conv_out)
        graph.remove(node, safe=True)
        m.weight = m.bias = None
        del w, b
        for v in (old_w_value, old_b_value):
            if v is not None and not v.uses():
                drop_weight(graph, v)
        return f"{node.op_type}->Conv"
