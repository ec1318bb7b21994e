"""Accuracy steps on the BN-folded FP32 graph before INT8 quantization.

``equalize``         cross-layer equalization (``equalize.py``): data-free, exact in FP32;
                     then high-bias absorption (exact while activations stay above the
                     calibration minimum)
``smooth``           activation smoothing (SmoothQuant, ``smooth.py``): exact in FP32, alpha
                     searched per pair by the consumer's quantized error on calibration data
``mse-weights``      per output channel, weights clipped to the range of least quantization
                     MSE (``scale_search.py``)
``adaround``         learned rounding (AdaRound): grid-aligned weights that minimise each
                     layer's output error on calibration inputs (``adaround.py``)
``bias-correction``  empirical bias correction of weight quantization (``bias_correction.py``);
                     after ``mse-weights``/``adaround`` it corrects the shift from the
                     weights as they were before those steps

``apply`` runs the chosen steps in that order on the prepared graph and reports, for
each, the layers it touched and the error it targets before and after: the output
cosine vs FP32 of the model with only its weights fake-quantized (symmetric int8 per
output channel, as the INT8 step writes them; activations in float), on calibration
samples, plus each step's own per-layer numbers.
"""

from __future__ import annotations

import numpy as np
import onnx

from tensorsmith.precision import adaround as ar
from tensorsmith.precision import bias_correction as bc
from tensorsmith.precision import equalize as eq
from tensorsmith.precision import scale_search as ss
from tensorsmith.precision import smooth as sm

STEPS = ("equalize", "smooth", "mse-weights", "adaround", "bias-correction")
WEIGHT_STEPS = ("mse-weights", "adaround")  # change the weights: bias correction measures against before
# chosen by measurement (README "Equalization, smoothing and bias correction"): see DEFAULT_WHY
DEFAULT: tuple[str, ...] = ()
DEFAULT_WHY = (
    "off by default, measured (README 'Equalization, smoothing and bias correction', 'Scale search and "
    "learned rounding'): no step helps every model; bias correction raised EfficientNet-Lite0's INT8 "
    "cosine (trt 0.979 -> 0.994) but lowered PP-OCRv4 det's (0.41 -> 0.36), equalization and smoothing "
    "lowered PP-OCR cls and det, equalization's per-channel ReLU6 bound (Min) slows onnxruntime's INT8, "
    "and AdaRound lowers every layer's error but moves no gate while costing minutes"
)
PROBE_SAMPLES = 8


def _outputs(proto: onnx.ModelProto, samples: list[dict]) -> list[np.ndarray]:
    import onnxruntime as ort

    from tensorsmith.verify import session_feeds

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    out = []
    for s in samples:
        out.append(
            np.concatenate(
                [np.asarray(v, np.float64).ravel() for v in sess.run(names, session_feeds(sess, s))]
            )
        )
    return out


def weight_quant_cosine(proto: onnx.ModelProto, refs: list[np.ndarray], samples: list[dict]) -> float:
    """Worst cosine, over ``samples``, of ``proto`` with its weights fake-quantized vs ``refs``."""
    nodes, _ = bc.layers(proto)
    gots = _outputs(bc.quantized_copy(proto, nodes), samples)
    worst = 1.0
    for r, g in zip(refs, gots, strict=True):
        den = float(np.linalg.norm(r) * np.linalg.norm(g))
        worst = min(worst, float(r @ g) / den if den > 0 else 1.0)
    return round(worst, 6)


def apply(proto: onnx.ModelProto, steps: list[str] | tuple[str, ...], samples: list[dict]) -> dict:
    """Run ``steps`` on ``proto`` in place; returns the report entry (``int8_steps``)."""
    report: dict = {"steps": list(steps), "default": list(DEFAULT), "why_default": DEFAULT_WHY, "runs": []}
    if not steps:
        return report
    probe = samples[:PROBE_SAMPLES]
    refs = _outputs(proto, probe) if probe else []
    before = weight_quant_cosine(proto, refs, probe) if probe else None
    reference = None  # the weights before mse-weights/adaround, for bias correction
    originals = None  # and kept for the nodes the INT8 build leaves in float
    for step in STEPS:
        if step not in steps:
            continue
        entry: dict = {"step": step, "weight_quant_cosine_before": before}
        if step in WEIGHT_STEPS and originals is None:
            originals = ar.snapshot(proto)
            if "bias-correction" in steps:
                reference = onnx.ModelProto()
                reference.CopyFrom(proto)
        if step == "equalize":  # then high-bias absorption, as AIMET's CLE does
            entry.update(eq.equalize(proto).describe())
            absorbed, skipped = eq.absorb_high_bias(proto, samples[: bc.SAMPLES])
            entry["high_bias_absorbed"] = [vars(a) for a in absorbed]
            entry["high_bias_skipped"] = len(skipped)
        elif step == "smooth":
            entry.update(sm.smooth(proto, samples).describe())
        elif step == "mse-weights":
            todo, skipped = ar.weight_layers(proto)
            entry["layers"] = [vars(x) for x in ss.clip_weights(proto, [(L.node, L.axis) for L in todo])]
            entry["skipped"] = skipped
        elif step == "adaround":
            entry.update(ar.adaround(proto, samples).describe())
        elif step == "bias-correction":
            entry.update(bc.correct(proto, samples, reference=reference).describe())
        if probe:
            before = weight_quant_cosine(proto, refs, probe)
            entry["weight_quant_cosine_after"] = before
        report["runs"].append(entry)
    if originals is not None:
        report["fp32_weights_kept"] = ar.keep_originals(proto, originals)
    return report
