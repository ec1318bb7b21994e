"""TensorRT lint rules for FP16: where a graph computing in FP16 overflows."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from tensorsmith.lint.findings import Finding
from tensorsmith.lint.trt_index import GraphIndex, node_attr, owner_of

_DT = TensorProto
FP16_MAX = 65504.0
_SUM_REDUCE = {"ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceProd", "ReduceLogSumExp"}

# -- FP16 ----------------------------------------------------------------------


def _fp16_node(idx: GraphIndex, n: onnx.NodeProto, weak_fp16: bool) -> bool:
    dts = [idx.dtype.get(x) for x in [*n.input, *n.output] if x]
    if _DT.FLOAT16 in dts:
        return True
    return weak_fp16 and _DT.FLOAT in dts


def check_fp16(idx: GraphIndex, weak_fp16: bool, findings: list[Finding]) -> None:
    any_fp16 = weak_fp16 or any(dt == _DT.FLOAT16 for dt in idx.dtype.values())
    if not any_fp16:
        return
    # constants that become (or are) FP16
    for name, t in idx.const.items():
        if t.data_type not in (_DT.FLOAT, _DT.DOUBLE, _DT.FLOAT16):
            continue
        into_fp16 = weak_fp16 and t.data_type in (_DT.FLOAT, _DT.DOUBLE)
        into_fp16 = into_fp16 or any(
            c.op == "Cast" and node_attr(c.node, "to") == _DT.FLOAT16 for c, _ in idx.consumers.get(name, [])
        )
        arr = None
        if into_fp16 or t.data_type == _DT.FLOAT16:
            arr = idx.array(name)
        if arr is None or not arr.size:
            continue
        a = np.asarray(arr, dtype=np.float64)
        if t.data_type == _DT.FLOAT16:
            bad = np.isinf(a)
            if bad.any():
                findings.append(
                    Finding(
                        "fp16-range",
                        "warning",
                        f"FP16 constant holds {int(bad.sum())} inf value(s) (overflowed when it was converted?)",
                        tensor=name,
                        node=owner_of(idx, name),
                    )
                )
            continue
        finite = np.isfinite(a)
        over = finite & (np.abs(a) > FP16_MAX)
        if over.any():
            findings.append(
                Finding(
                    "fp16-range",
                    "warning",
                    f"{int(over.sum())} value(s) beyond +-65504 (largest {float(np.abs(a[over]).max()):.4g}) become "
                    "inf in FP16",
                    tensor=name,
                    node=owner_of(idx, name),
                )
            )
    layernorm_reduces: set[int] = set()
    for ref in idx.nodes:
        n = ref.node
        if not _fp16_node(idx, n, weak_fp16):
            continue
        if _is_square(idx, n):
            reduces = [
                c for c, _ in idx.consumers.get(n.output[0], []) if c.op in ("ReduceMean", "ReduceSum")
            ]
            if reduces:
                layernorm_reduces.update(id(r.node) for r in reduces)
                findings.append(
                    Finding(
                        "fp16-layernorm",
                        "warning",
                        "squares summed by a reduction (a decomposed LayerNorm/RMSNorm variance): they overflow "
                        "FP16 once |x| > 255; use LayerNormalization (opset >= 17) or keep this subgraph in FP32",
                        node=ref.label,
                        op=n.op_type,
                    )
                )
    for ref in idx.nodes:
        n = ref.node
        if not _fp16_node(idx, n, weak_fp16):
            continue
        if n.op_type in _SUM_REDUCE and id(n) not in layernorm_reduces:
            extent = _reduced_extent(idx, n)
            size = f" over {extent} elements" if extent else ""
            findings.append(
                Finding(
                    "fp16-reduce",
                    "warning",
                    f"{n.op_type}{size} in FP16 can exceed 65504; keep it in FP32 if the values are large",
                    node=ref.label,
                    op=n.op_type,
                )
            )
        elif n.op_type == "Exp" and not _max_subtracted(idx, n.input[0]):
            sums = [c for c, _ in idx.consumers.get(n.output[0], []) if c.op in ("ReduceSum",)]
            if sums:
                findings.append(
                    Finding(
                        "fp16-softmax",
                        "warning",
                        "hand-written softmax without subtracting the max: exp() overflows FP16 for "
                        "inputs above 11.09; use Softmax or subtract ReduceMax first",
                        node=ref.label,
                        op="Exp",
                    )
                )


def _is_square(idx: GraphIndex, n: onnx.NodeProto) -> bool:
    if n.op_type == "Pow" and len(n.input) == 2:
        e = idx.array(n.input[1])
        return e is not None and e.size == 1 and float(e.reshape(-1)[0]) == 2.0
    return n.op_type == "Mul" and len(n.input) == 2 and n.input[0] == n.input[1]


_PASS_THROUGH = {"Expand", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Cast", "Flatten", "Transpose"}


def _through(idx: GraphIndex, name: str, depth: int = 6):
    """The producer of ``name``, looking through shape-only ops (Expand, Reshape, ...)."""
    p = idx.producer.get(name)
    while p is not None and p.op in _PASS_THROUGH and depth > 0 and p.node.input:
        p = idx.producer.get(p.node.input[0])
        depth -= 1
    return p


def _max_subtracted(idx: GraphIndex, name: str) -> bool:
    p = idx.producer.get(name)
    if p is None or p.op != "Sub" or len(p.node.input) < 2:
        return False
    q = _through(idx, p.node.input[1])
    return q is not None and q.op in ("ReduceMax", "Max", "GlobalMaxPool")


def _reduced_extent(idx: GraphIndex, n: onnx.NodeProto) -> int | None:
    shape = idx.shape.get(n.input[0])
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    axes = node_attr(n, "axes")
    if axes is None and len(n.input) > 1 and n.input[1]:
        arr = idx.array(n.input[1])
        axes = None if arr is None else [int(a) for a in arr.reshape(-1)]
    if axes is None or len(axes) == 0:
        if node_attr(n, "noop_with_empty_axes", 0):
            return None
        axes = list(range(len(shape)))
    total = 1
    for a in axes:
        total *= shape[a]
    return total
