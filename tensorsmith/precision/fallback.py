"""Which nodes lose the accuracy.

Two measures. ``sensitivity`` (INT8): each candidate node quantized *alone*, from the
cached calibration ranges, and the error that one node causes at the model's
outputs; it sees what a local measure misses, that noise added early is amplified by
every later layer (PP-OCRv4 det: no single node matters locally, its first six
pointwise convolutions together take the cosine from 0.94 to 0.99).

``rank_nodes`` (FP16, and to pick which nodes ``sensitivity`` measures on big models):
intermediate activations of the FP32 and lowered models.

Both models get every float tensor the FP32 graph computes added as a graph
output (the lowered models keep the FP32 tensor names: the Q/DQ quantizer and the
float16 converter add tensors around them and never rename them), run on a few
validation samples, and each tensor's relative L2 error is measured:
``err(t) = ||t_low - t_fp32|| / ||t_fp32||``. The error a node *adds* is the error
of its output minus the largest error among its activation inputs; the fallback
keeps the worst nodes in FP32 and checks the gate again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from tensorsmith.verify import ort_session, session_feeds

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
PASS_THROUGH = {"Relu", "Clip"}  # activations the Q/DQ quantizer may fold away


@dataclass
class NodeError:
    name: str
    op: str
    added: float  # error this node adds (relative L2 at its output minus at its inputs)
    output_error: float

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "error": self.added, "output_error": self.output_error}


def tensor_types(proto: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value (shape inference; inputs, outputs, value_info, initializers)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:
        inferred = proto
    g = inferred.graph
    types = {
        vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input) + list(g.output)
    }
    for t in g.initializer:
        types[t.name] = t.data_type
    return types


def with_outputs(proto: onnx.ModelProto, names: Iterable[str], types: dict[str, int]) -> bytes:
    """A copy of ``proto`` that also returns ``names`` (serialized, ready for onnxruntime)."""
    aug = onnx.ModelProto()
    aug.CopyFrom(proto)
    present = {o.name for o in aug.graph.output}
    produced = {o for n in aug.graph.node for o in n.output} | {i.name for i in aug.graph.input}
    for name in names:
        if name not in present and name in types and name in produced:
            aug.graph.output.append(helper.make_tensor_value_info(name, types[name], None))
    return aug.SerializeToString()


def activation_peaks(proto: onnx.ModelProto, samples: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Largest |value| of every float tensor of ``proto`` over ``samples``."""
    types = tensor_types(proto)
    inits = {t.name for t in proto.graph.initializer}
    names = [
        o for n in proto.graph.node for o in n.output if o and types.get(o) in FLOAT_TYPES and o not in inits
    ]
    sess = ort_session(with_outputs(proto, names, types))
    out_names = [o.name for o in sess.get_outputs()]
    peaks: dict[str, float] = {}
    for feeds in samples:
        values = sess.run(out_names, session_feeds(sess, feeds))
        for name, v in zip(out_names, values, strict=False):
            v = np.asarray(v)
            if v.dtype.kind == "f" and v.size:
                finite = v[np.isfinite(v)]
                peak = float(np.abs(finite).max()) if finite.size else math.inf
                if not np.isfinite(v).all():
                    peak = math.inf
                peaks[name] = max(peaks.get(name, 0.0), peak)
    return peaks


def rank_nodes(
    fp32: onnx.ModelProto,
    lowered: onnx.ModelProto,
    samples: list[dict[str, np.ndarray]],
    candidates: set[str],
    *,
    on_sample: Callable[[], None] | None = None,
) -> list[NodeError]:
    """Candidate nodes of ``lowered`` (names shared with ``fp32``), worst first."""
    t32 = tensor_types(fp32)
    tlow = tensor_types(lowered)
    inits = {t.name for t in fp32.graph.initializer} | {
        n.output[0] for n in fp32.graph.node if n.op_type == "Constant"
    }
    common = [
        o
        for n in fp32.graph.node
        for o in n.output
        if o and o not in inits and t32.get(o) in FLOAT_TYPES and tlow.get(o) in FLOAT_TYPES
    ]
    common += [i.name for i in fp32.graph.input if t32.get(i.name) in FLOAT_TYPES]
    s32 = ort_session(with_outputs(fp32, common, t32))
    slow = ort_session(with_outputs(lowered, common, tlow))
    names32 = [o.name for o in s32.get_outputs()]
    nameslow = {o.name for o in slow.get_outputs()}
    shared = [n for n in names32 if n in nameslow]
    num: dict[str, float] = dict.fromkeys(shared, 0.0)
    den: dict[str, float] = dict.fromkeys(shared, 0.0)
    for feeds in samples:
        ref = dict(zip(names32, s32.run(names32, session_feeds(s32, feeds)), strict=False))
        got = dict(zip(shared, slow.run(shared, session_feeds(slow, feeds)), strict=False))
        for n in shared:
            r = np.asarray(ref[n], dtype=np.float64)
            g = np.asarray(got[n], dtype=np.float64)
            if r.shape != g.shape:
                continue
            d = np.nan_to_num(g - r, nan=1e30, posinf=1e30, neginf=-1e30)
            num[n] += float(np.sum(d * d))
            den[n] += float(np.sum(r * r))
        if on_sample:
            on_sample()
    err = {n: math.sqrt(num[n] / den[n]) if den[n] > 0 else (0.0 if num[n] == 0 else 1.0) for n in shared}

    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in fp32.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)

    def out_error(node: onnx.NodeProto) -> float | None:
        vals = [err[o] for o in node.output if o in err]
        if vals:
            return max(vals)
        # the quantizer may have folded a following Relu/Clip into this node's output
        for o in node.output:
            users = consumers.get(o, [])
            if len(users) == 1 and users[0].op_type in PASS_THROUGH:
                vals = [err[x] for x in users[0].output if x in err]
                if vals:
                    return max(vals)
        return None

    ranked = []
    for node in fp32.graph.node:
        if node.name not in candidates:
            continue
        e_out = out_error(node)
        if e_out is None:
            continue
        e_in = max((err[i] for i in node.input if i in err), default=0.0)
        ranked.append(NodeError(node.name, node.op_type, max(0.0, e_out - e_in), e_out))
    ranked.sort(key=lambda x: (-x.added, -x.output_error))
    return ranked


def output_error(refs: list[dict[str, np.ndarray]], gots: list[dict[str, np.ndarray]]) -> float:
    """Relative L2 error over every float output and sample: ``||got - ref|| / ||ref||``."""
    num = den = 0.0
    for ref, got in zip(refs, gots, strict=False):
        for name, r in ref.items():
            r = np.asarray(r)
            if r.dtype.kind != "f" or name not in got:
                continue
            d = np.nan_to_num(
                np.asarray(got[name], np.float64) - r.astype(np.float64), nan=1e30, posinf=1e30, neginf=-1e30
            )
            num += float(np.sum(d * d))
            den += float(np.sum(r.astype(np.float64) ** 2))
    return math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else 1.0)


def sensitivity(
    candidates: list[tuple[str, str]],
    build_one: Callable[[str], bytes | str],
    refs: list[dict[str, np.ndarray]],
    samples: list[dict[str, np.ndarray]],
    *,
    on_node: Callable[[], None] | None = None,
) -> list[NodeError]:
    """``(name, op)`` candidates, worst first, by the output error of quantizing each alone.

    ``build_one(name)`` returns the model (path or bytes) with only that node
    quantized; it runs with onnxruntime's optimizations off (the Q/DQ arithmetic,
    no kernel choice in the way), on ``samples``, against the FP32 outputs ``refs``.
    """
    out = []
    for name, op in candidates:
        try:
            model = build_one(name)
            sess = ort_session(model)
            names = [o.name for o in sess.get_outputs()]
            gots = [dict(zip(names, sess.run(names, session_feeds(sess, s)), strict=False)) for s in samples]
        except Exception:  # the quantizer cannot quantize this node alone: it is not ranked
            gots = None
        if gots is not None:
            err = output_error(refs, gots)
            out.append(NodeError(name, op, err, err))
        if on_node:
            on_node()
    out.sort(key=lambda x: -x.added)
    return out
