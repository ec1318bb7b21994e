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
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from tensorsmith.passes.base import (
    Pass,
    graphs_of,
    new_initializer,
    release_tensor,
    release_unused_weights,
    replace_value,
)

_LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def _attr_int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_int()


def _attr_float(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_float()


def _drop_weight(graph: ir.Graph, value: ir.Value) -> None:
    """Remove a weight nothing uses any more and let go of its data.

    Unmapped now rather than by dead-code removal at the end: a weight may be a
    view into memory-mapped external data (a folded Transpose of it), and gigabytes
    of old weights must not stay resident beside the new ones.
    """
    if value.is_graph_input() or value.is_graph_output() or not value.is_initializer():
        return
    if value.name in graph.initializers and graph.initializers[value.name] is value:
        del graph.initializers[value.name]
    release_tensor(value)
    value.const_value = None


class FuseConvBatchNorm(Pass):
    name = "fuse-conv-bn"
    description = "Fold inference BatchNormalization into a preceding Conv/ConvTranspose/Gemm/MatMul as new constant weights."

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for graph in list(graphs_of(model)):
            if not isinstance(graph, ir.Graph):
                continue  # functions have no initializers to hold folded weights
            for node in list(graph):
                if node.op_type == "BatchNormalization" and node.domain in ("", "ai.onnx"):
                    if self._try_fuse(graph, node):
                        modified = True
        if modified:
            release_unused_weights(model)
        return ir.passes.PassResult(model, modified=modified)

    # -- helpers -------------------------------------------------------------
    def _bn_params(self, bn: ir.Node):
        if _attr_int(bn, "training_mode", 0) != 0:
            self.explain(bn, "training_mode=1")
            return None
        if _attr_int(bn, "spatial", 1) != 1:
            self.explain(bn, "spatial=0 (opset < 9 per-element BatchNormalization)")
            return None
        for extra in bn.outputs[1:]:
            if extra.uses() or extra.is_graph_output():
                self.explain(bn, "its running statistics outputs are used")
                return None
        if len(bn.inputs) < 5:
            return None
        params = [_const(v) for v in bn.inputs[1:5]]
        if any(p is None for p in params):
            self.explain(bn, "scale/bias/mean/var are not all constants")
            return None
        gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
        eps = _attr_float(bn, "epsilon", 1e-5)
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        return scale, shift

    def _try_fuse(self, graph: ir.Graph, bn: ir.Node) -> bool:
        x = bn.inputs[0]
        producer = x.producer() if x is not None else None
        bias_add = None
        if producer is not None and producer.op_type == "Add" and producer.domain in ("", "ai.onnx"):
            # MatMul -> Add(const bias) -> BN (how PyTorch's Linear often exports)
            lhs, rhs = producer.inputs[0], producer.inputs[1]
            for mm_out, b in ((lhs, rhs), (rhs, lhs)):
                mm = mm_out.producer() if mm_out is not None else None
                if mm is not None and mm.op_type == "MatMul" and _const(b) is not None:
                    bias_add, producer = producer, mm
                    break
        if producer is None or producer.op_type not in _LAYERS or producer.domain not in ("", "ai.onnx"):
            return False
        layer = producer
        chain = [layer] + ([bias_add] if bias_add is not None else [])
        for n in chain:
            out = n.outputs[0]
            if out.is_graph_output():
                self.explain(bn, f"{n.op_type} output {out.name!r} is a graph output")
                return False
            consumers = {user for user, _ in out.uses()}
            expected = {bias_add} if (n is layer and bias_add is not None) else {bn}
            if consumers != expected:
                self.explain(bn, f"{n.op_type} output {out.name!r} has other consumers")
                return False
        params = self._bn_params(bn)
        if params is None:
            return False
        scale, shift = params
        weight_value = layer.inputs[1] if len(layer.inputs) > 1 else None
        weight = _const(weight_value)
        if weight is None:
            self.explain(bn, f"{layer.op_type} weight is not a constant")
            return False
        if not np.issubdtype(weight.dtype, np.floating):
            self.explain(bn, f"{layer.op_type} weight is {weight.dtype}, not floating point")
            return False

        op = layer.op_type
        # scale and shift are computed in float64; the weight is scaled in float32 (or
        # float64 for float64 weights) straight into a new array: one weight-sized
        # temporary, not three, when a weight is gigabytes
        cdt = np.promote_types(weight.dtype, np.float32)
        w = weight
        scale64, scale = scale, scale.astype(cdt)
        if op == "Conv":
            out_ch = w.shape[0]
            if scale.size not in (1, out_ch):
                self.explain(bn, "channel count mismatch")
                return False
            new_w = np.multiply(w, scale.reshape((-1,) + (1,) * (w.ndim - 1)), dtype=cdt)
        elif op == "ConvTranspose":
            group = _attr_int(layer, "group", 1)
            c_in, m_per_g = w.shape[0], w.shape[1]
            if c_in % group or scale.size not in (1, m_per_g * group):
                self.explain(bn, "channel count mismatch")
                return False
            s = np.broadcast_to(scale, (m_per_g * group,)).reshape(group, 1, m_per_g, *([1] * (w.ndim - 2)))
            new_w = np.multiply(w.reshape(group, c_in // group, m_per_g, *w.shape[2:]), s, dtype=cdt).reshape(
                w.shape
            )
        elif op == "Gemm":
            if w.ndim != 2:
                return False
            trans_b = _attr_int(layer, "transB", 0)
            new_w = np.multiply(w, scale.reshape(-1, 1) if trans_b else scale.reshape(1, -1), dtype=cdt)
        else:  # MatMul
            a = layer.inputs[0]
            if w.ndim != 2 or a.shape is None or len(a.shape) != 2:
                self.explain(bn, "MatMul is not 2-D x 2-D: BN's channel axis is not the weight's output axis")
                return False
            new_w = np.multiply(w, scale.reshape(1, -1), dtype=cdt)

        # bias
        if op in ("Conv", "ConvTranspose"):
            old_b = _const(layer.inputs[2]) if len(layer.inputs) > 2 and layer.inputs[2] is not None else None
            if len(layer.inputs) > 2 and layer.inputs[2] is not None and old_b is None:
                self.explain(bn, f"{op} bias is not a constant")
                return False
            b = np.zeros_like(scale) if old_b is None else old_b.astype(np.float64).reshape(-1)
            new_b = b * scale64 + shift
        elif op == "Gemm":
            c_val = layer.inputs[2] if len(layer.inputs) > 2 else None
            old_c = _const(c_val) if c_val is not None else None
            if c_val is not None and old_c is None:
                self.explain(bn, "Gemm C is not a constant")
                return False
            beta = _attr_float(layer, "beta", 1.0)
            c = np.zeros(1) if old_c is None else old_c.astype(np.float64) * beta
            new_b = c * scale64 + shift
        else:
            old_b = (
                _const(bias_add.inputs[1] if bias_add.inputs[0] is layer.outputs[0] else bias_add.inputs[0])
                if bias_add is not None
                else None
            )
            b = np.zeros(1) if old_b is None else old_b.astype(np.float64)
            new_b = b * scale64 + shift

        dtype = weight.dtype
        new_w_value = new_initializer(
            graph, (weight_value.name or "W") + "_bnfused", new_w.astype(dtype, copy=False)
        )
        new_b_value = new_initializer(
            graph, (weight_value.name or "W") + "_bnfused_bias", new_b.astype(dtype)
        )

        layer.replace_input_with(1, new_w_value)
        bn_out = bn.outputs[0]
        if op in ("Conv", "ConvTranspose", "Gemm"):
            if len(layer.inputs) > 2:
                layer.replace_input_with(2, new_b_value)
            else:
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
        self.count(f"BatchNormalization->{op}")
        # The old weight is now unused (dead-code removal drops it). Unmap it so a
        # model with gigabytes of external weights never holds old and new at once.
        del weight, w, new_w
        if not weight_value.uses():  # the replaced weight: unmap it now, not at the end
            _drop_weight(graph, weight_value)
        return True
