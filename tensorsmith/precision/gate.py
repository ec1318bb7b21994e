"""The accuracy gate: the lowered model against the FP32 model on validation samples.

Per output: cosine similarity (per sample, averaged; the worst sample is reported
too), max absolute error, max error relative to the output's scale (its largest
absolute FP32 value) and, where the output looks like class scores, top-1
agreement. Integer and bool outputs must match exactly.

An output "looks like class scores" when it is a float [N, C] tensor (C >= 2)
produced by Gemm, MatMul (optionally + Add), Softmax, LogSoftmax or Sigmoid: a
classifier head. ``class_outputs`` overrides the guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tensorsmith.tolerances import TOLERANCES

CLASS_HEAD_OPS = {"Gemm", "MatMul", "Softmax", "LogSoftmax", "Sigmoid"}


@dataclass
class Thresholds:
    min_cosine: float | None = None
    min_top1: float | None = None
    max_abs: float | None = None
    max_rel: float | None = None

    @classmethod
    def defaults(cls, precision: str) -> Thresholds:
        """The precision's row of the one tolerance table (``tensorsmith.tolerances``)."""
        row = TOLERANCES.get(precision)
        return cls() if row is None else cls(min_cosine=row.min_cosine, min_top1=row.min_top1)

    def to_dict(self) -> dict:
        return {
            "min_cosine": self.min_cosine,
            "min_top1": self.min_top1,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
        }


@dataclass
class OutputMetrics:
    name: str
    cosine: float = 1.0  # mean over samples
    cosine_min: float = 1.0  # worst sample
    max_abs: float = 0.0
    max_rel: float = 0.0
    top1: float | None = None  # agreement in [0, 1], for class-score outputs
    exact: bool | None = None  # integer outputs
    passed: bool = True
    reason: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "cosine": self.cosine,
            "cosine_min": self.cosine_min,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "top1": self.top1,
            "exact": self.exact,
            "passed": self.passed,
            "reason": self.reason,
        }


@dataclass
class GateResult:
    passed: bool
    outputs: list[OutputMetrics]
    samples: int
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def worst_cosine(self) -> float:
        vals = [o.cosine for o in self.outputs if o.exact is None]
        return min(vals, default=1.0)

    @property
    def worst_top1(self) -> float | None:
        vals = [o.top1 for o in self.outputs if o.top1 is not None]
        return min(vals) if vals else None

    @property
    def error(self) -> float:
        """One number to minimise: 1 - worst cosine (plus top-1 disagreement)."""
        err = 1.0 - self.worst_cosine
        if self.worst_top1 is not None:
            err += 1.0 - self.worst_top1
        if any(o.exact is False for o in self.outputs):
            err += 1.0
        return err

    def failures(self) -> list[OutputMetrics]:
        return [o for o in self.outputs if not o.passed]

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "samples": self.samples,
            "thresholds": self.thresholds.to_dict(),
            "worst_cosine": self.worst_cosine,
            "worst_top1": self.worst_top1,
            "outputs": [o.to_dict() for o in self.outputs],
        }

    def summary(self) -> str:
        bad = self.failures()
        if not bad:
            return "passed"
        return "; ".join(f"{o.name}: {o.reason}" for o in bad)


def class_score_outputs(proto) -> set[str]:
    """Graph outputs that look like class scores (see module doc)."""
    producers = {}
    for node in proto.graph.node:
        for out in node.output:
            producers[out] = node
    found = set()
    for vi in proto.graph.output:
        tt = vi.type.tensor_type
        if tt.elem_type not in (1, 10, 11, 16):  # float, float16, double, bfloat16
            continue
        dims = list(tt.shape.dim) if tt.HasField("shape") else []
        if len(dims) != 2:
            continue
        c = dims[1].dim_value if dims[1].HasField("dim_value") else 0
        if c and c < 2:
            continue
        node = producers.get(vi.name)
        seen = 0
        while node is not None and node.op_type in ("Identity", "Flatten", "Reshape", "Squeeze") and seen < 4:
            node = producers.get(node.input[0])
            seen += 1
        if node is None:
            continue
        if node.op_type in CLASS_HEAD_OPS:
            found.add(vi.name)
        elif node.op_type == "Add":
            ins = [producers.get(i) for i in node.input]
            if any(p is not None and p.op_type in ("MatMul", "Gemm") for p in ins):
                found.add(vi.name)
    return found


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0 or not (math.isfinite(na) and math.isfinite(nb)):
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def evaluate(
    refs: list[dict[str, np.ndarray]],
    gots: list[dict[str, np.ndarray]],
    thresholds: Thresholds,
    class_outputs: set[str] | None = None,
) -> GateResult:
    """Compare per-sample output dicts of the FP32 model (``refs``) and the lowered one."""
    class_outputs = class_outputs or set()
    names = list(refs[0]) if refs else []
    results = []
    for name in names:
        m = OutputMetrics(name)
        cosines, agree, total = [], 0, 0
        scale = 0.0
        for ref, got in zip(refs, gots, strict=False):
            r = np.asarray(ref[name])
            g = np.asarray(got.get(name)) if name in got else None
            if g is None or g.shape != r.shape:
                m.passed, m.reason = (
                    False,
                    "missing output" if g is None else f"shape {list(g.shape)} != FP32 {list(r.shape)}",
                )
                break
            if r.dtype.kind not in "fc":
                same = bool(np.array_equal(r, g))
                m.exact = same if m.exact is None else (m.exact and same)
                continue
            g = g.astype(np.float64)
            r64 = r.astype(np.float64)
            if not np.isfinite(g).all() and np.isfinite(r64).all():
                m.passed, m.reason = False, "NaN/Inf where FP32 is finite"
            finite = np.isfinite(r64) & np.isfinite(g)
            if finite.any():
                diff = np.abs(r64[finite] - g[finite])
                m.max_abs = max(m.max_abs, float(diff.max()))
                scale = max(scale, float(np.abs(r64[finite]).max()))
            cosines.append(_cos(np.where(finite, r64, 0), np.where(finite, g, 0)))
            if name in class_outputs and r.ndim == 2:
                agree += int((r.argmax(axis=1) == g.argmax(axis=1)).sum())
                total += r.shape[0]
        if m.exact is not None:
            if not m.exact and m.passed:
                m.passed, m.reason = False, "integer output differs (exact match required)"
            results.append(m)
            continue
        if cosines:
            m.cosine = float(np.mean(cosines))
            m.cosine_min = float(np.min(cosines))
        m.max_rel = m.max_abs / scale if scale > 0 else (0.0 if m.max_abs == 0 else math.inf)
        if total:
            m.top1 = agree / total
        if m.passed:
            reasons = []
            t = thresholds
            if t.min_cosine is not None and m.cosine < t.min_cosine:
                reasons.append(f"cosine {m.cosine:.4f} < {t.min_cosine:g}")
            if t.min_top1 is not None and m.top1 is not None and m.top1 < t.min_top1:
                reasons.append(f"top-1 agreement {m.top1:.1%} < {t.min_top1:.0%}")
            if t.max_abs is not None and m.max_abs > t.max_abs:
                reasons.append(f"max abs error {m.max_abs:.3g} > {t.max_abs:g}")
            if t.max_rel is not None and m.max_rel > t.max_rel:
                reasons.append(f"max rel error {m.max_rel:.3g} > {t.max_rel:g}")
            if reasons:
                m.passed, m.reason = False, ", ".join(reasons)
        results.append(m)
    return GateResult(all(o.passed for o in results), results, len(refs), thresholds)
