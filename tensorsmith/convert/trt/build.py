"""Building an engine: TensorRT's ONNX parser, the builder config, the optimization
profile, the build, the check against onnxruntime and the atomic write of the plan and
its sidecar; ``prepare``: the lint report of a ready-to-build ONNX (no TensorRT needed)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from tensorsmith import atomic, machine, model_io
from tensorsmith.convert.trt.api import (
    call_or_none,
    enum_name,
    import_tensorrt,
    make_logger,
    select_mode,
    trt_major,
)
from tensorsmith.convert.trt.options import (
    HARDWARE_COMPAT,
    HARDWARE_COMPAT_SINCE,
    TrtOptions,
    add_input_shape_profiles,
    lint_report_path,
    sidecar_path,
)
from tensorsmith.convert.trt.profiles import Profile, resolve_profiles
from tensorsmith.convert.trt.report import BuildReport, ParserError
from tensorsmith.convert.trt.runner import verify_engine
from tensorsmith.convert.trt.sidecar import sha256_file, sidecar_contents
from tensorsmith.convert.trt.timing_cache import load_timing_cache, save_timing_cache
from tensorsmith.errors import ConversionError, UsageError
from tensorsmith.verify import failure_summary, input_specs_from_proto, job_failed


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
    from tensorsmith.lint.trt import graph_precision_of

    options = options or TrtOptions()
    options.validate()
    step = on_step or (lambda _m: None)
    onnx_path = Path(onnx_path)
    plan_path = model_io.check_output_path(plan_path)
    report = BuildReport(input=str(onnx_path), output=str(plan_path))

    t0 = time.perf_counter()
    proto = model_io.load_proto(onnx_path)
    specs = input_specs_from_proto(proto)
    add_input_shape_profiles(options, specs)
    res = resolve_profiles(specs, options.shapes, max_batch=options.max_batch)
    if res.missing:
        raise UsageError(
            f"no optimization profile for dynamic input(s) {res.missing_text(specs)}",
            hint="give --shapes NAME=MIN:OPT:MAX for each (only a lone dynamic batch axis gets the default "
            f"1:1:{options.max_batch})",
        )
    report.profiles = {k: v.to_dict() for k, v in res.profiles.items()}
    report.notes.extend(res.notes)
    gp = graph_precision_of(proto, onnx_path.parent)
    report.source_sha256 = sha256_file(onnx_path)

    trt = import_tensorrt()
    report.tensorrt_version = str(trt.__version__)
    major = trt_major(trt)
    report.mode = mode = select_mode(major, gp, options.precision)
    report.notes.extend(mode.notes)
    report.gpu = machine.current_gpu()
    if report.gpu is None:
        raise ConversionError("no NVIDIA GPU found: TensorRT builds engines on the GPU they will run on")
    report.seconds["prepare"] = time.perf_counter() - t0

    logger = make_logger(trt)
    step("parse (TensorRT ONNX parser)")
    t0 = time.perf_counter()
    builder = trt.Builder(logger)
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if mode.strongly_typed and strongly is not None:
        # TensorRT 10 has the flag (since 10.0); TensorRT 11 keeps it "for API compatibility
        # but ignores it"; should a later release drop it, leaving it out changes nothing there
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
        config.hardware_compatibility_level = hardware_compat_level(trt, options.hardware_compat)
    if options.version_compat:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    _add_profile(trt, builder, network, config, res.profiles)

    cache_state = load_timing_cache(config, options.timing_cache)

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
    report.timing_cache = save_timing_cache(config, options.timing_cache, cache_state)

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


def hardware_compat_level(trt, name: str):
    """``trt.HardwareCompatibilityLevel`` member for ``--hardware-compat NAME``; ``UsageError``
    (exit 2) when this TensorRT does not have it, naming the versions that do."""
    level = HARDWARE_COMPAT[name.lower()]
    value = getattr(trt.HardwareCompatibilityLevel, level, None)
    if value is None:
        since = HARDWARE_COMPAT_SINCE.get(level)
        have = f"TensorRT {since} and later 10.x releases, and 11.x" if since else "other TensorRT versions"
        raise UsageError(
            f"--hardware-compat {name}: TensorRT {trt.__version__} has no "
            f"HardwareCompatibilityLevel.{level}; {have} have it",
            hint="use --hardware-compat ampere_plus, or build with a TensorRT that has it",
        )
    return value


def _with_job(exc, report: BuildReport):
    report.error = exc.one_line()
    exc.job = report
    return exc


def _parser_errors(parser) -> list[ParserError]:
    out = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        node = call_or_none(e, "node")
        out.append(
            ParserError(
                node=node if isinstance(node, int) and node >= 0 else None,
                name=str(call_or_none(e, "node_name") or ""),
                op=str(call_or_none(e, "node_operator") or ""),
                code=enum_name(call_or_none(e, "code")),
                message=" ".join(str(call_or_none(e, "desc") or e).split()),
            )
        )
    return out


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

    if options.input_shapes:
        add_input_shape_profiles(options, input_specs_from_proto(model_io.load_proto(onnx_path)))
    report = lint_trt(
        onnx_path,
        shapes=options.shapes,
        max_batch=options.max_batch,
        precision=options.precision,
        **(lint_options or {}),
    )
    atomic.write_text(lint_report_path(plan_path), json.dumps(report.to_dict(), indent=2) + "\n")
    return report
