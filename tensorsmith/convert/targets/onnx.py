"""Target ``onnx``: an optimized, verified ONNX model (FP32, or FP16/INT8 with ``--precision``).

An ONNX source goes through ``optimize.optimize_file``, a TensorFlow/PyTorch one
through ``convert.job.convert_file``; either lowers the precision after the passes
when asked. The TensorRT target makes its ready-to-build ONNX with the same calls.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tensorsmith import jobs
from tensorsmith.convert.targets import Job, Report, Step, capability


def describe(source_format: str | None, lowered: bool) -> str:
    """The library calls that make the ONNX, for reports."""
    framework = jobs.is_framework(source_format)
    onnx = "convert_file" if framework else "optimize_file"
    return onnx + ("(precision)" if lowered else "")


def plan_onnx(opts: dict[str, Any], source_format: str | None, default_target: str) -> dict[str, Any]:
    """The keyword arguments of the ONNX calls: ``onnx`` (the file function's) and ``precision``."""
    popts = jobs.precision_options(opts, default_target)
    return {"onnx": jobs.onnx_kwargs(opts, jobs.is_framework(source_format)), "precision": popts}


def make_onnx(job: Job, out: Path, step: Callable[[str], None], progress=None):
    """Write the job's ONNX at ``out`` (passes run once, the file written once); its ``JobReport``."""
    kw = dict(job.kwargs["onnx"])
    popts = job.kwargs.get("precision")
    extra = {"precision": popts, "progress": progress} if popts is not None else {}
    if not jobs.is_framework(job.source_format):
        from tensorsmith.optimizer import optimize_file

        return optimize_file(job.source, out, on_step=step, **kw, **extra)
    from tensorsmith.convert.job import convert_file

    kw.setdefault("source_format", job.source_format)
    return convert_file(job.source, out, on_step=step, **kw, **extra)


class OnnxTarget:
    name = "onnx"
    description = "optimized, verified ONNX"
    extension = ".onnx"
    writes_onnx = True
    needs: tuple[str, ...] = ()
    Options: type[BaseModel] | None = None
    lowers_in_graph = True
    builds_engine = False
    libraries: tuple[str, ...] = ()

    def applies(self, key: str, framework: bool) -> bool:
        return (
            key in jobs.ONNX_KEYS or key in jobs.PRECISION_KEYS or (framework and key in jobs.FRONTEND_KEYS)
        )

    def refusal(self, key: str) -> str | None:
        return None

    def check_source(self, source_format: str | None) -> None:
        return None

    def plan(self, opts: dict[str, Any], source_format: str | None) -> tuple[str, dict[str, Any]]:
        kwargs = plan_onnx(opts, source_format, "ort")
        return describe(source_format, kwargs["precision"] is not None), kwargs

    def check_output(self, source: str, out: Path) -> None:
        return None

    def missing(self) -> list[str]:
        return []

    def capabilities(self, info: dict) -> dict[str, dict]:
        ok = bool(info["onnxruntime"].get("version"))
        return {"onnx": capability(None if ok else "onnxruntime is not installed (verification needs it)")}

    def run(self, job: Job, out: Path, step: Step, progress=None, on_lint=None) -> Report:
        report: Report = make_onnx(job, out, step, progress)
        return report

    def main_output(self, report: Report, out: Path) -> Path:
        return out


TARGET = OnnxTarget()
