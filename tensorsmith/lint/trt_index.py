"""The graph index the TensorRT lint rules read: producers, consumers, dtypes, shapes
and constants over the main graph, its subgraphs and the model-local functions."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

_DT = TensorProto


@dataclass
class NodeRef:
    node: onnx.NodeProto
    label: str  # "<graph>/<node>" for display
    in_function: bool = False

    @property
    def op(self) -> str:
        return self.node.op_type


class GraphIndex:
    """Producers, consumers, types, shapes and constants over the main graph, its
    subgraphs and the model-local functions."""

    def __init__(self, proto: onnx.ModelProto, base_dir: str):
        self.proto = proto
        self.base_dir = base_dir
        self.dtype: dict[str, int] = {}
        self.shape: dict[str, list] = {}
        self.producer: dict[str, NodeRef] = {}
        self.consumers: dict[str, list[tuple[NodeRef, int]]] = collections.defaultdict(list)
        self.const: dict[str, TensorProto] = {}
        self.nodes: list[NodeRef] = []
        self.graph_inputs: list[onnx.ValueInfoProto] = []
        self.graph_outputs: set[str] = {o.name for o in proto.graph.output}
        self.functions = {(f.domain, f.name): f for f in proto.functions}
        self._arrays: dict[str, np.ndarray | None] = {}
        inits = {i.name for i in proto.graph.initializer}
        self.graph_inputs = [i for i in proto.graph.input if i.name not in inits]
        self._walk_graph(proto.graph, "")
        for f in proto.functions:
            for i, n in enumerate(f.node):
                self._add_node(n, f"function {f.domain}:{f.name}", i, in_function=True)

    def _vi(self, vi: onnx.ValueInfoProto) -> None:
        if not vi.type.HasField("tensor_type"):
            return
        tt = vi.type.tensor_type
        if tt.elem_type:
            self.dtype.setdefault(vi.name, tt.elem_type)
        if tt.HasField("shape"):
            dims: list[int | str | None] = []
            for d in tt.shape.dim:
                if d.HasField("dim_value"):
                    dims.append(int(d.dim_value))
                elif d.HasField("dim_param"):
                    dims.append(d.dim_param)
                else:
                    dims.append(None)
            self.shape.setdefault(vi.name, dims)

    def _walk_graph(self, g: onnx.GraphProto, prefix: str) -> None:
        for vi in [*g.input, *g.output, *g.value_info]:
            self._vi(vi)
        for t in g.initializer:
            self.const[t.name] = t
            self.dtype.setdefault(t.name, t.data_type)
            self.shape.setdefault(t.name, list(t.dims))
        for i, n in enumerate(g.node):
            self._add_node(n, prefix, i)
            for attr in n.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    self._walk_graph(attr.g, f"{prefix}{_name(n, i)}/{attr.name}/")
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for k, sg in enumerate(attr.graphs):
                        self._walk_graph(sg, f"{prefix}{_name(n, i)}/{attr.name}[{k}]/")

    def _add_node(self, n: onnx.NodeProto, prefix: str, i: int, *, in_function: bool = False) -> None:
        label = f"{prefix}{_name(n, i)}" if not in_function else f"{prefix}/{_name(n, i)}"
        ref = NodeRef(n, label, in_function)
        self.nodes.append(ref)
        for k, name in enumerate(n.input):
            if name:
                self.consumers[name].append((ref, k))
        for name in n.output:
            if name:
                self.producer.setdefault(name, ref)
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and n.output:
            t = _constant_tensor(n)
            if t is not None:
                self.const[n.output[0]] = t
                self.dtype.setdefault(n.output[0], t.data_type)
                self.shape.setdefault(n.output[0], list(t.dims))

    def array(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor (initializer or Constant node), or None."""
        if name not in self._arrays:
            t = self.const.get(name)
            arr = None
            if t is not None:
                try:
                    arr = numpy_helper.to_array(t, self.base_dir)
                except Exception:
                    arr = None
            self._arrays[name] = arr
        return self._arrays[name]

    def is_const(self, name: str) -> bool:
        return name in self.const

    def used(self, name: str) -> bool:
        return bool(name) and (name in self.graph_outputs or bool(self.consumers.get(name)))


def _name(n: onnx.NodeProto, i: int) -> str:
    return n.name or f"{n.op_type}#{i}"


def _constant_tensor(n: onnx.NodeProto) -> TensorProto | None:
    for a in n.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            return a.t
        if a.name == "value_float":
            return numpy_helper.from_array(np.array(a.f, dtype=np.float32))
        if a.name == "value_floats":
            return numpy_helper.from_array(np.array(list(a.floats), dtype=np.float32))
        if a.name == "value_int":
            return numpy_helper.from_array(np.array(a.i, dtype=np.int64))
        if a.name == "value_ints":
            return numpy_helper.from_array(np.array(list(a.ints), dtype=np.int64))
    return None


def node_attr(n: onnx.NodeProto, name: str, default=None):
    for a in n.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def text_of(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def load_model(path: Path) -> onnx.ModelProto:
    from tensorsmith.model_io import load_proto

    proto = load_proto(path)
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception:
        return proto


def owner_of(idx: GraphIndex, name: str) -> str | None:
    p = idx.producer.get(name)
    return p.label if p else None
