"""fuse-conv-bn: fold inference BatchNormalization into the layer before it.

Conv, ConvTranspose (grouped too), Gemm, and MatMul (optionally followed by a
constant bias Add) with constant weights absorb a following BatchNormalization:
with ``s = gamma / sqrt(var + eps)``, ``W' = W * s`` along the output-channel axis
and ``b' = (b - mean) * s + beta``. The results are new constant initializers
computed in float64 (not arithmetic nodes), so the graph gets smaller and
onnxruntime, TensorRT and friends see a plain Conv.

Refused, with the reason recorded for ``--explain``: the layer's output has
another consumer or is a graph output; a weight, bias or BN parameter is not a
constant; BN in training mode or with its statistics outputs in use; a MatMul
whose channel axis is not its last.

Written as a :class:`~tensorsmith.passes.base.RewritePass`: ``pattern`` finds
``BatchNormalization(layer(...))``, ``check`` returns the reason above when it
refuses, ``rewrite`` makes the new weights.
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
    is_op,
    low_precision_reason,
    new_initializer,
    release_unused_weights,
    replace_value,
)

_LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _attr_int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_int()


def _attr_float(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_float()


@dataclass
class BatchNormAfterLayer:
    """``BatchNormalization(layer(x, W, b))``, or ``BatchNormalization(Add(MatMul(x, W), b))``.

    ``check`` fills in what it read (BN's scale and shift, the weight and bias
    arrays) so that ``rewrite`` reads no constant twice.
    """

    bn: ir.Node
    layer: ir.Node
    bias_add: ir.Node | None
    scale: np.ndarray | None = None
    shift: np.ndarray | None = None
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None  # the layer's (or the Add's) constant bias, if any


class FuseConvBatchNorm(RewritePass[BatchNormAfterLayer]):
    name = "fuse-conv-bn"
    description = "Fold inference BatchNormalization into a preceding Conv/ConvTranspose/Gemm/MatMul as new constant weights."
    anchors = ("BatchNormalization",)
    Options = LowPrecisionOptions
    in_functions = False  # functions have no initializers to hold folded weights

    def pattern(self, site: Site, bn: ir.Node) -> BatchNormAfterLayer | None:
        if len(bn.inputs) < 5:
            return None
        x = bn.inputs[0]
        producer = x.producer() if x is not None else None
        bias_add = None
        if producer is not None and is_op(producer, "Add"):
            # MatMul -> Add(const bias) -> BN (how PyTorch's Linear often exports)
            lhs, rhs = producer.inputs[0], producer.inputs[1]
            for mm_out, b in ((lhs, rhs), (rhs, lhs)):
                mm = mm_out.producer() if mm_out is not None else None
                if mm is not None and mm.op_type == "MatMul" and const_array(b) is not None:
                    bias_add, producer = producer, mm
                    break
        if producer is None or producer.op_type not in _LAYERS or producer.domain not in ("", "ai.onnx"):
            return None
        return BatchNormAfterLayer(bn, producer, bias_add)

    def check(self, site: Site, m: BatchNormAfterLayer) -> str | None:
        bn, layer, bias_add = m.bn, m.layer, m.bias_add
        for n in [layer] + ([bias_add] if bias_add is not None else []):
            out = n.outputs[0]
            if out.is_graph_output():
                return f"{n.op_type} output {out.name!r} is a graph output"
            consumers = {user for user, _ in out.uses()}
            expected = {bias_add} if (n is layer and bias_add is not None) else {bn}
            if consumers != expected:
                return f"{n.op_type} output {out.name!r} has other consumers"
        reason = self._check_bn(m)
        if reason is not None:
            return reason
        assert m.scale is not None
        weight = const_array(layer.inputs[1] if len(layer.inputs) > 1 else None)
        if weight is None:
            return f"{layer.op_type} weight is not a constant"
        if not np.issubdtype(weight.dtype, np.floating):
            return f"{layer.op_type} weight is {weight.dtype}, not floating point"
        low = low_precision_reason(weight, self.options, layer.op_type)
        if low is not None:
            return low
        op, w, size = layer.op_type, weight, m.scale.size
        if op == "Conv":
            if size not in (1, w.shape[0]):
                return "channel count mismatch"
        elif op == "ConvTranspose":
            group = _attr_int(layer, "group", 1)
            if w.shape[0] % group or size not in (1, w.shape[1] * group):
                return "channel count mismatch"
        elif op == "Gemm":
            if w.ndim != 2:
                return "Gemm weight is not 2-D"
        else:  # MatMul
            a = layer.inputs[0]
            if w.ndim != 2 or a is None or a.shape is None or len(a.shape) != 2:
                return "MatMul is not 2-D x 2-D: BN's channel axis is not the weight's output axis"
        if op in ("Conv", "ConvTranspose", "Gemm"):
            b_val = layer.inputs[2] if len(layer.inputs) > 2 else None
            m.bias = const_array(b_val) if b_val is not None else None
            if b_val is not None and m.bias is None:
                return "Gemm C is not a constant" if op == "Gemm" else f"{op} bias is not a constant"
        elif bias_add is not None:
            m.bias = const_array(
                bias_add.inputs[1] if bias_add.inputs[0] is layer.outputs[0] else bias_add.inputs[0]
            )
        m.weight = weight
        return None

    def _check_bn(self, m: BatchNormAfterLayer) -> str | None:
        """Why BN cannot be folded, else None with ``m.scale``/``m.shift`` set (float64)."""
        bn = m.bn
        if _attr_int(bn, "training_mode", 0) != 0:
            return "training_mode=1"
        if _attr_int(bn, "spatial", 1) != 1:
            return "spatial=0 (opset < 9 per-element BatchNormalization)"
        for extra in bn.outputs[1:]:
            if extra.uses() or extra.is_graph_output():
                return "its running statistics outputs are used"
        params = [const_array(v) for v in bn.inputs[1:5]]
        if any(p is None for p in params):
            return "scale/bias/mean/var are not all constants"
        gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params if p is not None)
        eps = _attr_float(bn, "epsilon", 1e-5)
        m.scale = gamma / np.sqrt(var + eps)
        m.shift = beta - mean * m.scale
        return None

    def rewrite(self, site: Site, m: BatchNormAfterLayer) -> str:
        graph, bn, layer, bias_add = site.graph, m.bn, m.layer, m.bias_add
        assert m.weight is not None and m.scale is not None and m.shift is not None
        weight_value = layer.inputs[1]
        assert weight_value is not None
        op = layer.op_type
        # scale and shift are computed in float64; the weight is scaled in float32 (or
        # float64 for float64 weights) straight into a new array: one weight-sized
        # temporary, not three, when a weight is gigabytes
        w, dtype = m.weight, m.weight.dtype
        cdt = np.promote_types(dtype, np.float32)
        scale64, shift = m.scale, m.shift
        scale = scale64.astype(cdt)
        if op == "Conv":
            new_w = np.multiply(w, scale.reshape((-1,) + (1,) * (w.ndim - 1)), dtype=cdt)
        elif op == "ConvTranspose":
            group = _attr_int(layer, "group", 1)
            c_in, m_per_g = w.shape[0], w.shape[1]
            s = np.broadcast_to(scale, (m_per_g * group,)).reshape(group, 1, m_per_g, *([1] * (w.ndim - 2)))
            new_w = np.multiply(w.reshape(group, c_in // group, m_per_g, *w.shape[2:]), s, dtype=cdt).reshape(
                w.shape
            )
        elif op == "Gemm":
            trans_b = _attr_int(layer, "transB", 0)
            new_w = np.multiply(w, scale.reshape(-1, 1) if trans_b else scale.reshape(1, -1), dtype=cdt)
        else:  # MatMul
            new_w = np.multiply(w, scale.reshape(1, -1), dtype=cdt)

        if op in ("Conv", "ConvTranspose"):
            b = np.zeros_like(scale) if m.bias is None else m.bias.astype(np.float64).reshape(-1)
            new_b = b * scale64 + shift
        elif op == "Gemm":
            beta = _attr_float(layer, "beta", 1.0)
            c = np.zeros(1) if m.bias is None else m.bias.astype(np.float64) * beta
            new_b = c * scale64 + shift
        else:
            b = np.zeros(1) if m.bias is None else m.bias.astype(np.float64)
            new_b = b * scale64 + shift

        new_w_value = new_initializer(
            graph, (weight_value.name or "W") + "_bnfused", new_w.astype(dtype, copy=False)
        )
        new_b_value = new_initializer(
            graph, (weight_value.name or "W") + "_bnfused_bias", new_b.astype(dtype)
        )

        layer.replace_input_with(1, new_w_value)
        bn_out = bn.outputs[0]
        if op in ("Conv", "ConvTranspose", "Gemm"):
            if len(layer.inputs) <= 2:
                layer.resize_inputs(3)
            layer.replace_input_with(2, new_b_value)
            if op == "Gemm" and "beta" in layer.attributes:
                del layer.attributes["beta"]
            result = layer.outputs[0]
        elif bias_add is not None:
            idx = 1 if bias_add.inputs[0] is layer.outputs[0] else 0
            bias_add.replace_input_with(idx, new_b_value)
            result = bias_add.outputs[0]
        else:
            add = ir.Node("", "Add", [layer.outputs[0], new_b_value], num_outputs=1)
            graph.insert_after(layer, add)
            result = add.outputs[0]
        result.type = bn_out.type or result.type
        replace_value(bn_out, result)
        graph.remove(bn, safe=True)
        # The old weight is now unused. Unmap it now, not at the end, so a model with
        # gigabytes of external weights never holds old and new at once.
        m.weight = m.bias = None
        del w, new_w
        if not weight_value.uses():
            drop_weight(graph, weight_value)
        return f"BatchNormalization->{op}"

    def finish(self, model: ir.Model) -> None:
        release_unused_weights(model)
