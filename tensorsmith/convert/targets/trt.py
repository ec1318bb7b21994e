"""Target ``trt``: a TensorRT engine (``.plan`` + ``.plan.json``), verified against onnxruntime.

The job writes the ready-to-build ONNX (``OUT.trt.onnx``, the ``onnx`` target's
calls), lints it for TensorRT, then builds and verifies the engine on this machine
(``build_engine``), or stops there with ``prepare_only``. The TensorRT code itself
is the ``tensorsmith.convert.trt`` package, called through its public names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from tensorsmith import jobs, machine
from tensorsmith.config import TrtConfig
from tensorsmith.convert.targets import Job, Rendered, Report, Step, capability
from tensorsmith.convert.targets.onnx import describe as describe_onnx
from tensorsmith.convert.targets.onnx import make_onnx, plan_onnx
from tensorsmith.errors import ConversionError, TensorsmithError, UsageError


def trt_options(opts: dict, *, precision: str | None = None, tolerance=None):
    """TensorRT build options from job options (``convert --to trt``, recipes, ``tensorsmith build``).

    ``precision`` is the engine's (``build --precision``; ``convert`` puts it in the
    graph instead), ``tolerance`` the engine check's (``build --rtol/--atol``).
    """
    from tensorsmith.convert.trt import TrtOptions, parse_workspace
    from tensorsmith.convert.trt.profiles import DEFAULT_MAX_BATCH, parse_profile_specs
    from tensorsmith.shapes import parse_input_shapes

    shapes = jobs.guard("shapes", lambda: parse_profile_specs(opts.get("shapes")))
    workspace = jobs.guard("workspace", lambda: parse_workspace(opts.get("workspace")))
    timing = opts.get("timing_cache")
    trt = TrtOptions(
        shapes=shapes,
        input_shapes=jobs.guard("input_shape", lambda: parse_input_shapes(opts.get("input_shape"))),
        max_batch=opts.get("max_batch") or DEFAULT_MAX_BATCH,
        workspace=workspace,
        timing_cache=Path(timing) if timing else None,
        builder_opt_level=opts.get("builder_opt_level"),
        hardware_compat=opts.get("hardware_compat"),
        version_compat=bool(opts.get("version_compat")),
        precision=precision,
        verify=opts.get("verify", True) is not False,
        verify_data=Path(opts["verify_data"]) if opts.get("verify_data") else None,
        tolerance=tolerance,
    )
    key = "hardware_compat" if opts.get("hardware_compat") else "builder_opt_level"
    jobs.guard(key, trt.validate)
    return trt


def name_single_profile(opts, onnx_path: Path) -> None:
    """``shapes: MIN:OPT:MAX`` without ``NAME=`` on a one-input model: name it."""
    if "" not in opts.shapes:
        return
    from tensorsmith.convert.trt.profiles import resolve_profiles
    from tensorsmith.model_io import load_proto
    from tensorsmith.verify import input_specs_from_proto

    specs = input_specs_from_proto(load_proto(onnx_path))
    resolve_profiles(specs, opts.shapes, max_batch=opts.max_batch)
    opts.shapes[specs[0].name] = opts.shapes.pop("")


def engine_report(report: Any) -> Rendered:
    """A ``trt_backend.BuildReport`` with its renderer."""
    from tensorsmith.convert import trt as trt_backend

    return Rendered(report, trt_backend.render)


def missing_for_build(hint: str) -> None:
    """``ConversionError`` (exit 3) unless this machine can build an engine."""
    from tensorsmith.convert import trt as trt_backend

    missing = trt_backend.missing_for_build()
    if missing:
        raise ConversionError(
            f"cannot build a TensorRT engine on this machine: {'; '.join(missing)}", hint=hint
        )


def build_prepared(prepared: Path, out: Path, opts, step: Step, lint, *, onnx_report=None) -> Rendered:
    """Build and verify the engine of a ready-to-build ONNX (``convert --to trt``, ``tensorsmith build``);
    ``lint`` (its lint report) and, from a convert job, the ONNX step's report go into the engine's."""
    from tensorsmith.convert import trt as trt_backend

    try:
        report = trt_backend.build_engine(prepared, out, opts, on_step=step)
    except TensorsmithError as exc:
        failed = exc.job
        if failed is not None and hasattr(failed, "lint"):
            failed.lint = lint.to_dict()
            if onnx_report is not None:
                setattr(failed, "prepared_onnx", str(prepared))  # noqa: B010 - a BuildReport field
        raise
    report.lint = lint.to_dict()
    if onnx_report is not None:
        report.prepared_onnx = str(prepared)
        report.onnx = onnx_report.to_dict()
    return engine_report(report)


@dataclass
class PreparedReport:
    """``--to trt --prepare-only``: the ready-to-build ONNX and its lint report, no engine."""

    onnx: Any
    lint: Any
    prepared_onnx: str
    lint_report: str
    build_command: str

    def to_dict(self) -> dict:
        onnx = self.onnx.to_dict() if self.onnx is not None else {}
        report = dict(onnx)
        report.update(
            status="prepared",
            target="trt",
            prepared_onnx=self.prepared_onnx,
            lint_report=self.lint_report,
            build_command=self.build_command,
            lint=self.lint.to_dict(),
            onnx=onnx,
        )
        report["output"] = None
        return report

    def render(self, console: Console, *, explain: bool = False) -> None:
        from tensorsmith.lint import render

        if self.onnx is not None:
            self.onnx.render(console, explain=explain)
        render(self.lint, console)
        console.print(escape(f"ready to build: {self.prepared_onnx} (lint report {self.lint_report})"))
        console.print(
            escape(f"on a GPU machine with TensorRT 10/11 run:\n  {self.build_command}"), soft_wrap=True
        )


class TrtTarget:
    name = "trt"
    description = "TensorRT engine (.plan + .plan.json), verified vs onnxruntime"
    extension = ".plan"
    writes_onnx = False
    needs = ("an NVIDIA GPU", "TensorRT 10 or 11")
    Options = TrtConfig
    lowers_in_graph = True
    builds_engine = True
    libraries = ("tensorrt",)

    def applies(self, key: str, framework: bool) -> bool:
        return (
            key in jobs.ONNX_KEYS
            or key in jobs.PRECISION_KEYS
            or key in jobs.TRT_KEYS
            or (framework and key in jobs.FRONTEND_KEYS)
        )

    def refusal(self, key: str) -> str | None:
        return None

    def check_source(self, source_format: str | None) -> None:
        return None

    def plan(self, opts: dict[str, Any], source_format: str | None) -> tuple[str, dict[str, Any]]:
        kwargs = plan_onnx(opts, source_format, "trt")
        kwargs["trt"] = trt_options(opts)
        kwargs["prepare_only"] = bool(opts.get("prepare_only"))
        kwargs["lint"] = {"trt_version": opts["trt_version"]} if opts.get("trt_version") else None
        onnx = describe_onnx(source_format, kwargs["precision"] is not None)
        return onnx + " + trt_backend.prepare + trt_backend.build_engine", kwargs

    def check_output(self, source: str, out: Path) -> None:
        from tensorsmith.convert import trt as trt_backend

        if str(out).endswith(".onnx"):
            raise UsageError(f"-o {out}: --to trt writes a TensorRT engine; name it .plan (or .engine)")
        prepared = trt_backend.prepared_onnx_path(out)
        src = Path(source)
        if src.exists() and prepared.exists() and src.resolve() == prepared.resolve():
            raise UsageError(f"-o {out}: the ready-to-build ONNX {prepared} would overwrite the source")

    def missing(self) -> list[str]:
        from tensorsmith.convert import trt as trt_backend

        missing: list[str] = trt_backend.missing_for_build()
        return missing

    def capabilities(self, info: dict) -> dict[str, dict]:
        whys = (
            machine.tensorrt_unavailable_reason(info["tensorrt"]),
            machine.gpu_unavailable_reason(info["gpus"]),
        )
        ccs = [
            machine.vtuple(g["compute_capability"])
            for g in info["gpus"]["gpus"]
            if g.get("compute_capability")
        ]
        old = {"bf16": "BF16 needs compute capability 8.0 or newer"} if ccs and max(ccs) < (8, 0) else {}
        prepare = capability(
            None if info["onnxruntime"].get("version") else "onnxruntime is not installed",
            note="writes the ready-to-build ONNX and its lint report; run `tensorsmith build` on a GPU machine",
        )
        return {
            "trt": capability(*whys, unavailable=old),
            "trt --prepare-only": prepare,
        }

    def run(self, job: Job, out: Path, step: Step, progress=None, on_lint=None) -> Report:
        from tensorsmith.convert import trt as trt_backend

        opts = job.kwargs["trt"]
        prepare_only = job.kwargs.get("prepare_only")
        prepared = trt_backend.prepared_onnx_path(out)
        if not prepare_only:
            missing_for_build(
                f"use --prepare-only (recipe: prepare_only: true) to write {prepared.name} and its lint "
                f"report, then on a GPU machine run: {trt_backend.build_command(prepared, out, opts)}"
            )
        onnx_report = make_onnx(job, prepared, step, progress)
        name_single_profile(opts, prepared)
        step("lint for TensorRT")
        lint = trt_backend.prepare(prepared, out, opts, lint_options=job.kwargs.get("lint"))
        if prepare_only:
            return PreparedReport(
                onnx_report,
                lint,
                str(prepared),
                str(trt_backend.lint_report_path(out)),
                trt_backend.build_command(prepared, out, opts),
            )
        if on_lint is not None:
            on_lint(lint)
        return build_prepared(prepared, out, opts, step, lint, onnx_report=onnx_report)

    def main_output(self, report: Report, out: Path) -> Path:
        if isinstance(report, PreparedReport):
            return Path(report.prepared_onnx)
        return out


TARGET = TrtTarget()
