"""The optimize job: load -> passes -> stage -> verify -> commit.

``optimize_file`` is what ``tensorsmith optimize`` and ``tensorsmith convert
--to onnx`` call; scripts can call it too (``tensorsmith.optimize_file``).
"""

from __future__ import annotations

import collections
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import onnx_ir as ir

from tensorsmith import model_io
from tensorsmith import passes as passes_mod
from tensorsmith.errors import VerificationError
from tensorsmith.job_report import JobReport
from tensorsmith.passes.manager import PassManager, PassRecord
from tensorsmith.verify import Tolerance, failure_summary, job_failed, verify_models

if TYPE_CHECKING:
    from tensorsmith.precision import PrecisionOptions


def op_histogram(model: ir.Model) -> collections.Counter:
    """Op counts over the main graph and every subgraph (``domain::Op`` for custom domains)."""
    counts: collections.Counter = collections.Counter()
    for node in model.graph.all_nodes():
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        counts[key] += 1
    return counts


@dataclass
class OptimizeResult:
    """What ``tensorsmith.optimize`` returns for an in-memory model."""

    model: ir.Model
    passes: list[PassRecord]
    ops_before: collections.Counter
    ops_after: collections.Counter
    iterations: int

    @property
    def nodes_before(self) -> int:
        return sum(self.ops_before.values())

    @property
    def nodes_after(self) -> int:
        return sum(self.ops_after.values())


def optimize(
    model: ir.Model,
    passes: list[str] | None = None,
    *,
    skip: list[str] | None = None,
    options: dict[str, dict] | None = None,
    max_iterations: int = 8,
    on_step: Callable[[str, int], None] | None = None,
) -> OptimizeResult:
    """Run graph passes on ``model`` in place, to a fixed point."""
    names = passes_mod.resolve(passes, skip)
    before = op_histogram(model)
    manager = PassManager(passes_mod.create(names, options), max_iterations=max_iterations, on_step=on_step)
    records = manager.run(model)
    return OptimizeResult(model, records, before, op_histogram(model), manager.iterations)


def file_size(path: str | os.PathLike) -> int:
    """Bytes of a model file plus the external data files it references."""
    path = Path(path)
    total = path.stat().st_size
    data = path.parent / model_io.data_file_name(path)
    if data.exists():
        total += data.stat().st_size
    return total


def load_and_optimize(
    path: str | os.PathLike,
    report: JobReport,
    *,
    run_passes: bool = True,
    passes: list[str] | None = None,
    skip: list[str] | None = None,
    pass_options: dict[str, dict] | None = None,
    max_iterations: int = 8,
    step: Callable[[str], None] = lambda _msg: None,
    check: Callable[[ir.Model], None] | None = None,
) -> ir.Model:
    """Load ``path`` and run the passes on it, recording sizes, op counts and times in ``report``.

    ``check(model)`` runs between the load and the passes (validating flags against
    the model's inputs before any work).
    """
    t0 = time.perf_counter()
    step("load")
    model = model_io.load(path)
    if check is not None:
        check(model)
    report.size_before = file_size(path)
    report.seconds["load"] = time.perf_counter() - t0
    if not run_passes:
        report.ops_before = report.ops_after = dict(op_histogram(model))
        report.notes.append("passes skipped (--no-optimize)")
        return model
    t0 = time.perf_counter()
    result = optimize(
        model,
        passes,
        skip=skip,
        options=pass_options,
        max_iterations=max_iterations,
        on_step=lambda name, it: step(f"pass {name} (iteration {it + 1})"),
    )
    report.seconds["passes"] = time.perf_counter() - t0
    report.passes = result.passes
    report.iterations = result.iterations
    report.ops_before = dict(result.ops_before)
    report.ops_after = dict(result.ops_after)
    return model


def _input_shape_check(input_shapes: dict[str, list[int]]) -> Callable[[ir.Model], None]:
    """Validate ``--input-shape`` names and ranks on the model as loaded, before the passes."""
    from tensorsmith.shapes import resolve_shapes
    from tensorsmith.verify import input_specs_from_ir

    def check(model: ir.Model) -> None:
        resolve_shapes(input_specs_from_ir(model), input_shapes)

    return check


def optimize_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    passes: list[str] | None = None,
    skip: list[str] | None = None,
    pass_options: dict[str, dict] | None = None,
    input_shapes: dict[str, list[int]] | None = None,
    verify: bool = True,
    verify_data: str | os.PathLike | None = None,
    tolerance: Tolerance | None = None,
    external_data: bool | None = None,
    max_iterations: int = 8,
    on_step: Callable[[str], None] | None = None,
    precision: PrecisionOptions | None = None,
    progress=None,
) -> JobReport:
    """Optimize an ONNX file into ``output_path``; verified unless ``verify=False``.

    Raises ``UsageError`` (exit 2), ``ConversionError`` (3) or
    ``VerificationError`` (4, carrying the report; nothing is written then).

    ``precision`` (a ``tensorsmith.precision.PrecisionOptions`` for fp16/int8)
    adds the precision step after the passes: its accuracy gate against the
    input model replaces the fp32 verification (``progress``: a
    ``tensorsmith.precision.progress`` object for its bars).
    """
    step = on_step or (lambda _msg: None)
    report = JobReport(input=str(input_path), output=str(output_path))
    model_io.check_output_path(output_path)
    model = load_and_optimize(
        input_path,
        report,
        passes=passes,
        skip=skip,
        pass_options=pass_options,
        max_iterations=max_iterations,
        step=step,
        check=_input_shape_check(input_shapes) if input_shapes else None,
    )

    if precision is not None and precision.lowered:
        return _lower_precision(
            model,
            input_path,
            output_path,
            report,
            precision,
            input_shapes=input_shapes,
            external_data=external_data,
            progress=progress,
        )

    t0 = time.perf_counter()
    step("write")
    with model_io.stage(model, output_path, external_data=external_data) as staged:
        report.seconds["write"] = time.perf_counter() - t0
        report.size_after = staged.size_bytes()
        if verify:
            t0 = time.perf_counter()
            step("verify")
            vr = verify_models(
                input_path,
                staged.model_path,
                input_shapes=input_shapes,
                verify_data=verify_data,
                tolerance=tolerance,
                on_progress=step,
            )
            report.seconds["verify"] = time.perf_counter() - t0
            report.verification = vr
            if not vr.passed:
                raise job_failed(report, vr, f"verification failed: {failure_summary(vr)}")
        report.files = [str(p) for p in staged.commit()]
    return report


def lower_into(
    fp32_path: Path,
    reference: str | os.PathLike,
    output_path: str | os.PathLike,
    report: JobReport,
    precision: PrecisionOptions,
    *,
    work: Path,
    input_shapes=None,
    external_data: bool | None = None,
    progress=None,
) -> JobReport:
    """Lower the optimized FP32 model at ``fp32_path`` and gate it against ``reference``
    (both in the folder ``work``), then stage and commit it at ``output_path``."""
    from tensorsmith.errors import ConversionError
    from tensorsmith.precision.step import lower

    t0 = time.perf_counter()
    try:
        result = lower(fp32_path, reference, work, precision, input_shapes=input_shapes, progress=progress)
    except (VerificationError, ConversionError) as exc:
        report.precision = exc.precision_report
        report.status = "verification-failed" if isinstance(exc, VerificationError) else "failed"
        report.output = None
        exc.job = report
        raise
    report.precision = result.report
    report.seconds["precision"] = time.perf_counter() - t0
    low = model_io.load(result.path)
    report.ops_after = dict(op_histogram(low))
    t0 = time.perf_counter()
    with model_io.stage(low, output_path, external_data=external_data) as staged:
        report.seconds["write"] = time.perf_counter() - t0
        report.size_after = staged.size_bytes()
        report.files = [str(p) for p in staged.commit()]
    return report


def work_dir(output_path: str | os.PathLike, suffix: str) -> Path:
    """A private folder beside ``output_path`` (same file system: the commit is a rename)."""
    output_path = Path(output_path)
    parent = output_path.parent if str(output_path.parent) else Path(".")
    return Path(tempfile.mkdtemp(prefix=f".{output_path.name}.", suffix=suffix, dir=parent))


def _lower_precision(
    model, input_path, output_path, report: JobReport, precision, *, input_shapes, external_data, progress
) -> JobReport:
    """Passes done: write FP32 to a work folder, lower and gate it there, then stage and commit."""
    work = work_dir(output_path, ".precision.tmp")
    try:
        fp32_path = work / "fp32.onnx"
        model_io.save(model, fp32_path, external_data=external_data)
        return lower_into(
            fp32_path,
            input_path,
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
