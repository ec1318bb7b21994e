"""fold-constants: evaluate nodes whose inputs are all constant.

Built on onnxscript's constant folder (the one the PyTorch exporter uses): it
recurses into If/Loop/Scan bodies, inlines an If whose condition is constant,
and folds shape computations whose dimensions are known. tensorsmith adds a
size cap that keeps the file from growing: a folded tensor larger than
``max_growth_elements`` is kept only when it replaces inputs at least as big
(a Transpose of a weight folds; an Expand of a scalar to a big tensor does not).
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import onnx_ir as ir

from tensorsmith.passes.base import Pass, PassOptions, graphs_of, release_tensor, release_unused_weights


def _sliced(shape_node: ir.Node, dims: list) -> list:
    """``dims[start:end]`` as the Shape node's start/end attributes ask (clamped)."""
    rank = len(dims)
    start = shape_node.attributes.get("start")
    end = shape_node.attributes.get("end")
    lo = start.as_int() if start is not None else 0
    hi = end.as_int() if end is not None else rank
    lo = min(max(lo + rank if lo < 0 else lo, 0), rank)
    hi = min(max(hi + rank if hi < 0 else hi, 0), rank)
    return dims[lo:hi]


def _shape_dims(shape_node: ir.Node) -> list | None:
    """The dims a Shape node yields (ints, or None where dynamic), honouring start/end."""
    x = shape_node.inputs[0]
    if x is None or x.shape is None:
        return None
    dims = [d if isinstance(d, int) else None for d in x.shape]
    return _sliced(shape_node, dims)


def _const_ints(value: ir.Value | None) -> np.ndarray | None:
    if value is None:
        return None
    t = ir.convenience.get_const_tensor(value)
    return None if t is None else np.asarray(t.numpy()).astype(np.int64)


def merge_equal_shapes(pass_: Pass, model: ir.Model) -> bool:
    """Shape nodes whose inputs have the same inferred shape -> one Shape node.

    An attention block computes ``Shape(q)``, ``Shape(k)``, ``Shape(v)`` of tensors
    whose shapes are all ``[batch, seq, 64]``; after this, one ``Shape`` remains and
    common-subexpression elimination merges the Gathers and Concats behind it.
    Only shapes whose every dimension is known (a number or a named symbol, as
    declared on the graph inputs and propagated by shape inference) are compared.
    """
    modified = False
    for graph in list(graphs_of(model)):
        seen: dict[tuple, ir.Value] = {}
        for node in list(graph):
            if node.op_type != "Shape" or node.domain not in ("", "ai.onnx") or not node.inputs:
                continue
            dims = _shape_dims_named(node)
            if dims is None:
                continue
            out = node.outputs[0]
            if out.is_graph_output():
                continue
            key = tuple(dims)
            first = seen.get(key)
            if first is None:
                seen[key] = out
                continue
            ir.convenience.replace_all_uses_with(out, first)
            graph.remove(node, safe=True)
            pass_.count("equal-shapes-merged")
            modified = True
    return modified


def _shape_dims_named(shape_node: ir.Node) -> list | None:
    x = shape_node.inputs[0]
    if x is None or x.shape is None:
        return None
    dims: list[int | str] = []
    for d in x.shape:
        if isinstance(d, int):
            dims.append(d)
        elif d is not None and getattr(d, "value", None):
            dims.append("sym:" + str(d.value))
        else:
            return None
    return _sliced(shape_node, dims)


def fold_static_shape_parts(pass_: Pass, model: ir.Model) -> bool:
    """Gather/Slice of a Shape whose picked dims are static -> a constant.

    ``x.view(x.size(0), -1)``-style exports compute ``Shape(x)[1]`` at run time even
    when that dim is fixed; a whole-Shape folder cannot fold it because the batch is
    dynamic. Only static dims are folded: a dynamic dim is never frozen.
    """
    modified = False
    for graph in list(graphs_of(model)):
        for node in list(graph):
            if node.op_type not in ("Gather", "Slice") or node.domain not in ("", "ai.onnx"):
                continue
            data = node.inputs[0] if node.inputs else None
            shape_node = data.producer() if data is not None else None
            if shape_node is None or shape_node.op_type != "Shape":
                continue
            dims = _shape_dims(shape_node)
            if dims is None:
                continue
            picked: np.ndarray | list | None = None
            if node.op_type == "Gather":
                axis = node.attributes.get("axis")
                idx = _const_ints(node.inputs[1] if len(node.inputs) > 1 else None)
                if idx is None or (axis is not None and axis.as_int() != 0):
                    continue
                flat = [int(i) + len(dims) if int(i) < 0 else int(i) for i in idx.reshape(-1)]
                if any(i < 0 or i >= len(dims) or dims[i] is None for i in flat):
                    continue
                picked = np.array([dims[i] for i in flat], dtype=np.int64).reshape(idx.shape)
            else:
                ins = list(node.inputs) + [None] * (5 - len(node.inputs))
                starts, ends = _const_ints(ins[1]), _const_ints(ins[2])
                axes = _const_ints(ins[3]) if ins[3] is not None else np.array([0])
                steps = _const_ints(ins[4]) if ins[4] is not None else np.array([1])
                if starts is None or ends is None or axes is None or steps is None:
                    continue
                if (
                    axes.reshape(-1).tolist() not in ([0], [-1])
                    or starts.size != 1
                    or steps.reshape(-1)[0] == 0
                ):
                    continue
                sl = slice(int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0]), int(steps.reshape(-1)[0]))
                chosen = dims[sl]
                if any(d is None for d in chosen):
                    continue
                picked = np.array(chosen, dtype=np.int64)
            out = node.outputs[0]
            if out.is_graph_output():
                continue
            const = ir.Node(
                "", "Constant", [], attributes=[ir.AttrTensor("value", ir.tensor(picked))], num_outputs=1
            )
            graph.insert_before(node, const)
            const.outputs[0].type = ir.TensorType(ir.DataType.INT64)
            const.outputs[0].shape = ir.Shape(list(picked.shape))
            ir.convenience.replace_all_uses_with(out, const.outputs[0])
            graph.remove(node, safe=True)
            pass_.count("static-shape-parts")
            modified = True
    return modified


_DEQUANT_SOURCE_TYPES = {
    ir.DataType.INT8,
    ir.DataType.UINT8,
    ir.DataType.INT16,
    ir.DataType.UINT16,
    ir.DataType.INT4,
    ir.DataType.UINT4,
}
_FLOAT_TYPES = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE}


def _is_dequantize_cast(node: ir.Node, in_dtype: ir.DataType, out_dtype: ir.DataType) -> bool:
    """``Cast``/``CastLike`` of a low-bit integer weight to a float type: the head of a
    ``Cast(w) * scale`` dequantize chain."""
    return (
        node.op_type in ("Cast", "CastLike")
        and node.domain in ("", "ai.onnx")
        and in_dtype in _DEQUANT_SOURCE_TYPES
        and out_dtype in _FLOAT_TYPES
    )


def _onnx_op(node: ir.Node) -> bool:
    return node.domain in ("", "ai.onnx")


def _partition_elements(node: ir.Node, source: ir.Value, opset: int) -> int | None:
    """Elements of ``node``'s output when it is a constant ``Slice``/``Gather`` of ``source``
    (used only as its data input), else ``None``."""
    if not _onnx_op(node) or node.op_type not in ("Slice", "Gather") or not node.inputs:
        return None
    if node.inputs[0] is not source or any(v is source for v in node.inputs[1:]):
        return None
    others = [ir.convenience.get_const_tensor(v) if v is not None else None for v in node.inputs[1:]]
    if any(v is not None and t is None for v, t in zip(node.inputs[1:], others, strict=True)):
        return None
    tensor = source.const_value
    if tensor is None:
        return None
    shape = tuple(d for d in tensor.shape if isinstance(d, int))
    rank = len(shape)
    if rank != len(tensor.shape):
        return None
    if node.op_type == "Gather":
        if len(others) != 1 or others[0] is None:
            return None
        axis_attr = node.attributes.get("axis")
        axis = axis_attr.as_int() if axis_attr is not None else 0
        axis = axis + rank if axis < 0 else axis
        if not 0 <= axis < rank or shape[axis] == 0:
            return None
        return int(np.prod(shape, dtype=np.int64)) // shape[axis] * int(others[0].size)
    # Slice: attributes before opset 10, inputs from 10 on
    if opset < 10:
        args = [node.attributes.get(k) for k in ("starts", "ends", "axes")]
        if args[0] is None or args[1] is None:
            return None
        starts: list[int] = list(args[0].as_ints())
        ends: list[int] = list(args[1].as_ints())
        axes: list[int] = list(args[2].as_ints()) if args[2] is not None else list(range(len(starts)))
        steps: list[int] = [1] * len(starts)
    else:
        if len(others) < 2 or others[0] is None or others[1] is None:
            return None
        starts = np.asarray(others[0].numpy()).reshape(-1).tolist()
        ends = np.asarray(others[1].numpy()).reshape(-1).tolist()
        axes_t = others[2] if len(others) > 2 else None
        steps_t = others[3] if len(others) > 3 else None
        axes = (
            np.asarray(axes_t.numpy()).reshape(-1).tolist()
            if axes_t is not None
            else list(range(len(starts)))
        )
        steps = np.asarray(steps_t.numpy()).reshape(-1).tolist() if steps_t is not None else [1] * len(starts)
    if not (len(starts) == len(ends) == len(axes) == len(steps)) or 0 in steps:
        return None
    dims = list(shape)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis = int(axis) + rank if int(axis) < 0 else int(axis)
        if not 0 <= axis < rank:
            return None
        dims[axis] = len(range(*slice(int(start), int(end), int(step)).indices(shape[axis])))
    return int(np.prod(dims, dtype=np.int64))


def _group_frees_source(node: ir.Node, opset: int) -> bool:
    """``node`` slices a constant that other nodes slice too, and *every* consumer of that
    constant is a constant Slice/Gather whose outputs together are no bigger than it:
    folding them all frees it, so the file does not grow."""
    if not node.inputs or node.inputs[0] is None:
        return False
    source = node.inputs[0]
    tensor = source.const_value
    if tensor is None or source.is_graph_output() or source.is_graph_input():
        return False
    consumers = {use.node for use in source.uses()}
    if len(consumers) < 2 or node not in consumers:
        return False
    total = 0
    seen: set[tuple] = set()
    for consumer in consumers:
        n = _partition_elements(consumer, source, opset)
        if n is None:
            return False
        key = _slice_key(consumer)
        if key not in seen:  # the same slice in two If branches is stored once (share_folded_duplicates)
            seen.add(key)
            total += n
    return total <= tensor.size


def _slice_key(node: ir.Node) -> tuple:
    """What a constant Slice/Gather of a given source computes: op, attributes, parameters."""
    params = []
    for v in node.inputs[1:]:
        t = ir.convenience.get_const_tensor(v) if v is not None else None
        arr = np.asarray(t.numpy()) if t is not None else None
        params.append(None if arr is None else (arr.dtype.str, arr.shape, arr.tobytes()))
    attrs = tuple(sorted((k, repr(a.value)) for k, a in node.attributes.items()))
    return (node.op_type, attrs, tuple(params))


def _subgraph_parents(model: ir.Model) -> dict[ir.Graph, ir.Graph]:
    """Each If/Loop/Scan body -> the graph of the node that owns it."""
    parents: dict[ir.Graph, ir.Graph] = {}
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        for node in graph:
            for attr in node.attributes.values():
                if attr.type == ir.AttributeType.GRAPH:
                    subs = [attr.as_graph()]
                elif attr.type == ir.AttributeType.GRAPHS:
                    subs = list(attr.as_graphs())
                else:
                    continue
                for sub in subs:
                    parents[sub] = graph
                    stack.append(sub)
    return parents


def _subgraph_initializer_ids(model: ir.Model) -> set[int]:
    return {id(v) for g in model.graph.subgraphs() for v in g.initializers.values()}


def share_folded_duplicates(pass_: Pass, model: ir.Model, before: set[int]) -> bool:
    """Folded initializers with equal contents in different subgraphs -> one initializer in
    their closest common enclosing graph.

    The same weight slice computed in both branches of an ``If`` folds into two equal
    tensors; stored once, the file does not grow. Only tensors created by this fold
    (not in ``before``) are compared, hashed once each (linear in their bytes).
    """
    groups: dict[tuple, list[tuple[ir.Graph, ir.Value]]] = {}
    for graph in model.graph.subgraphs():
        for value in graph.initializers.values():
            t = value.const_value
            if id(value) in before or t is None or t.size <= 1 or value.is_graph_output():
                continue
            arr = np.asarray(t.numpy())
            key = (arr.dtype.str, arr.shape, hash(arr.tobytes()))
            groups.setdefault(key, []).append((graph, value))
    groups = {k: g for k, g in groups.items() if len({id(graph) for graph, _ in g}) > 1}
    if not groups:
        return False
    parents = _subgraph_parents(model)

    def chain(graph: ir.Graph) -> list[ir.Graph]:
        out = [graph]
        while out[-1] in parents:
            out.append(parents[out[-1]])
        return out

    modified = False
    for members in groups.values():
        keep_graph, keep = members[0]
        keep_arr = np.asarray(keep.const_value.numpy()) if keep.const_value is not None else None
        common = chain(keep_graph)
        for graph, _ in members[1:]:
            ancestors = {id(g) for g in chain(graph)}
            common = [g for g in common if id(g) in ancestors]
        if not common:
            continue
        target = common[0]
        for graph, value in members[1:]:
            other = value.const_value
            if keep_arr is None or other is None or not np.array_equal(np.asarray(other.numpy()), keep_arr):
                continue
            ir.convenience.replace_all_uses_with(value, keep)
            graph.initializers.pop(value.name)  # type: ignore[arg-type]
            pass_.count("equal folded constants shared across subgraphs")
            modified = True
        if target is not keep_graph and keep.name is not None:
            keep_graph.initializers.pop(keep.name)
            target.register_initializer(keep)
    return modified


_CONSTANT_ATTRS_FROM_12 = {
    "value_float": (ir.DataType.FLOAT, False),
    "value_floats": (ir.DataType.FLOAT, True),
    "value_int": (ir.DataType.INT64, False),
    "value_ints": (ir.DataType.INT64, True),
    "value_string": (ir.DataType.STRING, False),
    "value_strings": (ir.DataType.STRING, True),
}


def legalize_constants(model: ir.Model) -> int:
    """Rewrite ``Constant(value_int(s)/value_float(s)/value_string(s))`` as
    ``Constant(value=tensor)`` where the model's opset predates them (< 12).

    onnxscript's folder writes ``value_ints`` for a folded ``Shape`` whatever the
    opset; onnxruntime loads it, but ``onnx.checker`` and other consumers reject it.
    Returns how many nodes were rewritten.
    """
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
    if opset >= 12:
        return 0
    changed = 0
    for graph in graphs_of(model):
        for node in graph:
            if node.op_type != "Constant" or not _onnx_op(node):
                continue
            for attr_name, (dtype, is_list) in _CONSTANT_ATTRS_FROM_12.items():
                attr = node.attributes.get(attr_name)
                if attr is None:
                    continue
                if dtype == ir.DataType.STRING:
                    raw = attr.value if is_list else [attr.value]
                    array = np.array([x.encode() if isinstance(x, str) else x for x in raw], dtype=object)
                    if not is_list:
                        array = array.reshape(())
                    tensor: ir.TensorProtocol = ir.StringTensor(array)
                else:
                    np_dtype = np.float32 if dtype == ir.DataType.FLOAT else np.int64
                    tensor = ir.tensor(np.array(attr.value, dtype=np_dtype))
                del node.attributes[attr_name]
                node.attributes["value"] = ir.AttrTensor("value", tensor)
                changed += 1
    return changed


def _folder_class() -> type:
    """onnxscript's ``FoldConstantsPass`` whose element cap on a folded output is lifted
    for the nodes our ``should_fold`` approved (their byte growth was checked there)."""
    from onnxscript.optimizer import _constant_folding as cf

    class _Folder(cf.FoldConstantsPass):
        approved: set[ir.Node]

        def _prepare_folded_tensor(
            self, node: ir.Node, output_name: str, output_array: np.ndarray
        ) -> ir.Tensor | None:
            if node not in self.approved:
                return super()._prepare_folded_tensor(node, output_name, output_array)
            limit, self.output_size_limit = self.output_size_limit, sys.maxsize
            try:
                return super()._prepare_folded_tensor(node, output_name, output_array)
            finally:
                self.output_size_limit = limit

    return _Folder


class FoldConstantsOptions(PassOptions):
    max_input_elements: int = 1 << 26
    """Skip nodes with a constant input larger than this (evaluation cost)."""
    max_growth_elements: int = 4096
    """A folded output this large must not make the model bigger than its inputs did."""
    shape_inference: bool = True
    """Use ONNX node-level shape inference to fold Shape/Size of known dims."""
    fold_dequantize: bool = False
    """Fold dequantize chains (``Cast(int8 weight -> float) * scale``) although that makes
    the file up to 4x larger: faster when onnxruntime's own optimizations are off (it
    folds them itself at load otherwise). CLI: ``--fold-dequantize``."""
    merge_equal_shapes: bool = False
    """Merge Shape nodes of equally shaped tensors. Off by default: measured, it blocks
    onnxruntime's ReshapeFusion and made an attention block 6% slower with ORT's
    optimizations on (fewer nodes, slower model)."""


class FoldConstants(Pass):
    name = "fold-constants"
    description = (
        "Evaluate nodes whose inputs are all constant (also inside If/Loop bodies), never growing the file."
    )
    Options = FoldConstantsOptions
    options: FoldConstantsOptions
    _pending: list[ir.Value]
    _approved: set[ir.Node]
    _groups: dict[ir.Value, bool]
    _left: set[ir.Node]
    _opset: int

    def _release_folded(self) -> None:
        """Unmap the external weights of the previous fold if it left them unused (O(1)):
        folding a Transpose of a 1 GB weight must not keep the old 1 GB mapped too."""
        for value in self._pending:
            if not value.uses() and not value.is_graph_output():
                release_tensor(value)
        self._pending = []

    def _should_fold(self, node: ir.Node) -> bool | None:
        """Refuse folds that grow the file in *bytes* (the folder's own cap counts
        elements, so ``Cast(int8 weight -> float)`` would quadruple a quantized model).
        ``None`` leaves the decision to the folder's default rules (which keep Q/DQ);
        ``True`` also lifts the folder's element cap for this node (``_approved``)."""
        self._release_folded()
        decision = self._decide(node)
        if decision is None or decision is True:
            self._pending = [v for v in node.inputs if v is not None and v.is_initializer()]
        if decision is True:
            self._approved.add(node)
        return decision

    def _decide(self, node: ir.Node) -> bool | None:
        inputs = [v for v in node.inputs if v is not None]
        tensors = [v.const_value for v in inputs]
        if any(t is None for t in tensors) or not tensors:
            return None
        if node.op_type == "ConstantOfShape" and _onnx_op(node):
            return self._decide_constant_of_shape(node, inputs[0])
        biggest = max(tensors, key=lambda t: t.size)  # type: ignore[union-attr]
        if biggest is None or biggest.size <= self.options.max_growth_elements:
            return None
        out_dtype = node.outputs[0].dtype if node.outputs and node.outputs[0].dtype is not None else None
        if node.op_type == "Cast" and node.attributes.get("to") is not None:
            out_dtype = ir.DataType(node.attributes["to"].as_int())
        elif node.op_type == "CastLike" and len(tensors) > 1 and tensors[1] is not None:
            out_dtype = tensors[1].dtype
        if out_dtype is None:
            out_dtype = max((t.dtype for t in tensors if t is not None), key=lambda d: d.itemsize)
        if _is_dequantize_cast(node, biggest.dtype, out_dtype):
            if self.options.fold_dequantize:
                self.count("dequantize casts folded")
                return True
            if node not in self._left:
                self._left.add(node)
                self.count("dequantize chains left (would grow the file; --fold-dequantize folds them)")
                self.explain(
                    node,
                    f"dequantize chain left: folding {biggest.dtype.name} -> {out_dtype.name} would grow the model "
                    f"{out_dtype.itemsize / biggest.dtype.itemsize:g}x "
                    "(onnxruntime folds it at load with its optimizations on; --fold-dequantize folds it here)",
                )
            return False
        est_out = biggest.size * out_dtype.itemsize
        freed = sum(
            t.nbytes
            for v, t in zip(inputs, tensors, strict=False)
            if t is not None and len(v.uses()) <= 1 and not v.is_graph_output()
        )
        if est_out <= freed:
            return None
        source = node.inputs[0] if node.inputs else None
        if source is not None and source not in self._groups:
            # decided once per source and run (its consumers only shrink as they fold): linear time
            self._groups[source] = _group_frees_source(node, self._opset)
        if source is not None and self._groups[source]:
            # Every consumer of the shared weight is a constant slice of it: folding them
            # all frees the weight, so the file does not grow (an LSTM weight split into gates).
            self.count("slices of a shared constant folded")
            return True
        self.explain(node, f"folding would grow the model by {est_out - freed} bytes")
        return False

    def _decide_constant_of_shape(self, node: ir.Node, shape: ir.Value) -> bool | None:
        """onnxscript never folds ConstantOfShape (it exists so as not to store its output);
        fold one whose output takes no more bytes than the node and the inputs it frees
        (the ``[0, 0]`` of a padding computation), so the chain after it can fold too."""
        tensor = shape.const_value
        if tensor is None:
            return None
        value = node.attributes.get("value")
        itemsize = value.as_tensor().dtype.itemsize if value is not None else 4
        dims = np.asarray(tensor.numpy()).reshape(-1)
        out_bytes = int(np.prod(dims, dtype=np.int64)) * itemsize if (dims >= 0).all() else -1
        freed = tensor.nbytes if len(shape.uses()) <= 1 and not shape.is_graph_output() else 0
        if 0 <= out_bytes <= freed + ir.serde.serialize_node(node).ByteSize():
            self.count("small ConstantOfShape folded")
            return True
        self.explain(node, f"ConstantOfShape left: its {out_bytes} bytes of output would grow the model")
        return None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opts = self.options
        self._pending = []
        self._approved = set()
        self._groups = {}
        if not hasattr(self, "_left"):
            self._left = set()  # dequantize casts counted once over iterations
        self._opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
        folder = _folder_class()(
            shape_inference=opts.shape_inference,
            input_size_limit=opts.max_input_elements,
            output_size_limit=opts.max_growth_elements,
            should_fold=self._should_fold,
        )
        folder.approved = self._approved
        # onnxscript logs every skipped node at WARNING/INFO; keep our output clean.
        log = logging.getLogger("onnxscript.optimizer._constant_folding")
        level = log.level
        log.setLevel(logging.ERROR)
        nodes_before = sum(1 for _ in model.graph.all_nodes())
        before = _subgraph_initializer_ids(model)
        try:
            result = folder(model)
            shape_parts = fold_static_shape_parts(self, model)
            if self.options.merge_equal_shapes:
                shape_parts |= merge_equal_shapes(self, model)
            if shape_parts:
                folder(model)  # fold what the new constants made constant
        finally:
            log.setLevel(level)
        shape_parts |= share_folded_duplicates(self, model, before)
        # The folder may leave Constant nodes; lift them to initializers so that
        # later passes (and Conv+BN fusion) see them as constants, and drop what
        # became unused.
        lifted = ir.passes.common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=16)(
            model
        )
        self._release_folded()
        self._approved.clear()
        self._groups.clear()
        release_unused_weights(model)
        legalized = legalize_constants(model)
        if legalized:
            self.count("constants rewritten for the opset", legalized)
        folded = nodes_before - sum(1 for _ in model.graph.all_nodes())
        if folded > 0:
            self.count("nodes folded", folded)
        if lifted.modified:
            self.count("constants-lifted")
        return ir.passes.PassResult(
            model, modified=bool(result.modified or lifted.modified or shape_parts or legalized)
        )
