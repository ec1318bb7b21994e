"""The TF-TRT backend: a TensorFlow SavedModel -> a TF-TRT SavedModel, verified in TensorFlow.

``TrtGraphConverterV2`` (``tensorflow.python.compiler.tensorrt.trt_convert``) with:
the precision mode (``FP32``/``FP16``/``INT8``), INT8 calibration through
``convert(calibration_input_fn=...)`` fed from the calibration samples, dynamic
shapes (``use_dynamic_shape=True``) with a ``dynamic_shape_profile_strategy``
(``Range``, ``Optimal``, ``Range+Optimal``), engines built ahead of time with
``build(input_fn)`` on the MIN/OPT/MAX shapes of the profiles, and ``save()``.
The converted model is loaded back and run against the original on the same
inputs; only a model that passes is moved to ``-o``.

The argument names were checked against ``trt_convert.py`` of TensorFlow 2.21
(the file still ships; its ``_check_trt_version_compatibility`` raises "Tensorflow
has not been built with TensorRT support" when ``is_tensorrt_enabled()`` is False).

TF-TRT needs TensorFlow <= 2.17 built with TensorRT, and a GPU: TensorFlow 2.18
disabled TensorRT in its builds. Anywhere else this backend stops with exit 3 and a
message saying exactly that. It has not been run against a real TF-TRT here: the
tests drive ``convert_tftrt`` with a recording stand-in for ``TrtGraphConverterV2``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from tensorsmith import atomic
from tensorsmith.compare import GATED_PRECISIONS, judge_precision, run_and_compare
from tensorsmith.convert.trt.profiles import DEFAULT_MAX_BATCH, Profile, resolve_profiles
from tensorsmith.errors import ConversionError, UsageError, short
from tensorsmith.runners import TfSignatureRunner
from tensorsmith.shapes import InputSpec
from tensorsmith.tolerances import Tolerance, tolerance_for
from tensorsmith.verify import VerificationReport, failure_summary, job_failed

PROFILE_STRATEGIES = ("Range", "Optimal", "Range+Optimal")
PRECISION_MODES = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}


@dataclass
class TftrtOptions:
    precision: str = "fp32"
    profile_strategy: str = "Optimal"
    shapes: dict[str, Profile] = field(default_factory=dict)
    max_batch: int = DEFAULT_MAX_BATCH
    workspace: int | None = None
    minimum_segment_size: int = 3
    signature: str = "serving_default"
    calibration_data: Path | None = None
    calibration_samples: list[dict[str, np.ndarray]] | None = None
    verify: bool = True
    verify_data: Path | None = None
    tolerance: Tolerance | None = None

    def validate(self) -> None:
        if self.precision not in PRECISION_MODES:
            raise UsageError(f"--precision {self.precision}: TF-TRT takes fp32, fp16 or int8")
        if self.profile_strategy not in PROFILE_STRATEGIES:
            raise UsageError(
                f"--profile-strategy {self.profile_strategy}: expected one of {', '.join(PROFILE_STRATEGIES)}"
            )
        if self.minimum_segment_size < 1:
            raise UsageError("--min-segment-size must be >= 1")


@dataclass
class TftrtReport:
    input: str
    output: str | None
    status: str = "ok"
    tensorflow_version: str | None = None
    precision: str = "fp32"
    profile_strategy: str = "Optimal"
    profiles: dict[str, dict] = field(default_factory=dict)
    build_shapes: list[dict[str, list[int]]] = field(default_factory=list)
    calibration_samples: int = 0
    verification: VerificationReport | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "target": "tftrt",
            "files": self.files,
            "tensorflow_version": self.tensorflow_version,
            "precision": self.precision,
            "profile_strategy": self.profile_strategy,
            "profiles": self.profiles,
            "build_shapes": self.build_shapes,
            "calibration_samples": self.calibration_samples,
            "verification": self.verification.to_dict() if self.verification else None,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "notes": self.notes,
            "error": self.error,
        }


def check_available() -> str:
    """Raise ``ConversionError`` unless this TensorFlow can run TF-TRT; return its version."""
    from tensorsmith import machine

    why = machine.tftrt_unavailable_reason()
    if why:
        raise ConversionError(
            f"--to tftrt: {why}", hint="use --to trt (TensorRT directly, from ONNX) instead"
        )
    import tensorflow as tf
    from tensorflow.python.compiler.tensorrt import trt_convert  # noqa: F401 - registers TRTEngineOp

    try:
        from tensorflow.compiler.tf2tensorrt import _pywrap_py_utils

        enabled = bool(_pywrap_py_utils.is_tensorrt_enabled())
    except ImportError:
        enabled = False
    if not enabled:
        raise ConversionError(
            f"--to tftrt: TensorFlow {tf.__version__} was built without TensorRT; TF-TRT needs TensorFlow "
            "<= 2.17 built with TensorRT (e.g. NVIDIA's NGC TensorFlow container)",
            hint="use --to trt (TensorRT directly, from ONNX) instead",
        )
    if not tf.config.list_physical_devices("GPU"):
        raise ConversionError("--to tftrt: TensorFlow sees no GPU; TF-TRT builds its engines on the GPU")
    return tf.__version__


def signature_specs(saved_model_dir, signature: str) -> tuple[list[InputSpec], tuple[Any, Any]]:
    """Input specs of a SavedModel signature (loaded with TensorFlow), and the signature function."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(saved_model_dir))
    except Exception as exc:
        raise UsageError(
            f"{saved_model_dir}: TensorFlow cannot load this SavedModel ({short(exc, 240)})"
        ) from None
    sigs = getattr(loaded, "signatures", {}) or {}
    if signature not in sigs:
        raise UsageError(
            f"{saved_model_dir}: no signature {signature!r}; it has: {', '.join(sigs) or 'none'}"
        )
    fn = sigs[signature]
    _, kwargs = fn.structured_input_signature
    specs = []
    for name, ts in sorted(kwargs.items()):
        dims = None if ts.shape.rank is None else [d if d is not None else None for d in ts.shape.as_list()]
        specs.append(InputSpec(name, np.dtype(ts.dtype.as_numpy_dtype), dims or []))
    return specs, (loaded, fn)


def _fixed(spec: InputSpec) -> list[int]:
    """The shape of an input without dynamic axes (one that needs no profile)."""
    return [int(cast(int, d)) for d in spec.shape]


def _build_feeds(specs: list[InputSpec], profiles: dict[str, Profile]) -> list[dict[str, list[int]]]:
    """The input shapes ``build()`` runs: each profile's MIN, OPT and MAX (deduplicated)."""
    out: list[dict[str, list[int]]] = []
    for which in ("min", "opt", "max"):
        shapes = {}
        for s in specs:
            p = profiles.get(s.name)
            shapes[s.name] = list(getattr(p, which)) if p else _fixed(s)
        if shapes not in out:
            out.append(shapes)
    return out


def convert_tftrt(
    saved_model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    options: TftrtOptions | None = None,
    *,
    converter_factory: Callable[..., Any] | None = None,
    check: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> TftrtReport:
    """Convert ``saved_model_dir`` with TF-TRT into ``output_dir`` (written atomically).

    ``converter_factory(**kwargs)`` replaces ``TrtGraphConverterV2`` (tests pass a
    recording stand-in, with ``check=False`` to skip the TensorRT/GPU checks).
    """
    from tensorsmith.verify import random_inputs

    options = options or TftrtOptions()
    options.validate()
    step = on_step or (lambda _m: None)
    src = Path(saved_model_dir)
    out = Path(output_dir)
    if not (src / "saved_model.pb").is_file():
        raise UsageError(f"{src}: --to tftrt needs a TensorFlow SavedModel folder (no saved_model.pb)")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder (TF-TRT writes a SavedModel folder)")
    if out.resolve() == src.resolve():
        raise UsageError(f"{out}: the output would overwrite the source SavedModel")
    report = TftrtReport(
        input=str(src),
        output=str(out),
        precision=options.precision,
        profile_strategy=options.profile_strategy,
    )
    t0 = time.perf_counter()
    if check:
        report.tensorflow_version = check_available()
    import tensorflow as tf

    report.tensorflow_version = report.tensorflow_version or tf.__version__
    specs, (_loaded, src_fn) = signature_specs(src, options.signature)
    res = resolve_profiles(specs, options.shapes, max_batch=options.max_batch)
    if res.missing:
        raise UsageError(
            f"no shapes to build TF-TRT engines for dynamic input(s) {res.missing_text(specs)}",
            hint="give --shapes NAME=MIN:OPT:MAX for each",
        )
    report.profiles = {k: v.to_dict() for k, v in res.profiles.items()}
    report.notes.extend(res.notes)
    report.build_shapes = _build_feeds(specs, res.profiles)

    calib = options.calibration_samples
    if options.precision == "int8" and calib is None:
        if options.calibration_data is None:
            raise UsageError(
                "--precision int8 with --to tftrt needs calibration samples (--calib FILE.npz, a folder, or random)"
            )
        opt = {s.name: (res.profiles[s.name].opt if s.name in res.profiles else _fixed(s)) for s in specs}
        calib = _calibration_samples(options.calibration_data, specs, opt)
    report.calibration_samples = len(calib or [])

    if converter_factory is None:
        from tensorflow.python.compiler.tensorrt import trt_convert

        converter_factory = trt_convert.TrtGraphConverterV2
    kwargs = dict(
        input_saved_model_dir=str(src),
        input_saved_model_signature_key=options.signature,
        use_dynamic_shape=True,
        dynamic_shape_profile_strategy=options.profile_strategy,
        precision_mode=PRECISION_MODES[options.precision],
        minimum_segment_size=options.minimum_segment_size,
        use_calibration=options.precision == "int8",
    )
    if options.workspace:
        kwargs["max_workspace_size_bytes"] = int(options.workspace)
    report.seconds["prepare"] = time.perf_counter() - t0

    def calibration_input_fn():
        for sample in calib or []:
            yield {k: tf.constant(v) for k, v in sample.items()}

    def input_fn():
        for k, shapes in enumerate(report.build_shapes):
            yield {k2: tf.constant(v) for k2, v in random_inputs(specs, shapes, seed=100 + k).items()}

    step("TF-TRT convert")
    t0 = time.perf_counter()
    try:
        converter = converter_factory(**kwargs)
        if options.precision == "int8":
            converter.convert(calibration_input_fn=calibration_input_fn)
        else:
            converter.convert()
        step("TF-TRT build engines")
        converter.build(input_fn=input_fn)
    except (UsageError, ConversionError):
        raise
    except Exception as exc:
        raise ConversionError(
            f"TF-TRT conversion of {src} failed: {type(exc).__name__}: {short(exc, 240)}"
        ) from exc
    report.seconds["convert"] = time.perf_counter() - t0

    with atomic.Staging(out) as staging:
        staged = staging.path()
        step("TF-TRT save")
        try:
            converter.save(output_saved_model_dir=str(staged))
        except Exception as exc:
            raise ConversionError(f"TF-TRT could not save the converted model: {short(exc, 240)}") from exc
        if options.verify:
            step("verify (TF-TRT vs TensorFlow)")
            t0 = time.perf_counter()
            report.verification = _verify(specs, src_fn, staged, options, res.profiles)
            report.seconds["verify"] = time.perf_counter() - t0
            if not report.verification.passed:
                vr = report.verification
                raise job_failed(
                    report,
                    vr,
                    "the TF-TRT model differs from the original: " + failure_summary(vr, more=False),
                )
        staging.install(staged, out)
        report.files = [str(out)]
    return report


def _calibration_samples(
    path, specs: list[InputSpec], opt_shapes: dict[str, list[int]]
) -> list[dict[str, np.ndarray]]:
    """Samples through the precision work's loader (.npz/.npy/images/folders) when present;
    ``random``: seeded random samples at the OPT shapes (a smoke test, not a calibration)."""
    from tensorsmith.verify import random_inputs

    if str(path) == "random":
        return [random_inputs(specs, opt_shapes, seed=1000 + i) for i in range(8)]
    from tensorsmith.precision.calibration import load_path

    return load_path(path, specs, what="--calib").samples


def _verify(specs, src_fn, staged: Path, options: TftrtOptions, profiles) -> VerificationReport:
    """The TF-TRT model against the original SavedModel (both runners of
    ``tensorsmith.runners``) through the one comparator and tolerance table."""
    from tensorsmith.verify import load_verify_data, random_inputs

    tol = options.tolerance or tolerance_for(options.precision, engine=True)
    if options.verify_data is not None:
        samples = load_verify_data(options.verify_data, specs)
        source = str(options.verify_data)
    else:
        opt = {s.name: (profiles[s.name].opt if s.name in profiles else _fixed(s)) for s in specs}
        samples = [random_inputs(specs, opt)]
        source = "random"
    converted = TfSignatureRunner(saved_model=staged, signature=options.signature)

    def converted_failed(_i: int, _feeds, exc: Exception) -> Exception:
        return ConversionError(f"the TF-TRT model fails on the verification inputs: {short(exc, 240)}")

    comparison = run_and_compare(
        TfSignatureRunner(src_fn), converted, samples, tol, candidate_error=converted_failed
    )
    passed = comparison.passed
    notes: list[str] = []
    if options.tolerance is None and options.precision in GATED_PRECISIONS:
        passed = judge_precision(comparison, options.precision, set(), notes)
    return VerificationReport(
        passed=passed,
        outputs=comparison.outputs,
        samples=len(samples),
        notes=notes,
        input_source=source,
        input_shapes={k: list(v.shape) for k, v in samples[0].items()},
        tolerance=tol,
    )


def render(report: TftrtReport, console) -> None:
    from rich.markup import escape

    console.print(
        escape(
            f"{report.input} -> {report.output or '(not written)'}: TF-TRT {report.precision}, "
            f"profile strategy {report.profile_strategy}, TensorFlow {report.tensorflow_version}"
        )
    )
    vr = report.verification
    if vr is not None:
        console.print(
            f"verification vs TensorFlow: {'passed' if vr.passed else 'FAILED'}, "
            f"max abs diff {vr.max_abs_diff:.3g} (rtol {vr.tolerance.rtol:g}, atol {vr.tolerance.atol:g})"
        )
    for n in report.notes:
        console.print(f"[dim]note:[/dim] {escape(n)}")


__all__ = ["PROFILE_STRATEGIES", "TftrtOptions", "TftrtReport", "check_available", "convert_tftrt"]
