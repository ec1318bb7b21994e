"""One conversion job: options -> library calls. ``tensorsmith optimize``/``convert``
and every recipe job go through here, so a command line and its ``--dump-recipe``
recipe make the same calls.

A job is one of these chains of library functions (the same ones the CLI calls):

=================  ====================================================================
source -> to       calls
=================  ====================================================================
ONNX -> onnx       ``pipeline.optimize_file`` (``precision=`` for fp16/int8)
framework -> onnx  ``convert.pipeline.convert_file``; for fp16/int8 then
                   ``optimize_file(precision=...)`` on its FP32 result
any -> trt         the ONNX chain above into ``OUT.trt.onnx``, ``trt_backend.prepare``
                   (lint report), then ``trt_backend.build_engine`` unless ``prepare_only``
SavedModel->tftrt  ``tftrt_backend.convert_tftrt``
=================  ====================================================================

``build(...)`` (parent process) turns the resolved options into the keyword
arguments of those calls; an option that none of them takes is a ``UsageError``
naming its line; an option that came from ``defaults`` and does not apply to this
job (``opset`` for an ONNX source) is left out. ``run(...)`` (worker process)
makes the calls.
"""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorsmith.errors import ConversionError, UsageError

# option groups (recipe keys)
ONNX_KEYS = {
    "from",
    "to",
    "input_shape",
    "verify_data",
    "passes",
    "skip",
    "pass_options",
    "verify",
    "rtol",
    "atol",
    "external_data",
    "max_iterations",
}
FRONTEND_KEYS = {
    "opset",
    "static",
    "input_value",
    "signature",
    "inputs",
    "outputs",
    "nchw_inputs",
    "weights",
    "trust_remote_code",
    "optimize",
}
PRECISION_KEYS = {
    "precision",
    "target",
    "fp16_io",
    "calib",
    "calib_preprocess",
    "calib_loader",
    "calib_samples",
    "calib_method",
    "val",
    "int8_mode",
    "min_cosine",
    "min_top1",
    "max_abs_error",
    "max_rel_error",
    "fallback_budget",
    "min_speedup",
    "keep_fp32",
}
TRT_KEYS = {
    "shapes",
    "max_batch",
    "workspace",
    "timing_cache",
    "builder_opt_level",
    "hardware_compat",
    "version_compat",
    "trt_version",
    "prepare_only",
}
TFTRT_KEYS = {
    "from",
    "to",
    "precision",
    "profile_strategy",
    "shapes",
    "max_batch",
    "workspace",
    "signature",
    "calib",
    "verify",
    "verify_data",
    "rtol",
    "atol",
}
# a model's data: used by the jobs that need it, ignored by the others
DATA_KEYS = {"calib", "calib_preprocess", "calib_loader", "val"}
# options naming files: resolved against the recipe folder; their content goes into the cache key
PATH_OPTIONS = ("verify_data", "calib", "val", "weights")
# resolved against the recipe folder, but neither required nor hashed (a cache the build reads and writes)
LOOSE_PATH_OPTIONS = ("timing_cache",)
# options naming Python code (module:function): the module's source file goes into the cache key
CODE_OPTIONS = ("calib_loader",)

OPTIMIZE = "tensorsmith.optimize:optimize_file"
CONVERT = "tensorsmith.convert.job:convert_file"


def _function(spec: str) -> Callable | None:
    module, _, name = spec.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            return None
        raise
    return getattr(mod, name, None)


def _takes(fn: Callable | None, name: str) -> bool:
    if fn is None:
        return False
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def supported_precisions() -> tuple[str, ...]:
    """Precisions a recipe may ask for."""
    from tensorsmith.precision import PRECISIONS

    return PRECISIONS


def describe(source_format: str | None, to: str, lowered: bool) -> str:
    """The chain of library calls a job makes, for reports."""
    onnx = "optimize_file" if source_format in (None, "onnx") else "convert_file"
    if lowered and onnx == "convert_file":
        onnx += " + optimize_file(precision)"
    elif lowered:
        onnx += "(precision)"
    if to == "trt":
        return onnx + " + trt_backend.prepare + trt_backend.build_engine"
    if to == "tftrt":
        return "tftrt_backend.convert_tftrt"
    return onnx


# ---------------------------------------------------------------------------
# the parent side: options -> keyword arguments


class OptionError(UsageError):
    """An option that does not apply; ``key`` names it so the caller can add its line."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def tolerance_of(opts: dict):
    from tensorsmith.verify import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance

    rtol, atol = opts.get("rtol"), opts.get("atol")
    if (rtol is not None and rtol < 0) or (atol is not None and atol < 0):
        raise OptionError(
            "rtol" if rtol is not None and rtol < 0 else "atol", "--rtol and --atol must be >= 0"
        )
    return Tolerance(rtol=DEFAULT_RTOL if rtol is None else rtol, atol=DEFAULT_ATOL if atol is None else atol)


def _guard(key: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except OptionError:
        raise
    except UsageError as exc:
        raise OptionError(key, exc.one_line()) from None


def _onnx_kwargs(opts: dict, framework: bool) -> dict:
    from tensorsmith.shapes import parse_input_shapes

    kw: dict[str, Any] = {}
    if opts.get("input_shape"):
        kw["input_shapes"] = _guard("input_shape", lambda: parse_input_shapes(opts["input_shape"]))
    for key in ("passes", "skip", "pass_options", "verify", "verify_data", "external_data", "max_iterations"):
        if opts.get(key) is not None:
            kw[key] = opts[key]
    if opts.get("rtol") is not None or opts.get("atol") is not None:
        kw["tolerance"] = tolerance_of(opts)
    if framework:
        from tensorsmith.convert.frontend import parse_input_values

        simple = {
            "opset": "opset",
            "static": "static",
            "signature": "signature",
            "inputs": "inputs",
            "outputs": "outputs",
            "nchw_inputs": "nchw_inputs",
            "weights": "weights",
            "trust_remote_code": "trust_remote_code",
        }
        for key, kwarg in simple.items():
            if opts.get(key) is not None:
                kw[kwarg] = opts[key]
        if opts.get("input_value"):
            kw["input_values"] = _guard("input_value", lambda: parse_input_values(opts["input_value"]))
        if opts.get("optimize") is not None:
            kw["run_passes"] = opts["optimize"]
        if opts.get("from"):
            kw["source_format"] = opts["from"]
    return kw


def _precision_options(opts: dict, to: str):
    given = {k: opts[k] for k in PRECISION_KEYS if opts.get(k) is not None}
    if not given or (set(given) == {"precision"} and given["precision"] == "fp32"):
        return None
    from tensorsmith.precision import options_from_cli

    target = opts.get("target") or ("trt" if to in ("trt", "tftrt") else None)
    key = next((k for k in ("precision", "calib", "int8_mode") if k in given), next(iter(given)))
    popts = _guard(
        key,
        lambda: options_from_cli(
            opts.get("precision") or "fp32",
            target=target,
            fp16_io=bool(opts.get("fp16_io")),
            calib=opts.get("calib"),
            calib_preprocess=opts.get("calib_preprocess"),
            calib_loader=opts.get("calib_loader"),
            calib_samples=opts.get("calib_samples"),
            calib_method=opts.get("calib_method"),
            val=opts.get("val"),
            int8_mode=opts.get("int8_mode"),
            min_cosine=opts.get("min_cosine"),
            min_top1=opts.get("min_top1"),
            max_abs=opts.get("max_abs_error"),
            max_rel=opts.get("max_rel_error"),
            fallback_budget=opts.get("fallback_budget"),
            min_speedup=opts.get("min_speedup"),
            keep_fp32=opts.get("keep_fp32"),
        ),
    )
    return popts if popts.lowered else None


def trt_options(opts: dict, *, precision: str | None = None, tolerance=None):
    """TensorRT build options from job options (``convert --to trt``, recipes, ``tensorsmith build``).

    ``precision`` is the engine's (``build --precision``; ``convert`` puts it in the
    graph instead), ``tolerance`` the engine check's (``build --rtol/--atol``).
    """
    from tensorsmith.convert.profiles import DEFAULT_MAX_BATCH, parse_profile_specs
    from tensorsmith.convert.trt_backend import TrtOptions, parse_workspace

    shapes = _guard("shapes", lambda: parse_profile_specs(opts.get("shapes")))
    workspace = _guard("workspace", lambda: parse_workspace(opts.get("workspace")))
    timing = opts.get("timing_cache")
    trt = TrtOptions(
        shapes=shapes,
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
    _guard(key, trt.validate)
    return trt


def _tftrt_options(opts: dict):
    from tensorsmith.convert.profiles import DEFAULT_MAX_BATCH, parse_profile_specs
    from tensorsmith.convert.tftrt_backend import TftrtOptions
    from tensorsmith.convert.trt_backend import parse_workspace

    tol = tolerance_of(opts) if opts.get("rtol") is not None or opts.get("atol") is not None else None
    calib = opts.get("calib")
    tf = TftrtOptions(
        precision=opts.get("precision") or "fp32",
        profile_strategy=opts.get("profile_strategy") or "Optimal",
        shapes=_guard("shapes", lambda: parse_profile_specs(opts.get("shapes"))),
        max_batch=opts.get("max_batch") or DEFAULT_MAX_BATCH,
        workspace=_guard("workspace", lambda: parse_workspace(opts.get("workspace"))),
        signature=opts.get("signature") or "serving_default",
        calibration_data=Path(calib) if calib and calib != "random" else None,
        verify=opts.get("verify", True) is not False,
        verify_data=Path(opts["verify_data"]) if opts.get("verify_data") else None,
        tolerance=tol,
    )
    _guard("profile_strategy" if opts.get("profile_strategy") else "precision", tf.validate)
    return tf


def build(opts: dict, source_format: str | None, to: str, explicit: set[str]) -> tuple[str, dict]:
    """(description, keyword arguments) for a job; ``OptionError`` names a bad option.

    ``explicit``: the keys set on the model, target or job (not only in ``defaults``);
    an explicit option that does not apply is an error, a default one is dropped.
    """
    framework = source_format not in (None, "onnx")
    if to == "tftrt":
        allowed = set(TFTRT_KEYS)
    else:
        allowed = set(ONNX_KEYS) | PRECISION_KEYS
        if framework:
            allowed |= FRONTEND_KEYS
        if to == "trt":
            allowed |= TRT_KEYS
    # a model's calibration data serves its int8 jobs; its fp32 jobs of the same matrix ignore it
    precision = opts.get("precision") or "fp32"
    unused = {"fp32": PRECISION_KEYS - {"precision", "target"}, "fp16": {"int8_mode"}, "int8": {"fp16_io"}}
    for key in unused.get(precision, set()) if to != "tftrt" else set():
        opts.pop(key, None)
    if source_format is None:  # detection failed: the job fails on that, whatever its options
        allowed = set(opts)
    for key in list(opts):
        if key in allowed or opts[key] is None:
            continue
        if key not in explicit or key in DATA_KEYS:
            opts.pop(key)  # a default, or a model's data, that this job does not use
            continue
        if key in FRONTEND_KEYS and not framework:
            why = "applies to TensorFlow and PyTorch sources; this model is ONNX"
        elif key in TRT_KEYS:
            why = "applies to 'to: trt' (and tftrt) only"
        elif to == "tftrt":
            why = "does not apply to 'to: tftrt' (TF-TRT converts the SavedModel directly)"
        else:
            why = f"does not apply to this job ({source_format} -> {to})"
        raise OptionError(key, f"option {key!r} {why}")

    if to == "tftrt":
        if source_format not in (None, "savedmodel"):
            raise OptionError(
                "to", f"'to: tftrt' converts a TensorFlow SavedModel folder; this model is {source_format}"
            )
        return describe(source_format, to, False), {"tftrt": _tftrt_options(opts)}

    popts = _precision_options(opts, to)
    if popts is not None and not _takes(_function(OPTIMIZE), "precision"):
        raise OptionError(
            "precision", "precision options need a tensorsmith whose optimize_file takes precision="
        )
    kwargs: dict[str, Any] = {"onnx": _onnx_kwargs(opts, framework), "precision": popts}
    if framework and _function(CONVERT) is None:
        raise OptionError(
            "from",
            f"converting from {source_format} is not available in this tensorsmith "
            "(tensorsmith.convert.pipeline.convert_file is missing)",
        )
    fn = _function(CONVERT if framework else OPTIMIZE)
    for kwarg in kwargs["onnx"]:
        if not _takes(fn, kwarg):
            raise OptionError(
                kwarg, f"{CONVERT if framework else OPTIMIZE} takes no {kwarg!r} in this tensorsmith"
            )
    if to == "trt":
        kwargs["trt"] = trt_options(opts)
        kwargs["prepare_only"] = bool(opts.get("prepare_only"))
        kwargs["lint"] = {"trt_version": opts["trt_version"]} if opts.get("trt_version") else None
    return describe(source_format, to, popts is not None), kwargs


# ---------------------------------------------------------------------------
# the worker side


@dataclass
class Job:
    """What ``execute`` needs: the source, its format, the target and ``build``'s kwargs."""

    source: str
    source_format: str | None
    to: str
    kwargs: dict


@dataclass
class PreparedReport:
    """``--to trt --prepare-only``: the ready-to-build ONNX and its lint report, no engine."""

    onnx: Any
    lint: Any
    prepared_onnx: str
    lint_report: str
    build_command: str

    def to_dict(self) -> dict:
        report = dict(_report_dict(self.onnx))
        report.update(
            status="prepared",
            target="trt",
            prepared_onnx=self.prepared_onnx,
            lint_report=self.lint_report,
            build_command=self.build_command,
            lint=self.lint.to_dict(),
            onnx=_report_dict(self.onnx),
        )
        report["output"] = None
        return report


def _report_dict(obj: Any) -> dict:
    if obj is None:
        return {}
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return dict(obj) if isinstance(obj, dict) else {}


def _onnx(job: Job, out: Path, step: Callable[[str], None], progress=None):
    kw = job.kwargs
    popts = kw.get("precision")
    framework = job.source_format not in (None, "onnx")
    onnx_kw = dict(kw["onnx"])
    extra = {"precision": popts, "progress": progress} if popts is not None else {}
    if not framework:
        from tensorsmith.optimize import optimize_file

        return optimize_file(job.source, out, on_step=step, **onnx_kw, **extra)
    from tensorsmith.convert.job import convert_file

    onnx_kw.setdefault("source_format", job.source_format)
    if popts is None:
        return convert_file(job.source, out, on_step=step, **onnx_kw)
    # fp16/int8 from a framework: the verified FP32 ONNX first, then lowered and gated against it
    import tempfile

    from tensorsmith.optimize import optimize_file

    parent = out.parent if str(out.parent) else Path(".")
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".fp32.tmp", dir=parent))
    try:
        fp32 = work / out.name
        first = convert_file(job.source, fp32, on_step=step, **onnx_kw)
        report = optimize_file(
            fp32,
            out,
            input_shapes=onnx_kw.get("input_shapes"),
            external_data=onnx_kw.get("external_data"),
            max_iterations=onnx_kw.get("max_iterations", 8),
            on_step=step,
            **extra,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.input = job.source
    report.source_format = job.source_format
    report.conversion = _report_dict(first)
    return report


def name_single_profile(opts, onnx_path: Path) -> None:
    """``shapes: MIN:OPT:MAX`` without ``NAME=`` on a one-input model: name it."""
    if "" not in opts.shapes:
        return
    from tensorsmith.convert.profiles import resolve_profiles
    from tensorsmith.model_io import load_proto
    from tensorsmith.verify import input_specs_from_proto

    specs = input_specs_from_proto(load_proto(onnx_path))
    resolve_profiles(specs, opts.shapes, max_batch=opts.max_batch)
    opts.shapes[specs[0].name] = opts.shapes.pop("")


def check_output(job: Job, out: Path) -> None:
    """Refuse outputs that cannot be right before any work (exit 2)."""
    if job.to == "trt":
        from tensorsmith.convert import trt_backend

        if str(out).endswith(".onnx"):
            raise UsageError(f"-o {out}: --to trt writes a TensorRT engine; name it .plan (or .engine)")
        prepared = trt_backend.prepared_onnx_path(out)
        src = Path(job.source)
        if src.exists() and prepared.exists() and src.resolve() == prepared.resolve():
            raise UsageError(f"-o {out}: the ready-to-build ONNX {prepared} would overwrite the source")


def execute(job: Job, out: Path, step: Callable[[str], None], progress=None, on_lint: Callable | None = None):
    """Make ``job``'s output at ``out``; returns its report object (``to_dict()``).

    ``on_lint`` is called with the TensorRT lint report before an engine build, so a
    command line can show the findings before the (long) build starts.
    """
    if job.to == "tftrt":
        from tensorsmith.convert.tftrt_backend import convert_tftrt

        return convert_tftrt(job.source, out, job.kwargs["tftrt"], on_step=step)
    if job.to != "trt":
        return _onnx(job, out, step, progress)
    from tensorsmith.convert import trt_backend

    opts = job.kwargs["trt"]
    prepare_only = job.kwargs.get("prepare_only")
    prepared = trt_backend.prepared_onnx_path(out)
    if not prepare_only:
        missing = trt_backend.missing_for_build()
        if missing:
            raise ConversionError(
                f"cannot build a TensorRT engine on this machine: {'; '.join(missing)}",
                hint=f"use --prepare-only (recipe: prepare_only: true) to write {prepared.name} and its lint "
                f"report, then on a GPU machine run: {trt_backend.build_command(prepared, out, opts)}",
            )
    onnx_report = _onnx(job, prepared, step, progress)
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
    try:
        report = trt_backend.build_engine(prepared, out, opts, on_step=step)
    except Exception as exc:
        failed = getattr(exc, "job", None)
        if failed is not None and hasattr(failed, "lint"):
            failed.lint = lint.to_dict()
            failed.prepared_onnx = str(prepared)
        raise
    report.lint = lint.to_dict()
    report.prepared_onnx = str(prepared)
    report.onnx = _report_dict(onnx_report)
    return report


def run(job, out: Path, step: Callable[[str], None]) -> tuple[dict, Path]:
    """For recipe workers: ``execute`` and return (report dict, the main output path)."""
    j = Job(job.source, job.source_format, job.to, job.kwargs)
    report = execute(j, out, step)
    data = _report_dict(report)
    if isinstance(report, PreparedReport):
        return data, Path(report.prepared_onnx)
    if job.to == "trt":
        data.setdefault("onnx", getattr(report, "onnx", None))
        data.setdefault("verification", (getattr(report, "onnx", None) or {}).get("verification"))
    return data, out


def hashable_code(spec: str) -> str | None:
    """The source file of ``module:function`` (without importing it), for the cache key."""
    import importlib.util

    module = spec.partition(":")[0]
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    origin = getattr(found, "origin", None)
    return origin if origin and os.path.isfile(origin) else None
