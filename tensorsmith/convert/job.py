"""The convert job: frontend -> ONNX -> passes -> stage -> verify against the source -> commit.

``convert_file`` is what ``tensorsmith convert SRC --to onnx`` calls for a
TensorFlow or PyTorch source (an ONNX source goes to ``optimize_file``). Three
numeric checks run on the same seeded inputs, the source framework running once
per sample (its outputs are reused):

* *conversion*: the source in its own runtime vs the converted ONNX (before passes);
* *passes*: the converted ONNX vs the optimized ONNX, both in onnxruntime, as
  ``tensorsmith optimize`` checks them;
* *end to end* (the report's ``verification``): the source vs the file written.

Any failure is exit 4 and nothing is written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tensorsmith import model_io
from tensorsmith.errors import UsageError
from tensorsmith.job_report import JobReport
from tensorsmith.optimizer import load_and_optimize, optimize_file
from tensorsmith.verify import (
    Tolerance,
    VerificationReport,
    failure_summary,
    input_specs_from_proto,
    job_failed,
    verify_models,
)

if TYPE_CHECKING:
    from tensorsmith.precision import PrecisionOptions


@dataclass
class ConvertReport(JobReport):
    """A JobReport with the source framework and the two intermediate checks."""

    framework: str | None = None
    converter: str | None = None
    conversion_check: VerificationReport | None = None  # source vs converted ONNX
    passes_check: VerificationReport | None = None  # converted vs optimized ONNX

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["framework"] = self.framework
        out["converter"] = self.converter
        out["conversion_verification"] = self.conversion_check.to_dict() if self.conversion_check else None
        out["passes_verification"] = self.passes_check.to_dict() if self.passes_check else None
        return out


class _Memo:
    """Run the source once per distinct feed; later checks reuse its outputs."""

    def __init__(self, fn: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]):
        self.fn = fn
        self.cache: dict[str, dict[str, np.ndarray]] = {}
        self.calls = 0
        self.seconds = 0.0

    @staticmethod
    def _key(feeds: dict[str, np.ndarray]) -> str:
        h = hashlib.blake2b(digest_size=16)
        for name in sorted(feeds):
            arr = np.ascontiguousarray(feeds[name])
            h.update(f"{name}|{arr.dtype}|{arr.shape}|".encode())
            h.update(arr.tobytes())
        return h.hexdigest()

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        key = self._key(feeds)
        if key not in self.cache:
            t0 = time.perf_counter()
            self.cache[key] = self.fn(feeds)
            self.seconds += time.perf_counter() - t0
            self.calls += 1
        return self.cache[key]


def _summary(vr: VerificationReport) -> str:
    state = "pass" if vr.passed else "FAIL"
    return (
        f"max abs diff {vr.max_abs_diff:.3g}, max rel diff {vr.max_rel_diff:.3g} over "
        f"{len(vr.outputs)} output(s), {vr.samples} sample(s): {state}"
    )


def _raise(report: ConvertReport, vr: VerificationReport, what: str, hint: str | None = None) -> None:
    raise job_failed(report, vr, f"verification failed: {what}: {failure_summary(vr)}", hint=hint)


def convert_file(
    source: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    source_format: str | None = None,
    opset: int | None = None,
    input_shapes: dict[str, list[int]] | None = None,
    input_values: dict[str, Any] | None = None,
    static: bool = False,
    signature: str | None = None,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    nchw_inputs: bool = False,
    weights: str | os.PathLike | None = None,
    weights_key: str | None = None,
    weights_non_strict: bool = False,
    trust_remote_code: bool = False,
    run_passes: bool = True,
    passes: list[str] | None = None,
    skip: list[str] | None = None,
    pass_options: dict[str, dict] | None = None,
    verify: bool = True,
    verify_data: str | os.PathLike | None = None,
    tolerance: Tolerance | None = None,
    external_data: bool | None = None,
    max_iterations: int = 8,
    on_step: Callable[[str], None] | None = None,
    precision: PrecisionOptions | None = None,
    progress=None,
) -> JobReport:
    """Convert ``source`` (a TensorFlow/PyTorch model or ``module:factory``) to a verified ONNX file.

    Raises ``UsageError`` (exit 2), ``ConversionError`` (3) or
    ``VerificationError`` (4, carrying the report; nothing is written then).

    ``precision`` (fp16/int8): the verified FP32 model is lowered and gated against
    itself (``optimize.lower_into``); the passes run once, the FP32 model is written
    once, to a work folder.
    """
    from tensorsmith.convert import detect_format, get_frontend
    from tensorsmith.convert.frontend import FrontendOptions

    step = on_step or (lambda _msg: None)
    fmt = source_format or detect_format(source)
    if fmt == "onnx":
        if not run_passes:
            raise UsageError(f"{source}: is already ONNX; with --no-optimize there is nothing to do")
        return optimize_file(
            source,
            output_path,
            passes=passes,
            skip=skip,
            pass_options=pass_options,
            input_shapes=input_shapes,
            verify=verify,
            verify_data=verify_data,
            tolerance=tolerance,
            external_data=external_data,
            max_iterations=max_iterations,
            on_step=on_step,
            precision=precision,
            progress=progress,
        )
    if opset is not None and not 7 <= opset <= 21:
        raise UsageError(f"--opset {opset}: expected an opset between 7 and 21")
    frontend = get_frontend(fmt)
    model_io.check_output_path(output_path)
    report = ConvertReport(input=str(source), output=str(output_path), source_format=fmt)
    if run_passes:  # validate pass names before the (slow) conversion
        from tensorsmith import passes as passes_mod

        passes_mod.resolve(passes, skip)

    with tempfile.TemporaryDirectory(prefix="tensorsmith-convert-") as work:
        options = FrontendOptions(
            format=fmt,
            work_dir=Path(work),
            opset=opset,
            input_shapes=dict(input_shapes or {}),
            input_values=dict(input_values or {}),
            static=static,
            signature=signature,
            inputs=inputs,
            outputs=outputs,
            nchw_inputs=nchw_inputs,
            weights=Path(weights) if weights else None,
            weights_key=weights_key,
            weights_non_strict=weights_non_strict,
            trust_remote_code=trust_remote_code,
            on_step=step,
        )
        t0 = time.perf_counter()
        imported = frontend.load(source, options)
        try:
            report.seconds["convert"] = time.perf_counter() - t0
            report.framework = imported.framework
            report.converter = imported.converter
            report.notes.append(f"converted from {imported.framework} by {imported.converter}")
            report.notes.extend(imported.notes)
            model, specs = _load_and_optimize(
                report, imported, input_shapes, run_passes, passes, skip, pass_options, max_iterations, step
            )
            checks = _Checks(report, imported, specs, input_shapes, verify_data, tolerance, run_passes, step)
            if precision is not None and precision.lowered:
                _verify_and_lower(
                    model, checks, output_path, precision, external_data, verify, input_shapes, progress
                )
            else:
                _verify_and_commit(model, checks, output_path, external_data, verify)
        finally:
            imported.close()
    return report


def _load_and_optimize(
    report: ConvertReport,
    imported,
    input_shapes,
    run_passes,
    passes,
    skip,
    pass_options,
    max_iterations,
    step,
):
    specs = input_specs_from_proto(model_io.load_proto(imported.onnx_path))
    if input_shapes:
        from tensorsmith.shapes import resolve_shapes

        resolve_shapes(specs, input_shapes)  # names and ranks refer to the converted model's inputs
    model = load_and_optimize(
        imported.onnx_path,
        report,
        run_passes=run_passes,
        passes=passes,
        skip=skip,
        pass_options=pass_options,
        max_iterations=max_iterations,
        step=step,
    )
    return model, specs


@dataclass
class _Checks:
    """The three numeric checks of a converted model (module docstring), on one written file."""

    report: ConvertReport
    imported: Any
    specs: list
    input_shapes: Any
    verify_data: Any
    tolerance: Tolerance | None
    run_passes: bool
    step: Callable[[str], None]

    def run(self, written: str | os.PathLike) -> None:
        report, imported, step = self.report, self.imported, self.step
        converted = imported.onnx_path
        t0 = time.perf_counter()
        source = _Memo(imported.run_source)
        common = dict(
            input_shapes=self.input_shapes,
            verify_data=self.verify_data,
            tolerance=self.tolerance,
            specs=self.specs,
        )
        step(f"verify: {imported.framework} vs converted ONNX")
        conv = verify_models(converted, converted, source_runner=source, on_progress=step, **common)
        report.conversion_check = conv
        report.verification = conv
        if not conv.passed:
            _raise(
                report,
                conv,
                f"the converted model differs from {imported.framework}",
                hint=imported.verify_hint
                or "if this is float rounding, loosen --rtol/--atol; real inputs: --verify-data",
            )
        if self.run_passes:
            step("verify: converted vs optimized ONNX")
            pc = verify_models(converted, written, on_progress=step, **common)
            report.passes_check = pc
            if not pc.passed:
                _raise(
                    report,
                    pc,
                    "the passes changed the outputs",
                    hint="leave the culprit out with --skip PASS, or --no-optimize",
                )
            step(f"verify: {imported.framework} vs optimized ONNX")
            e2e = verify_models(converted, written, source_runner=source, on_progress=step, **common)
            report.verification = e2e
            if not e2e.passed:
                _raise(report, e2e, f"the optimized model differs from {imported.framework}")
            report.notes.append(f"check {imported.framework} vs converted ONNX: {_summary(conv)}")
            report.notes.append(f"check converted vs optimized ONNX: {_summary(pc)}")
        report.notes.append(
            f"the table compares {imported.framework} (run {source.calls}x, "
            f"{source.seconds:.2f} s) with the written ONNX"
        )
        report.seconds["verify"] = time.perf_counter() - t0


def _verify_and_commit(model, checks: _Checks, output_path, external_data, verify: bool) -> None:
    report = checks.report
    t0 = time.perf_counter()
    checks.step("write")
    with model_io.stage(model, output_path, external_data=external_data) as staged:
        report.seconds["write"] = time.perf_counter() - t0
        report.size_after = staged.size_bytes()
        if verify:
            checks.run(staged.model_path)
        report.files = [str(p) for p in staged.commit()]


def _verify_and_lower(
    model, checks: _Checks, output_path, precision, external_data, verify: bool, input_shapes, progress
) -> None:
    """FP16/INT8: the optimized FP32 model, written once to a work folder and verified there
    against the source, is lowered and gated against itself, then committed."""
    from tensorsmith.optimizer import lower_into, work_dir

    report = checks.report
    work = work_dir(output_path, ".fp32.tmp")
    try:
        fp32 = work / "fp32.onnx"
        checks.step("write")
        model_io.save(model, fp32, external_data=external_data)
        if verify:
            checks.run(fp32)
        report.conversion = report.to_dict()  # the verified FP32 conversion, as before lowering
        report.conversion["output"] = None
        report.verification = None  # the precision gate is the check of the written model
        lower_into(
            fp32,
            fp32,
            output_path,
            report,
            precision,
            work=work,
            input_shapes=input_shapes,
            external_data=external_data,
            progress=progress,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
