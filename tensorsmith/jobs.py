"""One conversion job: options -> a target's library calls. ``tensorsmith optimize``/
``convert`` and every recipe job go through here, so a command line and its
``--dump-recipe`` recipe make the same calls.

``build(...)`` (parent process) checks the job's options (``tensorsmith.config``
keys) against its target and turns them into the keyword arguments of the
target's calls; an option the target does not take is an ``OptionError`` naming
it; an option that came from ``defaults`` and does not apply to this job
(``opset`` for an ONNX source) is left out. ``execute(...)`` (worker process)
asks the target (``tensorsmith.convert.targets``) to make the output.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensorsmith import config
from tensorsmith.convert.targets import Job, Report, get_target
from tensorsmith.errors import UsageError

if TYPE_CHECKING:
    from tensorsmith.precision import PrecisionOptions
    from tensorsmith.verify import Tolerance

# option groups (recipe keys), from the stages of tensorsmith.config.JobConfig
SOURCE_KEYS = {"to", *config.STAGE_KEYS["source"]}
FRONTEND_KEYS = set(config.STAGE_KEYS["frontend"])
ONNX_KEYS = SOURCE_KEYS | {
    *config.STAGE_KEYS["optimization"],
    *config.STAGE_KEYS["verification"],
    *config.STAGE_KEYS["output"],
}
PRECISION_KEYS = set(config.STAGE_KEYS["precision"])
TRT_KEYS = set(config.STAGE_KEYS["trt"])
# a model's data: used by the jobs that need it, ignored by the others
DATA_KEYS = PRECISION_KEYS & set(config.MODEL_KEYS)
PATH_OPTIONS = config.PATH_OPTIONS
LOOSE_PATH_OPTIONS = config.LOOSE_PATH_OPTIONS
CODE_OPTIONS = config.CODE_OPTIONS


def supported_precisions() -> tuple[str, ...]:
    """Precisions a recipe may ask for."""
    from tensorsmith.precision import PRECISIONS

    return PRECISIONS


def is_framework(source_format: str | None) -> bool:
    """A TensorFlow/PyTorch source (converted first), not ONNX (or not detected)."""
    return source_format not in (None, "onnx")


# ---------------------------------------------------------------------------
# the parent side: options -> keyword arguments


class OptionError(UsageError):
    """An option that does not apply; ``key`` names it so the caller can add its line."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def tolerance_of(opts: dict) -> Tolerance:
    from tensorsmith.verify import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance

    rtol, atol = opts.get("rtol"), opts.get("atol")
    if (rtol is not None and rtol < 0) or (atol is not None and atol < 0):
        raise OptionError(
            "rtol" if rtol is not None and rtol < 0 else "atol", "--rtol and --atol must be >= 0"
        )
    return Tolerance(rtol=DEFAULT_RTOL if rtol is None else rtol, atol=DEFAULT_ATOL if atol is None else atol)


def given_tolerance(opts: dict) -> Tolerance | None:
    """The tolerance ``--rtol``/``--atol`` ask for; ``None``: the callee's default."""
    return tolerance_of(opts) if opts.get("rtol") is not None or opts.get("atol") is not None else None


def guard(key: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, its ``UsageError`` turned into an ``OptionError`` on ``key``."""
    try:
        return fn()
    except OptionError:
        raise
    except UsageError as exc:
        raise OptionError(key, exc.one_line()) from None


def onnx_kwargs(opts: dict, framework: bool) -> dict:
    """Keyword arguments of ``optimize_file`` (ONNX source) or ``convert_file`` (framework)."""
    from tensorsmith.shapes import parse_input_shapes

    kw: dict[str, Any] = {}
    if opts.get("input_shape"):
        kw["input_shapes"] = guard("input_shape", lambda: parse_input_shapes(opts["input_shape"]))
    for key in ("passes", "skip", "pass_options", "verify", "verify_data", "external_data", "max_iterations"):
        if opts.get(key) is not None:
            kw[key] = opts[key]
    if opts.get("fold_dequantize"):  # fold-constants' option, as a flag of its own
        pass_options = {k: dict(v) for k, v in (kw.get("pass_options") or {}).items()}
        pass_options.setdefault("fold-constants", {})["fold_dequantize"] = True
        kw["pass_options"] = pass_options
    if opts.get("rtol") is not None or opts.get("atol") is not None:
        kw["tolerance"] = tolerance_of(opts)
    if framework:
        from tensorsmith.convert.frontend import parse_input_values

        for key in (
            "opset",
            "static",
            "signature",
            "inputs",
            "outputs",
            "nchw_inputs",
            "weights",
            "weights_key",
            "weights_non_strict",
        ):
            if opts.get(key) is not None:
                kw[key] = opts[key]
        if opts.get("trust_remote_code") is not None:
            kw["trust_remote_code"] = opts["trust_remote_code"]
        if opts.get("input_value"):
            kw["input_values"] = guard("input_value", lambda: parse_input_values(opts["input_value"]))
        if opts.get("optimize") is not None:
            kw["run_passes"] = opts["optimize"]
        if opts.get("from"):
            kw["source_format"] = opts["from"]
    return kw


def precision_options(opts: dict, default_target: str) -> PrecisionOptions | None:
    """The precision step's options (``None``: FP32, no step); ``default_target``: who runs
    the lowered model unless ``target`` says (``ort``, or ``trt`` for TensorRT targets)."""
    given = {k: opts[k] for k in PRECISION_KEYS if opts.get(k) is not None}
    if not given or (set(given) == {"precision"} and given["precision"] == "fp32"):
        return None
    from tensorsmith.precision import options_from_config

    key = next((k for k in ("precision", "calib", "int8_mode") if k in given), next(iter(given)))
    settings = {k: opts.get(k) for k in PRECISION_KEYS}
    if (
        opts.get("verify_data")
        and settings.get("precision") in ("fp16", "int8")
        and not settings.get("val")
        and settings.get("calib") in (None, "random")
        and not settings.get("calib_loader")
    ):
        # the inputs the user gave to check the conversion are valid inputs: the gate's
        # validation data too, unless --val or real calibration data (its holdout) says
        settings["val"] = opts["verify_data"]
    popts = guard(key, lambda: options_from_config(settings, default_target=default_target))
    return popts if popts.lowered else None


def build(opts: dict, source_format: str | None, to: str, explicit: set[str]) -> tuple[str, dict]:
    """(description, keyword arguments) for a job; ``OptionError`` names a bad option.

    ``explicit``: the keys set on the model, target or job (not only in ``defaults``);
    an explicit option that does not apply is an error, a default one is dropped.
    """
    target = guard("to", lambda: get_target(to))
    framework = is_framework(source_format)
    if target.lowers_in_graph:
        # a model's calibration data serves its int8 jobs; its fp32 jobs of the same matrix ignore it
        precision = opts.get("precision") or "fp32"
        unused = {
            "fp32": PRECISION_KEYS - {"precision", "target"},
            "fp16": {"int8_mode"},
            "int8": {"fp16_io"},
        }
        for key in unused.get(precision, set()):
            opts.pop(key, None)
    for key in list(opts):
        if opts[key] is None or source_format is None or target.applies(key, framework):
            continue  # (detection failed: the job fails on that, whatever its options)
        if key not in explicit or key in DATA_KEYS:
            opts.pop(key)  # a default, or a model's data, that this job does not use
            continue
        if key in FRONTEND_KEYS and not framework:
            why = "applies to TensorFlow and PyTorch sources; this model is ONNX"
        elif key in TRT_KEYS:
            why = "applies to 'to: trt' (and tftrt) only"
        else:
            why = target.refusal(key) or f"does not apply to this job ({source_format} -> {to})"
        raise OptionError(key, f"option {key!r} {why}")
    target.check_source(source_format)
    return target.plan(opts, source_format)


# ---------------------------------------------------------------------------
# the worker side


def check_output(job: Job, out: Path) -> None:
    """Refuse outputs that cannot be right before any work (exit 2)."""
    get_target(job.to).check_output(job.source, out)


def execute(
    job: Job, out: Path, step: Callable[[str], None], progress=None, on_lint: Callable | None = None
) -> Report:
    """Make ``job``'s output at ``out``; returns its report (``to_dict()``, ``render()``).

    ``on_lint`` is called with the TensorRT lint report before an engine build, so a
    command line can show the findings before the (long) build starts.
    """
    return get_target(job.to).run(job, out, step, progress, on_lint)


def run(job, out: Path, step: Callable[[str], None]) -> tuple[dict, Path]:
    """For recipe workers: ``execute`` and return (report dict, the main output path)."""
    j = Job(job.source, job.source_format, job.to, job.kwargs)
    report = execute(j, out, step)
    return report.to_dict(), get_target(job.to).main_output(report, out)


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
