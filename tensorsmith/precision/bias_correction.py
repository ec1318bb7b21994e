"""Empirical bias correction of INT8 weights (Nagel et al., ICCV 2019, section 4.2).

Quantizing a layer's weights shifts the mean of its output: ``E[W_q x] - E[W x] =
(W_q - W) E[x]``, an error that is the same for every input and that per-channel
ranges do not remove. Measured on the calibration samples, it is subtracted from the
layer's bias (a Conv without a bias gets one). The quantized side runs the whole model
with every corrected layer's weights fake-quantized as the INT8 step will quantize them
(symmetric int8, per output channel, ``max|w| / 127``: what onnxruntime's quantizer
writes with ``WeightSymmetric``), so each layer's measured shift includes what reaches
it from the quantized layers before it, as AIMET's empirical bias correction does
(``aimet_torch/bias_correction.py``); each layer is corrected by its own share of the
shift only (see ``correct``). The shift per layer before and after the correction is in
the report; a second round repeats the measurement on the corrected model.

Layers: Conv (weights axis 0) and Gemm with constant weights used by that node only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

QMAX = 127
SAMPLES = 32
ROUNDS = 2


def fake_quant(w: np.ndarray, axis: int | None = 0, qmax: int = QMAX) -> np.ndarray:
    """Symmetric int8 quantize-dequantize, per channel along ``axis`` (None: per tensor)."""
    w = np.asarray(w, dtype=np.float64)
    if axis is None:
        amax = np.abs(w).max()
    else:
        red = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.abs(w).max(axis=red, keepdims=True)
    scale = np.where(amax > 0, amax / qmax, 1.0)
    return np.clip(np.round(w / scale), -qmax, qmax) * scale


@dataclass
class Layer:
    name: str
    op: str
    shift_before: float  # RMS over channels of the mean output shift (quantized - FP32)
    shift_after: float = float("nan")
    scale: float = 0.0  # RMS of the FP32 output's channel means, for reading the shift


@dataclass
class Result:
    layers: list[Layer] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    samples: int = 0

    def describe(self) -> dict:
        return {
            "samples": self.samples,
            "layers": [
                {
                    "node": L.name,
                    "op": L.op,
                    "mean_shift_before": float(f"{L.shift_before:.4g}"),
                    "mean_shift_after": float(f"{L.shift_after:.4g}"),
                    "output_mean_rms": float(f"{L.scale:.4g}"),
                }
                for L in self.layers
            ],
            "skipped": self.skipped,
        }


def _weight_axis(node: onnx.NodeProto) -> int | None:
    """Axis of the output channels in the weight tensor, or None when not handled."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return None


def layers(proto: onnx.ModelProto) -> tuple[list[onnx.NodeProto], list[dict]]:
    """The Conv/Gemm nodes this step corrects, and the ones it leaves (with why)."""
    inits = {t.name: t for t in proto.graph.initializer}
    uses: dict[str, int] = {}
    for n in proto.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    out, skipped = [], []
    for n in proto.graph.node:
        if _weight_axis(n) is None:
            continue
        if n.op_type == "Gemm" and any(a.name in ("alpha", "beta") and a.f != 1.0 for a in n.attribute):
            skipped.append({"node": n.name, "reason": "Gemm with alpha/beta other than 1"})
            continue
        w = inits.get(n.input[1]) if len(n.input) > 1 else None
        if w is None or uses.get(n.input[1], 0) != 1 or w.data_type != onnx.TensorProto.FLOAT:
            skipped.append({"node": n.name, "reason": "weights are not a float32 constant of its own"})
            continue
        if len(n.input) > 2 and n.input[2] and (n.input[2] not in inits or uses.get(n.input[2], 0) != 1):
            skipped.append({"node": n.name, "reason": "bias is not a constant of its own"})
            continue
        out.append(n)
    return out, skipped


def _with_outputs(proto: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(helper.make_empty_tensor_value_info(name))
    return m


def _channel_means(proto: onnx.ModelProto, outs: list[str], samples: list[dict]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    from tensorsmith.verify import session_feeds

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.log_severity_level = 3
    sess = ort.InferenceSession(
        _with_outputs(proto, outs).SerializeToString(), so, providers=["CPUExecutionProvider"]
    )
    sums: dict[str, np.ndarray] = {}
    for s in samples:
        for name, v in zip(outs, sess.run(outs, session_feeds(sess, s)), strict=True):
            v = np.asarray(v, dtype=np.float64)
            red = tuple(i for i in range(v.ndim) if i != 1)
            m = v.mean(axis=red)
            sums[name] = sums.get(name, 0) + m
    return {k: v / max(1, len(samples)) for k, v in sums.items()}


def quantized_copy(proto: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
    q = onnx.ModelProto()
    q.CopyFrom(proto)
    inits = {t.name: t for t in q.graph.initializer}
    for n in nodes:
        t = inits[n.input[1]]
        t.CopyFrom(
            numpy_helper.from_array(
                fake_quant(numpy_helper.to_array(t), _weight_axis(n)).astype(np.float32), t.name
            )
        )
    return q


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _with_deltas(
    proto: onnx.ModelProto, nodes: list[onnx.NodeProto], reference: onnx.ModelProto | None = None
) -> tuple[onnx.ModelProto, list[str]]:
    """The weight-quantized model plus, beside each layer, the same op on the same input with
    the weight error ``W_q - W`` and no bias: its output is the layer's own share of the shift
    (``W`` from ``reference`` when given)."""
    q = quantized_copy(proto, nodes)
    fp = {t.name: t for t in (proto if reference is None else reference).graph.initializer}
    inits_q = {t.name: t for t in proto.graph.initializer}
    names = []
    for n in nodes:
        w = numpy_helper.to_array(fp[n.input[1]]).astype(np.float64)
        wq = fake_quant(numpy_helper.to_array(inits_q[n.input[1]]), _weight_axis(n))
        delta = (wq - w).astype(np.float32)
        dname, out = f"{n.name}__bc_delta_w", f"{n.name}__bc_delta"
        q.graph.initializer.append(numpy_helper.from_array(delta, dname))
        node = helper.make_node(n.op_type, [n.input[0], dname], [out], name=f"{n.name}__bc_delta")
        node.attribute.extend(a for a in n.attribute if a.name not in ("alpha", "beta"))
        q.graph.node.append(node)
        names.append(out)
    return q, names


def correct(
    proto: onnx.ModelProto,
    samples: list[dict[str, np.ndarray]],
    rounds: int = ROUNDS,
    reference: onnx.ModelProto | None = None,
) -> Result:
    """Correct the biases of ``proto`` in place from the mean shifts on ``samples``.

    Each round measures, in the weight-quantized model (its biases as corrected so far),
    every layer's own share of the shift, ``E[(W_q - W) x_q]`` on the inputs ``x_q`` that
    layer really gets, and subtracts it: correcting each layer by its whole output shift
    instead would subtract the upstream layers' shift a second time (measured: that
    diverges on a 50-layer network). ``reference``: the FP32 model whose outputs and weights
    the quantized one should match when ``proto``'s weights were already changed for
    quantization (``mse-weights``, ``adaround``); default ``proto`` itself."""
    nodes, skipped = layers(proto)
    result = Result(skipped=skipped, samples=min(len(samples), SAMPLES))
    if not nodes or not samples:
        return result
    samples = samples[:SAMPLES]
    inits = {t.name: t for t in proto.graph.initializer}
    outs = [n.output[0] for n in nodes]
    ref = _channel_means(proto if reference is None else reference, outs, samples)
    got = _channel_means(quantized_copy(proto, nodes), outs, samples)
    by_name = {
        n.name: Layer(n.name, n.op_type, _rms(got[o] - ref[o]), scale=_rms(ref[o]))
        for n, o in zip(nodes, outs, strict=True)
    }
    # a Conv/Gemm without a bias gets one of its own
    for n in nodes:
        if len(n.input) < 3 or not n.input[2]:
            width = numpy_helper.to_array(inits[n.input[1]]).shape[_weight_axis(n) or 0]
            name = f"{n.name}_bias_corrected"
            proto.graph.initializer.append(numpy_helper.from_array(np.zeros(width, np.float32), name))
            inits[name] = proto.graph.initializer[-1]
            while len(n.input) < 3:
                n.input.append("")
            n.input[2] = name
    original = {n.name: numpy_helper.to_array(inits[n.input[2]]).astype(np.float64) for n in nodes}
    for _ in range(rounds):  # a later round re-measures with the upstream layers corrected
        model, deltas = _with_deltas(proto, nodes, reference)
        own = _channel_means(model, deltas, samples)
        for n, dname in zip(nodes, deltas, strict=True):
            b = original[n.name] - own[dname]
            inits[n.input[2]].CopyFrom(numpy_helper.from_array(b.astype(np.float32), n.input[2]))
    got = _channel_means(quantized_copy(proto, nodes), outs, samples)
    for n, o in zip(nodes, outs, strict=True):
        by_name[n.name].shift_after = _rms(got[o] - ref[o])
    result.layers = list(by_name.values())
    return result
