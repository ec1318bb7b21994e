"""The ``.plan.json`` sidecar: what an engine is tied to (TensorRT version, GPU) and how
it was built."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from tensorsmith.convert.trt.options import HARDWARE_COMPAT, TrtOptions
from tensorsmith.convert.trt.report import BuildReport


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_contents(report: BuildReport, onnx_path, options: TrtOptions) -> dict:
    """What an engine is tied to: its TensorRT version and GPU, and how it was built."""
    from tensorsmith import __version__

    mode = report.mode
    return {
        "format": "tensorsmith.trt-plan/1",
        "plan": Path(report.output or "").name,
        "tensorrt_version": report.tensorrt_version,
        "gpu": report.gpu,
        "profiles": report.profiles,
        "precision": {
            "engine": mode.precision if mode else None,
            "graph": mode.graph if mode else None,
            "requested": None if options.precision in (None, "auto") else options.precision,
            "typing": None if mode is None else ("strong" if mode.strongly_typed else "weak"),
            "builder_flags": mode.builder_flags if mode else [],
        },
        "source_onnx": {"path": str(onnx_path), "sha256": report.source_sha256},
        "flags": {
            "workspace": options.workspace,
            "builder_optimization_level": options.builder_opt_level,
            "hardware_compatibility_level": HARDWARE_COMPAT.get((options.hardware_compat or "").lower()),
            "version_compatible": options.version_compat,
            "timing_cache": str(options.timing_cache) if options.timing_cache else None,
            "max_batch": options.max_batch,
        },
        "verification": None
        if report.verification is None
        else {
            "passed": report.verification.passed,
            "max_abs_diff": report.verification.max_abs_diff,
            "rtol": report.verification.tolerance.rtol,
            "atol": report.verification.tolerance.atol,
            "samples": report.verification.samples,
        },
        "tensorsmith": __version__,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
