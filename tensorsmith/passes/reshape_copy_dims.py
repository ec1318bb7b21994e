"""reshape-copy-dims: a Reshape target assembled from its own input's Shape -> a constant with ``0`` dims.

Exporters build ``x.view(x.size(0), x.size(1), 12, 64)`` as
``Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), Unsqueeze(Gather(Shape(x), 1)), [12], [64]))``.
With ``allowzero=0`` a ``0`` in a Reshape target copies the input's dim at the same
position, so when every part of the Concat is a constant or picks dim ``i`` of the
Reshape's own input at output position ``i``, the target is the constant
``[0, 0, 12, 64]``: the dynamic dims stay dynamic. onnxruntime's ReshapeFusion makes the
same rewrite at load time; doing it in the file lets the Shape/Gather/Unsqueeze/Concat
chain go when onnxruntime's optimizations are off, and leaves nothing that would keep
ReshapeFusion from seeing the pattern (``merge_equal_shapes`` did: it is off for that).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from tensorsmith.passes.base import Pass

INT64_MAX = np.iinfo(np.int64).max


def _onnx(node: ir.Node | None, op_type: str) -> bool:
    return node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx")


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None:
        return None
    t = ir.convenience.get_const_tensor(value)
    return None if t is None else np.asarray(t.numpy())


def _rank(value: ir.Value) -> int | None:
    return None if value.shape is None else len(value.shape)


def _shape_dims(value: ir.Value | None, data: ir.Value) -> tuple[int, int | None] | None:
    """``(first dim, rank)`` when ``value`` is ``Shape(data)`` (``first dim`` from its ``start``)."""
    node = value.producer() if value is not None else None
    if not _onnx(node, "Shape") or node is None or not node.inputs or node.inputs[0] is None:
        return None
    src = node.inputs[0]
    if src is not data and (src.shape is None or data.shape is None):
        return None
    rank = _rank(src)
    start_attr, end_attr = node.attributes.get("start"), node.attributes.get("end")
    start = start_attr.as_int() if start_attr is not None else 0
    if start < 0:
        if rank is None:
            return None
        start += rank
    if end_attr is not None:  # only a Shape that runs to the last dim
        end = end_attr.as_int()
        if rank is None or (end if end >= 0 else end + rank) < rank:
            return None
    return max(start, 0), rank


def _same_dim(src: ir.Value, data: ir.Value, i: int) -> bool:
    """Dim ``i`` of ``src`` is dim ``i`` of ``data``: the same value, or (from shape
    inference) the same named symbol, as onnxruntime's ReshapeFusion also accepts."""
    if src is data:
        return True
    if src.shape is None or data.shape is None or i >= len(src.shape) or i >= len(data.shape):
        return False
    a, b = src.shape[i], data.shape[i]
    if isinstance(a, int) or isinstance(b, int):
        return isinstance(a, int) and isinstance(b, int) and a == b
    return a.value is not None and a.value == b.value


def _shape_source(part: ir.Value) -> ir.Value | None:
    node = part.producer()
    while node is not None and node.op_type in ("Unsqueeze", "Gather", "Slice") and node.inputs:
        first = node.inputs[0]
        node = first.producer() if first is not None else None
    return node.inputs[0] if node is not None and node.op_type == "Shape" and node.inputs else None


def _picked_dims(part: ir.Value, data: ir.Value) -> list[int] | None:
    dims = _picked(part, data)
    src = _shape_source(part)
    if dims is None or src is None or not all(_same_dim(src, data, d) for d in dims):
        return None
    return dims


def _picked(part: ir.Value, data: ir.Value) -> list[int] | None:
    """The dims of ``data`` that ``part`` yields, in order, or None when it is not a
    ``Gather``/``Slice`` of ``Shape(data)`` (optionally through an ``Unsqueeze`` to 1-D)."""
    node = part.producer()
    if _onnx(node, "Unsqueeze") and node is not None:
        axes = _const(node.inputs[1]) if len(node.inputs) > 1 else None
        attr = node.attributes.get("axes")
        if axes is None and attr is not None:
            axes = np.asarray(attr.as_ints())
        if axes is None or axes.reshape(-1).tolist() not in ([0], [-1]):
            return None
        inner = node.inputs[0]
        gather = inner.producer() if inner is not None else None
        if not _onnx(gather, "Gather") or gather is None:
            return None
        idx = _const(gather.inputs[1]) if len(gather.inputs) > 1 else None
        if idx is None or idx.ndim != 0:
            return None
        return _gathered(gather, idx.reshape(1), data)
    if _onnx(node, "Gather") and node is not None:
        idx = _const(node.inputs[1]) if len(node.inputs) > 1 else None
        if idx is None or idx.ndim != 1:
            return None
        return _gathered(node, idx, data)
    if _onnx(node, "Slice") and node is not None and len(node.inputs) >= 3:
        found = _shape_dims(node.inputs[0], data)
        if found is None:
            return None
        first, rank = found
        starts, ends = _const(node.inputs[1]), _const(node.inputs[2])
        axes = _const(node.inputs[3]) if len(node.inputs) > 3 else np.array([0])
        steps = _const(node.inputs[4]) if len(node.inputs) > 4 else np.array([1])
        if starts is None or ends is None or axes is None or steps is None or rank is None:
            return None
        if (
            starts.size != 1
            or axes.reshape(-1).tolist() not in ([0], [-1])
            or steps.reshape(-1).tolist() != [1]
        ):
            return None
        length = rank - first
        return [
            first + i
            for i in range(*slice(int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0])).indices(length))
        ]
    return None


def _gathered(gather: ir.Node, idx: np.ndarray, data: ir.Value) -> list[int] | None:
    axis = gather.attributes.get("axis")
    if axis is not None and axis.as_int() != 0:
        return None
    found = _shape_dims(gather.inputs[0], data)
    if found is None:
        return None
    first, rank = found
    dims = []
    for i in idx.reshape(-1).tolist():
        if i < 0:
            if rank is None:
                return None
            i += rank - first
        dims.append(first + int(i))
    return dims


def copy_dims_target(reshape: ir.Node) -> np.ndarray | None:
    """The constant target (with ``0`` copy dims) equivalent to ``reshape``'s Concat target, or None."""
    if len(reshape.inputs) < 2 or reshape.inputs[0] is None or reshape.inputs[1] is None:
        return None
    allowzero = reshape.attributes.get("allowzero")
    if allowzero is not None and allowzero.as_int() != 0:
        return None
    data, target = reshape.inputs[0], reshape.inputs[1]
    concat = target.producer()
    if not _onnx(concat, "Concat") or concat is None or _const(target) is not None:
        return None
    axis = concat.attributes.get("axis")
    if axis is None or axis.as_int() not in (0, -1):
        return None
    out: list[int] = []
    dynamic = False
    unknown = 0
    for part in concat.inputs:
        if part is None:
            return None
        values = _const(part)
        if values is not None:
            if values.ndim != 1:
                return None
            out.extend(int(v) for v in values)
            continue
        dims = _picked_dims(part, data)
        if dims is not None and dims == list(range(len(out), len(out) + len(dims))):
            out.extend([0] * len(dims))
            dynamic = True
            continue
        if part.shape is None or list(part.shape) != [1]:
            return None
        # one computed dim: -1 (inferred from the element count), as ReshapeFusion does
        out.append(-1)
        unknown += 1
    if not dynamic or unknown > 1 or sum(1 for v in out if v == -1) > 1:
        return None
    return np.array(out, dtype=np.int64)


class ReshapeCopyDims(Pass):
    name = "reshape-copy-dims"
    description = "Reshape targets built from Shape/Gather/Concat of the Reshape's own input become constants with 0 (copy) dims."

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        graphs = [model.graph, *model.graph.subgraphs()]
        taken: set[str] | None = None  # every value name in the model, built on the first rewrite
        for graph in graphs:
            for node in graph:
                if not _onnx(node, "Reshape"):
                    continue
                target = copy_dims_target(node)
                if target is None:
                    continue
                if taken is None:
                    taken = _value_names(graphs)
                name = base = f"{node.name or 'reshape'}_target"
                i = 0
                while name in taken:
                    i += 1
                    name = f"{base}_{i}"
                taken.add(name)
                value = ir.Value(name=name, const_value=ir.tensor(target, name=name))
                value.type = ir.TensorType(ir.DataType.INT64)
                value.shape = ir.Shape(target.shape)
                graph.register_initializer(value)
                node.replace_input_with(1, value)
                self.count("reshape targets made constant")
                modified = True
        return ir.passes.PassResult(model, modified=modified)


def _value_names(graphs: list[ir.Graph]) -> set[str]:
    names: set[str] = set()
    for graph in graphs:
        names.update(v.name for v in graph.inputs if v.name)
        names.update(graph.initializers)
        for node in graph:
            names.update(v.name for v in node.outputs if v.name)
    return names
