"""Activation smoothing (SmoothQuant, Xiao et al., ICML 2023) before INT8.

Per-tensor INT8 activations lose the small channels of a tensor whose per-channel
ranges are uneven (one outlier channel sets the scale for all). SmoothQuant moves that
unevenness into the next layer's weights, which are quantized per output channel:
for a consumer ``y = W x`` (Conv, Gemm, MatMul with constant weights) whose input ``x``
is made by a layer that can absorb a per-channel division exactly (a Conv, Gemm or
MatMul with constant weights, its bias scaled with it; directly or through a positively
homogeneous activation, ReLU6 bounds rewritten per channel as ``equalize.py`` does),
the producer's output channel ``c`` is divided by ``s_c`` and the consumer's input
channel ``c`` multiplied by it, with

    s_c = max|x_c| ** alpha / max|W_c| ** (1 - alpha)

(``max|x_c|`` over the calibration samples; ``max|W_c|`` the consumer's weights of input
channel ``c``). FP32 outputs are unchanged. ``alpha`` is chosen per pair from ``ALPHAS``
by the consumer's quantized output error on calibration samples (its input fake-quantized
per tensor, symmetric int8; its weights per output channel, as the INT8 step writes
them) against its FP32 output; a pair where no alpha beats leaving it alone is left
alone, as is one whose activation ranges are already even (max over median below
``UNEVEN``). Left alone with the reason: a producer whose output has another consumer
(or is a graph output), weights shared or not constant, a non-homogeneous activation
(HardSwish, SiLU, ...), a reshape between the layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tensorsmith.precision import bias_correction as bc
from tensorsmith.precision import equalize as eq

ALPHAS = (0.25, 0.5, 0.75)
UNEVEN = 2.0  # max / median of the per-channel activation ranges below which a pair is left alone
SAMPLES = 128  # calibration samples for the ranges (all the INT8 step calibrates on: fewer under-estimate
# a channel, and a channel scaled up by a small s_c then sets the per-tensor range on another sample)
SEARCH_SAMPLES = 4  # of which, for the alpha search
SCALE_MIN, SCALE_MAX = 1e-4, 1e4
LINEAR = ("Conv", "Gemm", "MatMul")


@dataclass
class Pair:
    producer: str
    consumer: str
    via: str | None
    alpha: float
    act_ratio_before: float  # max / median of the consumer input's per-channel ranges
    act_ratio_after: float
    error_before: float  # consumer's quantized output error (relative L2) without / with smoothing
    error_after: float


@dataclass
class Result:
    pairs: list[Pair] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def describe(self) -> dict:
        return {
            "pairs": [
                {k: (round(v, 5) if isinstance(v, float) else v) for k, v in vars(p).items()}
                for p in self.pairs
            ],
            "skipped": self.skipped,
        }


@dataclass
class _Link:
    producer: onnx.NodeProto
    bias_add: onnx.NodeProto | None  # MatMul producer: the Add of its constant bias
    acts: list[onnx.NodeProto]
    consumer: onnx.NodeProto
    out_axis: int  # producer weight axis of its output channels
    x: str  # the consumer's input value


def _gemm_ok(node: onnx.NodeProto) -> bool:
    return node.op_type != "Gemm" or (
        eq.attr(node, "transA", 0) == 0
        and eq.attr(node, "alpha", 1.0) == 1.0
        and eq.attr(node, "beta", 1.0) == 1.0
    )


def _weight(g: eq.Graph, node: onnx.NodeProto) -> str | None:
    """Why ``node``'s weights (input 1) and bias cannot be rescaled, or None."""
    if node.op_type not in LINEAR:
        return f"{node.op_type} is not a Conv/Gemm/MatMul"
    if not _gemm_ok(node):
        return "Gemm with transA or alpha/beta other than 1"
    if len(node.input) < 2 or node.input[1] not in g.inits or g.uses[node.input[1]] != 1:
        return "weights are not a constant of its own"
    w = g.array(node.input[1])
    if w is None or w.dtype != np.float32 or (node.op_type != "Conv" and w.ndim != 2):
        return "weights are not float32 of the expected rank"
    if len(node.input) > 2 and node.input[2] and (node.input[2] not in g.inits or g.uses[node.input[2]] != 1):
        return "bias is not a constant of its own"
    return None


def _out_axis(node: onnx.NodeProto) -> int:
    if node.op_type == "Gemm":
        return 0 if eq.attr(node, "transB", 0) else 1
    return 0 if node.op_type == "Conv" else 1


def _in_axis(node: onnx.NodeProto) -> int:
    """Axis of the consumer's weights along its input channels (Gemm/MatMul)."""
    return 1 if node.op_type == "Gemm" and eq.attr(node, "transB", 0) else 0


def links(proto: onnx.ModelProto) -> tuple[list[_Link], list[dict]]:
    g = eq.Graph(proto)
    found, skipped = [], []
    for p in proto.graph.node:
        if p.op_type not in LINEAR or _weight(g, p) is not None:
            continue
        w = g.array(p.input[1])
        assert w is not None
        axis = _out_axis(p)
        channels = w.shape[axis]
        out, bias_add = p.output[0], None
        if p.op_type == "MatMul":
            add = g.only_consumer(out)
            if add is not None and add.op_type == "Add":
                other = add.input[1] if add.input[0] == out else add.input[0]
                b = g.array(other)
                if b is None or b.size != channels or b.shape[-1] != channels or g.uses[other] != 1:
                    continue
                bias_add, out = add, add.output[0]
        rank, ch_axis = (w.ndim, 1) if p.op_type == "Conv" else (2, 1)
        acts, nxt, why = eq.walk_activations(g, out, channels, rank, ch_axis)
        if nxt is None or nxt.op_type not in LINEAR:
            continue
        if why is None:
            why = _weight(g, nxt)
            why = None if why is None else f"consumer: {why}"
        if why is None and nxt.input[0] != (acts[-1].output[0] if acts else out):
            why = "the activation is the consumer's weight, not its input"
        if why is None and (p.op_type == "Conv") != (nxt.op_type == "Conv"):
            why = "a Conv and a Gemm/MatMul: the channel axis changes between them"
        if why is not None:
            skipped.append({"producer": p.name, "consumer": nxt.name, "reason": why})
            continue
        found.append(_Link(p, bias_add, acts, nxt, axis, nxt.input[0]))
    return found, skipped


def _in_ranges(w2: np.ndarray, node: onnx.NodeProto, channels: int) -> np.ndarray:
    if node.op_type == "Conv":
        group = int(eq.attr(node, "group", 1))
        cpg, opg = w2.shape[1], w2.shape[0] // group
        absw = np.abs(w2)
        return np.array(
            [absw[(c // cpg) * opg : (c // cpg + 1) * opg, c % cpg].max() for c in range(channels)]
        )
    return np.abs(w2).max(axis=1 - _in_axis(node))


def _scale_in(w2: np.ndarray, node: onnx.NodeProto, s: np.ndarray) -> np.ndarray:
    if node.op_type == "Conv":
        return eq.scale_second(w2, int(eq.attr(node, "group", 1)), s)
    return w2 * (s.reshape(-1, 1) if _in_axis(node) == 0 else s.reshape(1, -1))


def _consumer_axis(node: onnx.NodeProto) -> int:
    """Axis of the consumer's weights along its output channels (per-channel INT8)."""
    if node.op_type == "Conv":
        return 0
    return 1 - _in_axis(node)


def _stats(
    proto: onnx.ModelProto, names: list[str], conv_inputs: set[str], samples: list[dict]
) -> tuple[dict, dict]:
    """Per-channel max |x| of each value over ``samples`` (channels on axis 1 for a Conv's input,
    the last axis otherwise), and the first SEARCH_SAMPLES values."""
    import onnxruntime as ort

    from tensorsmith.verify import session_feeds

    m = _with_outputs(proto, names)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    amax: dict[str, np.ndarray] = {}
    kept: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i, s in enumerate(samples):
        for name, v in zip(names, sess.run(names, session_feeds(sess, s)), strict=True):
            v = np.asarray(v, np.float32)
            axis = 1 if name in conv_inputs else v.ndim - 1
            red = tuple(j for j in range(v.ndim) if j != axis)
            a = np.abs(v).max(axis=red)
            amax[name] = np.maximum(amax[name], a) if name in amax else a
            if i < SEARCH_SAMPLES:
                kept[name].append(v)
    return amax, kept


def _with_outputs(proto: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in have)
    return m


class _Probe:
    """The consumer alone in onnxruntime, its input and weights fed, to measure its quantized error."""

    def __init__(self, node: onnx.NodeProto, proto: onnx.ModelProto, bias: np.ndarray | None) -> None:
        import onnxruntime as ort

        n = helper.make_node(node.op_type, ["x", "w"] + (["b"] if bias is not None else []), ["y"])
        n.attribute.extend(node.attribute)
        inits = [numpy_helper.from_array(bias.astype(np.float32), "b")] if bias is not None else []
        f = onnx.TensorProto.FLOAT
        g = helper.make_graph(
            [n],
            "probe",
            [helper.make_tensor_value_info("x", f, None), helper.make_tensor_value_info("w", f, None)],
            [helper.make_tensor_value_info("y", f, None)],
            inits,
        )
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        so = ort.SessionOptions()
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return np.asarray(self.sess.run(["y"], {"x": x.astype(np.float32), "w": w.astype(np.float32)})[0])


@dataclass
class _Search:
    probe: _Probe
    consumer: onnx.NodeProto
    w2: np.ndarray
    xs: list[np.ndarray]
    refs: list[np.ndarray]
    xmax: np.ndarray
    shape_x: list[int]

    def error(self, s: np.ndarray) -> float:
        """Relative L2 error of the consumer's output with its input (divided by ``s``) quantized
        per tensor and its weights (multiplied by ``s``) per output channel."""
        wq = bc.fake_quant(_scale_in(self.w2, self.consumer, s), _consumer_axis(self.consumer))
        top = float((self.xmax / s).max())
        num = den = 0.0
        for x, ref in zip(self.xs, self.refs, strict=True):
            got = self.probe(_fq_act(x / s.reshape(self.shape_x), top), wq)
            num += float(np.sum((got - ref) ** 2))
            den += float(np.sum(ref**2))
        return float(np.sqrt(num / den)) if den > 0 else 0.0


def _fq_act(x: np.ndarray, amax: float) -> np.ndarray:
    scale = amax / bc.QMAX if amax > 0 else 1.0
    return np.clip(np.round(x / scale), -bc.QMAX, bc.QMAX) * scale


def _ratio(a: np.ndarray) -> float:
    med = float(np.median(a))
    return float(a.max() / med) if med > 0 else float("inf")


def smooth(proto: onnx.ModelProto, samples: list[dict]) -> Result:
    """Smooth every pair whose consumer's input is uneven, in place; returns what was done and why not."""
    found, skipped = links(proto)
    result = Result(skipped=skipped)
    if not found or not samples:
        return result
    g = eq.Graph(proto)
    conv_inputs = {lk.x for lk in found if lk.consumer.op_type == "Conv"}
    amax, kept = _stats(proto, [lk.x for lk in found], conv_inputs, samples[:SAMPLES])
    for lk in found:
        xmax = amax[lk.x].astype(np.float64)
        ratio = _ratio(xmax)
        names = {"producer": lk.producer.name, "consumer": lk.consumer.name}
        if ratio < UNEVEN:
            result.skipped.append({**names, "reason": f"activation ranges even (max/median {ratio:.2f})"})
            continue
        w2 = g.need(lk.consumer.input[1])
        r2 = _in_ranges(w2, lk.consumer, xmax.size)
        bias = g.array(lk.consumer.input[2]) if len(lk.consumer.input) > 2 and lk.consumer.input[2] else None
        probe = _Probe(lk.consumer, proto, bias)
        xs = kept[lk.x]
        c_axis = 1 if lk.consumer.op_type == "Conv" else xs[0].ndim - 1
        refs = [probe(x, w2) for x in xs]
        shape_x = [1] * xs[0].ndim
        shape_x[c_axis] = -1

        error = _Search(probe, lk.consumer, w2, xs, refs, xmax, shape_x).error
        base = error(np.ones_like(xmax))
        best, best_alpha, best_s = base, None, None
        for alpha in ALPHAS:
            with np.errstate(divide="ignore", invalid="ignore"):
                s = xmax**alpha / r2 ** (1 - alpha)
            s = np.clip(np.where(np.isfinite(s) & (xmax > 0) & (r2 > 0), s, 1.0), SCALE_MIN, SCALE_MAX)
            e = error(s)
            if e < best:
                best, best_alpha, best_s = e, alpha, s
        if best_s is None or best_alpha is None:
            result.skipped.append({**names, "reason": f"no alpha lowered the quantized error ({base:.4g})"})
            continue
        _apply(proto, g, lk, best_s)
        result.pairs.append(
            Pair(
                lk.producer.name,
                lk.consumer.name,
                "+".join(a.op_type for a in lk.acts) or None,
                best_alpha,
                ratio,
                _ratio(xmax / best_s),
                base,
                best,
            )
        )
    return result


def _apply(proto: onnx.ModelProto, g: eq.Graph, lk: _Link, s: np.ndarray) -> None:
    p, c = lk.producer, lk.consumer
    w1 = g.need(p.input[1])
    shape = [1] * w1.ndim
    shape[lk.out_axis] = -1
    g.set_array(p.input[1], w1 / s.reshape(shape))
    if len(p.input) > 2 and p.input[2]:
        b = g.need(p.input[2])
        g.set_array(p.input[2], b / s.reshape(b.shape) if b.size == s.size else b / s)
    if lk.bias_add is not None:
        other = next(i for i in lk.bias_add.input if i in g.inits)
        b = g.need(other)
        g.set_array(other, b / s.reshape(b.shape))
    bshape = (s.size,) + (1,) * (w1.ndim - 2) if p.op_type == "Conv" else (s.size,)
    if lk.acts:
        eq.scale_bounds(proto, g, [a.name for a in lk.acts], s, bshape)
    g.set_array(c.input[1], _scale_in(g.need(c.input[1]), c, s))
