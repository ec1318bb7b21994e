"""Float16 compute -> float32, before INT8 quantization.

A model that stores float16 weights and computes in float16 (a U-Net encoder exported
at half precision, say) cannot go through onnxruntime's quantizer as it is: every
layout it writes has float16 bias scales that the opset rejects. INT8 starts from
float32, so the graph is upcast first: float16 initializers, Constant values and
ConstantOfShape fills become float32, ``Cast(to=FLOAT16)`` becomes ``Cast(to=FLOAT)``,
and graph inputs and outputs keep their declared float16 types through a Cast at the
boundary. The upcast computes the same function at a higher precision; the accuracy
gate then compares the INT8 result against the original model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

F16, F32 = TensorProto.FLOAT16, TensorProto.FLOAT


def has_float16_compute(proto: onnx.ModelProto) -> bool:
    """True when the graph stores float16 weights or casts to float16 inside."""
    graph = proto.graph
    if any(t.data_type == F16 for t in graph.initializer):
        return True
    return any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == F16 for a in n.attribute) for n in graph.node
    )


def _upcast_tensor(t: TensorProto) -> bool:
    if t.data_type != F16:
        return False
    arr = numpy_helper.to_array(t).astype(np.float32)
    t.CopyFrom(numpy_helper.from_array(arr, t.name))
    return True


def _graph(graph: onnx.GraphProto, counts: dict[str, int]) -> None:
    for t in graph.initializer:
        counts["initializers"] += _upcast_tensor(t)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                counts["constants"] += _upcast_tensor(attr.t)
            elif attr.type == onnx.AttributeProto.GRAPH:
                _graph(attr.g, counts)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _graph(g, counts)
            elif attr.name in ("to", "dtype") and attr.type == onnx.AttributeProto.INT and attr.i == F16:
                attr.i = F32
                counts["casts"] += 1
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        if vi.type.tensor_type.elem_type == F16:
            vi.type.tensor_type.elem_type = F32


def upcast_float16(proto: onnx.ModelProto) -> dict[str, int]:
    """Upcast ``proto`` in place; returns what changed (zero counts: nothing was float16)."""
    graph = proto.graph
    inputs16 = [i.name for i in graph.input if i.type.tensor_type.elem_type == F16]
    outputs16 = [o.name for o in graph.output if o.type.tensor_type.elem_type == F16]
    counts = {"initializers": 0, "constants": 0, "casts": 0, "boundary_casts": 0}
    _graph(graph, counts)
    # the interface keeps its float16 types: Cast at the boundary
    inits = {t.name for t in graph.initializer}
    new_nodes: list[onnx.NodeProto] = []
    for name in inputs16:
        if name in inits:
            continue
        inner = f"{name}__upcast"
        for node in graph.node:
            for i, x in enumerate(node.input):
                if x == name:
                    node.input[i] = inner
        new_nodes.append(onnx.helper.make_node("Cast", [name], [inner], to=F32, name=f"{name}__upcast_cast"))
        next(i for i in graph.input if i.name == name).type.tensor_type.elem_type = F16
        counts["boundary_casts"] += 1
    tail: list[onnx.NodeProto] = []
    for name in outputs16:
        inner = f"{name}__upcast"
        for node in graph.node:
            for i, x in enumerate(node.output):
                if x == name:
                    node.output[i] = inner
            for i, x in enumerate(node.input):
                if x == name:
                    node.input[i] = inner
        tail.append(onnx.helper.make_node("Cast", [inner], [name], to=F16, name=f"{name}__downcast_cast"))
        next(o for o in graph.output if o.name == name).type.tensor_type.elem_type = F16
        counts["boundary_casts"] += 1
    if new_nodes or tail:
        nodes = new_nodes + list(graph.node) + tail
        del graph.node[:]
        graph.node.extend(nodes)
    # Cast(to=FLOAT) of what is float32 now is a no-op the optimizer may drop later; types
    # recorded in value_info are stale after the change
    del graph.value_info[:]
    return counts
