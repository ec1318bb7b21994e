"""Numeric verification: run the source and the result on the same inputs.

Both models run in onnxruntime with graph optimizations off (so onnxruntime's own
rewrites cannot hide or cause a difference). Inputs are seeded random tensors built
from the input specs, or real samples from ``--verify-data FILE.npz``. For each
output the report gives the max absolute difference and the max difference
relative to the output's scale (its largest absolute reference value); an output
passes when ``max_abs <= atol + rtol * scale``. Integer and bool outputs must match
exactly. Shapes must match exactly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tensorsmith.errors import ConversionError, UsageError, VerificationError, short
from tensorsmith.shapes import InputSpec, format_shape, resolve_shapes

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-5
SEED = 0


@dataclass
class Tolerance:
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL


@dataclass
class OutputCheck:
    name: str
    shape: list[int]
    max_abs_diff: float
    max_rel_diff: float
    scale: float
    passed: bool
    reason: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": self.shape,
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "scale": self.scale,
            "passed": self.passed,
            "reason": self.reason,
        }


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


_ORT_FLOATS = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64}


def session_feeds(sess, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feeds`` for the inputs ``sess`` has, float arrays cast to its input types (--fp16-io)."""
    out = {}
    for i in sess.get_inputs():
        if i.name in feeds:
            v = feeds[i.name]
            want = _ORT_FLOATS.get(i.type)
            out[i.name] = (
                v.astype(want) if want is not None and v.dtype.kind == "f" and v.dtype != want else v
            )
    return out


def ort_session(
    model: str | os.PathLike | bytes,
    *,
    optimize: bool = False,
    threads: int = 0,
    sequential: bool = False,
    profile_prefix: str | None = None,
):
    """An onnxruntime CPU session: the one place tensorsmith makes them.

    ``threads`` 0 lets onnxruntime choose; ``sequential`` also pins inter-op work to
    one thread (latency measurements). onnxruntime's own logger is set to FATAL: a
    model that fails comes back as an exception, which the caller turns into its
    one-line error, instead of also printing onnxruntime's multi-line log to stderr.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    so.log_severity_level = 4
    if threads:
        so.intra_op_num_threads = threads
    if sequential:
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(
        model if isinstance(model, bytes) else str(model), so, providers=["CPUExecutionProvider"]
    )


def _run(session, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}
    values = session.run(names, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, values, strict=False))


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], tol: Tolerance) -> list[OutputCheck]:
    checks = []
    for name, r in ref.items():
        g = got.get(name)
        if g is None:
            checks.append(
                OutputCheck(name, list(np.shape(r)), float("inf"), float("inf"), 0.0, False, "output missing")
            )
            continue
        r = np.asarray(r)
        g = np.asarray(g)
        if r.shape != g.shape:
            checks.append(
                OutputCheck(
                    name,
                    list(r.shape),
                    float("inf"),
                    float("inf"),
                    0.0,
                    False,
                    f"shape {list(g.shape)} != source {list(r.shape)}",
                )
            )
            continue
        if r.dtype != g.dtype:
            checks.append(
                OutputCheck(
                    name,
                    list(r.shape),
                    float("inf"),
                    float("inf"),
                    0.0,
                    False,
                    f"dtype {g.dtype} != source {r.dtype}",
                )
            )
            continue
        if r.dtype.kind not in "fc":
            equal = bool(np.array_equal(r, g))
            diff = (
                0.0
                if equal
                else float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64))))
                if r.dtype.kind in "iub"
                else float("inf")
            )
            checks.append(
                OutputCheck(
                    name,
                    list(r.shape),
                    diff,
                    0.0 if equal else float("inf"),
                    0.0,
                    equal,
                    "" if equal else "values differ (exact match required)",
                )
            )
            continue
        r64 = r.astype(np.float64)
        g64 = g.astype(np.float64)
        nan_r, nan_g = np.isnan(r64), np.isnan(g64)
        if not np.array_equal(nan_r, nan_g):
            checks.append(
                OutputCheck(
                    name, list(r.shape), float("inf"), float("inf"), 0.0, False, "NaN in different places"
                )
            )
            continue
        finite = ~nan_r
        inf_r = np.isinf(r64) & finite
        if not np.array_equal(r64[inf_r], g64[inf_r]) or not np.array_equal(inf_r, np.isinf(g64) & finite):
            checks.append(
                OutputCheck(
                    name, list(r.shape), float("inf"), float("inf"), 0.0, False, "Inf in different places"
                )
            )
            continue
        ok = finite & ~inf_r
        if r64.size == 0 or not ok.any():
            checks.append(OutputCheck(name, list(r.shape), 0.0, 0.0, 0.0, True))
            continue
        diff = np.abs(r64[ok] - g64[ok])
        max_abs = float(diff.max())
        scale = float(np.abs(r64[ok]).max())
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        passed = max_abs <= tol.atol + tol.rtol * scale
        checks.append(
            OutputCheck(
                name,
                list(r.shape),
                max_abs,
                max_rel,
                scale,
                passed,
                ""
                if passed
                else f"max abs diff {max_abs:.3g} > {tol.atol:g} + {tol.rtol:g} x scale {scale:.3g}",
            )
        )
    return checks


def _merge(a: list[OutputCheck] | None, b: list[OutputCheck]) -> list[OutputCheck]:
    if a is None:
        return b
    out = []
    for x, y in zip(a, b, strict=False):
        worst = y if (not y.passed and x.passed) or y.max_abs_diff > x.max_abs_diff else x
        merged = OutputCheck(
            x.name,
            x.shape,
            max(x.max_abs_diff, y.max_abs_diff),
            max(x.max_rel_diff, y.max_rel_diff),
            max(x.scale, y.scale),
            x.passed and y.passed,
            worst.reason if not (x.passed and y.passed) else "",
        )
        out.append(merged)
    return out


def verify_models(
    source_path: str | os.PathLike,
    result_path: str | os.PathLike,
    *,
    input_shapes: dict[str, list[int]] | None = None,
    verify_data: str | os.PathLike | None = None,
    tolerance: Tolerance | None = None,
    source_runner: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
    specs: list[InputSpec] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> VerificationReport:
    """Run ``source_path`` and ``result_path`` on the same inputs and compare outputs.

    ``source_runner`` replaces onnxruntime for the source (frontends pass the
    original framework's own runtime). Raises ``UsageError`` when the source itself
    cannot run on the generated inputs, ``ConversionError`` when the result cannot
    run; returns the report otherwise (the caller decides what a failure means).
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

    if source_runner is None:
        try:
            src_sess = ort_session(source_path)
        except Exception as exc:
            raise UsageError(
                f"onnxruntime cannot load the source model for verification: {short(exc, 240)}",
                hint="skip the check with --no-verify",
            ) from None
        source_runner = lambda feeds: _run(src_sess, feeds)  # noqa: E731
    try:
        res_sess = ort_session(result_path)
    except Exception as exc:
        raise ConversionError(
            f"the converted model does not load in onnxruntime: {short(exc, 240)}"
        ) from None

    merged: list[OutputCheck] | None = None
    for i, feeds in enumerate(samples):
        if on_progress:
            on_progress(f"verify sample {i + 1}/{len(samples)}")
        try:
            ref = source_runner(feeds)
        except Exception as exc:
            if verify_data is None:
                raise UsageError(
                    f"the source model fails on generated inputs ({_describe(feeds)}): {short(exc, 240)}",
                    hint="give real inputs with --verify-data FILE.npz or shapes with --input-shape",
                ) from None
            raise UsageError(
                f"the source model fails on --verify-data sample {i}: {short(exc, 240)}"
            ) from None
        try:
            got = _run(res_sess, feeds)
        except Exception as exc:
            raise ConversionError(f"the converted model fails in onnxruntime: {short(exc, 240)}") from None
        merged = _merge(merged, compare(ref, got, tol))
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
