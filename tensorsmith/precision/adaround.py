"""AdaRound: learned rounding of INT8 weights (Nagel et al., "Up or Down? Adaptive Rounding
for Post-Training Quantization", ICML 2020; AIMET's ``aimet_torch/adaround``).

Rounding each weight to the nearest grid point minimises the weight error, not the
layer's output error. Per layer, AdaRound learns for each weight whether to round down
or up: ``W~ = s * clip(floor(W / s) + h(V), -127, 127)`` with the rectified sigmoid
``h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)``, minimising
``||W X - W~ X||^2`` on the layer's FP32 calibration inputs ``X`` plus
``lambda * sum(1 - |2 h(V) - 1|^beta)``, which pushes every ``h`` to 0 or 1 as ``beta``
anneals from 20 to 2 after a warm start (AIMET's defaults: zeta 1.1, gamma -0.1, lambda
0.01, warm start 20%, Adam with learning rate 1e-3). Written here in numpy (the gradient
of a linear layer is two matrix products): no PyTorch needed.

The inputs: the FP32 model runs once per calibration sample with every layer's input as
an output, and from each sample each layer keeps the im2col columns of a few random
output positions (``POSITIONS``), so memory is columns, not feature maps.

The result goes back into the FP32 graph as grid values, ``q * s`` in float32, with each
channel's ``max|w|`` kept (its elements of ``|q| = 127`` are written as the value whose
onnxruntime scale ``(2 * max|w|) / 254`` is exactly ``s``): onnxruntime's quantizer
(symmetric int8 per output channel, ``WeightSymmetric``) then finds exactly the learned
integers (tested bit for bit).

Layers: Conv (2-D, any group, stride, dilation and padding), Gemm (``transA`` 0, alpha
and beta 1) and MatMul with a constant 2-D float weight used by that node only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tensorsmith.precision.scale_search import QMAX, grid_scale

ZETA, GAMMA = 1.1, -0.1
REG = 0.01
BETA = (20.0, 2.0)
WARM = 0.2
LR = 1e-2  # per-element logits: AIMET's 1e-3 needs its 10,000 iterations
ITERATIONS = 400
BATCH = 256  # columns per iteration (when cheaper than the second-moment matrix)
SAMPLES = 16
POSITIONS = 256  # output positions per sample and layer
MAX_COLUMN_BYTES = 32 << 20  # per layer
HOLDOUT = 0.25  # columns kept out of the optimisation, for the reported error


@dataclass
class Layer:
    node: onnx.NodeProto
    axis: int  # output channels in the weight tensor
    kind: str  # conv | gemm


@dataclass
class LayerResult:
    node: str
    op: str
    weights: int
    flipped: int  # weights rounded the other way than nearest
    error_nearest: float  # ||W X - W_q X||^2 / ||W X||^2 on held-out columns
    error_adaround: float


@dataclass
class Result:
    layers: list[LayerResult] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    samples: int = 0

    def describe(self) -> dict:
        return {
            "samples": self.samples,
            "layers": [
                {
                    "node": r.node,
                    "op": r.op,
                    "weights": r.weights,
                    "flipped": r.flipped,
                    "output_error_before": float(f"{r.error_nearest:.4g}"),
                    "output_error_after": float(f"{r.error_adaround:.4g}"),
                }
                for r in self.layers
            ],
            "skipped": self.skipped,
        }


# ---------------------------------------------------------------------------
# which layers


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def weight_layers(proto: onnx.ModelProto) -> tuple[list[Layer], list[dict]]:
    """The Conv/Gemm/MatMul nodes whose weights are a float32 constant of their own, with
    the axis onnxruntime quantizes per channel; and the others, with why not."""
    inits = {t.name: t for t in proto.graph.initializer}
    uses: dict[str, int] = {}
    for n in proto.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    out, skipped = [], []
    for n in proto.graph.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        w = inits.get(n.input[1]) if len(n.input) > 1 else None
        if w is None or uses.get(n.input[1], 0) != 1 or w.data_type != onnx.TensorProto.FLOAT:
            skipped.append({"node": n.name, "reason": "weights are not a float32 constant of its own"})
            continue
        if n.op_type == "Conv":
            if len(w.dims) != 4:
                skipped.append({"node": n.name, "reason": f"{len(w.dims) - 2}-D convolution (2-D only)"})
                continue
            out.append(Layer(n, 0, "conv"))
        elif n.op_type == "Gemm":
            if _attr(n, "transA", 0) or _attr(n, "alpha", 1.0) != 1.0 or _attr(n, "beta", 1.0) != 1.0:
                skipped.append({"node": n.name, "reason": "Gemm with transA, alpha or beta"})
                continue
            out.append(Layer(n, 0 if _attr(n, "transB", 0) else 1, "gemm"))
        else:
            if len(w.dims) != 2:
                skipped.append({"node": n.name, "reason": "MatMul weight is not 2-D"})
                continue
            out.append(Layer(n, 1, "gemm"))
    return out, skipped


# ---------------------------------------------------------------------------
# the layers' inputs, as columns


def _conv_geometry(node: onnx.NodeProto, w_shape: list[int], x_shape: tuple[int, ...]):
    kh, kw = w_shape[2], w_shape[3]
    sh, sw = _attr(node, "strides", [1, 1])
    dh, dw = _attr(node, "dilations", [1, 1])
    pads = list(_attr(node, "pads", [0, 0, 0, 0]))
    auto = _attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    h, wd = x_shape[2], x_shape[3]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, k, s, d in ((h, kh, sh, dh), (wd, kw, sw, dw)):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if auto == "SAME_UPPER" else (big, small))
        pads = [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    oh = (h + pads[0] + pads[2] - ((kh - 1) * dh + 1)) // sh + 1
    ow = (wd + pads[1] + pads[3] - ((kw - 1) * dw + 1)) // sw + 1
    return (kh, kw), (sh, sw), (dh, dw), pads, (oh, ow)


def _columns(layer: Layer, w_shape: list[int], x: np.ndarray, k: int, rng) -> np.ndarray:
    """(groups, D, k) input columns of ``layer`` at ``k`` random output positions of ``x``."""
    if layer.kind == "gemm":
        flat = x.reshape(-1, x.shape[-1])
        idx = rng.choice(flat.shape[0], size=min(k, flat.shape[0]), replace=False)
        return flat[idx].T[None].astype(np.float32)
    group = int(_attr(layer.node, "group", 1))
    (kh, kw), (sh, sw), (dh, dw), pads, (oh, ow) = _conv_geometry(layer.node, w_shape, x.shape)
    xp = np.pad(x[0], ((0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    n = min(k, oh * ow)
    pos = rng.choice(oh * ow, size=n, replace=False)
    oy, ox = pos // ow, pos % ow
    ys = oy[None, :] * sh + (np.arange(kh) * dh)[:, None]  # (kh, n)
    xs = ox[None, :] * sw + (np.arange(kw) * dw)[:, None]  # (kw, n)
    cols = xp[:, ys[:, None, :], xs[None, :, :]]  # (C, kh, kw, n)
    c = cols.shape[0]
    return cols.reshape(group, (c // group) * kh * kw, n).astype(np.float32)


def _matrix(layer: Layer, w: np.ndarray, groups: int) -> np.ndarray:
    """The weight as (groups, out per group, D), matching ``_columns``."""
    if layer.kind == "gemm":
        return (w if layer.axis == 0 else w.T)[None]
    return w.reshape(groups, w.shape[0] // groups, -1)


def _unmatrix(layer: Layer, m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if layer.kind == "gemm":
        return m[0] if layer.axis == 0 else m[0].T
    return m.reshape(shape)


def collect(proto: onnx.ModelProto, layers: list[Layer], samples: list[dict], seed: int = 0) -> dict:
    """node name -> (groups, D, M) FP32 input columns on ``samples``."""
    import onnxruntime as ort

    from tensorsmith.verify import session_feeds

    inits = {t.name: t for t in proto.graph.initializer}
    graph_inputs = {i.name for i in proto.graph.input}
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    names = []
    for L in layers:
        name = L.node.input[0]
        if name not in have and name not in names:
            m.graph.output.append(helper.make_empty_tensor_value_info(name))
        names.append(name)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    wanted = sorted(set(names))
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {L.node.name: [] for L in layers}
    for s in samples:
        feeds = session_feeds(sess, s)
        got = dict(zip(wanted, sess.run(wanted, feeds), strict=True))
        for L in layers:
            x = np.asarray(
                got[L.node.input[0]] if L.node.input[0] not in graph_inputs else feeds[L.node.input[0]]
            )
            w_shape = list(inits[L.node.input[1]].dims)
            d = int(np.prod(w_shape[1:])) if L.kind == "conv" else x.shape[-1]
            per_sample = max(8, min(POSITIONS, MAX_COLUMN_BYTES // (4 * max(1, d) * max(1, len(samples)))))
            if L.kind == "conv" and x.ndim != 4:
                continue
            parts[L.node.name].append(_columns(L, w_shape, x, per_sample, rng))
    return {k: np.concatenate(v, axis=2) for k, v in parts.items() if v}


# ---------------------------------------------------------------------------
# the optimisation


def _h(v: np.ndarray) -> np.ndarray:
    return np.clip(1 / (1 + np.exp(-v)) * (ZETA - GAMMA) + GAMMA, 0, 1)


def _rel_error(w: np.ndarray, wq: np.ndarray, x: np.ndarray) -> float:
    y = _mm(w, x)
    d = _mm(wq - w, x)
    den = float((y * y).sum())
    return float((d * d).sum()) / den if den > 0 else 0.0


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched (G, O, D) @ (G, D, E): one matrix product when G is 1, else einsum (numpy's
    batched matmul is slow on hundreds of tiny depthwise matrices)."""
    if a.shape[0] == 1:
        return (a[0] @ b[0])[None]
    return np.einsum("god,gde->goe", a, b)


def round_layer(
    w: np.ndarray, s: np.ndarray, x: np.ndarray, iterations: int = ITERATIONS, seed: int = 0
) -> tuple[np.ndarray, float, float]:
    """Learned rounding of ``w`` (groups, O, D) with scales ``s`` (groups, O, 1) on columns
    ``x`` (groups, D, M). Returns (integers, held-out error of nearest, of AdaRound).

    The reconstruction loss is AIMET's (squared output error summed over channels, mean
    over columns); its gradient ``2 (W~ - W) X X^T / M`` is computed from the input's
    second-moment matrix ``X X^T / M`` (all columns, exact) when that is cheaper than a
    minibatch of columns (``BATCH``), i.e. when ``D < 2 * BATCH``."""
    rng = np.random.default_rng(seed)
    w = w.astype(np.float64)
    s64 = s.astype(np.float64)
    m = x.shape[2]
    hold = max(1, int(m * HOLDOUT)) if m >= 8 else 0
    perm = rng.permutation(m)
    x_hold, x_fit = (x[:, :, perm[:hold]], x[:, :, perm[hold:]]) if hold else (x, x)
    d = w.shape[2]
    batch = min(BATCH, x_fit.shape[2])
    hess = None
    if d < 2 * batch:
        xf = x_fit.astype(np.float64)
        hess = (_mm(xf, xf.transpose(0, 2, 1)) / xf.shape[2]).astype(np.float32)
    else:
        x_fit = x_fit.astype(np.float32)
    ws = w / s64
    floor = np.floor(ws)
    rest = np.clip(ws - floor, 1e-4, 1 - 1e-4)
    v = (-np.log((ZETA - GAMMA) / (rest - GAMMA) - 1)).astype(np.float32)  # h(v) == rest
    top = np.abs(np.round(ws)) >= QMAX  # the channel's max|w|: fixed, keeps the scale
    nearest = np.clip(np.round(ws), -QMAX, QMAX)
    # the loop in float32: W~ - W = s * (floor + h - W / s)
    base = np.where(top, nearest, floor).astype(np.float32)
    off = ws.astype(np.float32)
    s32 = s64.astype(np.float32)
    floor32 = floor.astype(np.float32)
    mt, vt = np.zeros_like(v), np.zeros_like(v)
    b1, b2, eps = np.float32(0.9), np.float32(0.999), np.float32(1e-8)
    warm = int(iterations * WARM)
    for it in range(iterations):
        sig = 1 / (1 + np.exp(-v))
        h_raw = sig * np.float32(ZETA - GAMMA) + np.float32(GAMMA)
        h = np.clip(h_raw, 0, 1)
        q = np.where(top, base, np.clip(floor32 + h, -QMAX, QMAX))
        inside = ~top & (floor32 + h >= -QMAX) & (floor32 + h <= QMAX)
        delta = (q - off) * s32
        if hess is not None:
            g_wq = 2 * _mm(delta, hess)
        else:
            cols = x_fit[:, :, rng.choice(x_fit.shape[2], size=batch, replace=False)]
            g_wq = 2 * _mm(_mm(delta, cols), cols.transpose(0, 2, 1)) / batch
        g_h = g_wq * s32 * inside
        if it >= warm:
            frac = (it - warm) / max(1, iterations - warm)
            beta = np.float32(BETA[1] + 0.5 * (BETA[0] - BETA[1]) * (1 + np.cos(frac * np.pi)))
            t = 2 * h - 1
            g_h = g_h - np.float32(2 * REG) * beta * np.abs(t) ** (beta - 1) * np.sign(t)
        g_v = g_h * ((h_raw > 0) & (h_raw < 1)) * sig * (1 - sig) * np.float32(ZETA - GAMMA)
        mt = (b1 * mt + (1 - b1) * g_v).astype(np.float32)
        vt = (b2 * vt + (1 - b2) * g_v * g_v).astype(np.float32)
        v -= np.float32(LR / (1 - b1 ** (it + 1))) * mt / (np.sqrt(vt / np.float32(1 - b2 ** (it + 1))) + eps)
    learned = np.where(top, nearest, np.clip(floor + (v >= 0), -QMAX, QMAX))
    e_near = _rel_error(w, nearest * s64, x_hold.astype(np.float64))
    e_ada = _rel_error(w, learned * s64, x_hold.astype(np.float64))
    if e_ada > e_near:  # never worse than nearest on the held-out columns
        return nearest.astype(np.int32), e_near, e_near
    return learned.astype(np.int32), e_near, e_ada


def grid_weights(q: np.ndarray, amax: np.ndarray, axis: int) -> np.ndarray:
    """float32 weights on onnxruntime's grid: ``q * s`` per channel (``axis``), where
    ``s = grid_scale(amax)``; the elements of ``|q| == 127`` are written as the largest
    value whose onnxruntime scale is still ``s`` (``127 * s`` when that rounds back to
    ``s``, else the channel's original ``max|w|``)."""
    shape = [1] * q.ndim
    shape[axis] = -1
    s = grid_scale(amax)
    top = (s * np.float32(QMAX)).astype(np.float32)
    top = np.where(grid_scale(top) == s, top, amax.astype(np.float32)).astype(np.float32)
    out = (q.astype(np.float32) * s.reshape(shape)).astype(np.float32)
    out = np.where(np.abs(q) >= QMAX, np.sign(q).astype(np.float32) * top.reshape(shape), out)
    return out.astype(np.float32)


_MEMO: dict[str, tuple[dict[str, np.ndarray], Result]] = {}  # the last result, by input digest


def _digest(proto: onnx.ModelProto, samples: list[dict], iterations: int, seed: int) -> str:
    import hashlib

    h = hashlib.sha256(proto.SerializeToString(deterministic=True))
    for s in samples:
        for k in sorted(s):
            h.update(k.encode())
            h.update(np.ascontiguousarray(s[k]).tobytes())
    h.update(f"{iterations}/{seed}".encode())
    return h.hexdigest()


def adaround(
    proto: onnx.ModelProto, samples: list[dict], iterations: int = ITERATIONS, seed: int = 0
) -> Result:
    """Learned rounding for every eligible layer of ``proto``, written in place as grid weights.

    The last result is kept in memory by a digest of the model, the samples and the
    settings: the same FP32 graph quantized again (the other target, another calibration
    method) costs nothing the second time."""
    import copy

    samples = samples[:SAMPLES]
    key = _digest(proto, samples, iterations, seed)
    if key in _MEMO:
        weights, result = _MEMO[key]
        for t in proto.graph.initializer:
            if t.name in weights:
                t.CopyFrom(numpy_helper.from_array(weights[t.name], t.name))
        return copy.deepcopy(result)
    layers, skipped = weight_layers(proto)
    result = Result(skipped=skipped, samples=len(samples))
    if not layers or not samples:
        return result
    cols = collect(proto, layers, samples, seed)
    inits = {t.name: t for t in proto.graph.initializer}
    written: dict[str, np.ndarray] = {}
    for L in layers:
        x = cols.pop(L.node.name, None)
        if x is None:
            result.skipped.append({"node": L.node.name, "reason": "input is not NCHW"})
            continue
        t = inits[L.node.input[1]]
        w = numpy_helper.to_array(t)
        red = tuple(i for i in range(w.ndim) if i != L.axis)
        amax = np.abs(w).max(axis=red).astype(np.float32)
        if not (amax > 0).all():
            result.skipped.append({"node": L.node.name, "reason": "a channel of zeros"})
            continue
        s = grid_scale(amax)
        shape = [1] * w.ndim
        shape[L.axis] = -1
        groups = x.shape[0]
        wm = _matrix(L, w, groups)
        sm = _matrix(L, np.broadcast_to(s.reshape(shape), w.shape), groups)[..., :1]
        q, e0, e1 = round_layer(wm, sm, x, iterations, seed)
        q_full = _unmatrix(L, q, w.shape)
        nearest = np.clip(np.round(w.astype(np.float64) / s.reshape(shape).astype(np.float64)), -QMAX, QMAX)
        written[t.name] = grid_weights(q_full, amax, L.axis)
        t.CopyFrom(numpy_helper.from_array(written[t.name], t.name))
        result.layers.append(
            LayerResult(L.node.name, L.node.op_type, int(w.size), int((q_full != nearest).sum()), e0, e1)
        )
    _MEMO.clear()
    _MEMO[key] = (written, copy.deepcopy(result))
    return result


# ---------------------------------------------------------------------------
# nodes the INT8 build leaves in float get their FP32 weights back

ORIGINAL = "__tensorsmith_fp32"  # suffix of the unused initializer keeping a weight's FP32 value


def snapshot(proto: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Copies of the weights ``mse-weights``/``adaround`` may change."""
    layers, _ = weight_layers(proto)
    names = {L.node.input[1] for L in layers}
    out = {}
    for t in proto.graph.initializer:
        if t.name in names:
            out[t.name] = onnx.TensorProto()
            out[t.name].CopyFrom(t)
    return out


def keep_originals(proto: onnx.ModelProto, before: dict[str, onnx.TensorProto]) -> int:
    """Beside every weight that changed since ``before``, an unused initializer
    ``<name>__tensorsmith_fp32`` with its FP32 value (``restore_unquantized`` reads it)."""
    have = {t.name for t in proto.graph.initializer}
    added = 0
    for t in list(proto.graph.initializer):
        old = before.get(t.name)
        if old is None or t.name + ORIGINAL in have or old.SerializeToString() == t.SerializeToString():
            continue
        keep = onnx.TensorProto()
        keep.CopyFrom(old)
        keep.name = t.name + ORIGINAL
        proto.graph.initializer.append(keep)
        added += 1
    return added


def restore_file(out_path, prepared_path) -> None:
    """``restore_unquantized`` on the model file ``out_path`` written from ``prepared_path``."""
    kept = kept_originals(onnx.load(str(prepared_path)))
    if kept:
        out = onnx.load(str(out_path))
        restore_unquantized(out, kept)
        onnx.save(out, str(out_path))


def kept_originals(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """weight name -> its FP32 value, from the copies ``keep_originals`` added."""
    return {t.name[: -len(ORIGINAL)]: t for t in model.graph.initializer if t.name.endswith(ORIGINAL)}


def restore_unquantized(model: onnx.ModelProto, kept: dict[str, onnx.TensorProto]) -> list[str]:
    """In a quantized model, give every weight still read in float (its node was left out
    of INT8: a layout's exclusion, --keep-fp32, the fallback) its FP32 value (``kept``)
    back, and drop the kept copies. In place; returns the weights restored."""
    restored = []
    for t in model.graph.initializer:
        orig = kept.get(t.name)
        if orig is not None and t.data_type == onnx.TensorProto.FLOAT:
            name = t.name
            t.CopyFrom(orig)
            t.name = name
            restored.append(name)
    keep = [t for t in model.graph.initializer if not t.name.endswith(ORIGINAL)]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return restored
