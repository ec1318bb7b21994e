"""merge-slices: ``Slice(Slice(x))`` on different axes -> one ``Slice`` of ``x``.

PyTorch exports ``x[:, :129][..., 1:]`` as two Slice nodes, each on one axis; slicing
one axis leaves every other axis alone, so two Slices whose axes are disjoint are one
Slice with both sets of starts/ends/axes/steps. onnxsim and onnxslim do the same
merge; on Silero-VAD's 16 kHz sequence model (its STFT magnitude slices the Conv
output twice per half) it takes 4 Slices to 2.

Merged only when every parameter is a constant (opset 10+: starts/ends/axes/steps
are inputs), the inner Slice's output feeds nothing else and is not a graph output,
and the axes, with negative ones resolved by the input's rank, are disjoint. The
outer Slice is rewritten in place (its output, name and declared shape stay), so a
chain of three merges in one run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from tensorsmith.passes.base import RewritePass, Site, const_array, is_op, new_initializer

_PARAMS = ("starts", "ends", "axes", "steps")


def _params(node: ir.Node, rank: int | None) -> list[np.ndarray] | None:
    """(starts, ends, axes, steps) of a Slice as int64 vectors, axes non-negative."""
    if len(node.inputs) < 3:
        return None
    arrays = [const_array(v) for v in node.inputs[1:5]]
    if any(a is None for a in arrays[:2]) or any(
        v is not None and a is None for v, a in zip(node.inputs[3:5], arrays[2:], strict=False)
    ):
        return None
    starts = np.asarray(arrays[0], dtype=np.int64).reshape(-1)
    ends = np.asarray(arrays[1], dtype=np.int64).reshape(-1)
    axes_a = arrays[2] if len(arrays) > 2 else None
    steps_a = arrays[3] if len(arrays) > 3 else None
    axes = (
        np.arange(starts.size, dtype=np.int64) if axes_a is None else np.asarray(axes_a, np.int64).reshape(-1)
    )
    steps = np.ones(starts.size, np.int64) if steps_a is None else np.asarray(steps_a, np.int64).reshape(-1)
    if not starts.size == ends.size == axes.size == steps.size:
        return None
    if (axes < 0).any():
        if rank is None:
            return None
        axes = np.where(axes < 0, axes + rank, axes)
    return [starts, ends, axes, steps]


@dataclass
class SliceOfSlice:
    outer: ir.Node
    inner: ir.Node
    merged: list[np.ndarray]


class MergeSlices(RewritePass[SliceOfSlice]):
    name = "merge-slices"
    description = "Merge a Slice of a Slice on disjoint axes into one Slice (constant parameters, opset 10+)."
    anchors = ("Slice",)
    in_functions = False  # the merged parameters are new initializers

    def pattern(self, site: Site, node: ir.Node) -> SliceOfSlice | None:
        if site.opset < 10 or not node.inputs or node.inputs[0] is None:
            return None
        data = node.inputs[0]
        inner = data.producer()
        if not is_op(inner, "Slice") or inner.graph is not site.graph:
            return None
        return SliceOfSlice(node, inner, [])

    def check(self, site: Site, match: SliceOfSlice) -> str | None:
        data = match.outer.inputs[0]
        assert data is not None
        if data.is_graph_output() or len(data.uses()) != 1:
            return "the inner Slice's output is used elsewhere too"
        source = match.inner.inputs[0]
        rank = None if source is None or source.shape is None else len(source.shape)
        inner, outer = _params(match.inner, rank), _params(match.outer, rank)
        if source is None or inner is None or outer is None:
            return "a Slice parameter is not a constant (or a negative axis with an unknown rank)"
        if set(inner[2].tolist()) & set(outer[2].tolist()):
            return "the two Slices share an axis"
        match.merged = [np.concatenate([a, b]) for a, b in zip(inner, outer, strict=True)]
        return None

    def rewrite(self, site: Site, match: SliceOfSlice) -> str:
        outer, inner = match.outer, match.inner
        base = outer.outputs[0].name or outer.name or "slice"
        if len(outer.inputs) < 5:
            outer.resize_inputs(5)
        outer.replace_input_with(0, inner.inputs[0])
        for i, (what, array) in enumerate(zip(_PARAMS, match.merged, strict=True), start=1):
            outer.replace_input_with(i, new_initializer(site.graph, f"{base}_{what}", array))
        site.graph.remove(inner, safe=True)
        return "Slice pairs merged"
