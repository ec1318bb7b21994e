"""Numeric verification: run the source and the result on the same inputs.

Both models run in onnxruntime with graph optimizations off (so onnxruntime's own
rewrites cannot hide or cause a difference), or the source in its own framework (a
runner from the frontend). Inputs are seeded random tensors built from the input
specs, or real samples from ``--verify-data FILE.npz``. The runners are those of
``tensorsmith.runners``, the comparison (per output: max absolute difference, max
difference relative to the output's scale; ``max_abs <= atol + rtol * scale``;
integer, bool outputs and shapes exactly) is ``tensorsmith.compare``, the default
tolerances are the table of ``tensorsmith.tolerances``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tensorsmith.compare import OutputCheck, compare, judge_by_noise, run_and_compare
from tensorsmith.errors import ConversionError, UsageError, VerificationError, short
from tensorsmith.runners import FunctionRunner, OnnxRuntimeRunner, Runner, ort_session, session_feeds
from tensorsmith.shapes import InputSpec, format_shape, resolve_shapes
from tensorsmith.tolerances import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance

SEED = 0


@dataclass
class VerificationReport:
    passed: bool
    outputs: list[OutputCheck]
    samples: int
    input_source: str  # "random" or the data file
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tolerance: Tolerance = field(default_factory=Tolerance)

    @property
    def max_abs_diff(self) -> float:
        return max((o.max_abs_diff for o in self.outputs), default=0.0)

    @property
    def max_rel_diff(self) -> float:
        return max((o.max_rel_diff for o in self.outputs), default=0.0)

    def failures(self) -> list[OutputCheck]:
        return [o for o in self.outputs if not o.passed]

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "samples": self.samples,
            "inputs": self.input_source,
            "input_shapes": self.input_shapes,
            "notes": self.notes,
            "rtol": self.tolerance.rtol,
            "atol": self.tolerance.atol,
            "outputs": [o.to_dict() for o in self.outputs],
        }


# ---------------------------------------------------------------------------
# input specs and data


def input_specs_from_proto(proto) -> list[InputSpec]:
    """Graph inputs that are not initializers, from a ModelProto (no data read)."""
    import onnx

    inits = {i.name for i in proto.graph.initializer}
    specs = []
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise UsageError(f"input {vi.name!r} is not a tensor (sequence/map inputs are not supported)")
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except Exception:
            dtype = np.dtype(object)
        shape: list[int | str | None] = []
        if tt.HasField("shape"):
            for d in tt.shape.dim:
                if d.HasField("dim_value") and d.dim_value >= 0:
                    shape.append(int(d.dim_value))
                elif d.HasField("dim_param"):
                    shape.append(d.dim_param)
                else:
                    shape.append(None)
        specs.append(InputSpec(vi.name, dtype, shape))
    return specs


def input_specs_from_ir(model) -> list[InputSpec]:
    """``input_specs_from_proto`` for an ``onnx_ir`` model (one already loaded: no second parse)."""
    import onnx_ir as ir

    specs = []
    for value in model.graph.inputs:
        if value.name in model.graph.initializers:
            continue
        if value.type is not None and not isinstance(value.type, ir.TensorType):
            raise UsageError(f"input {value.name!r} is not a tensor (sequence/map inputs are not supported)")
        try:
            dtype = np.dtype(value.dtype.numpy()) if value.dtype is not None else np.dtype(object)
        except Exception:
            dtype = np.dtype(object)
        shape: list[int | str | None] = []
        for d in value.shape or []:
            if isinstance(d, int):
                shape.append(int(d) if d >= 0 else None)
            else:
                shape.append(d.value)
        specs.append(InputSpec(value.name, dtype, shape))
    return specs


def integer_bounds(proto) -> dict[str, int]:
    """Upper bounds for integer inputs that index a constant table.

    An input that reaches a Gather's indices (directly or through Cast/Reshape/
    Unsqueeze/Squeeze/Flatten) over a constant of size K along the axis must be
    in ``[0, K)``: a ``token_type_ids`` feeding a 2-row embedding takes 0 or 1.
    """
    g = proto.graph
    dims = {i.name: list(i.dims) for i in g.initializer}
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.type == a.TENSOR:
                    dims[node.output[0]] = list(a.t.dims)
    consumers: dict[str, list] = {}
    for node in g.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))
    passthrough = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}
    bounds: dict[str, int] = {}
    for vi in g.input:
        frontier, seen = [vi.name], set()
        while frontier:
            name = frontier.pop()
            if name in seen:
                continue
            seen.add(name)
            for node, idx in consumers.get(name, []):
                if node.op_type == "Gather" and idx == 1 and node.input[0] in dims:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    table = dims[node.input[0]]
                    if table:
                        k = table[axis if axis >= 0 else axis + len(table)]
                        bounds[vi.name] = min(bounds.get(vi.name, k), k)
                elif node.op_type in passthrough and idx == 0:
                    frontier.extend(node.output)
    return bounds


def random_inputs(
    specs: list[InputSpec],
    shapes: dict[str, list[int]],
    seed: int = SEED,
    int_bounds: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded inputs: floats ~ N(0, 1); integers in [0, 10), or [0, K) when the
    input indexes a K-row constant table (see ``integer_bounds``), or {0, 1} when its
    name says it is a mask (``attention_mask``: other values are not a mask, and drive
    transformers' softmax to NaN); bools uniform."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = shapes[spec.name]
        dt = spec.dtype
        if dt.kind == "f" or dt.name in ("bfloat16",):
            arr = rng.standard_normal(shape).astype(np.float32).astype(dt)
        elif dt.kind in "iu":
            high = min(10, (int_bounds or {}).get(spec.name, 10))
            if "mask" in spec.name.lower():
                high = min(high, 2)
            arr = rng.integers(0, max(high, 1), size=shape).astype(dt)
        elif dt.kind == "b":
            arr = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise UsageError(
                f"cannot generate values for input {spec.name!r} of type {dt}",
                hint="give real inputs with --verify-data FILE.npz, or --no-verify",
            )
        feeds[spec.name] = arr
    return feeds


def load_verify_data(path: str | os.PathLike, specs: list[InputSpec]) -> list[dict[str, np.ndarray]]:
    """Samples from an .npz whose arrays are named after the inputs.

    An array with one more dimension than the input's rank holds several samples
    along its first axis; otherwise the file is one sample.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--verify-data {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise UsageError(f"--verify-data {path}: not a readable .npz file ({exc})") from None
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise UsageError(
            f"--verify-data {path}: no array for input(s) {', '.join(missing)}; "
            f"found {', '.join(arrays) or 'nothing'}"
        )
    counts = set()
    for spec in specs:
        arr = arrays[spec.name]
        if spec.shape and arr.ndim == len(spec.shape) + 1:
            counts.add(arr.shape[0])
        elif spec.shape and arr.ndim != len(spec.shape):
            raise UsageError(
                f"--verify-data {path}: array {spec.name!r} has shape {list(arr.shape)}, "
                f"input expects rank {len(spec.shape)} ({format_shape(spec.shape)})"
            )
        else:
            counts.add(None)
    stacked = counts - {None}
    if len(stacked) > 1:
        raise UsageError(f"--verify-data {path}: arrays hold different numbers of samples {sorted(stacked)}")
    n = stacked.pop() if stacked else None
    samples = []
    for i in range(n or 1):
        sample = {}
        for spec in specs:
            arr = arrays[spec.name]
            if n is not None and arr.ndim == len(spec.shape) + 1:
                arr = arr[i]
            for want, got in zip(spec.shape, arr.shape, strict=False):
                if isinstance(want, int) and want != got:
                    raise UsageError(
                        f"--verify-data {path}: array {spec.name!r} has shape {list(arr.shape)}, "
                        f"input expects {format_shape(spec.shape)}"
                    )
            sample[spec.name] = np.ascontiguousarray(arr.astype(spec.dtype, copy=False))
        samples.append(sample)
    return samples


# ---------------------------------------------------------------------------
# running


def verify_models(
    source_path: str | os.PathLike,
    result_path: str | os.PathLike,
    *,
    input_shapes: dict[str, list[int]] | None = None,
    verify_data: str | os.PathLike | None = None,
    tolerance: Tolerance | None = None,
    source_runner: Runner | Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
    specs: list[InputSpec] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> VerificationReport:
    """Run ``source_path`` and ``result_path`` on the same inputs and compare outputs.

    ``source_runner`` (a runner, or a function ``feeds -> outputs``) replaces
    onnxruntime for the source (frontends pass the original framework's own
    runtime). Raises ``UsageError`` when the source itself cannot run on the
    generated inputs, ``ConversionError`` when the result cannot run; returns the
    report otherwise (the caller decides what a failure means).
    """
    from tensorsmith import model_io

    tol = tolerance or Tolerance()
    bounds: dict[str, int] = {}
    if specs is None:
        proto = model_io.load_proto(source_path)
        specs = input_specs_from_proto(proto)
        bounds = integer_bounds(proto)
        del proto
    notes: list[str] = []
    if verify_data is not None:
        samples = load_verify_data(verify_data, specs)
        source = str(verify_data)
        shapes_used = {k: list(v.shape) for k, v in samples[0].items()}
    else:
        shapes_used, notes = resolve_shapes(specs, input_shapes)
        samples = [random_inputs(specs, shapes_used, int_bounds=bounds)]
        dynamic_batch = [s for s in specs if s.shape and not isinstance(s.shape[0], int)]
        if dynamic_batch:
            # a second run at another batch size catches a pass that froze the batch
            shapes2, _ = resolve_shapes(specs, input_shapes, batch=shapes_used[dynamic_batch[0].name][0] + 1)
            samples.append(random_inputs(specs, shapes2, seed=SEED + 1, int_bounds=bounds))
            notes.append(f"also checked at batch {shapes2[dynamic_batch[0].name][0]} (dynamic batch)")
        source = "random"

    reference: Runner
    if source_runner is None:
        reference = OnnxRuntimeRunner(source_path)
        try:
            reference.activate()
        except Exception as exc:
            raise UsageError(
                f"onnxruntime cannot load the source model for verification: {short(exc, 240)}",
                hint="skip the check with --no-verify",
            ) from None
    elif isinstance(source_runner, Runner):
        reference = source_runner
    else:
        reference = FunctionRunner(source_runner, "source")
    result = OnnxRuntimeRunner(result_path)
    try:
        result.activate()
    except Exception as exc:
        raise ConversionError(
            f"the converted model does not load in onnxruntime: {short(exc, 240)}"
        ) from None

    def source_failed(i: int, feeds: dict[str, np.ndarray], exc: Exception) -> Exception:
        if verify_data is None:
            return UsageError(
                f"the source model fails on generated inputs ({_describe(feeds)}): {short(exc, 240)}",
                hint="give real inputs with --verify-data FILE.npz or shapes with --input-shape",
            )
        return UsageError(f"the source model fails on --verify-data sample {i}: {short(exc, 240)}")

    def result_failed(_i: int, _feeds: dict[str, np.ndarray], exc: Exception) -> Exception:
        return ConversionError(f"the converted model fails in onnxruntime: {short(exc, 240)}")

    comparison = run_and_compare(
        reference,
        result,
        samples,
        tol,
        on_sample=(lambda i, n: on_progress(f"verify sample {i + 1}/{n}")) if on_progress else None,
        reference_error=source_failed,
        candidate_error=result_failed,
    )
    if not comparison.passed and isinstance(result_path, (str, os.PathLike)):
        notes.extend(judge_by_noise(comparison, result_path, samples, tol))
    merged = comparison.outputs
    outputs = merged or []
    return VerificationReport(
        passed=all(o.passed for o in outputs),
        outputs=outputs,
        samples=len(samples),
        input_source=source,
        input_shapes=shapes_used,
        notes=notes,
        tolerance=tol,
    )


def failure_summary(report: VerificationReport, *, more: bool = True) -> str:
    """The first three failing outputs with their reasons (and ``(+N more)``)."""
    worst = report.failures()
    text = "; ".join(f"{o.name}: {o.reason}" for o in worst[:3])
    return text + (f" (+{len(worst) - 3} more)" if more and len(worst) > 3 else "")


def job_failed(
    job, report: VerificationReport, message: str, *, hint: str | None = None
) -> VerificationError:
    """Mark ``job`` (a job report) verification-failed with no output; the error to raise for it."""
    job.status = "verification-failed"
    job.output = None
    err = VerificationError(message, report=report, hint=hint)
    err.job = job
    return err


def _describe(feeds: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in feeds.items())


def iter_outputs(report: VerificationReport) -> Iterable[OutputCheck]:
    return iter(report.outputs)


__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "OutputCheck",
    "Tolerance",
    "VerificationReport",
    "compare",
    "failure_summary",
    "input_specs_from_ir",
    "input_specs_from_proto",
    "integer_bounds",
    "job_failed",
    "load_verify_data",
    "ort_session",
    "random_inputs",
    "session_feeds",
    "verify_models",
]
