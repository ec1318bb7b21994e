"""The precision step: FP32 model file -> gated FP16/INT8 model file, plus its report.

    data      calibration samples and validation samples (never the same ones)
    lower     FP16 conversion, or INT8 Q/DQ (candidate layouts timed on onnxruntime CPU)
    gate      lowered vs FP32 on the validation samples
    fallback  while the gate fails: rank nodes by added error, keep the worst FP32
    measure   size and latency of FP32 and the result, round-robin in one process

Raises ``UsageError`` (bad data, exit 2), ``ConversionError`` (exit 3: the
conversion failed, or INT8 is slower than FP32 on the target it is meant for) and
``VerificationError`` (exit 4: the gate still fails after the fallback budget).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from tensorsmith import sandbox
from tensorsmith.errors import ConversionError, UsageError, short
from tensorsmith.precision import PrecisionOptions
from tensorsmith.precision import calibration as cal
from tensorsmith.precision import gate as gt
from tensorsmith.precision import int8 as i8
from tensorsmith.precision.latency import cpu_session, measure
from tensorsmith.precision.lower_fp16 import lower_fp16
from tensorsmith.precision.lower_int8 import lower_int8
from tensorsmith.precision.lowering import RANK_SAMPLES, latency_dict
from tensorsmith.precision.progress import NullProgress
from tensorsmith.verify import session_feeds

MAX_VAL = 32
RANDOM_CALIB = 32


@dataclass
class LowerResult:
    path: Path  # the lowered model, inside the work folder
    report: dict = field(default_factory=dict)


def _run_all(
    sess, samples: list[dict[str, np.ndarray]], what: str, progress, label: str, hint: str | None = None
) -> list[dict[str, np.ndarray]]:
    names = [o.name for o in sess.get_outputs()]
    out = []
    advance = progress.track(label, len(samples))
    try:
        for i, s in enumerate(samples):
            try:
                values = sess.run(names, session_feeds(sess, s))
            except Exception as exc:
                if what == "source":
                    raise UsageError(
                        f"the FP32 model fails on validation sample {i}: {short(exc, 200)}", hint=hint
                    ) from None
                raise ConversionError(
                    f"the {what} model fails in onnxruntime on sample {i}: {short(exc, 200)}"
                ) from None
            out.append(dict(zip(names, values, strict=False)))
            advance()
    finally:
        progress.done(label)
    return out


# ---------------------------------------------------------------------------
# data


def load_data(
    opts: PrecisionOptions,
    specs,
    input_shapes,
    progress,
    int_bounds: dict[str, int] | None = None,
) -> tuple[cal.Dataset | None, cal.Dataset, list[str]]:
    """(calibration set or None, validation set, warnings). ``int_bounds``: for random samples."""
    warnings: list[str] = []
    need_calib = opts.precision == "int8" and opts.int8_mode == "static"
    val: cal.Dataset | None = None
    if opts.val:
        progress.step("loading --val")
        val = cal.load_path(opts.val, specs, what="--val", preprocess=opts.calib_preprocess, limit=256)
    calib: cal.Dataset | None = None
    if opts.calib == "random":
        warnings.append(
            "--calib random: calibrating on random inputs, for smoke tests only; the result is not meaningful"
        )
        calib = cal.random_dataset(
            specs, input_shapes, min(opts.calib_samples, RANDOM_CALIB), int_bounds=int_bounds
        )
        if val is None:
            val = cal.random_dataset(
                specs, input_shapes, 8, seed=cal.RANDOM_SEED + 1000, int_bounds=int_bounds
            )
            val.source = "random (held apart from calibration)"
    elif opts.calib or opts.calib_loader:
        progress.step("loading calibration data")
        limit = opts.calib_samples + (0 if val is not None else MAX_VAL)
        if opts.calib_loader:
            data = cal.load_loader(opts.calib_loader, specs, limit=limit)
        else:
            if opts.calib is None:
                raise UsageError("--precision int8 needs calibration data: --calib PATH or --calib-loader")
            data = cal.load_path(
                opts.calib, specs, what="--calib", preprocess=opts.calib_preprocess, limit=limit
            )
        if val is None:
            calib, val = cal.split_holdout(data, opts.calib_samples, max_val=MAX_VAL)
        else:
            calib = cal.Dataset(data.samples[: opts.calib_samples], data.source, data.random, data.files)
    if val is None:
        warnings.append("no --val or --calib data: the accuracy gate runs on random inputs")
        val = cal.random_dataset(specs, input_shapes, 8, seed=cal.RANDOM_SEED + 1000, int_bounds=int_bounds)
    if need_calib and calib is None:  # pragma: no cover - PrecisionOptions.check() refuses this
        raise UsageError("--precision int8 needs --calib")
    return calib, val, warnings


# ---------------------------------------------------------------------------
# the step


def lower(
    fp32_path: str | os.PathLike,
    reference_path: str | os.PathLike,
    work_dir: str | os.PathLike,
    opts: PrecisionOptions,
    *,
    input_shapes: dict[str, list[int]] | None = None,
    progress=None,
) -> LowerResult:
    """Lower ``fp32_path`` (already optimized) to ``opts.precision`` inside ``work_dir``.

    ``reference_path`` is the FP32 model the gate compares with (the user's
    input; the optimized model computes the same function to fp32 tolerance).
    """
    from tensorsmith import model_io
    from tensorsmith.verify import input_specs_from_proto, integer_bounds

    progress = progress or NullProgress()
    work = Path(work_dir)
    fp32_path = Path(fp32_path)
    t_start = time.perf_counter()
    proto = model_io.load_proto(fp32_path)
    onnx.external_data_helper.load_external_data_for_model(proto, str(fp32_path.parent))
    specs = input_specs_from_proto(proto)
    calib, val, warnings = load_data(opts, specs, input_shapes, progress, int_bounds=integer_bounds(proto))
    for w in warnings:
        progress.warn(w)

    # reference outputs on the validation samples (the gate's ground truth)
    progress.step("running the FP32 model on the validation samples")
    try:
        ref_sess = cpu_session(reference_path, threads=0, optimize=False)
    except Exception as exc:
        raise UsageError(f"onnxruntime cannot load the FP32 model: {short(exc, 200)}") from None
    refs = _run_all(
        ref_sess,
        val.samples,
        "source",
        progress,
        "gate: FP32 reference",
        hint="the validation samples are random: give inputs the model accepts with --val PATH"
        if val.random
        else None,
    )
    class_outputs = gt.class_score_outputs(proto)
    defaults = gt.Thresholds.defaults(opts.precision)
    thresholds = gt.Thresholds(
        min_cosine=opts.min_cosine if opts.min_cosine is not None else defaults.min_cosine,
        min_top1=opts.min_top1 if opts.min_top1 is not None else defaults.min_top1,
        max_abs=opts.max_abs,
        max_rel=opts.max_rel,
    )

    def gate(path: Path, label: str) -> gt.GateResult:
        progress.step(f"gate: {label}")
        # a native crash here would end the process (and a recipe's other jobs): probe first
        sandbox.check(path, f"the {opts.precision} model ({label})")
        try:
            sess = cpu_session(path, threads=0, optimize=True)
        except Exception as exc:
            raise ConversionError(
                f"the {opts.precision} model does not load in onnxruntime: {short(exc, 200)}"
            ) from None
        gots = _run_all(sess, val.samples, opts.precision, progress, f"gate: {label}")
        return gt.evaluate(refs, gots, thresholds, class_outputs)

    report: dict = {
        "precision": opts.precision,
        "target": opts.target,
        "calibration": None,
        "validation": {**val.describe(), "source": val.source},
        "warnings": list(warnings),
        "notes": [],
    }
    if calib is not None and opts.precision == "int8":
        report["calibration"] = {**calib.describe(), "method": opts.calib_method}
    rank_samples = (calib.samples if calib is not None else val.samples)[:RANK_SAMPLES]

    if opts.precision == "fp16":
        result = lower_fp16(proto, work, opts, gate, rank_samples, calib, val, progress, report)
    else:
        result = lower_int8(proto, work, opts, gate, calib, rank_samples, progress, report)

    # size and latency, FP32 vs the result
    report["size"] = {"fp32": i8.file_bytes(fp32_path), "lowered": i8.file_bytes(result)}
    report["size"]["ratio"] = report["size"]["lowered"] / max(1, report["size"]["fp32"])
    if opts.measure_latency and "latency" not in report:
        progress.step("timing FP32 and the result (onnxruntime CPU, 1 thread, round-robin)")
        lat = measure([fp32_path, result], val.samples[0])
        report["latency"] = latency_dict(lat[0], lat[1])
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    _table(report)
    return LowerResult(result, report)


def _table(report: dict) -> None:
    """Rows FP32 and the result: size, latency, accuracy, nodes kept in higher precision."""
    lat = report.get("latency") or {}
    gate = report.get("gate") or {}
    rows = [
        {
            "precision": "fp32",
            "size": report["size"]["fp32"],
            "latency_ms": lat.get("fp32_ms"),
            "speedup": 1.0 if lat else None,
            "cosine": 1.0,
            "top1": 1.0 if gate.get("worst_top1") is not None else None,
            "kept_fp32": None,
        },
        {
            "precision": report["precision"],
            "size": report["size"]["lowered"],
            "latency_ms": lat.get("ms"),
            "speedup": lat.get("speedup"),
            "cosine": gate.get("worst_cosine"),
            "top1": gate.get("worst_top1"),
            "kept_fp32": len(report.get("kept", [])),
        },
    ]
    report["table"] = rows


__all__ = ["LowerResult", "load_data", "lower"]
