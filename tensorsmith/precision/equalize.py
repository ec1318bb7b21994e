"""Cross-layer equalization (CLE) of Conv -> [activation] -> Conv pairs, before INT8.

Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
Correction" (ICCV 2019), as Qualcomm AIMET implements it
(``aimet_common/cross_layer_equalization.py``, ``compute_scaling_params_for_conv``):
for two layers ``y = W2 f(W1 x + b1) + b2`` with ``f`` positively homogeneous
(``f(x / s) = f(x) / s`` for ``s > 0``), scaling output channel ``c`` of the first
layer by ``1 / s_c`` and input channel ``c`` of the second by ``s_c`` computes the
same function. With ``s_c = sqrt(r1_c / r2_c)`` (``r1``: range of the first layer's
output-channel weights, ``r2``: of the second's input-channel weights) both ranges
become ``sqrt(r1_c * r2_c)``: per-channel ranges that were badly mismatched (the
depthwise layers of MobileNet/EfficientNet-class nets) move towards each other, which
is what per-tensor quantization of the weights and of the activation in between needs.

Handled: plain Conv -> Conv, depthwise -> pointwise, pointwise -> depthwise, any
grouped convolution (input channel ``c`` of a grouped Conv reaches the outputs of its
group only); through Relu, LeakyRelu and PRelu (slopes are unchanged by a positive
scale), Clip without an upper bound, and bounded activations: ReLU6 (``Clip(0, 6)``)
and ``Min(x, bound)`` with a scalar or per-channel constant bound. After channel ``c``
is divided by ``s_c`` the bound must be ``6 / s_c``: Clip's bounds are scalars in every
opset, so a scaled ReLU6 is written ``Min(Relu(x), bound[C, 1, 1])`` (exact in FP32;
one elementwise op more, which TensorRT fuses into the convolution's epilogue and
onnxruntime runs as a float op between the int8 layers: README "Equalization,
smoothing and bias correction" measures both). Behind a bound the scales are kept
``>= 1``: a channel scaled up would get a bound above 6 and widen the per-tensor range
of the activation (measured on EfficientNet-Lite0 with the TensorRT target: cosine vs
FP32 0.979 without CLE, 0.883 with unrestricted scales, 0.980 with ``s >= 1``). Left alone, with the reason in the
report:

* HardSwish, HardSigmoid, Sigmoid, SiLU (Mul of Sigmoid), Tanh, Gelu, ...: not
  positively homogeneous (``f(x / s) != f(x) / s``); a Clip with a non-zero lower bound.
* a Conv whose output (or activation output) has another consumer or is a graph
  output, weights shared with another node, weights or bias not constant.

Passes run over every chain ``A -> B -> C`` until the scales settle (AIMET iterates the
same way); the scale of each channel stays within [1e-4, 1e4] and a channel whose weights
are all zero keeps scale 1.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

HOMOGENEOUS = {"Relu", "LeakyRelu", "PRelu"}
NOT_HOMOGENEOUS = {
    "HardSwish": "HardSwish is not positively homogeneous",
    "HardSigmoid": "HardSigmoid is not positively homogeneous",
    "Sigmoid": "Sigmoid is not positively homogeneous",
    "Tanh": "Tanh is not positively homogeneous",
    "Mul": "Mul after the Conv (SiLU/Swish or a gate) is not positively homogeneous in the Conv's output",
    "Elu": "Elu is not positively homogeneous",
    "Selu": "Selu is not positively homogeneous",
    "Gelu": "Gelu is not positively homogeneous",
    "Softplus": "Softplus is not positively homogeneous",
    "Add": "an Add (residual) between the convolutions: its other input would need the same scale",
}
SCALE_MIN, SCALE_MAX = 1e-4, 1e4
ITERATIONS = 20  # at most; stops once no channel scale moves by more than TOLERANCE
TOLERANCE = 1e-3
ABSORB_MARGIN = 0.25


@dataclass
class Pair:
    first: str
    second: str
    via: str | None  # activation op between them, or None
    range_ratio_before: float  # worst max/min per-channel weight range of the first layer
    range_ratio_after: float = 0.0
    scale_min: float = 1.0
    scale_max: float = 1.0


@dataclass
class Result:
    pairs: list[Pair] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"first", "second", "reason"}

    def describe(self) -> dict:
        return {
            "pairs": [
                {
                    "first": p.first,
                    "second": p.second,
                    "via": p.via,
                    "first_range_ratio_before": round(p.range_ratio_before, 3),
                    "first_range_ratio_after": round(p.range_ratio_after, 3),
                    "scale_min": round(p.scale_min, 5),
                    "scale_max": round(p.scale_max, 5),
                }
                for p in self.pairs
            ],
            "skipped": self.skipped,
        }


class Graph:
    """Consumers and initializers of a graph (ONNX protobuf), built once."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        g = proto.graph
        self.proto = proto
        self.inits = {t.name: t for t in g.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        self.uses: dict[str, int] = defaultdict(int)
        for n in g.node:
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
                    self.uses[i] += 1
        self.outputs = {o.name for o in g.output}
        self.constant_nodes = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
        self.producers = {o: n for n in g.node for o in n.output}

    def constant(self, name: str, depth: int = 8) -> np.ndarray | None:
        """The value of ``name`` when it is computed from constants only (an initializer, a
        Constant, or a small chain of ops on them: a Pad's pads after an export's Reshape),
        evaluated with onnx's reference evaluator; None otherwise."""
        arr = self.array(name)
        if arr is not None:
            return arr
        node = self.producers.get(name)
        if node is None or depth == 0 or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            return None
        if node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t) if node.attribute[0].name == "value" else None
        feeds = {}
        for i in node.input:
            if i:
                v = self.constant(i, depth - 1)
                if v is None or v.size > 4096:
                    return None
                feeds[i] = v
        from onnx.reference import ReferenceEvaluator

        try:
            outs = list(ReferenceEvaluator(node).run(None, feeds))
        except Exception:  # an op the reference evaluator does not run: not a known constant
            return None
        return np.asarray(outs[list(node.output).index(name)])

    def array(self, name: str) -> np.ndarray | None:
        t = self.inits.get(name)
        return numpy_helper.to_array(t) if t is not None else None

    def need(self, name: str) -> np.ndarray:
        """The initializer ``name`` as float64 (callers checked it exists)."""
        return numpy_helper.to_array(self.inits[name]).astype(np.float64)

    def set_array(self, name: str, value: np.ndarray) -> None:
        t = self.inits[name]
        t.CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(t).dtype), name))

    def only_consumer(self, value: str) -> onnx.NodeProto | None:
        users = self.consumers.get(value, [])
        if len(users) != 1 or value in self.outputs:
            return None
        return users[0]


def attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _conv_ok(g: Graph, node: onnx.NodeProto) -> str | None:
    """None when ``node`` is a Conv whose weights (and bias) are constants only it uses."""
    if node.op_type != "Conv":
        return f"{node.op_type} is not a Conv"
    if len(node.input) < 2 or node.input[1] not in g.inits:
        return "weights are not a constant initializer"
    if g.uses[node.input[1]] != 1:
        return "weights shared with another node"
    if len(node.input) > 2 and node.input[2]:
        if node.input[2] not in g.inits or g.uses[node.input[2]] != 1:
            return "bias is not a constant initializer of its own"
    w = g.array(node.input[1])
    if w is None or w.dtype != np.float32 or w.ndim < 3:
        return "weights are not float32 with a spatial kernel"
    return None


def _clip_bounds(g: Graph, node: onnx.NodeProto) -> tuple[float | None, float | None]:
    lo, hi = attr(node, "min", None), attr(node, "max", None)
    vals: list[float | None] = []
    for idx in (1, 2):
        if len(node.input) > idx and node.input[idx]:
            arr = g.array(node.input[idx])
            if arr is None and node.input[idx] in g.constant_nodes:
                arr = numpy_helper.to_array(g.constant_nodes[node.input[idx]].attribute[0].t)
            vals.append(float(arr) if arr is not None else float("nan"))
        else:
            vals.append(None)
    lo = vals[0] if vals[0] is not None else lo
    hi = vals[1] if vals[1] is not None else hi
    return lo, hi


def activation_reason(g: Graph, act: onnx.NodeProto) -> str | None:
    """None when the activation is positively homogeneous, possibly with an upper bound
    (``bound_of`` says which); else why not."""
    if act.op_type in HOMOGENEOUS:
        if act.op_type == "PRelu" and (len(act.input) < 2 or act.input[1] not in g.inits):
            return "PRelu slope is not a constant"
        return None
    if act.op_type == "Clip":
        lo, hi = _clip_bounds(g, act)
        if (lo is not None and lo != lo) or (hi is not None and hi != hi):
            return "Clip bounds are not constants"
        if lo not in (None, 0.0) and not (lo is not None and lo < -3e38):
            return f"Clip with lower bound {lo} is not positively homogeneous"
        if hi is not None and hi <= 0:
            return f"Clip with upper bound {hi} <= 0"
        return None
    if act.op_type == "Min":
        return None if min_bound(g, act) is not None else "Min with no constant bound"
    if act.op_type == "Pad":
        return _pad_reason(g, act)
    return NOT_HOMOGENEOUS.get(act.op_type, f"{act.op_type} between the convolutions is not handled")


def _pad_reason(g: Graph, pad: onnx.NodeProto) -> str | None:
    """None for a zero-valued constant Pad of the spatial axes only (``pad(x / s) == pad(x) / s``
    channel by channel); else why not."""
    if attr(pad, "mode", b"constant") not in (b"constant", "constant"):
        return "Pad that is not constant mode"
    if len(pad.input) > 3 and pad.input[3]:
        return "Pad with axes"
    if len(pad.input) > 2 and pad.input[2]:
        value = g.constant(pad.input[2])
        if value is None or np.any(value != 0):
            return "Pad with a non-zero or non-constant value"
    pads = (
        g.constant(pad.input[1]) if len(pad.input) > 1 and pad.input[1] else np.asarray(attr(pad, "pads", []))
    )
    if pads is None or pads.size == 0 or pads.size % 2:
        return "Pad whose pads are not a constant"
    r = pads.size // 2
    if r < 2 or np.any(pads[[0, 1, r, r + 1]] != 0):
        return "Pad of the batch or channel axis"
    return None


def min_bound(g: Graph, node: onnx.NodeProto) -> tuple[str, np.ndarray] | None:
    """(the other input, its value) for a two-input Min with one constant input, else None."""
    if node.op_type != "Min" or len(node.input) != 2:
        return None
    for i, name in enumerate(node.input):
        arr = g.array(name)
        if arr is None and name in g.constant_nodes:
            arr = numpy_helper.to_array(g.constant_nodes[name].attribute[0].t)
        if arr is not None and arr.dtype == np.float32:
            return node.input[1 - i], arr
    return None


def is_bounded(g: Graph, act: onnx.NodeProto) -> bool:
    """Clip with a finite upper bound, or Min with a constant: the bound must follow the scale."""
    if act.op_type == "Clip":
        hi = _clip_bounds(g, act)[1]
        return hi is not None and hi < 3e38
    return act.op_type == "Min"


def _bound_fits(bound: np.ndarray, channels: int, rank: int, axis: int) -> bool:
    """A Min constant that broadcasts per tensor, or per channel along ``axis`` of a rank-``rank``
    tensor (the scaled bound is written back in that form)."""
    if bound.size == 1:
        return True
    if bound.size != channels or bound.ndim > rank:
        return False
    full = (1,) * (rank - bound.ndim) + bound.shape
    return full[axis] == channels


def walk_activations(
    g: Graph, value: str, channels: int, rank: int, axis: int
) -> tuple[list[onnx.NodeProto], onnx.NodeProto | None, str | None]:
    """From a producer's output: (the activations passed, the first other consumer, why the
    walk stopped at an activation that is not positively homogeneous, or None). At most one
    homogeneous activation and one bound (``Clip(0, 6)``, or ``Relu`` then ``Min``), and a
    zero Pad of the spatial axes (EfficientNet's "same" padding before a depthwise Conv)."""
    acts: list[onnx.NodeProto] = []
    nxt = g.only_consumer(value)
    while nxt is not None and len(acts) < 3:
        if nxt.op_type in ("Conv", "Gemm", "MatMul"):
            return acts, nxt, None
        why = activation_reason(g, nxt)
        if why is None and nxt.op_type == "Min":
            mb = min_bound(g, nxt)
            if mb is None or not _bound_fits(mb[1], channels, rank, axis) or mb[0] != nxt.input[0]:
                why = "Min bound does not broadcast per channel"
        if why is None and is_bounded(g, nxt) and any(is_bounded(g, a) for a in acts):
            why = "two bounds in a row"
        if why is None and nxt.op_type != "Pad" and any(a.op_type == "Pad" for a in acts):
            why = f"{nxt.op_type} after a Pad"
        if why is not None:
            after = g.only_consumer(nxt.output[0])
            return [*acts, nxt], after, why
        acts.append(nxt)
        nxt = g.only_consumer(nxt.output[0])
    if nxt is not None and nxt.op_type in ("Conv", "Gemm", "MatMul"):
        return acts, nxt, None
    return acts, None, None


def find_pairs(proto: onnx.ModelProto) -> tuple[list[tuple[str, str, str | None]], list[dict]]:
    """((first, second, activations between them joined by '+', or None) for every
    equalizable Conv pair, skipped pairs with why)."""
    g = Graph(proto)
    pairs: list[tuple[str, str, str | None]] = []
    skipped: list[dict] = []
    for a in g.proto.graph.node:
        if a.op_type != "Conv" or _conv_ok(g, a) is not None:
            continue
        w = g.array(a.input[1])
        assert w is not None  # _conv_ok
        acts, nxt, why = walk_activations(g, a.output[0], w.shape[0], w.ndim, 1)
        if nxt is None or nxt.op_type != "Conv":
            continue
        via = "+".join(x.name for x in acts) or None
        if why is not None:
            skipped.append({"first": a.name, "second": nxt.name, "via": acts[-1].op_type, "reason": why})
            continue
        why = _conv_ok(g, nxt)
        if why is not None:
            skipped.append({"first": a.name, "second": nxt.name, "reason": f"second layer: {why}"})
            continue
        pairs.append((a.name, nxt.name, via))
    return pairs, skipped


def scale_bounds(proto: onnx.ModelProto, g: Graph, acts: list[str], s: np.ndarray, shape: tuple) -> None:
    """After the producer's output channel c was divided by ``s[c]``: a bound in ``acts`` becomes
    ``bound / s`` per channel (``shape``: the bound's broadcast shape). ReLU6 (``Clip(0, b)``)
    becomes ``Relu`` + ``Min(., b / s)``; ``Clip(-inf, b)`` becomes ``Min``; a ``Min`` constant is
    rescaled (a copy of its own when shared)."""
    nodes = {n.name: n for n in proto.graph.node}
    for name in acts:
        act = nodes[name]
        if not is_bounded(g, act):
            continue
        if act.op_type == "Min":
            mb = min_bound(g, act)
            assert mb is not None
            const = next(i for i in act.input if i != mb[0])
            value = (np.broadcast_to(mb[1].astype(np.float64).reshape(-1), s.shape) / s).reshape(shape)
            if const in g.inits and g.uses[const] == 1:
                g.set_array(const, value)
            else:
                new = f"{act.name}_bound"
                proto.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), new))
                g.inits[new] = proto.graph.initializer[-1]
                act.input[list(act.input).index(const)] = new
            continue
        lo, hi = _clip_bounds(g, act)
        assert hi is not None
        bname = f"{act.name}_bound"
        proto.graph.initializer.append(
            numpy_helper.from_array((hi / s).reshape(shape).astype(np.float32), bname)
        )
        g.inits[bname] = proto.graph.initializer[-1]
        out = act.output[0]
        mn = onnx.helper.make_node("Min", [act.input[0], bname], [out], name=f"{act.name}_min")
        if lo == 0.0:
            act.op_type = "Relu"
            del act.input[1:]
            del act.attribute[:]
            act.output[0] = f"{out}__relu"
            mn.input[0] = act.output[0]
            idx = list(proto.graph.node).index(act)
            proto.graph.node.insert(idx + 1, mn)
        else:  # Clip(-inf, b) is Min(x, b)
            act.CopyFrom(mn)


def _in_channel_map(w2: np.ndarray, group: int) -> tuple[int, int, int]:
    """(channels per group, outputs per group, groups) of the second Conv."""
    cpg = w2.shape[1]
    return cpg, w2.shape[0] // group, group


def _second_ranges(w2: np.ndarray, group: int, channels: int) -> np.ndarray:
    cpg, opg, _ = _in_channel_map(w2, group)
    r = np.zeros(channels)
    absw = np.abs(w2)
    for c in range(channels):
        gi, j = divmod(c, cpg)
        r[c] = absw[gi * opg : (gi + 1) * opg, j].max()
    return r


def scale_second(w2: np.ndarray, group: int, s: np.ndarray) -> np.ndarray:
    cpg, opg, groups = _in_channel_map(w2, group)
    out = w2.copy()
    # input channel c = gi * cpg + j feeds outputs gi*opg .. (gi+1)*opg - 1 at kernel column j
    s2 = s.reshape(groups, cpg)
    for gi in range(groups):
        out[gi * opg : (gi + 1) * opg] *= s2[gi].reshape((1, cpg) + (1,) * (w2.ndim - 2))
    return out


def _ratio(r: np.ndarray) -> float:
    nz = r[r > 0]
    return float(nz.max() / nz.min()) if nz.size else 1.0


def equalize(proto: onnx.ModelProto, iterations: int = ITERATIONS) -> Result:
    """Equalize every pair in place; returns what was done and what was left alone (and why)."""
    pairs, skipped = find_pairs(proto)
    result = Result(skipped=skipped)
    if not pairs:
        return result
    g = Graph(proto)
    nodes = {n.name: n for n in proto.graph.node}
    done: dict[tuple[str, str], Pair] = {}
    total: dict[tuple[str, str], np.ndarray] = {}
    bounded = {
        (f, s2) for f, s2, act in pairs if act and any(is_bounded(g, nodes[x]) for x in act.split("+"))
    }
    for _ in range(iterations):
        moved = 0.0
        for first, second, act in pairs:
            a, b = nodes[first], nodes[second]
            w1 = g.need(a.input[1])
            w2 = g.need(b.input[1])
            channels = w1.shape[0]
            group2 = int(attr(b, "group", 1))
            if w2.shape[1] * group2 != channels:
                continue
            r1 = np.abs(w1).reshape(channels, -1).max(axis=1)
            r2 = _second_ranges(w2, group2, channels)
            key = (first, second)
            if key not in done:
                via = "+".join(nodes[x].op_type for x in act.split("+")) if act else None
                done[key] = Pair(first, second, via, _ratio(r1))
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.sqrt(r1 / r2)
            s = np.where(np.isfinite(s) & (r1 > 0) & (r2 > 0), s, 1.0)
            # a bounded pair (ReLU6) only scales channels down: a bound 6 / s_c above 6 would widen
            # the per-tensor activation range that INT8 quantizes (measured, EfficientNet-Lite0)
            s = np.clip(s, 1.0 if key in bounded else SCALE_MIN, SCALE_MAX)
            shape1 = (channels,) + (1,) * (w1.ndim - 1)
            g.set_array(a.input[1], w1 / s.reshape(shape1))
            if len(a.input) > 2 and a.input[2]:
                b1 = g.need(a.input[2])
                g.set_array(a.input[2], b1 / s)
            g.set_array(b.input[1], scale_second(w2, group2, s))
            total[key] = total.get(key, np.ones(channels)) * s
            moved = max(moved, float(np.abs(np.log(s)).max()))
        if moved < TOLERANCE:
            break
    acts = {(f, s2): act for f, s2, act in pairs}
    for p in done.values():
        w1 = g.need(nodes[p.first].input[1])
        p.range_ratio_after = _ratio(np.abs(w1).reshape(w1.shape[0], -1).max(axis=1))
        s_total = total[(p.first, p.second)]
        p.scale_min, p.scale_max = float(s_total.min()), float(s_total.max())
        act = acts[(p.first, p.second)]
        if act and np.abs(np.log(s_total)).max() > 1e-7:  # ReLU6 / Min: the bound follows the scale
            shape = (w1.shape[0],) + (1,) * (w1.ndim - 2)
            scale_bounds(proto, g, act.split("+"), s_total, shape)
    result.pairs = list(done.values())
    return result


# ---------------------------------------------------------------------------
# high-bias absorption


@dataclass
class Absorbed:
    first: str
    second: str
    channels: int  # channels with a non-zero shift
    range_before: float  # largest per-channel max of the first layer's output (calibration data)
    range_after: float


def _channel_min_max(
    proto: onnx.ModelProto, outs: list[str], samples: list[dict]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import onnxruntime as ort

    from tensorsmith.verify import session_feeds

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in outs if o not in have)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for s in samples:
        for name, v in zip(outs, sess.run(outs, session_feeds(sess, s)), strict=True):
            v = np.moveaxis(np.asarray(v, np.float64), 1, 0).reshape(v.shape[1], -1)
            lo, hi = v.min(axis=1), v.max(axis=1)
            if name in stats:
                lo, hi = np.minimum(stats[name][0], lo), np.maximum(stats[name][1], hi)
            stats[name] = (lo, hi)
    return stats


def absorb_high_bias(proto: onnx.ModelProto, samples: list[dict]) -> tuple[list[Absorbed], list[dict]]:
    """Nagel et al. section 4.1: move ``c`` out of the first layer's bias into the next's,
    ``W2 f(h - c) + (b2 + W2 c) == W2 f(h) + b2`` while ``h >= c`` (f: ReLU/LeakyRelu/PRelu,
    identity on ``h >= 0``). The paper takes ``c = max(0, beta - 3 gamma)`` from the
    BatchNorm; the BN is folded here, so ``c = max(0, min h - ABSORB_MARGIN (max h - min h))``
    over the calibration samples (the margin for inputs a little outside what calibration saw).
    The second Conv must have no padding (a padded border would see ``-c``, not 0): the
    pointwise layer after a depthwise one, the case the paper targets. Returns (absorbed,
    skipped with why)."""
    pairs, _ = find_pairs(proto)
    g = Graph(proto)
    nodes = {n.name: n for n in proto.graph.node}
    todo, skipped = [], []
    for first, second, act in pairs:
        a, b = nodes[first], nodes[second]
        pads = attr(b, "pads", [0])
        auto = attr(b, "auto_pad", b"NOTSET")
        if any(pads) or auto not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
            skipped.append({"first": first, "second": second, "reason": "second Conv pads its input"})
        elif len(a.input) < 3 or not a.input[2]:
            skipped.append({"first": first, "second": second, "reason": "first Conv has no bias"})
        elif act is None:
            skipped.append({"first": first, "second": second, "reason": "no activation in between"})
        elif any(nodes[x].op_type == "Pad" for x in act.split("+")):
            skipped.append(
                {"first": first, "second": second, "reason": "a Pad between: its border would see -c"}
            )
        elif any(is_bounded(g, nodes[x]) for x in act.split("+")):
            skipped.append({"first": first, "second": second, "reason": "bounded activation (ReLU6/Min)"})
        else:
            todo.append((a, b))
    if not todo or not samples:
        return [], skipped
    stats = _channel_min_max(proto, [a.output[0] for a, _ in todo], samples)
    done = []
    for a, b in todo:
        lo, hi = stats[a.output[0]]
        c = np.maximum(0.0, lo - ABSORB_MARGIN * (hi - lo))
        if not np.any(c > 0):
            continue
        b1 = g.need(a.input[2])
        g.set_array(a.input[2], b1 - c)
        w2 = g.need(b.input[1])
        group = int(attr(b, "group", 1))
        # b2[o] += sum over o's input channels and kernel of W2[o, j] * c[channel of j]
        contrib = scale_second(w2, group, c).reshape(w2.shape[0], -1).sum(axis=1)
        if len(b.input) > 2 and b.input[2]:
            g.set_array(b.input[2], g.need(b.input[2]) + contrib)
        else:
            name = f"{b.name}_bias_absorbed"
            proto.graph.initializer.append(numpy_helper.from_array(contrib.astype(np.float32), name))
            g.inits[name] = proto.graph.initializer[-1]
            while len(b.input) < 3:
                b.input.append("")
            b.input[2] = name
        done.append(
            Absorbed(a.name, b.name, int(np.count_nonzero(c)), float(hi.max()), float((hi - c).max()))
        )
    return done, skipped
