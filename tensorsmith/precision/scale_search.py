"""Quantization ranges chosen by mean squared error rather than by min/max.

Activations (``--calib-method mse``): per tensor, the range whose quantization error
on the calibration activations is smallest, searched on the histogram onnxruntime's
calibrator collects (``DistributionCalibrater``: one pass of the model, as for the
entropy and percentile methods). The error of a range is the expected rounding noise of
the values inside it (``step**2 / 12`` per value; the bin holding 0 counts none: zero
is exact on both grids) plus the squared clipping error of the values outside it, on
the grid the INT8 step writes: symmetric int8 (``[-T, T]``, 127 steps each side; the
TensorRT target) or asymmetric uint8 (``[lo, hi]``, 255 steps, 0 inside; the
onnxruntime target). The same search as pytorch-quantization's and Model Optimizer's
``mse`` calibrators (``calib/histogram.py``: candidates on the histogram, error
weighted by the counts), with the asymmetric grid added.

Weights (the ``mse-weights`` step of ``int8_steps``): per output channel, the clipping
threshold ``c <= max|w|`` that minimises the channel's own quantization MSE on the
symmetric int8 grid (``c / 127``); the channel is clipped to ``[-c, c]`` in the FP32
graph, so onnxruntime's quantizer (``max|w| / 127``) then uses exactly that scale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

QMAX = 127  # symmetric int8: [-127, 127] (onnxruntime's WeightSymmetric / ActivationSymmetric)
ULEVELS = 255  # asymmetric uint8
CANDIDATES = 128  # thresholds tried per side
MIN_FRACTION = 0.02  # never clip below 2% of the observed range
# weight clipping candidates, fractions of max|w|: fine near 1, where int8's optimum lies
WEIGHT_FRACTIONS = np.unique(np.concatenate([np.geomspace(0.05, 0.5, 24), np.linspace(0.5, 1.0, 101)]))


# ---------------------------------------------------------------------------
# activations: on a histogram


def _clip_errors(centers: np.ndarray, counts: np.ndarray, bounds: np.ndarray, upper: bool) -> np.ndarray:
    """Sum of count * (center - bound)**2 over the centers beyond each bound (above it for
    ``upper``, below it otherwise), for every bound at once."""
    if upper:
        beyond = centers[None, :] > bounds[:, None]
    else:
        beyond = centers[None, :] < bounds[:, None]
    d = np.where(beyond, centers[None, :] - bounds[:, None], 0.0)
    return (d * d * counts[None, :]).sum(axis=1)


def range_error(counts: np.ndarray, edges: np.ndarray, lo: float, hi: float, symmetric: bool) -> float:
    """Mean squared quantization error of a histogram (``counts`` over ``edges``) on the
    grid of range ``[lo, hi]`` (symmetric int8 uses ``max(|lo|, |hi|)``)."""
    counts = np.asarray(counts, np.float64)
    edges = np.asarray(edges, np.float64)
    centers = (edges[1:] + edges[:-1]) / 2
    if symmetric:
        t = max(abs(lo), abs(hi))
        lo, hi, step = -t, t, t / QMAX
    else:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        step = (hi - lo) / ULEVELS
    zero = (edges[:-1] <= 0) & (edges[1:] >= 0)
    inside = (centers >= lo) & (centers <= hi) & ~zero
    err = counts[inside].sum() * step * step / 12
    err += _clip_errors(centers, counts, np.array([hi]), True)[0]
    err += _clip_errors(centers, counts, np.array([lo]), False)[0]
    total = counts.sum()
    return float(err / total) if total > 0 else 0.0


def mse_range(
    counts: np.ndarray, edges: np.ndarray, vmin: float, vmax: float, symmetric: bool
) -> tuple[float, float]:
    """The range ``(lo, hi)`` of least quantization MSE for the values binned in ``counts``
    (observed minimum ``vmin``, maximum ``vmax``)."""
    counts = np.asarray(counts, np.float64)
    edges = np.asarray(edges, np.float64)
    vmin, vmax = min(float(vmin), 0.0), max(float(vmax), 0.0)
    if counts.sum() <= 0 or vmax - vmin <= 0 or not np.isfinite([vmin, vmax]).all():
        return vmin, vmax
    centers = (edges[1:] + edges[:-1]) / 2
    zero = (edges[:-1] <= 0) & (edges[1:] >= 0)
    fractions = np.linspace(MIN_FRACTION, 1.0, CANDIDATES)
    if symmetric:
        amax = max(-vmin, vmax)
        ts = fractions * amax
        c_abs = np.abs(centers)
        n_in = ((c_abs[None, :] <= ts[:, None]) & ~zero[None, :]) * counts[None, :]
        err = n_in.sum(axis=1) * (ts / QMAX) ** 2 / 12 + _clip_errors(c_abs, counts, ts, True)
        t = float(ts[int(np.argmin(err))])
        return -t, t
    his = fractions * vmax if vmax > 0 else np.zeros(1)
    los = fractions * vmin if vmin < 0 else np.zeros(1)
    up = _clip_errors(centers, counts, his, True)  # (H,)
    down = _clip_errors(centers, counts, los, False)  # (L,)
    # values inside: every non-zero bin between lo and hi
    nz = np.where(zero, 0.0, counts)
    cum = np.concatenate([[0.0], np.cumsum(nz)])
    hi_idx = np.searchsorted(centers, his, side="right")
    lo_idx = np.searchsorted(centers, los, side="left")
    n_in = cum[hi_idx][None, :] - cum[lo_idx][:, None]  # (L, H)
    step = (his[None, :] - los[:, None]) / ULEVELS
    err = n_in * step * step / 12 + up[None, :] + down[:, None]
    li, hj = np.unravel_index(int(np.argmin(err)), err.shape)
    return float(los[li]), float(his[hj])


@dataclass
class Searched:
    """What the activation search chose, per tensor (for the report)."""

    tensors: int = 0
    clipped: int = 0  # tensors whose range is narrower than min/max
    counted: int = 0  # tensors with a non-zero min/max error
    ratio_sum: float = 0.0  # sum over them of (MSE range's error / min/max range's error)
    worst: list[dict] = field(default_factory=list)  # the most clipped tensors

    def describe(self) -> dict:
        return {
            "method": "mse",
            "tensors": self.tensors,
            "clipped": self.clipped,
            # mean over tensors of (quantization MSE at the chosen range / at min/max)
            "mean_error_ratio_vs_minmax": round(self.ratio_sum / self.counted, 4) if self.counted else None,
            "most_clipped": self.worst,
        }


def mse_ranges(histograms: dict, symmetric: bool) -> tuple[dict[str, tuple[float, float]], Searched]:
    """Ranges for every tensor of onnxruntime's ``HistogramCollector.histogram_dict``
    (``name -> (counts, edges, min, max, ...)``)."""
    out: dict[str, tuple[float, float]] = {}
    info = Searched()
    kept = []
    for name, entry in histograms.items():
        counts, edges, vmin, vmax = entry[0], entry[1], float(entry[2]), float(entry[3])
        lo, hi = mse_range(counts, edges, vmin, vmax, symmetric)
        out[name] = (lo, hi)
        info.tensors += 1
        e_mm = range_error(counts, edges, vmin, vmax, symmetric)
        e_ms = range_error(counts, edges, lo, hi, symmetric)
        if e_mm > 0:
            info.counted += 1
            info.ratio_sum += e_ms / e_mm
        width = max(abs(vmin), abs(vmax)) if symmetric else vmax - min(vmin, 0.0)
        chosen = max(abs(lo), abs(hi)) if symmetric else hi - lo
        if width > 0 and chosen < width * 0.999:
            info.clipped += 1
            kept.append((chosen / width, name, vmin, vmax, lo, hi))
    kept.sort()
    info.worst = [
        {"tensor": n, "minmax": [round(a, 6), round(b, 6)], "mse": [round(c, 6), round(d, 6)]}
        for _, n, a, b, c, d in kept[:10]
    ]
    return out, info


def _report_path(cache_path: Path) -> Path:
    return Path(cache_path).with_name(Path(cache_path).name + ".search.json")


def write_report(cache_path: Path, searched: dict) -> None:
    """Keep what the search chose beside the calibration cache (``search_report`` reads it)."""
    _report_path(cache_path).write_text(json.dumps(searched))


def search_report(cache_path: Path) -> dict | None:
    """What the ``mse`` range search chose for this calibration cache (``Searched.describe``), or None."""
    try:
        return json.loads(_report_path(cache_path).read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------
# weights: per output channel, clipped in the FP32 graph


def grid_scale(amax: np.ndarray) -> np.ndarray:
    """onnxruntime's symmetric int8 weight scale, ``(2 * max|w|) / 254`` computed in float64
    and stored as float32 (``quant_utils.compute_scale_zp``)."""
    amax = np.asarray(amax, np.float32)
    return (amax.astype(np.float64) * 2 / (2 * QMAX)).astype(np.float32)


def fake_quant_channels(w: np.ndarray, amax: np.ndarray) -> np.ndarray:
    """Quantize-dequantize ``w`` (channels on axis 0, any shape after) with per-channel
    thresholds ``amax`` on the symmetric int8 grid."""
    s = np.where(amax > 0, amax / QMAX, 1.0).reshape((-1,) + (1,) * (w.ndim - 1))
    return np.clip(np.round(w / s), -QMAX, QMAX) * s


def weight_clip(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per output channel (``axis``) of ``w``: the threshold of least quantization MSE.

    Returns (clipped weights, float32 like ``w``; thresholds; MSE per channel at
    ``max|w|``; MSE per channel at the threshold)."""
    x = np.moveaxis(np.asarray(w, np.float64), axis, 0)
    flat = x.reshape(x.shape[0], -1)
    amax = np.abs(flat).max(axis=1)
    best = amax.copy()
    err0 = ((fake_quant_channels(flat, amax) - flat) ** 2).mean(axis=1)
    best_err = err0.copy()
    for f in WEIGHT_FRACTIONS[:-1]:
        c = amax * f
        e = ((fake_quant_channels(flat, c) - flat) ** 2).mean(axis=1)
        better = e < best_err
        best = np.where(better, c, best)
        best_err = np.where(better, e, best_err)
    thr = best.astype(np.float32)
    clipped = np.clip(flat, -thr[:, None].astype(np.float64), thr[:, None].astype(np.float64))
    out = np.moveaxis(clipped.reshape(x.shape), 0, axis).astype(np.float32)
    return out, thr, err0, best_err


@dataclass
class WeightLayer:
    node: str
    op: str
    channels: int
    clipped_channels: int
    mse_before: float  # mean over channels of the weight quantization MSE / mean(w**2)
    mse_after: float


def clip_weights(proto: onnx.ModelProto, nodes: list[tuple[onnx.NodeProto, int]]) -> list[WeightLayer]:
    """Clip the weights of ``nodes`` ((node, output-channel axis)) in place; returns per layer
    the relative weight quantization MSE before and after."""
    inits = {t.name: t for t in proto.graph.initializer}
    out = []
    for node, axis in nodes:
        t = inits[node.input[1]]
        w = numpy_helper.to_array(t)
        clipped, thr, e0, e1 = weight_clip(w, axis)
        power = float(np.mean(np.asarray(w, np.float64) ** 2)) or 1.0
        amax = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
        changed = int((thr < amax).sum())
        if changed:
            t.CopyFrom(numpy_helper.from_array(clipped, t.name))
        out.append(
            WeightLayer(
                node.name,
                node.op_type,
                int(w.shape[axis]),
                changed,
                float(f"{e0.mean() / power:.4g}"),
                float(f"{e1.mean() / power:.4g}"),
            )
        )
    return out
