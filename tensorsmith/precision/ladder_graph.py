"""Graph edits of the per-layer precision ladder (``ladder.py`` drives them).

``weight_changes`` / ``restore``: the accuracy steps of ``int8_steps.py`` that do not
keep the FP32 function (bias correction, learned rounding, weight clipping) change a
layer's weights *for* its quantization; a layer the ladder keeps out of INT8 gets its
weights back as they were before those steps (a bias correction added to a Conv
without a bias comes back as zeros). Function-preserving steps (equalization,
smoothing) are left alone: undoing one layer of an equalized pair would change the
FP32 function.

``to_fp16``: TensorRT 11 builds strongly typed networks, so FP16 is explicit in the
ONNX: each FP16 node computes in float16 (its float initializers stored as float16),
with a Cast at each edge of its island, and reads the float tensor itself rather
than a shared Q/DQ's output; the unary activations it feeds alone (Relu, Clip,
HardSwish...) join the island, since TensorRT fuses them into it.

``int8_weight_fraction``: the Conv/ConvTranspose/MatMul/Gemm nodes of a written graph
whose weight is read through a DequantizeLinear of an 8-bit initializer.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# unary activations that follow a node into its FP16 island when they are its only reader
FOLLOW = (
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Elu",
    "Selu",
    "Softplus",
    "Clip",
)
QDQ = ("QuantizeLinear", "DequantizeLinear")
INTEGER = ("MatMulInteger", "DynamicQuantizeMatMul", "ConvInteger", "QLinearConv", "QLinearMatMul")
SUFFIX = "__fp16"


def _inits(proto: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in proto.graph.initializer}


def weight_changes(before: onnx.ModelProto, after: onnx.ModelProto) -> dict[str, dict[int, np.ndarray]]:
    """Per node of ``after``: input index -> the value that input had in ``before``,
    for every float initializer input the steps changed (or added: zeros)."""
    b_nodes = {n.name: n for n in before.graph.node}
    b_inits, a_inits = _inits(before), _inits(after)
    out: dict[str, dict[int, np.ndarray]] = {}
    for node in after.graph.node:
        old = b_nodes.get(node.name)
        if old is None or node.op_type not in COMPUTE:
            continue
        for idx, name in enumerate(node.input):
            t = a_inits.get(name)
            if t is None or t.data_type != TensorProto.FLOAT:
                continue
            new = numpy_helper.to_array(t)
            src = b_inits.get(old.input[idx]) if idx < len(old.input) and old.input[idx] else None
            if src is None:
                if idx < len(old.input) and old.input[idx]:
                    continue  # was computed, not stored: nothing to restore
                ref = np.zeros_like(new)  # a bias the steps added
            else:
                ref = numpy_helper.to_array(src)
            if ref.shape != new.shape or not np.array_equal(ref, new):
                if ref.shape == new.shape:
                    out.setdefault(node.name, {})[idx] = ref.astype(np.float32)
    return out


def restore(proto: onnx.ModelProto, changes: dict[str, dict[int, np.ndarray]], keep: set[str]) -> list[str]:
    """Put back the pre-step weights of every changed node not in ``keep`` (the INT8 ones).
    In place; returns the nodes restored. A weight also read by another node is copied."""
    if not changes:
        return []
    inits = _inits(proto)
    readers: dict[str, int] = {}
    for n in proto.graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    done = []
    for node in proto.graph.node:
        fix = changes.get(node.name)
        if not fix or node.name in keep:
            continue
        touched = False
        for idx, value in fix.items():
            if idx >= len(node.input) or node.input[idx] not in inits:
                continue
            t = inits[node.input[idx]]
            if t.data_type != TensorProto.FLOAT or tuple(t.dims) != value.shape:
                continue
            if readers.get(t.name, 0) > 1:
                name = f"{t.name}__restored_{node.name}"
                proto.graph.initializer.append(numpy_helper.from_array(value, name))
                node.input[idx] = name
            else:
                t.CopyFrom(numpy_helper.from_array(value, t.name))
            touched = True
        if touched:
            done.append(node.name)
    return done


def _clip_bounds_constant(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    return all(not i or i in inits for i in node.input[1:])


def islands(proto: onnx.ModelProto, names: set[str]) -> set[str]:
    """``names`` plus the unary activations each feeds alone (fused by TensorRT)."""
    inits = _inits(proto)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in proto.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in proto.graph.output}
    out = set(names)
    for node in proto.graph.node:  # graph order: a chain grows forward
        if node.name not in out:
            continue
        for o in node.output:
            users = readers.get(o, [])
            if o in outputs or len(users) != 1:
                continue
            u = users[0]
            if u.op_type in FOLLOW and u.input[0] == o:
                if u.op_type != "Clip" or _clip_bounds_constant(u, inits):
                    out.add(u.name)
    return out


def to_fp16(proto: onnx.ModelProto, names: set[str]) -> dict[str, int]:
    """Make the nodes ``names`` (and their activation islands) compute in float16. In place."""
    members = islands(proto, names)
    inits = _inits(proto)
    producer = {o: n for n in proto.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in proto.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in proto.graph.output}
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in list(proto.graph.value_info) + list(proto.graph.input)
    }
    for t in proto.graph.initializer:
        types[t.name] = t.data_type
    for n in proto.graph.node:
        if n.op_type == "Constant":
            types.setdefault(n.output[0], next((a.t.data_type for a in n.attribute if a.name == "value"), 0))

    def is_float(name: str) -> bool:
        return types.get(name, TensorProto.FLOAT) == TensorProto.FLOAT

    new_nodes: list[onnx.NodeProto] = []
    casts_in: dict[str, str] = {}
    converted: dict[str, str] = {}  # fp32 initializer -> its fp16 copy
    renamed: dict[str, str] = {}  # island output -> its float16 name
    stats = {"nodes": 0, "casts": 0, "initializers": 0, "qdq_bypassed": 0}
    # island outputs first, so that island readers see the float16 name whatever the order
    for node in proto.graph.node:
        if node.name in members:
            for o in node.output:
                if o and is_float(o):
                    renamed[o] = o + SUFFIX
    for node in proto.graph.node:
        if node.name not in members:
            new_nodes.append(node)
            continue
        stats["nodes"] += 1
        for idx, name in enumerate(node.input):
            if not name or not is_float(name):
                continue
            if name in renamed:
                node.input[idx] = renamed[name]
                continue
            if name in inits:
                if name not in converted:
                    half = numpy_helper.from_array(
                        numpy_helper.to_array(inits[name]).astype(np.float16), name + SUFFIX
                    )
                    proto.graph.initializer.append(half)
                    converted[name] = half.name
                    stats["initializers"] += 1
                node.input[idx] = converted[name]
                continue
            src = name
            dq = producer.get(name)
            if dq is not None and dq.op_type == "DequantizeLinear":
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in inits:
                    src = q.input[0]  # the float tensor, not the int8 round trip
                    stats["qdq_bypassed"] += 1
            if src not in casts_in:
                casts_in[src] = f"{src}__to_fp16"
                new_nodes.append(
                    helper.make_node(
                        "Cast", [src], [casts_in[src]], name=f"{src}__to_fp16_cast", to=TensorProto.FLOAT16
                    )
                )
                stats["casts"] += 1
            node.input[idx] = casts_in[src]
        original = list(node.output)
        for idx, o in enumerate(original):
            if o in renamed:
                node.output[idx] = renamed[o]
        new_nodes.append(node)
        for o in original:
            outside = [r for r in readers.get(o, []) if r.name not in members]
            if o in renamed and (outside or o in outputs):
                new_nodes.append(
                    helper.make_node(
                        "Cast", [renamed[o]], [o], name=f"{o}__to_fp32_cast", to=TensorProto.FLOAT
                    )
                )
                stats["casts"] += 1
    del proto.graph.node[:]
    proto.graph.node.extend(new_nodes)
    # float32 initializers nobody reads any more (all readers took the float16 copy)
    used = {i for n in proto.graph.node for i in n.input}
    for t in [t for t in proto.graph.initializer if t.name in converted and t.name not in used]:
        proto.graph.initializer.remove(t)
    # Q/DQ the island bypassed and nothing else reads (a dead DequantizeLinear makes its Q dead)
    while True:
        used = {i for n in proto.graph.node for i in n.input} | outputs
        dead = [n for n in proto.graph.node if n.op_type in QDQ and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            proto.graph.node.remove(n)
    stale = set(renamed) | set(renamed.values())
    keep_vi = [vi for vi in proto.graph.value_info if vi.name not in stale]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(keep_vi)
    return stats


def int8_weight_nodes(proto: onnx.ModelProto) -> tuple[set[str], int]:
    """(names of the Conv/ConvTranspose/MatMul/Gemm nodes whose weight is a DequantizeLinear of
    an 8-bit initializer, number of such compute nodes) in a written graph."""
    inits = _inits(proto)
    producer = {o: n for n in proto.graph.node for o in n.output}
    eight = (TensorProto.INT8, TensorProto.UINT8)
    total = 0
    names: set[str] = set()
    for node in proto.graph.node:
        if node.op_type in INTEGER:  # onnxruntime's integer forms (--int8-mode dynamic)
            total += 1
            names.add(node.name.removesuffix("_quant"))
            continue
        if node.op_type not in COMPUTE or len(node.input) < 2:
            continue
        total += 1
        dq = producer.get(node.input[1])
        if dq is not None and dq.op_type == "DequantizeLinear":
            w = inits.get(dq.input[0])
            if w is not None and w.data_type in eight:
                names.add(node.name)
    return names, total


def int8_weight_fraction(proto: onnx.ModelProto) -> dict:
    """Conv/ConvTranspose/MatMul/Gemm nodes of a written graph and how many read INT8 weights."""
    names, total = int8_weight_nodes(proto)
    return {
        "compute_nodes": total,
        "int8_weights": len(names),
        "fraction": round(len(names) / total, 4) if total else None,
    }


__all__ = ["int8_weight_fraction", "int8_weight_nodes", "islands", "restore", "to_fp16", "weight_changes"]
