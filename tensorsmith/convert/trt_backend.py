"""The TensorRT backend: a ready-to-build ONNX -> serialized engine (``.plan``) + ``.plan.json``.

Written against the TensorRT 10 and 11 Python API (``import tensorrt``, imported
only inside the functions that build or run an engine). Every call below is one
the TensorRT samples and Polygraphy use; where a call is not obvious the comment
says where it is documented:

* network: ``builder.create_network(flags)``; ``1 << int(NetworkDefinitionCreationFlag.
  STRONGLY_TYPED)`` on TensorRT 10 when the graph carries its precision (FP16/BF16
  tensors or Q/DQ). TensorRT 11 removed weak typing: every network is strongly
  typed, the flag is "accepted but ignored", and ``BuilderFlag.FP16``/``INT8``
  no longer exist (TensorRT 10.x -> 11.x migration guide, "Removed Python APIs").
  TensorRT's explicit-quantization guide: "Use explicit quantization with Strong
  Typing. Precision-control build flags are not required and should not be specified."
* TensorRT 10, FP32 graph with ``--precision fp16``: weak typing plus
  ``config.set_flag(BuilderFlag.FP16)``; the graph "asks for" FP16 only through that
  option. INT8 always needs Q/DQ in the graph (we never use implicit calibration).
* parser: ``trt.OnnxParser(network, logger).parse_from_file(path)`` (keeps the
  path so external data resolves, as Polygraphy's ``NetworkFromOnnxPath`` does);
  errors: ``parser.num_errors``, ``parser.get_error(i)`` with ``.code()``,
  ``.desc()``, ``.node()``, ``.node_name()``, ``.node_operator()`` (the
  ``nvonnxparser::IParserError`` members of TensorRT 10).
* profiles: ``builder.create_optimization_profile()``, ``profile.set_shape(name,
  min, opt, max)``, ``config.add_optimization_profile(profile)``.
* ``config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, n)``,
  ``config.builder_optimization_level``, ``config.hardware_compatibility_level =
  trt.HardwareCompatibilityLevel.AMPERE_PLUS``, ``BuilderFlag.VERSION_COMPATIBLE``.
* timing cache: ``config.create_timing_cache(bytes)``, ``config.set_timing_cache(
  cache, ignore_mismatch=False)``, after the build ``config.get_timing_cache()``,
  merged with what the file holds now (``cache.combine(prev, ignore_mismatch=True)``,
  under a lock file, as Polygraphy's ``EngineBytesFromNetwork`` does) and
  ``cache.serialize()`` written back atomically.
* ``builder.build_serialized_network(network, config)`` -> ``IHostMemory`` or None.
* running (verification): ``trt.Runtime(logger).deserialize_cuda_engine``,
  ``engine.create_execution_context()``, ``engine.num_io_tensors`` /
  ``get_tensor_name`` / ``get_tensor_mode`` / ``get_tensor_dtype``,
  ``context.set_input_shape``, ``context.get_tensor_shape``,
  ``context.set_tensor_address``, ``context.execute_async_v3(stream)`` (the
  TensorRT samples' ``common_runtime.py``). Device buffers come from torch.cuda
  or cuda-python, whichever is installed.

None of this was run against a real TensorRT here (no GPU, no TensorRT): the tests
drive it with a recording stand-in (``tests/fake_tensorrt.py``); tests marked
``gpu`` run the real thing where ``tensorrt`` imports and a GPU is present.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tensorsmith import atomic
from tensorsmith.convert.profiles import DEFAULT_MAX_BATCH, Profile, resolve_profiles
from tensorsmith.errors import ConversionError, UsageError
from tensorsmith.verify import Tolerance, VerificationReport, compare, failure_summary, job_failed

MIN_MAJOR = 10
HARDWARE_COMPAT = {
    "none": "NONE",
    "ampere_plus": "AMPERE_PLUS",
    "ampere-plus": "AMPERE_PLUS",
    "same_compute_capability": "SAME_COMPUTE_CAPABILITY",
    "same-compute-capability": "SAME_COMPUTE_CAPABILITY",
}
# Verification gates of an engine against onnxruntime on the same ONNX, by the
# precision it computes in. TF32 is on by default in TensorRT for FP32 layers
# (10-bit mantissa inputs), hence the FP32 gate is looser than ONNX-vs-ONNX.
PRECISION_TOLERANCE = {
    "fp32": Tolerance(rtol=1e-3, atol=1e-4),
    "fp16": Tolerance(rtol=1e-2, atol=1e-3),
    "bf16": Tolerance(rtol=3e-2, atol=3e-3),
    "int8": Tolerance(rtol=5e-2, atol=1e-2),
}


# ---------------------------------------------------------------------------
# options and report


@dataclass
class TrtOptions:
    shapes: dict[str, Profile] = field(default_factory=dict)
    max_batch: int = DEFAULT_MAX_BATCH
    workspace: int | None = None  # bytes
    timing_cache: Path | None = None
    builder_opt_level: int | None = None  # 0..5
    hardware_compat: str | None = None  # none | ampere_plus | same_compute_capability
    version_compat: bool = False
    precision: str | None = None  # requested: fp32 | fp16 | int8 | None (what the graph carries)
    verify: bool = True
    verify_data: Path | None = None
    tolerance: Tolerance | None = None

    def validate(self) -> None:
        if self.builder_opt_level is not None and not 0 <= self.builder_opt_level <= 5:
            raise UsageError("--builder-opt-level must be 0..5")
        if self.hardware_compat is not None and self.hardware_compat.lower() not in HARDWARE_COMPAT:
            raise UsageError(
                f"--hardware-compat {self.hardware_compat}: expected none, ampere_plus or "
                "same_compute_capability"
            )
        if self.precision not in (None, "auto", "fp32", "fp16", "int8"):
            raise UsageError(f"--precision {self.precision}: expected fp32, fp16 or int8")
        if self.workspace is not None and self.workspace <= 0:
            raise UsageError("--workspace must be > 0")


@dataclass
class NetworkMode:
    strongly_typed: bool
    builder_flags: list[str]
    precision: str  # what the engine computes in, for the gate: fp32 | fp16 | bf16 | int8
    graph: str  # what the graph carries
    notes: list[str] = field(default_factory=list)


@dataclass
class ParserError:
    node: int | None
    name: str
    op: str
    code: str
    message: str

    def to_dict(self) -> dict:
        return {
            "node": self.node,
            "name": self.name,
            "op": self.op,
            "code": self.code,
            "message": self.message,
        }


@dataclass
class BuildReport:
    input: str
    output: str | None
    status: str = "ok"
    files: list[str] = field(default_factory=list)
    tensorrt_version: str | None = None
    gpu: dict | None = None
    profiles: dict[str, dict] = field(default_factory=dict)
    mode: NetworkMode | None = None
    source_sha256: str | None = None
    timing_cache: dict | None = None
    parser_errors: list[ParserError] = field(default_factory=list)
    lint: dict | None = None
    verification: VerificationReport | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    plan_bytes: int = 0
    error: str | None = None
    prepared_onnx: str | None = None
    build_command: str | None = None
    onnx: dict | None = None  # the report of the job that wrote the ready-to-build ONNX

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "files": self.files,
            "target": "trt",
            "tensorrt_version": self.tensorrt_version,
            "gpu": self.gpu,
            "profiles": self.profiles,
            "typing": None if self.mode is None else ("strong" if self.mode.strongly_typed else "weak"),
            "builder_flags": None if self.mode is None else self.mode.builder_flags,
            "precision": None if self.mode is None else self.mode.precision,
            "graph_precision": None if self.mode is None else self.mode.graph,
            "source_sha256": self.source_sha256,
            "plan_bytes": self.plan_bytes,
            "timing_cache": self.timing_cache,
            "parser_errors": [e.to_dict() for e in self.parser_errors],
            "lint": self.lint,
            "verification": self.verification.to_dict() if self.verification else None,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "notes": self.notes,
            "prepared_onnx": self.prepared_onnx,
            "onnx": self.onnx,
            "build_command": self.build_command,
            "error": self.error,
        }


def parse_workspace(text: str | None) -> int | None:
    """``4G``, ``512M``, ``2GiB``, ``1073741824`` -> bytes."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(text))
    if not m:
        raise UsageError(f"--workspace {text!r}: expected bytes or a size like 512M, 4G")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    value = int(float(m.group(1)) * scale)
    if value <= 0:
        raise UsageError("--workspace must be > 0")
    return value


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(plan_path: str | os.PathLike) -> Path:
    p = Path(plan_path)
    return p.with_name(p.name + ".json")


def prepared_onnx_path(plan_path: str | os.PathLike) -> Path:
    """Where ``convert --to trt`` writes the ready-to-build ONNX: ``OUT.plan`` -> ``OUT.trt.onnx``."""
    p = Path(plan_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(f"{stem}.trt.onnx")


def lint_report_path(plan_path: str | os.PathLike) -> Path:
    p = Path(plan_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(f"{stem}.trt.lint.json")


def build_command(onnx_path, plan_path, options: TrtOptions) -> str:
    """The ``tensorsmith build`` command that builds ``onnx_path`` on a GPU machine."""
    import shlex

    parts = ["tensorsmith", "build", str(onnx_path), "--to", "trt", "-o", str(plan_path)]
    for name, prof in options.shapes.items():
        if prof.source == "--shapes":
            parts += ["--shapes", f"{name}={prof.text()}" if name else prof.text()]
    if options.max_batch != DEFAULT_MAX_BATCH:
        parts += ["--max-batch", str(options.max_batch)]
    if options.precision not in (None, "auto"):
        parts += ["--precision", options.precision]
    if options.workspace:
        parts += ["--workspace", str(options.workspace)]
    if options.timing_cache:
        parts += ["--timing-cache", str(options.timing_cache)]
    if options.builder_opt_level is not None:
        parts += ["--builder-opt-level", str(options.builder_opt_level)]
    if options.hardware_compat:
        parts += ["--hardware-compat", options.hardware_compat]
    if options.version_compat:
        parts.append("--version-compat")
    return " ".join(shlex.quote(p) for p in parts)


# ---------------------------------------------------------------------------
# TensorRT: import, availability, mode


def import_tensorrt():
    """``import tensorrt`` with a one-line error when it is missing or too old."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise ConversionError(
            f"TensorRT is not available: {(' '.join(str(exc).split()) or 'import tensorrt failed')[:160]}",
            hint="install it on a machine with an NVIDIA GPU (pip install tensorrt) and rerun",
        ) from None
    major = trt_major(trt)
    if major < MIN_MAJOR:
        raise ConversionError(
            f"TensorRT {trt.__version__} is too old: tensorsmith builds with TensorRT 10 or 11"
        )
    return trt


def trt_major(trt) -> int:
    m = re.match(r"(\d+)", str(getattr(trt, "__version__", "0")))
    return int(m.group(1)) if m else 0


def missing_for_build() -> list[str]:
    """What this machine lacks to build and run an engine (empty when it can)."""
    from tensorsmith import doctor

    out = []
    why = doctor.tensorrt_unavailable_reason()
    if why:
        out.append(why)
    why = doctor.gpu_unavailable_reason()
    if why:
        out.append(why)
    return out


def select_mode(major: int, graph, requested: str | None) -> NetworkMode:
    """Network typing and builder flags for TensorRT ``major``, a graph whose precision
    is ``graph`` (``lint.trt.GraphPrecision``) and a requested precision."""
    requested = None if requested in (None, "auto") else requested
    typed = graph.has_qdq or graph.fp16 or graph.bf16
    if graph.has_qdq:
        compute = "int8"
    elif graph.fp16:
        compute = "fp16"
    elif graph.bf16:
        compute = "bf16"
    else:
        compute = "fp32"
    text = graph.text()
    if requested == "int8" and not graph.has_qdq:
        raise ConversionError(
            "INT8 asked for, but the graph has no QuantizeLinear/DequantizeLinear; tensorsmith builds INT8 "
            "engines from explicit Q/DQ only",
            hint="convert with --precision int8 first",
        )
    if major >= 11:
        if requested == "fp16" and not (graph.fp16 or graph.bf16):
            raise ConversionError(
                "FP16 asked for, but the graph is FP32 and TensorRT 11 builds strongly typed networks only "
                "(the precision must be in the ONNX)",
                hint="convert with --precision fp16 first",
            )
        return NetworkMode(True, [], compute, text, ["TensorRT 11: strongly typed (the only mode)"])
    if requested == "fp16" and not (graph.fp16 or graph.bf16):
        flags = ["FP16"] + (["INT8"] if graph.has_qdq else [])
        return NetworkMode(
            False,
            flags,
            "int8" if graph.has_qdq else "fp16",
            text,
            ["TensorRT 10: FP32 graph built with the FP16 flag (weak typing)"],
        )
    if typed:
        return NetworkMode(
            True, [], compute, text, ["TensorRT 10: strongly typed (the graph carries its precision)"]
        )
    return NetworkMode(False, [], "fp32", text)


# ---------------------------------------------------------------------------
# logger


def _make_logger(trt):
    """A ``trt.ILogger`` that keeps errors and warnings for our error messages."""

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity, msg):
            text = " ".join(str(msg).split())
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(text)
            elif severity == trt.ILogger.Severity.WARNING:
                self.warnings.append(text)

    return _Logger()


# ---------------------------------------------------------------------------
# the build


def build_engine(
    onnx_path: str | os.PathLike,
    plan_path: str | os.PathLike,
    options: TrtOptions | None = None,
    *,
    on_step: Callable[[str], None] | None = None,
) -> BuildReport:
    """Parse ``onnx_path`` with TensorRT's ONNX parser, build, verify against
    onnxruntime, and write ``plan_path`` and ``plan_path.json`` atomically.

    Raises ``UsageError`` (2: unreadable ONNX, bad options, a dynamic input without a
    profile), ``ConversionError`` (3: no TensorRT/GPU, parser errors, a failed build)
    or ``VerificationError`` (4: the engine's outputs differ; nothing is written).
    """
    from tensorsmith import model_io
    from tensorsmith.lint.trt import _Index, graph_precision
    from tensorsmith.verify import input_specs_from_proto

    options = options or TrtOptions()
    options.validate()
    step = on_step or (lambda _m: None)
    onnx_path = Path(onnx_path)
    plan_path = model_io.check_output_path(plan_path)
    report = BuildReport(input=str(onnx_path), output=str(plan_path))

    t0 = time.perf_counter()
    proto = model_io.load_proto(onnx_path)
    specs = input_specs_from_proto(proto)
    res = resolve_profiles(specs, options.shapes, max_batch=options.max_batch)
    if res.missing:
        raise UsageError(
            f"no optimization profile for dynamic input(s) {res.missing_text(specs)}",
            hint="give --shapes NAME=MIN:OPT:MAX for each (only a lone dynamic batch axis gets the default "
            f"1:1:{options.max_batch})",
        )
    report.profiles = {k: v.to_dict() for k, v in res.profiles.items()}
    report.notes.extend(res.notes)
    gp = graph_precision(_Index(proto, str(onnx_path.parent)))
    report.source_sha256 = sha256_file(onnx_path)

    trt = import_tensorrt()
    report.tensorrt_version = str(trt.__version__)
    major = trt_major(trt)
    report.mode = mode = select_mode(major, gp, options.precision)
    report.notes.extend(mode.notes)
    from tensorsmith import doctor

    report.gpu = doctor.current_gpu()
    if report.gpu is None:
        raise ConversionError("no NVIDIA GPU found: TensorRT builds engines on the GPU they will run on")
    report.seconds["prepare"] = time.perf_counter() - t0

    logger = _make_logger(trt)
    step("parse (TensorRT ONNX parser)")
    t0 = time.perf_counter()
    builder = trt.Builder(logger)
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if mode.strongly_typed and (strongly is not None or major < 11):
        # TensorRT 11 keeps the flag "for API compatibility but ignores it"; should a later
        # release drop it, leaving it out changes nothing there
        flags |= 1 << int(strongly)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))
    report.seconds["parse"] = time.perf_counter() - t0
    if not ok:
        report.parser_errors = _parser_errors(parser)
        report.status = "failed"
        raise _parse_failure(onnx_path, report, logger)

    config = builder.create_builder_config()
    if options.workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace))
    for name in mode.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if options.builder_opt_level is not None:
        config.builder_optimization_level = int(options.builder_opt_level)
    if options.hardware_compat:
        level = HARDWARE_COMPAT[options.hardware_compat.lower()]
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level)
    if options.version_compat:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    _add_profile(trt, builder, network, config, res.profiles)

    cache_state = _load_timing_cache(config, options.timing_cache)

    step("build (TensorRT)")
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    report.seconds["build"] = time.perf_counter() - t0
    if serialized is None:
        report.status = "failed"
        why = "; ".join(logger.errors[-3:]) or "no error message from TensorRT"
        raise _with_job(
            ConversionError(f"TensorRT could not build an engine from {onnx_path}: {why}"), report
        )
    plan = bytes(memoryview(serialized))
    report.plan_bytes = len(plan)
    report.timing_cache = _save_timing_cache(config, options.timing_cache, cache_state)

    # stage plan + sidecar beside the target; verify; then rename into place
    with atomic.Staging(plan_path) as staging:
        staged_plan = staging.path()
        staged_plan.write_bytes(plan)
        if options.verify:
            step("verify (TensorRT vs onnxruntime)")
            t0 = time.perf_counter()
            report.verification = verify_engine(
                trt,
                plan,
                onnx_path,
                specs,
                res.profiles,
                options.tolerance,
                precision=mode.precision,
                verify_data=options.verify_data,
                version_compat=options.version_compat,
                logger=logger,
            )
            report.seconds["verify"] = time.perf_counter() - t0
            if not report.verification.passed:
                vr = report.verification
                raise _with_job(
                    job_failed(
                        report,
                        vr,
                        "the TensorRT engine differs from onnxruntime: " + failure_summary(vr, more=False),
                    ),
                    report,
                )
        sidecar = sidecar_contents(report, onnx_path, options)
        staged_sidecar = staging.path(sidecar_path(plan_path).name)
        staged_sidecar.write_text(json.dumps(sidecar, indent=2) + "\n")
        staging.install(staged_plan, plan_path)
        staging.install(staged_sidecar, sidecar_path(plan_path))
        report.files = [str(plan_path), str(sidecar_path(plan_path))]
    return report


def _with_job(exc, report: BuildReport):
    report.error = exc.one_line()
    exc.job = report
    return exc


def _parser_errors(parser) -> list[ParserError]:
    out = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        node = _call(e, "node")
        out.append(
            ParserError(
                node=node if isinstance(node, int) and node >= 0 else None,
                name=str(_call(e, "node_name") or ""),
                op=str(_call(e, "node_operator") or ""),
                code=_enum_name(_call(e, "code")),
                message=" ".join(str(_call(e, "desc") or e).split()),
            )
        )
    return out


def _enum_name(value) -> str:
    """``ErrorCode.UNSUPPORTED_NODE`` -> ``UNSUPPORTED_NODE`` (pybind11 enums have ``.name``)."""
    if value is None:
        return ""
    return str(getattr(value, "name", None) or str(value).split(".")[-1])


def _call(obj, name):
    fn = getattr(obj, name, None)
    if fn is None:
        return None
    try:
        return fn()
    except Exception:
        return None


def _parse_failure(onnx_path, report: BuildReport, logger) -> ConversionError:
    errs = report.parser_errors
    if not errs:
        why = "; ".join(logger.errors[-2:]) or "no error reported"
        return _with_job(ConversionError(f"TensorRT's ONNX parser rejected {onnx_path}: {why}"), report)
    parts = []
    for e in errs[:3]:
        where = f"node {e.name!r}" if e.name else (f"node #{e.node}" if e.node is not None else "graph")
        parts.append(f"{where} ({e.op or '?'}): {e.message}")
    more = f" (+{len(errs) - 3} more, see --json)" if len(errs) > 3 else ""
    return _with_job(
        ConversionError(
            f"TensorRT's ONNX parser failed on {len(errs)} node(s) of {onnx_path}: "
            + "; ".join(parts)
            + more,
            hint="`tensorsmith lint MODEL.onnx --for trt` lists what TensorRT does not support",
        ),
        report,
    )


def _add_profile(trt, builder, network, config, profiles: dict[str, Profile]) -> None:
    dynamic = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if any(d < 0 for d in shape):
            if getattr(tensor, "is_shape_tensor", False):
                raise ConversionError(
                    f"input {tensor.name!r} is a shape tensor (its values set output shapes); "
                    "tensorsmith build does not set shape-tensor profiles"
                )
            if tensor.name not in profiles:
                raise UsageError(
                    f"no optimization profile for dynamic input {tensor.name!r} (shape {shape} in TensorRT)",
                    hint=f"give --shapes {tensor.name}=MIN:OPT:MAX",
                )
            dynamic.append(tensor.name)
    if not dynamic:
        return
    profile = builder.create_optimization_profile()
    for name in dynamic:
        p = profiles[name]
        profile.set_shape(name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)


# -- timing cache -------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path.lock`` (POSIX; no lock elsewhere)."""
    lock = path.with_name(path.name + ".lock")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _load_timing_cache(config, path: Path | None) -> dict | None:
    if path is None:
        return None
    path = Path(path)
    if path.exists() and path.is_dir():
        raise UsageError(f"--timing-cache {path}: is a directory")
    if not (path.parent if str(path.parent) else Path(".")).is_dir():
        raise UsageError(f"--timing-cache {path}: folder does not exist")
    state = {"path": str(path), "loaded_bytes": 0, "used": False, "note": None}
    blob = b""
    with _locked(path):
        if path.is_file():
            blob = path.read_bytes()
    cache = None
    try:
        cache = config.create_timing_cache(blob)
    except Exception as exc:
        state["note"] = f"could not read {path} ({' '.join(str(exc).split())[:120]}); building without it"
    if cache is not None and not config.set_timing_cache(cache, ignore_mismatch=False):
        state["note"] = f"{path} was written for another GPU or TensorRT version; building without it"
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    elif cache is None:
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    else:
        state["used"] = bool(blob)
        state["loaded_bytes"] = len(blob)
    return state


def _save_timing_cache(config, path: Path | None, state: dict | None) -> dict | None:
    if path is None or state is None:
        return state
    path = Path(path)
    cache = config.get_timing_cache()
    with _locked(path):
        # another build may have written the file meanwhile: merge, as Polygraphy does
        if path.is_file():
            try:
                prev = config.create_timing_cache(path.read_bytes())
                if prev is not None and not cache.combine(prev, ignore_mismatch=True):
                    state["note"] = (state.get("note") or "") + " (could not merge the file's entries)"
            except Exception:
                pass
        data = bytes(memoryview(cache.serialize()))
        atomic.write_bytes(path, data)
    state["written_bytes"] = len(data)
    return state


# -- sidecar ------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# running an engine (verification)


def verify_engine(
    trt,
    plan: bytes,
    onnx_path,
    specs,
    profiles: dict[str, Profile],
    tol: Tolerance | None,
    *,
    precision: str = "fp32",
    verify_data=None,
    version_compat: bool = False,
    logger=None,
    memory=None,
) -> VerificationReport:
    """Run the engine and onnxruntime on the same inputs; compare every output.

    The gate: ``tol`` when given (``--rtol/--atol``); else, for an FP16/BF16/INT8
    engine, the precision gate of ``tensorsmith.precision.gate`` (cosine similarity,
    top-1 agreement on class-score outputs) when that module is present, else the
    ``PRECISION_TOLERANCE`` of its precision; for FP32, ``PRECISION_TOLERANCE["fp32"]``.
    """
    from tensorsmith.verify import _run as ort_run
    from tensorsmith.verify import load_verify_data, ort_session, random_inputs

    notes = []
    if verify_data is not None:
        samples = load_verify_data(verify_data, specs)
        for k, s in enumerate(samples):
            for name, arr in s.items():
                p = profiles.get(name)
                if p and not all(lo <= d <= hi for lo, d, hi in zip(p.min, arr.shape, p.max, strict=False)):
                    raise UsageError(
                        f"--verify-data sample {k}: {name} shape {list(arr.shape)} is outside "
                        f"its profile {p.text()}"
                    )
        source = str(verify_data)
    else:
        opt = {
            s.name: (profiles[s.name].opt if s.name in profiles else [int(d) for d in s.shape]) for s in specs
        }
        samples = [random_inputs(specs, opt)]
        mx = {s.name: (profiles[s.name].max if s.name in profiles else opt[s.name]) for s in specs}
        if mx != opt:
            samples.append(random_inputs(specs, mx, seed=1))
            notes.append("checked at the profiles' OPT and MAX shapes")
        source = "random"
    try:
        sess = ort_session(onnx_path)
    except Exception as exc:
        raise UsageError(
            f"onnxruntime cannot load {onnx_path} for verification: {' '.join(str(exc).split())[:200]}",
            hint="skip the check with --no-verify",
        ) from None
    use_gate = tol is None and precision in ("fp16", "bf16", "int8")
    if tol is None:
        tol = PRECISION_TOLERANCE.get(precision, PRECISION_TOLERANCE["fp32"])
    runner = EngineRunner(trt, plan, version_compat=version_compat, logger=logger, memory=memory)
    merged = None
    refs, gots = [], []
    from tensorsmith.verify import _merge

    try:
        for feeds in samples:
            ref = ort_run(sess, feeds)
            got = runner.run(feeds)
            for name, r in ref.items():  # TensorRT may hand back INT32 where ONNX says INT64
                g = got.get(name)
                if g is not None and g.dtype != r.dtype and g.dtype.kind == r.dtype.kind:
                    got[name] = g.astype(r.dtype)
            refs.append(ref)
            gots.append(got)
            merged = _merge(merged, compare(ref, got, tol))
    finally:
        runner.close()
    outputs = merged or []
    passed = all(o.passed for o in outputs)
    if use_gate:
        from tensorsmith.model_io import load_proto

        try:
            from tensorsmith.precision.gate import class_score_outputs

            classes = class_score_outputs(load_proto(onnx_path))
        except ImportError:
            classes = set()
        gate_passed = apply_precision_gate(outputs, refs, gots, precision, classes, notes)
        passed = passed if gate_passed is None else gate_passed
    shapes_used = {k: list(v.shape) for k, v in samples[0].items()}
    return VerificationReport(
        passed=passed,
        outputs=outputs,
        samples=len(samples),
        input_source=source,
        input_shapes=shapes_used,
        notes=notes,
        tolerance=tol,
    )


def apply_precision_gate(outputs, refs, gots, precision: str, class_outputs: set, notes: list) -> bool | None:
    """Judge FP16/BF16/INT8 results by the precision work's gate (``tensorsmith.precision.gate``:
    cosine similarity, top-1 agreement on class-score outputs). Updates ``outputs`` in place;
    returns the verdict, or None when that module is not there (the tolerances then decide)."""
    try:
        from tensorsmith.precision import gate
    except ImportError:
        return None
    thresholds = gate.Thresholds.defaults("fp16" if precision == "bf16" else precision)
    result = gate.evaluate(refs, gots, thresholds, class_outputs)
    metrics = {m.name: m for m in result.outputs}
    for o in outputs:
        m = metrics.get(o.name)
        if m is not None:
            o.passed, o.reason = m.passed, m.reason
    notes.append(
        f"{precision} result judged by the precision gate {thresholds.to_dict()} "
        f"(worst cosine {result.worst_cosine:.5f}); max abs diff shown for information"
    )
    return result.passed


class EngineRunner:
    """Deserialize a plan and run it on numpy inputs (TensorRT 10/11 I/O tensor API)."""

    def __init__(self, trt, plan: bytes, *, version_compat: bool = False, logger=None, memory=None):
        self.trt = trt
        self.logger = logger or _make_logger(trt)
        self.runtime = trt.Runtime(self.logger)
        if version_compat:
            # a version-compatible plan embeds its lean runtime, which must be allowed to load
            self.runtime.engine_host_code_allowed = True
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            why = "; ".join(self.logger.errors[-2:]) or "no message"
            raise ConversionError(f"TensorRT could not deserialize the engine it built: {why}")
        self.context = self.engine.create_execution_context()
        self.memory = memory or device_memory()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def _np_dtype(self, name: str) -> np.dtype:
        dtype = self.engine.get_tensor_dtype(name)
        try:
            return np.dtype(self.trt.nptype(dtype))
        except (TypeError, KeyError, ValueError):  # BF16, FP8, INT4 I/O: no numpy type
            raise ConversionError(
                f"I/O tensor {name!r} is {_enum_name(dtype)}, which numpy cannot hold; the verifier cannot "
                "run this engine (use --no-verify)"
            ) from None

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mem = self.memory
        buffers = []
        try:
            for name in self.inputs:
                arr = np.ascontiguousarray(feeds[name].astype(self._np_dtype(name), copy=False))
                self.context.set_input_shape(name, tuple(arr.shape))
                ptr = mem.alloc(max(arr.nbytes, 1))
                buffers.append(ptr)
                mem.h2d(ptr, arr)
                self.context.set_tensor_address(name, ptr)
            results = {}
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise ConversionError(
                        f"output {name!r} has a data-dependent shape {list(shape)}; the verifier cannot "
                        "allocate it (use --no-verify)"
                    )
                out = np.empty(shape, dtype=self._np_dtype(name))
                ptr = mem.alloc(max(out.nbytes, 1))
                buffers.append(ptr)
                self.context.set_tensor_address(name, ptr)
                results[name] = (out, ptr)
            if not self.context.execute_async_v3(mem.stream()):
                raise ConversionError("TensorRT execute_async_v3 failed on the verification inputs")
            mem.sync()
            got = {}
            for name, (out, ptr) in results.items():
                mem.d2h(out, ptr)
                got[name] = out
            return got
        finally:
            for ptr in buffers:
                mem.free(ptr)

    def close(self) -> None:
        self.memory.close()


def device_memory():
    """Device buffers through torch.cuda if it sees a GPU, else cuda-python."""
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return _TorchMemory(torch)
    if importlib.util.find_spec("cuda") is not None:
        return _CudaPythonMemory()
    raise ConversionError(
        "verifying a TensorRT engine needs torch with CUDA or cuda-python "
        "(pip install cuda-python) to move tensors to the GPU"
    )


class _TorchMemory:
    def __init__(self, torch):
        self.torch = torch
        self._tensors: dict[int, object] = {}
        self._stream = torch.cuda.Stream()

    def alloc(self, nbytes: int) -> int:
        t = self.torch.empty(nbytes, dtype=self.torch.uint8, device="cuda")
        self._tensors[t.data_ptr()] = t
        return t.data_ptr()

    def h2d(self, ptr: int, arr: np.ndarray) -> None:
        src = self.torch.from_numpy(arr.reshape(-1).view(np.uint8))
        self._tensors[ptr][: arr.nbytes].copy_(src)

    def d2h(self, arr: np.ndarray, ptr: int) -> None:
        host = self._tensors[ptr][: arr.nbytes].cpu().numpy()
        arr.reshape(-1).view(np.uint8)[:] = host

    def stream(self) -> int:
        self.torch.cuda.synchronize()  # h2d copies ran on the default stream
        return self._stream.cuda_stream

    def sync(self) -> None:
        self._stream.synchronize()

    def free(self, ptr: int) -> None:
        self._tensors.pop(ptr, None)

    def close(self) -> None:
        self._tensors.clear()


class _CudaPythonMemory:
    """cuda-python's runtime API, as TensorRT's samples (``common_runtime.py``) use it."""

    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        self.cudart = cudart
        self._stream = self._check(cudart.cudaStreamCreate())

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.cudart.cudaError_t.cudaSuccess:
            raise ConversionError(f"CUDA error {err}")
        return rest[0] if len(rest) == 1 else rest

    def alloc(self, nbytes: int) -> int:
        return int(self._check(self.cudart.cudaMalloc(nbytes)))

    def h2d(self, ptr: int, arr: np.ndarray) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpy(ptr, arr.ctypes.data, arr.nbytes, kind))

    def d2h(self, arr: np.ndarray, ptr: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpy(arr.ctypes.data, ptr, arr.nbytes, kind))

    def stream(self) -> int:
        return int(self._stream)

    def sync(self) -> None:
        self._check(self.cudart.cudaStreamSynchronize(self._stream))

    def free(self, ptr: int) -> None:
        self._check(self.cudart.cudaFree(ptr))

    def close(self) -> None:
        self._check(self.cudart.cudaStreamDestroy(self._stream))


# ---------------------------------------------------------------------------
# prepare (no TensorRT needed)


def prepare(
    onnx_path: str | os.PathLike,
    plan_path: str | os.PathLike,
    options: TrtOptions,
    *,
    lint_options: dict | None = None,
):
    """Lint a ready-to-build ONNX for TensorRT and write the lint report beside the plan
    path (``OUT.trt.lint.json``). Returns the ``LintReport``."""
    from tensorsmith.lint.trt import lint_trt

    report = lint_trt(
        onnx_path,
        shapes=options.shapes,
        max_batch=options.max_batch,
        precision=options.precision,
        **(lint_options or {}),
    )
    atomic.write_text(lint_report_path(plan_path), json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def render(report: BuildReport, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(
        title=escape(f"{report.input} -> {report.output or '(not written)'}"),
        title_justify="left",
        show_header=False,
    )
    t.add_column(style="bold")
    t.add_column()
    mode = report.mode
    rows = [
        ("TensorRT", report.tensorrt_version),
        (
            "GPU",
            None
            if not report.gpu
            else f"{report.gpu.get('name')} (compute {report.gpu.get('compute_capability')})",
        ),
        (
            "precision",
            None
            if not mode
            else f"{mode.precision} (graph {mode.graph}; "
            f"{'strongly' if mode.strongly_typed else 'weakly'} typed"
            f"{'; flags ' + ', '.join(mode.builder_flags) if mode.builder_flags else ''})",
        ),
        (
            "profiles",
            "; ".join(
                f"{k} {Profile(v['min'], v['opt'], v['max']).text()}" for k, v in report.profiles.items()
            )
            or "static shapes",
        ),
        ("plan", f"{report.plan_bytes:,} B" if report.plan_bytes else None),
        (
            "timing cache",
            None
            if not report.timing_cache
            else f"{report.timing_cache['path']} ({report.timing_cache.get('loaded_bytes', 0):,} B in, "
            f"{report.timing_cache.get('written_bytes', 0):,} B out)",
        ),
        ("time", ", ".join(f"{k} {v:.2f} s" for k, v in report.seconds.items())),
    ]
    for k, v in rows:
        if v:
            t.add_row(k, escape(str(v)))
    console.print(t)
    vr = report.verification
    if vr is not None:
        v = Table(
            title=f"verification vs onnxruntime ({vr.input_source}, {vr.samples} sample(s), "
            f"rtol {vr.tolerance.rtol:g}, atol {vr.tolerance.atol:g})",
            title_justify="left",
            header_style="bold",
        )
        v.add_column("output")
        v.add_column("max abs diff", justify="right")
        v.add_column("max rel diff", justify="right")
        v.add_column("ok")
        for o in vr.outputs:
            v.add_row(
                escape(o.name),
                f"{o.max_abs_diff:.3g}",
                f"{o.max_rel_diff:.3g}",
                "[green]yes[/green]" if o.passed else f"[red]no[/red] {escape(o.reason)}",
            )
        console.print(v)
    for n in report.notes:
        console.print(f"[dim]note:[/dim] {escape(n)}")


__all__ = [
    "PRECISION_TOLERANCE",
    "BuildReport",
    "EngineRunner",
    "NetworkMode",
    "TrtOptions",
    "build_command",
    "build_engine",
    "import_tensorrt",
    "missing_for_build",
    "parse_workspace",
    "prepare",
    "prepared_onnx_path",
    "select_mode",
    "sidecar_contents",
    "sidecar_path",
    "verify_engine",
]
