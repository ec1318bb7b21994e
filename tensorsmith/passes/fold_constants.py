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
    dims = []
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


class FoldConstantsOptions(PassOptions):
    max_input_elements: int = 1 << 26
    """Skip nodes with a constant input larger than this (evaluation cost)."""
    max_growth_elements: int = 4096
    """A folded output this large must not make the model bigger than its inputs did."""
    shape_inference: bool = True
    """Use ONNX node-level shape inference to fold Shape/Size of known dims."""
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
        ``None`` leaves the decision to the folder's default rules (which keep Q/DQ)."""
        self._release_folded()
        decision = self._decide(node)
        if decision is None:
            self._pending = [v for v in node.inputs if v is not None and v.is_initializer()]
        return decision

    def _decide(self, node: ir.Node) -> bool | None:
        inputs = [v for v in node.inputs if v is not None]
        tensors = [v.const_value for v in inputs]
        if any(t is None for t in tensors) or not tensors:
            return None
        biggest = max(tensors, key=lambda t: t.size)
        if biggest.size <= self.options.max_growth_elements:
            return None
        out_dtype = node.outputs[0].dtype if node.outputs and node.outputs[0].dtype is not None else None
        if node.op_type == "Cast" and node.attributes.get("to") is not None:
            out_dtype = ir.DataType(node.attributes["to"].as_int())
        elif node.op_type == "CastLike" and len(tensors) > 1:
            out_dtype = tensors[1].dtype
        if out_dtype is None:
            out_dtype = max((t.dtype for t in tensors), key=lambda d: d.itemsize)
        est_out = biggest.size * out_dtype.itemsize
        freed = sum(
            t.nbytes
            for v, t in zip(inputs, tensors, strict=False)
            if len(v.uses()) <= 1 and not v.is_graph_output()
        )
        if est_out > freed:
            self.explain(node, f"folding would grow the model by {est_out - freed} bytes")
            return False
        return None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnxscript.optimizer import _constant_folding as cf

        opts = self.options
        self._pending: list[ir.Value] = []
        folder = cf.FoldConstantsPass(
            shape_inference=opts.shape_inference,
            input_size_limit=opts.max_input_elements,
            output_size_limit=opts.max_growth_elements,
            should_fold=self._should_fold,
        )
        # onnxscript logs every skipped node at WARNING/INFO; keep our output clean.
        log = logging.getLogger("onnxscript.optimizer._constant_folding")
        level = log.level
        log.setLevel(logging.ERROR)
        nodes_before = sum(1 for _ in model.graph.all_nodes())
        try:
            result = folder(model)
            shape_parts = fold_static_shape_parts(self, model)
            if self.options.merge_equal_shapes:
                shape_parts |= merge_equal_shapes(self, model)
            if shape_parts:
                folder(model)  # fold what the new constants made constant
        finally:
            log.setLevel(level)
        # The folder may leave Constant nodes; lift them to initializers so that
        # later passes (and Conv+BN fusion) see them as constants, and drop what
        # became unused.
        lifted = ir.passes.common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=16)(
            model
        )
        self._release_folded()
        release_unused_weights(model)
        folded = nodes_before - sum(1 for _ in model.graph.all_nodes())
        if folded > 0:
            self.count("nodes folded", folded)
        if lifted.modified:
            self.count("constants-lifted")
        return ir.passes.PassResult(model, modified=bool(result.modified or lifted.modified or shape_parts))
