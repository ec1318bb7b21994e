"""One comparator: run two runners on the same samples, compare every output.

As Polygraphy's ``Comparator.run`` + ``compare_accuracy``: ``run_and_compare(reference,
candidate, samples, tolerance)`` serves every pair (ONNX vs ONNX, ONNX vs the source
framework, a TensorRT engine vs onnxruntime, TF-TRT vs TensorFlow). Per output it
gives the max absolute difference and the max difference relative to the output's
scale (its largest absolute reference value); an output passes when ``max_abs <= atol
+ rtol * scale``. Integer and bool outputs must match exactly; shapes must match
exactly. Lowered precisions (FP16/BF16/INT8) are then judged by the precision gate
(``judge_precision``: cosine similarity, top-1 agreement). Default tolerances for
both come from the one table in ``tensorsmith.tolerances``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tensorsmith.runners import Feeds, Runner
from tensorsmith.tolerances import Tolerance, defaults_for


@dataclass
class OutputCheck:
    name: str
    shape: list[int]
    max_abs_diff: float
    max_rel_diff: float
    scale: float
    passed: bool
    reason: str = ""
    # the output's numeric noise on these inputs (see ``noise_floor``); None: not measured
    noise_floor: float | None = None

    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "shape": self.shape,
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "scale": self.scale,
            "passed": self.passed,
            "reason": self.reason,
        }
        if self.noise_floor is not None:
            d["noise_floor"] = self.noise_floor
        return d


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], tol: Tolerance) -> list[OutputCheck]:
    checks = []
    for name, r in ref.items():
        g = got.get(name)
        if g is None:
            checks.append(
                OutputCheck(name, list(np.shape(r)), float("inf"), float("inf"), 0.0, False, "output missing")
            )
            continue
        r = np.asarray(r)
        g = np.asarray(g)
        if r.shape != g.shape:
            checks.append(
                OutputCheck(
                    name,
                    list(r.shape),
                    float("inf"),
                    float("inf"),
                    0.0,
                    False,
                    f"shape {list(g.shape)} != source {list(r.shape)}",
                )
            )
            continue
        if r.dtype != g.dtype:
            checks.append(
                OutputCheck(
                    name,
                    list(r.shape),
                    float("inf"),
                    float("inf"),
                    0.0,
                    False,
                    f"dtype {g.dtype} != source {r.dtype}",
                )
            )
            continue
        if r.dtype.kind not in "fc":
            equal = bool(np.array_equal(r, g))
            diff = (
                0.0
                if equal
                else float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64))))
                if r.dtype.kind in "iub"
                else float("inf")
            )
            checks.append(
                OutputCheck(
                    name,
                    list(r.shape),
                    diff,
                    0.0 if equal else float("inf"),
                    0.0,
                    equal,
                    "" if equal else "values differ (exact match required)",
                )
            )
            continue
        r64 = r.astype(np.float64)
        g64 = g.astype(np.float64)
        nan_r, nan_g = np.isnan(r64), np.isnan(g64)
        if not np.array_equal(nan_r, nan_g):
            checks.append(
                OutputCheck(
                    name, list(r.shape), float("inf"), float("inf"), 0.0, False, "NaN in different places"
                )
            )
            continue
        finite = ~nan_r
        inf_r = np.isinf(r64) & finite
        if not np.array_equal(r64[inf_r], g64[inf_r]) or not np.array_equal(inf_r, np.isinf(g64) & finite):
            checks.append(
                OutputCheck(
                    name, list(r.shape), float("inf"), float("inf"), 0.0, False, "Inf in different places"
                )
            )
            continue
        ok = finite & ~inf_r
        if r64.size == 0 or not ok.any():
            checks.append(OutputCheck(name, list(r.shape), 0.0, 0.0, 0.0, True))
            continue
        abs_diff = np.abs(r64[ok] - g64[ok])
        max_abs = float(abs_diff.max())
        scale = float(np.abs(r64[ok]).max())
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        passed = max_abs <= tol.atol + tol.rtol * scale
        checks.append(
            OutputCheck(
                name,
                list(r.shape),
                max_abs,
                max_rel,
                scale,
                passed,
                ""
                if passed
                else f"max abs diff {max_abs:.3g} > {tol.atol:g} + {tol.rtol:g} x scale {scale:.3g}",
            )
        )
    return checks


def merge(a: list[OutputCheck] | None, b: list[OutputCheck]) -> list[OutputCheck]:
    """Fold one sample's checks into the checks so far (worst difference, all must pass)."""
    if a is None:
        return b
    out = []
    for x, y in zip(a, b, strict=False):
        worst = y if (not y.passed and x.passed) or y.max_abs_diff > x.max_abs_diff else x
        merged = OutputCheck(
            x.name,
            x.shape,
            max(x.max_abs_diff, y.max_abs_diff),
            max(x.max_rel_diff, y.max_rel_diff),
            max(x.scale, y.scale),
            x.passed and y.passed,
            worst.reason if not (x.passed and y.passed) else "",
            x.noise_floor,
        )
        out.append(merged)
    return out


@dataclass
class Comparison:
    """What ``run_and_compare`` found: the merged checks and every sample's outputs."""

    outputs: list[OutputCheck]
    refs: list[Feeds] = field(default_factory=list)
    gots: list[Feeds] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)


ErrorMap = Callable[[int, Feeds, Exception], Exception | None]


def run_and_compare(
    reference: Runner,
    candidate: Runner,
    samples: Sequence[Feeds],
    tolerance: Tolerance,
    *,
    on_sample: Callable[[int, int], None] | None = None,
    reference_error: ErrorMap | None = None,
    candidate_error: ErrorMap | None = None,
    align_int_dtypes: bool = False,
) -> Comparison:
    """Run ``reference`` and ``candidate`` on each sample and compare their outputs.

    ``reference_error``/``candidate_error(i, feeds, exc)`` turn a runner's failure on
    sample ``i`` into the error to raise (None: raise it as it is).
    ``align_int_dtypes``: cast the candidate's output to the reference's dtype where
    both are of one kind (TensorRT hands back INT32 where ONNX says INT64). Both
    runners are activated for the run and deactivated after.
    """
    merged: list[OutputCheck] | None = None
    result = Comparison([])
    with reference, candidate:
        for i, feeds in enumerate(samples):
            if on_sample:
                on_sample(i, len(samples))
            ref = _infer(reference, i, feeds, reference_error)
            got = _infer(candidate, i, feeds, candidate_error)
            if align_int_dtypes:
                for name, r in ref.items():
                    g = got.get(name)
                    if g is not None and g.dtype != r.dtype and g.dtype.kind == r.dtype.kind:
                        got[name] = g.astype(r.dtype)
            result.refs.append(ref)
            result.gots.append(got)
            merged = merge(merged, compare(ref, got, tolerance))
    result.outputs = merged or []
    return result


def _infer(runner: Runner, i: int, feeds: Feeds, on_error: ErrorMap | None) -> Feeds:
    if on_error is None:
        return runner.infer(feeds)
    try:
        return runner.infer(feeds)
    except Exception as exc:
        mapped = on_error(i, feeds, exc)
        if mapped is None:
            raise
        raise mapped from None


def judge_precision(
    comparison: Comparison, precision: str, class_outputs: set[str], notes: list[str]
) -> bool:
    """Judge an FP16/BF16/INT8 result by the precision gate (``tensorsmith.precision.gate``:
    cosine similarity, top-1 agreement on class-score outputs, thresholds from the
    tolerance table). Updates ``comparison.outputs`` in place and appends a note; returns
    the verdict."""
    from tensorsmith.precision import gate

    row = defaults_for(precision)
    thresholds = gate.Thresholds(min_cosine=row.min_cosine, min_top1=row.min_top1)
    result = gate.evaluate(comparison.refs, comparison.gots, thresholds, class_outputs)
    metrics = {m.name: m for m in result.outputs}
    for o in comparison.outputs:
        m = metrics.get(o.name)
        if m is not None:
            o.passed, o.reason = m.passed, m.reason
    notes.append(
        f"{precision} result judged by the precision gate {thresholds.to_dict()} "
        f"(worst cosine {result.worst_cosine:.5f}); max abs diff shown for information"
    )
    return result.passed


GATED_PRECISIONS = ("fp16", "bf16", "int8")

# The noise floor. Two legitimate runs of one model (onnxruntime with all graph
# optimizations and with none: other kernels, other accumulation orders) differ by the
# numeric noise of that model on those inputs; a third legitimate run (the source
# framework) is expected to differ from either by about as much. A float output whose
# difference exceeds the tolerance passes when it is within NOISE_FACTOR x that noise,
# never more than NOISE_CAP x the tolerance itself (a wrong optimizer must not excuse
# a real conversion bug).
NOISE_FACTOR = 2.0
NOISE_CAP = 10.0


def noise_floor(alternative: Runner, samples: Sequence[Feeds], outputs: Sequence[Feeds]) -> dict[str, float]:
    """Per float output: the largest difference between ``outputs`` (one legitimate run
    per sample) and ``alternative``'s run on the same samples."""
    noise: dict[str, float] = {}
    with alternative:
        for feeds, got in zip(samples, outputs, strict=True):
            alt = alternative.infer(feeds)
            for name, g in got.items():
                a = alt.get(name)
                g = np.asarray(g)
                if a is None or g.dtype.kind != "f" or np.shape(a) != g.shape:
                    continue
                d = np.abs(g.astype(np.float64) - np.asarray(a, np.float64))
                d = d[np.isfinite(d)]
                if d.size:
                    noise[name] = max(noise.get(name, 0.0), float(d.max()))
    return noise


def within_noise(outputs: list[OutputCheck], noise: dict[str, float], tol: Tolerance) -> list[str]:
    """Record each output's noise floor; pass the float outputs that failed the tolerance
    only by numeric noise. Returns one note per output passed that way."""
    notes = []
    for o in outputs:
        n = noise.get(o.name)
        if n is None:
            continue
        o.noise_floor = n
        if o.passed or not np.isfinite(o.max_abs_diff) or not o.reason.startswith("max abs diff"):
            continue
        base = tol.atol + tol.rtol * o.scale
        allowed = base + min(NOISE_FACTOR * n, (NOISE_CAP - 1) * base)
        if o.max_abs_diff <= allowed:
            o.passed, o.reason = True, ""
            notes.append(
                f"{o.name}: max abs diff {o.max_abs_diff:.3g} ({o.max_rel_diff:.2g} of scale) is over the "
                f"tolerance ({base:.3g}) but within {NOISE_FACTOR:g}x its noise floor {n:.3g} (onnxruntime "
                "with and without graph optimizations differ by that much on these inputs)"
            )
        else:
            o.reason += f"; noise floor {n:.3g}"
    return notes


__all__ = [
    "GATED_PRECISIONS",
    "Comparison",
    "OutputCheck",
    "Tolerance",
    "compare",
    "judge_precision",
    "merge",
    "run_and_compare",
]


def judge_by_noise(
    comparison: Comparison,
    model_path,
    samples: Sequence[Feeds],
    tol: Tolerance,
    *,
    wrap: Callable[[Runner], Runner] | None = None,
) -> list[str]:
    """Measure the noise floor of the ONNX model at ``model_path`` (onnxruntime with all
    graph optimizations vs the unoptimized run ``comparison`` holds) and pass the outputs
    that failed only by noise (``within_noise``); returns the notes. Measured only when an
    output is over its tolerance, so a passing run costs nothing. The optimized session
    is created in a child process first (``sandbox``): it may crash. ``wrap`` adapts the
    optimized runner as the candidate was adapted (inputs/outputs matched by position)."""
    from tensorsmith import sandbox
    from tensorsmith.errors import short
    from tensorsmith.runners import OnnxRuntimeRunner

    if not any(o.reason.startswith("max abs diff") for o in comparison.outputs):
        return []
    crash = sandbox.probe(model_path, optimize=True)
    if crash is not None:
        return [f"noise floor not measured: {crash}"]
    alternative: Runner = OnnxRuntimeRunner(model_path, optimize=True)
    if wrap is not None:
        alternative = wrap(alternative)
    try:
        noise = noise_floor(alternative, samples, comparison.gots)
    except Exception as exc:
        return [f"noise floor not measured: {short(exc, 160)}"]
    return within_noise(comparison.outputs, noise, tol)
