"""FP16: float16 types in the graph itself, with the parts that would break kept FP32.

The conversion is onnxruntime's own converter
(``onnxruntime.transformers.float16.convert_float_to_float16``), chosen by
measurement over onnxconverter-common's (``bench/precision.py --fp16-converters``):
on the 9 sample and third-party models tried, onnxconverter-common 1.16 wrote
models that onnxruntime refuses to load on 2 of them (a ``Cast(to=FLOAT)`` whose
output it retyped to float16, upstream issues #320/#304); onnxruntime's failed
``onnx.checker`` on 8 and did not load on 2, all for structural defects that are
repaired here generically, after which all 9 load:

* it appends the Cast nodes it inserts at the end of the node list (the graph is
  no longer topologically sorted: ``onnx.checker`` refuses it) -> re-sorted;
* a float16 tensor read by two FP32-kept nodes gets two Cast nodes with the same
  name and output (invalid SSA: onnxruntime refuses to load it) -> merged;
* between two FP32-kept nodes it still routes the tensor through float16
  (float32 -> float16 -> float32: a kept value of 1e6 becomes inf) -> removed.

Then every Cast is checked against the type its output is declared with, and
the model must pass ``onnx.checker`` and strict type inference.

Kept FP32 (the ``node_block_list``):

* the ops onnxruntime's converter blocks by default, and ops known to overflow
  or lose too much in float16 whatever the data: Pow, ReduceSumSquare,
  ReduceL2, ReduceLogSum(Exp), ReduceProd, CumSum, Range;
* every node that reads an initializer outside the float16 range (|x| > 65504),
  or one whose non-zero values would all flush to zero (instead of the
  converter's silent clamping);
* every node whose FP32 output on the calibration/validation samples exceeds
  65504/8 in magnitude (an 8x margin for inputs not seen here).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from tensorsmith.errors import ConversionError, short

FP16_MAX = 65504.0
FP16_TINY = 2.98e-8  # below this a value rounds to 0 in float16
ACTIVATION_LIMIT = FP16_MAX / 8
CONVERTER = "onnxruntime.transformers.float16"

# Ops that overflow or lose too much in float16 regardless of the data seen.
KNOWN_FP16_BREAKERS = {
    "Pow",
    "ReduceSumSquare",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceProd",
    "CumSum",
    "Range",
}


@dataclass
class KeptNode:
    name: str
    op: str
    reason: str
    error: float | None = None

    def to_dict(self) -> dict:
        d: dict[str, str | float] = {"name": self.name, "op": self.op, "reason": self.reason}
        if self.error is not None:
            d["error"] = self.error
        return d


@dataclass
class Fp16Result:
    model: onnx.ModelProto
    kept: list[KeptNode] = field(default_factory=list)
    repairs: dict[str, int] = field(default_factory=dict)


def ensure_node_names(proto: onnx.ModelProto) -> int:
    """Give every node of the main graph a unique, non-empty name (needed to exclude nodes by name)."""
    seen: set[str] = set()
    renamed = 0
    for i, node in enumerate(proto.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        base, k = name, 1
        while name in seen:
            name = f"{base}__{k}"
            k += 1
        if name != node.name:
            node.name = name
            renamed += 1
        seen.add(name)
    return renamed


def _initializer_problems(proto: onnx.ModelProto) -> dict[str, str]:
    """Initializer name -> why float16 cannot hold it."""
    bad: dict[str, str] = {}
    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    t = onnx.TensorProto()
                    t.CopyFrom(a.t)
                    t.name = node.output[0]
                    tensors.append(t)
    for t in tensors:
        if t.data_type != TensorProto.FLOAT or t.data_location == TensorProto.EXTERNAL:
            continue
        arr = numpy_helper.to_array(t)
        finite = arr[np.isfinite(arr)]
        if finite.size == 0:
            continue
        big = float(np.abs(finite).max())
        if big > FP16_MAX:
            bad[t.name] = f"initializer {t.name} holds {big:.3g}, beyond the float16 range"
            continue
        nz = np.abs(finite[finite != 0])
        if nz.size and float(nz.max()) < FP16_TINY:
            bad[t.name] = f"initializer {t.name} would flush to zero in float16"
    return bad


def already_float16(proto: onnx.ModelProto) -> str:
    """Why ``proto`` already computes in float16 (most of its float weight values are float16,
    initializers and Constant nodes of the main graph), or ``""``."""
    counts = {TensorProto.FLOAT: 0, TensorProto.FLOAT16: 0}
    tensors = list(proto.graph.initializer) + [
        a.t for n in proto.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"
    ]
    for t in tensors:
        if t.data_type in counts:
            counts[t.data_type] += int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
    half, full = counts[TensorProto.FLOAT16], counts[TensorProto.FLOAT]
    if half and half > full:
        return f"{half} of its {half + full} float weight values are float16"
    return ""


def plan_blocklist(
    proto: onnx.ModelProto,
    activation_max: dict[str, float] | None = None,
    extra_nodes: dict[str, str] | None = None,
) -> list[KeptNode]:
    """The nodes to keep FP32, each with its reason."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    blocked_ops = set(DEFAULT_OP_BLOCK_LIST) | KNOWN_FP16_BREAKERS
    bad_inits = _initializer_problems(proto)
    activation_max = activation_max or {}
    kept: dict[str, KeptNode] = {}
    for node in proto.graph.node:
        if node.op_type in blocked_ops:
            kept[node.name] = KeptNode(
                node.name, node.op_type, f"{node.op_type} is kept FP32 (float16 overflow/precision)"
            )
            continue
        if node.op_type == "Constant":
            continue
        hit = next((bad_inits[i] for i in node.input if i in bad_inits), None)
        if hit:
            kept[node.name] = KeptNode(node.name, node.op_type, hit)
            continue
        peak = max((activation_max.get(o, 0.0) for o in node.output), default=0.0)
        if peak > ACTIVATION_LIMIT:
            kept[node.name] = KeptNode(
                node.name,
                node.op_type,
                f"output reaches {peak:.3g} on the samples (float16 limit {FP16_MAX:g})",
            )
    for name, reason in (extra_nodes or {}).items():
        node = next((n for n in proto.graph.node if n.name == name), None)
        if node is not None and name not in kept:
            kept[name] = KeptNode(name, node.op_type, reason)
    # Constant nodes feeding only blocked nodes keep their float tensors by the converter's own rule.
    return list(kept.values())


def convert(
    proto: onnx.ModelProto,
    *,
    keep_io: bool = True,
    activation_max: dict[str, float] | None = None,
    extra_nodes: dict[str, str] | None = None,
) -> Fp16Result:
    """Return a float16 copy of ``proto`` (which must have unique node names)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    src = onnx.ModelProto()
    src.CopyFrom(proto)
    # stale value_info (one naming an initializer, say) misleads the converter: it retypes the
    # value_info to float16 while the initializer, read only by FP32-kept nodes, stays float
    del src.graph.value_info[:]
    kept = plan_blocklist(src, activation_max, extra_nodes)
    logging.getLogger("onnxruntime.transformers.float16").setLevel(logging.ERROR)
    try:
        out = convert_float_to_float16(
            src,
            keep_io_types=keep_io,
            op_block_list=list(set(DEFAULT_OP_BLOCK_LIST) | KNOWN_FP16_BREAKERS),
            node_block_list=[k.name for k in kept],
        )
    except Exception as exc:
        raise ConversionError(f"float16 conversion failed: {type(exc).__name__}: {short(exc, 200)}") from exc
    repairs = repair(out)
    check(out)
    return Fp16Result(out, kept, repairs)


def repair(proto: onnx.ModelProto) -> dict[str, int]:
    """Fix the converter's known defects in place (see module doc)."""
    graph = proto.graph
    # 0. Casts the converter wrote into the main graph for a kept node inside an If/Loop
    #    body, reading a value that only exists in that body: moved into it
    homed = _home_misplaced(graph)
    # 1. duplicate Cast nodes (same output) -> keep one
    seen_out: dict[str, onnx.NodeProto] = {}
    keep_nodes = []
    merged = 0
    for node in graph.node:
        if node.op_type == "Cast" and len(node.output) == 1 and node.output[0] in seen_out:
            other = seen_out[node.output[0]]
            if other.op_type == "Cast" and list(other.input) == list(node.input):
                merged += 1
                continue
            raise ConversionError(f"float16 conversion produced two producers of {node.output[0]!r}")
        for o in node.output:
            seen_out[o] = node
        keep_nodes.append(node)
    # unique node names (a merged Cast may still share its name with another node)
    names: set[str] = set()
    renamed = 0
    for node in keep_nodes:
        base, k = node.name, 1
        while node.name in names:
            node.name = f"{base}__{k}"
            k += 1
            renamed += 1
        names.add(node.name)
    # 2. float32 -> float16 -> float32 round trips between two FP32-kept nodes: the converter
    #    routes every kept node's output through float16, which overflows (1e6 -> inf) and rounds
    declared = {vi.name: vi.type.tensor_type.elem_type for vi in list(graph.value_info) + list(graph.input)}
    producer = {o: n for n in keep_nodes for o in n.output}
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    for node in keep_nodes:
        if node.op_type != "Cast" or _to(node) != TensorProto.FLOAT or node.output[0] in outputs:
            continue
        src = producer.get(node.input[0])
        if (
            src is not None
            and src.op_type == "Cast"
            and _to(src) == TensorProto.FLOAT16
            and declared.get(src.input[0]) == TensorProto.FLOAT
        ):
            rename[node.output[0]] = src.input[0]
    if rename:
        for node in keep_nodes:
            for i, name in enumerate(node.input):
                if name in rename:
                    node.input[i] = rename[name]
        used = {i for n in keep_nodes for i in n.input} | outputs
        while True:  # drop the Casts nothing reads any more
            dead = [n for n in keep_nodes if n.op_type == "Cast" and not any(o in used for o in n.output)]
            if not dead:
                break
            keep_nodes = [n for n in keep_nodes if n not in dead]
            used = {i for n in keep_nodes for i in n.input} | outputs
    # 3. topological order, in the main graph and in every If/Loop/Scan body (the converter
    #    appends its Casts at the end of a body too: silero-vad's If branches)
    ordered = _topo_sort(graph, keep_nodes)
    del graph.node[:]
    graph.node.extend(ordered)
    for sub in _subgraphs(graph):
        resorted = _topo_sort(sub, list(sub.node))
        del sub.node[:]
        sub.node.extend(resorted)
    # 4. value_info: one entry per name
    vi_seen: dict[str, int] = {}
    vis = []
    for vi in graph.value_info:
        if vi.name in vi_seen:
            continue
        vi_seen[vi.name] = 1
        vis.append(vi)
    dropped_vi = len(graph.value_info) - len(vis)
    del graph.value_info[:]
    graph.value_info.extend(vis)
    # 5. Cast nodes whose 'to' disagrees with the declared type of their output
    declared = {vi.name: vi.type.tensor_type.elem_type for vi in list(graph.value_info) + list(graph.output)}
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16}
    fixed_casts = 0
    for node in graph.node:
        if node.op_type != "Cast":
            continue
        want = declared.get(node.output[0])
        for attr in node.attribute:
            if attr.name == "to" and want in floats and attr.i in floats and attr.i != want:
                attr.i = want
                fixed_casts += 1
    return {
        "casts_moved_into_subgraphs": homed,
        "merged_casts": merged,
        "renamed_nodes": renamed,
        "round_trips_removed": len(rename),
        "value_info_dropped": dropped_vi,
        "cast_to_fixed": fixed_casts,
    }


def _to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _topo_sort(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    producers = {}
    for idx, node in enumerate(nodes):
        for o in node.output:
            producers[o] = idx
    deps: list[set[int]] = []
    users: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
    for idx, node in enumerate(nodes):
        needed = set()
        for name in list(node.input) + _subgraph_inputs(node):
            if name in available or name not in producers:
                continue
            needed.add(producers[name])
        needed.discard(idx)
        deps.append(needed)
        for d in needed:
            users[d].append(idx)
    import heapq

    ready = [i for i, d in enumerate(deps) if not d]
    heapq.heapify(ready)
    order = []
    remaining = [len(d) for d in deps]
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        raise ConversionError("float16 conversion produced a graph with a cycle")
    return [nodes[i] for i in order]


def _home_misplaced(graph: onnx.GraphProto) -> int:
    """Move main-graph nodes whose inputs are produced only inside one subgraph into it."""
    moved = 0
    while True:
        available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
        available |= {o for n in graph.node for o in n.output}
        inner: dict[str, onnx.GraphProto] = {}
        for sub in _subgraphs(graph):
            for n in sub.node:
                for o in n.output:
                    inner.setdefault(o, sub)
        move = None
        for node in graph.node:
            missing = [i for i in node.input if i not in available]
            homes = {id(inner[i]): inner[i] for i in missing if i in inner}
            if missing and len(homes) == 1 and all(i in inner for i in missing):
                move = (node, next(iter(homes.values())))
                break
        if move is None:
            return moved
        node, home = move
        graph.node.remove(node)
        home.node.append(node)  # re-sorted with its new graph below
        moved += 1


def _subgraphs(graph: onnx.GraphProto):
    """Every subgraph below ``graph`` (If branches, Loop/Scan bodies), depth first."""
    for node in graph.node:
        for attr in node.attribute:
            for g in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                yield g
                yield from _subgraphs(g)


def _subgraph_inputs(node: onnx.NodeProto) -> list[str]:
    """Outer-scope names a node's subgraphs read."""
    names: list[str] = []
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            local = {i.name for i in g.input} | {i.name for i in g.initializer}
            for n in g.node:
                local.update(n.output)
            for n in g.node:
                names.extend(i for i in n.input if i and i not in local)
                names.extend(i for i in _subgraph_inputs(n) if i not in local)
    return names


def check(proto: onnx.ModelProto) -> None:
    """``onnx.checker`` plus strict type inference: a Cast inconsistent with its output fails here."""
    try:
        onnx.checker.check_model(proto)
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except Exception as exc:
        raise ConversionError(f"the float16 model is not valid ONNX: {short(exc, 200)}") from exc
