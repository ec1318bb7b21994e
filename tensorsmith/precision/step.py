"""The precision step: FP32 model file -> gated FP16/INT8 model file, plus its report.

    data      calibration samples and validation samples (never the same ones)
    lower     FP16 conversion, or INT8 Q/DQ (candidate layouts timed on onnxruntime CPU)
    gate      lowered vs FP32 on the validation samples
    fallback  while the gate fails: rank nodes by added error, keep the worst FP32
    measure   size and latency of FP32 and the result, round-robin in one process

Raises ``UsageError`` (bad data, exit 2), ``ConversionError`` (exit 3: the
conversion failed, or INT8 is slower than FP32 on the target it is meant for) and
``VerificationError`` (exit 4: the gate still fails after the fallback budget).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from tensorsmith import sandbox
from tensorsmith.errors import ConversionError, UsageError, VerificationError, short
from tensorsmith.precision import PrecisionOptions
from tensorsmith.precision import calibration as cal
from tensorsmith.precision import fallback as fb
from tensorsmith.precision import fp16 as f16
from tensorsmith.precision import gate as gt
from tensorsmith.precision import int8 as i8
from tensorsmith.precision import int8_steps as i8s
from tensorsmith.precision.latency import cpu_session, measure
from tensorsmith.precision.progress import NullProgress
from tensorsmith.precision.upcast import has_float16_compute, upcast_float16
from tensorsmith.verify import ort_session, session_feeds

MAX_VAL = 32
RANK_SAMPLES = 4
RANDOM_CALIB = 32


@dataclass
class LowerResult:
    path: Path  # the lowered model, inside the work folder
    report: dict = field(default_factory=dict)


def _run_all(
    sess, samples: list[dict[str, np.ndarray]], what: str, progress, label: str, hint: str | None = None
) -> list[dict[str, np.ndarray]]:
    names = [o.name for o in sess.get_outputs()]
    out = []
    advance = progress.track(label, len(samples))
    try:
        for i, s in enumerate(samples):
            try:
                values = sess.run(names, session_feeds(sess, s))
            except Exception as exc:
                if what == "source":
                    raise UsageError(
                        f"the FP32 model fails on validation sample {i}: {short(exc, 200)}", hint=hint
                    ) from None
                raise ConversionError(
                    f"the {what} model fails in onnxruntime on sample {i}: {short(exc, 200)}"
                ) from None
            out.append(dict(zip(names, values, strict=False)))
            advance()
    finally:
        progress.done(label)
    return out


# ---------------------------------------------------------------------------
# data


def load_data(
    opts: PrecisionOptions,
    specs,
    input_shapes,
    progress,
    int_bounds: dict[str, int] | None = None,
) -> tuple[cal.Dataset | None, cal.Dataset, list[str]]:
    """(calibration set or None, validation set, warnings). ``int_bounds``: for random samples."""
    warnings: list[str] = []
    need_calib = opts.precision == "int8" and opts.int8_mode == "static"
    val: cal.Dataset | None = None
    if opts.val:
        progress.step("loading --val")
        val = cal.load_path(opts.val, specs, what="--val", preprocess=opts.calib_preprocess, limit=256)
    calib: cal.Dataset | None = None
    if opts.calib == "random":
        warnings.append(
            "--calib random: calibrating on random inputs, for smoke tests only; the result is not meaningful"
        )
        calib = cal.random_dataset(
            specs, input_shapes, min(opts.calib_samples, RANDOM_CALIB), int_bounds=int_bounds
        )
        if val is None:
            val = cal.random_dataset(
                specs, input_shapes, 8, seed=cal.RANDOM_SEED + 1000, int_bounds=int_bounds
            )
            val.source = "random (held apart from calibration)"
    elif opts.calib or opts.calib_loader:
        progress.step("loading calibration data")
        limit = opts.calib_samples + (0 if val is not None else MAX_VAL)
        if opts.calib_loader:
            data = cal.load_loader(opts.calib_loader, specs, limit=limit)
        else:
            if opts.calib is None:
                raise UsageError("--precision int8 needs calibration data: --calib PATH or --calib-loader")
            data = cal.load_path(
                opts.calib, specs, what="--calib", preprocess=opts.calib_preprocess, limit=limit
            )
        if val is None:
            calib, val = cal.split_holdout(data, opts.calib_samples, max_val=MAX_VAL)
        else:
            calib = cal.Dataset(data.samples[: opts.calib_samples], data.source, data.random, data.files)
    if val is None:
        warnings.append("no --val or --calib data: the accuracy gate runs on random inputs")
        val = cal.random_dataset(specs, input_shapes, 8, seed=cal.RANDOM_SEED + 1000, int_bounds=int_bounds)
    if need_calib and calib is None:  # pragma: no cover - PrecisionOptions.check() refuses this
        raise UsageError("--precision int8 needs --calib")
    return calib, val, warnings


# ---------------------------------------------------------------------------
# the step


def lower(
    fp32_path: str | os.PathLike,
    reference_path: str | os.PathLike,
    work_dir: str | os.PathLike,
    opts: PrecisionOptions,
    *,
    input_shapes: dict[str, list[int]] | None = None,
    progress=None,
) -> LowerResult:
    """Lower ``fp32_path`` (already optimized) to ``opts.precision`` inside ``work_dir``.

    ``reference_path`` is the FP32 model the gate compares with (the user's
    input; the optimized model computes the same function to fp32 tolerance).
    """
    from tensorsmith import model_io
    from tensorsmith.verify import input_specs_from_proto, integer_bounds

    progress = progress or NullProgress()
    work = Path(work_dir)
    fp32_path = Path(fp32_path)
    t_start = time.perf_counter()
    proto = model_io.load_proto(fp32_path)
    onnx.external_data_helper.load_external_data_for_model(proto, str(fp32_path.parent))
    specs = input_specs_from_proto(proto)
    calib, val, warnings = load_data(opts, specs, input_shapes, progress, int_bounds=integer_bounds(proto))
    for w in warnings:
        progress.warn(w)

    # reference outputs on the validation samples (the gate's ground truth)
    progress.step("running the FP32 model on the validation samples")
    try:
        ref_sess = cpu_session(reference_path, threads=0, optimize=False)
    except Exception as exc:
        raise UsageError(f"onnxruntime cannot load the FP32 model: {short(exc, 200)}") from None
    refs = _run_all(
        ref_sess,
        val.samples,
        "source",
        progress,
        "gate: FP32 reference",
        hint="the validation samples are random: give inputs the model accepts with --val PATH"
        if val.random
        else None,
    )
    class_outputs = gt.class_score_outputs(proto)
    defaults = gt.Thresholds.defaults(opts.precision)
    thresholds = gt.Thresholds(
        min_cosine=opts.min_cosine if opts.min_cosine is not None else defaults.min_cosine,
        min_top1=opts.min_top1 if opts.min_top1 is not None else defaults.min_top1,
        max_abs=opts.max_abs,
        max_rel=opts.max_rel,
    )

    def gate(path: Path, label: str) -> gt.GateResult:
        progress.step(f"gate: {label}")
        # a native crash here would end the process (and a recipe's other jobs): probe first
        sandbox.check(path, f"the {opts.precision} model ({label})")
        try:
            sess = cpu_session(path, threads=0, optimize=True)
        except Exception as exc:
            raise ConversionError(
                f"the {opts.precision} model does not load in onnxruntime: {short(exc, 200)}"
            ) from None
        gots = _run_all(sess, val.samples, opts.precision, progress, f"gate: {label}")
        return gt.evaluate(refs, gots, thresholds, class_outputs)

    report: dict = {
        "precision": opts.precision,
        "target": opts.target,
        "calibration": None,
        "validation": {**val.describe(), "source": val.source},
        "warnings": list(warnings),
        "notes": [],
    }
    if calib is not None and opts.precision == "int8":
        report["calibration"] = {**calib.describe(), "method": opts.calib_method}
    rank_samples = (calib.samples if calib is not None else val.samples)[:RANK_SAMPLES]

    if opts.precision == "fp16":
        result = _lower_fp16(proto, work, opts, gate, rank_samples, calib, val, progress, report)
    else:
        result = _lower_int8(proto, work, opts, gate, calib, rank_samples, progress, report)

    # size and latency, FP32 vs the result
    report["size"] = {"fp32": i8.file_bytes(fp32_path), "lowered": i8.file_bytes(result)}
    report["size"]["ratio"] = report["size"]["lowered"] / max(1, report["size"]["fp32"])
    if opts.measure_latency and "latency" not in report:
        progress.step("timing FP32 and the result (onnxruntime CPU, 1 thread, round-robin)")
        lat = measure([fp32_path, result], val.samples[0])
        report["latency"] = _latency_dict(lat[0], lat[1])
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    _table(report)
    return LowerResult(result, report)


def _latency_dict(base, low) -> dict:
    return {
        "fp32_ms": round(base.median_ms, 4),
        "ms": round(low.median_ms, 4),
        "speedup": round(base.median_ms / low.median_ms, 3) if low.median_ms > 0 else None,
        "runs": low.runs,
        "threads": 1,
        "provider": "onnxruntime CPUExecutionProvider",
    }


def _table(report: dict) -> None:
    """Rows FP32 and the result: size, latency, accuracy, nodes kept in higher precision."""
    lat = report.get("latency") or {}
    gate = report.get("gate") or {}
    rows = [
        {
            "precision": "fp32",
            "size": report["size"]["fp32"],
            "latency_ms": lat.get("fp32_ms"),
            "speedup": 1.0 if lat else None,
            "cosine": 1.0,
            "top1": 1.0 if gate.get("worst_top1") is not None else None,
            "kept_fp32": None,
        },
        {
            "precision": report["precision"],
            "size": report["size"]["lowered"],
            "latency_ms": lat.get("ms"),
            "speedup": lat.get("speedup"),
            "cosine": gate.get("worst_cosine"),
            "top1": gate.get("worst_top1"),
            "kept_fp32": len(report.get("kept", [])),
        },
    ]
    report["table"] = rows


def _keep_list(proto: onnx.ModelProto, keep: list[str]) -> dict[str, str]:
    names = {n.name for n in proto.graph.node}
    ops = {n.op_type for n in proto.graph.node}
    out: dict[str, str] = {}
    for item in keep:
        if item in names:
            out[item] = "--keep-fp32"
        elif item in ops:
            out.update({n.name: f"--keep-fp32 {item}" for n in proto.graph.node if n.op_type == item})
        else:
            raise UsageError(f"--keep-fp32 {item!r}: no node or op type of that name in the model")
    return out


# ---------------------------------------------------------------------------
# FP16


def _lower_fp16(proto, work, opts, gate, rank_samples, calib, val, progress, report) -> Path:
    already = i8.already_quantized(proto)
    if already:
        # onnxruntime's float16 converter would retype the DequantizeLinear scales to float16,
        # which the opset does not allow with int8 data: refuse, as int8 does
        raise UsageError(
            f"the model is already quantized ({already}); --precision fp16 applies to float models",
            hint="use it as it is, or start from its FP32 model",
        )
    proto = _copy(proto)
    f16.ensure_node_names(proto)
    user = _keep_list(proto, opts.keep_fp32)
    progress.step("fp16: measuring activation ranges")
    peaks = fb.activation_peaks(proto, (calib.samples if calib else val.samples)[:RANK_SAMPLES])
    fb_nodes: list[fb.NodeError] = []
    path = work / "fp16.onnx"

    def build(extra: dict[str, str]) -> f16.Fp16Result:
        progress.step("fp16: converting")
        res = f16.convert(proto, keep_io=not opts.fp16_io, activation_max=peaks, extra_nodes=extra)
        onnx.save(_stamp(res.model, opts), str(path))
        return res

    def build_loadable(extra: dict[str, str]) -> f16.Fp16Result:
        """build(), keeping FP32 each node whose float16 form crashes onnxruntime (found by bisection)."""
        res = build(extra)
        crash = sandbox.probe(path)
        if crash is not None:
            progress.step(f"fp16: {crash}; bisecting for the nodes that trigger it")
            kept = {k.name for k in res.kept}
            fp16_nodes = [n.name for n in proto.graph.node if n.name not in kept and n.op_type != "Constant"]

            def crashes(removed: set[str]) -> bool:
                build({**extra, **dict.fromkeys(removed, "crash probe")})
                return sandbox.probe(path) is not None

            culprits = sandbox.find_culprits(fp16_nodes, crashes, limit=MAX_CRASH_CULPRITS) or []
            what = crash.removeprefix("onnxruntime ")
            ops = {n.name: n.op_type for n in proto.graph.node}
            for name in culprits:
                extra[name] = f"onnxruntime {what} with this node in float16"
                report["notes"].append(
                    f"{name} ({ops[name]}) kept FP32: onnxruntime {what} with it in float16"
                )
            res = build(extra)
        sandbox.check(path, "the fp16 model")
        return res

    extra = dict(user)
    res = build_loadable(extra)
    result = gate(path, "fp16 vs fp32")
    history = [{"kept": 0, "error": result.error, "passed": result.passed}]
    while not result.passed and len(fb_nodes) < opts.fallback_budget:
        blocked = {k.name for k in res.kept}
        candidates = {n.name for n in proto.graph.node if n.name not in blocked and n.op_type != "Constant"}
        progress.step("fallback: ranking nodes by added error")
        ranked = [r for r in fb.rank_nodes(proto, res.model, rank_samples, candidates) if r.added > 0]
        report.setdefault("sensitivity", [r.to_dict() for r in ranked])
        if not ranked:
            break
        take = ranked[: _step_size(len(history), opts.fallback_budget - len(fb_nodes))]
        fb_nodes.extend(take)
        extra.update({r.name: f"fallback: adds error {r.added:.3g}" for r in take})
        res = build_loadable(extra)
        result = gate(path, f"fp16 with {len(fb_nodes)} node(s) kept FP32")
        history.append({"kept": len(fb_nodes), "error": result.error, "passed": result.passed})
    report["precision_map"] = precision_map(
        proto, {}, {k.name: k.reason for k in res.kept}, "fp16", "lowered to float16"
    )
    report["converter"] = f16.CONVERTER
    report["settings"] = {"keep_io": not opts.fp16_io}
    report["repairs"] = res.repairs
    errs = {r.name: r.added for r in fb_nodes}
    report["kept"] = [
        dict(k.to_dict(), **({"error": errs[k.name]} if k.name in errs else {})) for k in res.kept
    ]
    _finish_gate(report, result, fb_nodes, history, opts)
    return path


# how many separate nodes a float16 model may need kept FP32 before a crash is given up on
MAX_CRASH_CULPRITS = 8


def precision_map(
    proto: onnx.ModelProto, lowered: dict[str, str], kept: dict[str, str], default: str, why: str
) -> list[dict]:
    """Every compute node: the precision it ended in and why (for the HTML report)."""
    out = []
    for n in proto.graph.node:
        if n.op_type == "Constant":
            continue
        if n.name in kept:
            out.append({"name": n.name, "op": n.op_type, "precision": "fp32", "reason": kept[n.name]})
        elif n.name in lowered:
            out.append({"name": n.name, "op": n.op_type, "precision": lowered[n.name], "reason": "quantized"})
        else:
            out.append({"name": n.name, "op": n.op_type, "precision": default, "reason": why})
    return out


def _step_size(round_no: int, left: int) -> int:
    """Nodes to add to FP32 in this fallback round: 1, 1, 2, 4, ... (never past the budget)."""
    return max(1, min(left, 2 ** max(0, round_no - 2)))


def _finish_gate(
    report: dict,
    result: gt.GateResult,
    fb_nodes: list[fb.NodeError],
    history: list[dict],
    opts,
    hint: str | None = None,
) -> None:
    report["gate"] = result.to_dict()
    report["fallback"] = {
        "budget": opts.fallback_budget,
        "nodes": [r.to_dict() for r in fb_nodes],
        "rounds": history,
        "error_before": history[0]["error"],
        "error_after": result.error,
    }
    if not result.passed:
        what = (
            f"after keeping {len(fb_nodes)} node(s) in FP32 (--fallback-budget {opts.fallback_budget})"
            if fb_nodes
            else (
                "and the fallback found no node to keep in FP32"
                if opts.fallback_budget
                else "(fallback disabled: --fallback-budget 0)"
            )
        )
        exc = VerificationError(
            f"{report['precision']} accuracy gate failed {what}: {result.summary()}",
            hint=hint
            or "better calibration data, a larger --fallback-budget, or looser --min-cosine/--min-top1",
        )
        exc.precision_report = report
        raise exc


# ---------------------------------------------------------------------------
# INT8


def _lower_int8(proto, work, opts, gate, calib, rank_samples, progress, report) -> Path:
    already = i8.already_quantized(proto)
    if already:
        raise UsageError(
            f"the model is already quantized ({already}); onnxruntime's quantizer cannot quantize it again",
            hint="use it as it is, or start from its FP32 model",
        )
    if has_float16_compute(proto):
        # onnxruntime's quantizer writes float16 bias scales the opset rejects: INT8 starts from FP32
        proto = _copy(proto)
        changed = upcast_float16(proto)
        report["notes"].append(
            "float16 compute upcast to float32 before quantization ("
            + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in changed.items() if v)
            + ")"
        )
    progress.step("int8: preparing the FP32 graph")
    prepared, notes = i8.prepare(proto)
    report["notes"].extend(notes)
    if opts.int8_mode == "static":  # int8acc: equalization, bias correction (precision/int8_steps.py)
        steps = i8s.DEFAULT if opts.int8_steps is None else opts.int8_steps
        report["int8_steps"] = i8s.apply(prepared, steps, calib.samples if calib else [])
    prep_path = work / "int8_input.onnx"
    onnx.save(prepared, str(prep_path))
    user = _keep_list(prepared, opts.keep_fp32)
    settings = i8.Settings(target=opts.target, mode=opts.int8_mode, method=opts.calib_method)
    cache = work / "calibration.json"
    report["settings"] = settings.describe()
    report["converter"] = (
        "onnxruntime.quantization.quantize_dynamic"
        if opts.int8_mode == "dynamic"
        else "onnxruntime.quantization.quantize_static (QDQ)"
    )
    enforce = opts.target == "ort" and opts.measure_latency
    min_speedup = opts.min_speedup if opts.min_speedup is not None else (1.0 if enforce else 0.0)

    if opts.int8_mode == "static" and opts.target == "ort":
        configs = i8.candidate_configs(prepared, user)
    else:
        configs = [i8.Config("all-ops", None, dict(user))]

    def build(cfg: i8.Config, out: Path) -> Path:
        advance = None
        label = f"calibrating ({len(calib.samples)} samples, {opts.calib_method})" if calib else ""
        if opts.int8_mode == "static" and not cache.exists():
            advance = progress.track(label, len(calib.samples))
        else:
            progress.step(f"int8: quantizing ({cfg.name})")
        try:
            return i8.quantize(
                prep_path,
                out,
                settings,
                cfg,
                cache_path=cache,
                calib_samples=calib.samples if calib else None,
                on_sample=advance,
            )
        finally:
            if advance is not None:
                progress.done(label)

    # candidate layouts: quantize each, gate each, time them all round-robin against FP32
    built = []
    failed: list[ConversionError] = []

    def add_layout(cfg: i8.Config) -> bool:
        """Build, check and gate one layout; False when the model has nothing to quantize."""
        try:
            path = build(cfg, work / f"int8_{cfg.name}.onnx")
            if not i8.quantized_nodes(onnx.load(str(path), load_external_data=False)):
                if cfg.name == "all-ops" and not user:
                    return False
                # a layout that quantizes nothing is FP32 with extra steps, not a candidate
                report["notes"].append(f"layout {cfg.name} quantizes no node: not a candidate")
                return True
            built.append((cfg, path, gate(path, f"int8 {cfg.name}")))
        except ConversionError as exc:
            if len(configs) == 1:
                raise
            # onnxruntime's quantizer writes an invalid model for some graphs and some op
            # sets (a QLinearMul with a per-channel scale, a Transpose with the wrong perm):
            # that layout is out, the others still compete
            failed.append(exc)
            report["notes"].append(f"layout {cfg.name} failed: {short(exc, 200)}")
        return True

    for cfg in configs:
        if not add_layout(cfg):
            raise ConversionError(_nothing_to_quantize(prepared))
    if not built:
        exc = (
            failed[0]
            if failed
            else ConversionError(
                "INT8: no layout quantizes any node (every candidate kept FP32); use --precision fp32 or fp16"
            )
        )
        exc.precision_report = report
        raise exc
    if opts.measure_latency and len(built) > 1 and rank_samples:  # onnxruntime CPU, static: measured layouts
        for cfg in _profiled_configs(prepared, prep_path, built[0][1], configs, rank_samples[0], progress):
            add_layout(cfg)
    chosen = 0
    timed = []
    if len(built) > 1 or opts.measure_latency:
        progress.step(f"timing FP32 and {len(built)} INT8 layout(s) (onnxruntime CPU, 1 thread, round-robin)")
        lat = measure([prep_path] + [p for _, p, _ in built], rank_samples[0] if rank_samples else {})
        for (cfg, _path, g), lt in zip(built, lat[1:], strict=False):
            timed.append(
                {
                    "layout": cfg.name,
                    "latency_ms": round(lt.median_ms, 4),
                    "speedup": round(lat[0].median_ms / lt.median_ms, 3),
                    "gate_passed": g.passed,
                    "cosine": g.worst_cosine,
                    "kept_fp32": len(cfg.exclude),
                }
            )
        passing = [i for i, (_, _, g) in enumerate(built) if g.passed]
        if passing:  # the fastest layout that passes
            chosen = min(passing, key=lambda i: lat[1 + i].median_ms)
        else:  # none passes: the fallback starts from the most accurate one
            chosen = min(range(len(built)), key=lambda i: built[i][2].error)
        report["latency"] = _latency_dict(lat[0], lat[1 + chosen])
    report["layouts"] = timed
    cfg, path, result = built[chosen]
    report["layout"] = cfg.name

    # fallback: keep the worst nodes in FP32 until the gate passes. A round that makes
    # the error worse (re-quantizing moves Q/DQ around the kept nodes) is undone and its
    # nodes are not tried again: the result is never worse than what the search started from.
    fb_nodes: list[fb.NodeError] = []
    history = [{"kept": 0, "error": result.error, "passed": result.passed}]
    exclude = dict(cfg.exclude)
    tried: set[str] = set()
    ranking: list[fb.NodeError] | None = None
    rounds = 0
    while not result.passed and len(fb_nodes) < opts.fallback_budget and rounds < opts.fallback_budget + 4:
        rounds += 1
        low = onnx.load(str(path))
        candidates = i8.quantized_nodes(low) - set(exclude)
        if not candidates - tried:
            break
        if ranking is None:  # once: a node's effect alone hardly depends on which others are kept
            ranking = _int8_sensitivity(
                prepared, prep_path, low, cfg, candidates, rank_samples, build, work, progress
            )
        ranked = [r for r in ranking if r.name in candidates and r.name not in tried]
        take = ranked[: _step_size(len(history), opts.fallback_budget - len(fb_nodes))]
        if not take or len(take) >= len(candidates):
            # keeping every quantized node FP32 is not a rescue: it is FP32 with extra steps
            report["notes"].append("fallback stopped: the gate would pass only with no node quantized")
            break
        tried.update(r.name for r in take)
        trial = {
            **exclude,
            **{r.name: f"fallback: quantized alone, output error {r.added:.3g}" for r in take},
        }
        trial_cfg = i8.Config(cfg.name, cfg.op_types, trial)
        try:
            trial_path = build(trial_cfg, work / f"int8_fallback_{rounds}.onnx")
            trial_result = gate(trial_path, f"int8 with {len(fb_nodes) + len(take)} node(s) kept FP32")
        except ConversionError as exc:  # the quantizer wrote a model that does not load: undo
            history.append(
                {
                    "kept": len(fb_nodes) + len(take),
                    "error": None,
                    "passed": False,
                    "accepted": False,
                    "nodes": [r.name for r in take],
                    "failed": short(exc, 200),
                }
            )
            continue
        accepted = trial_result.passed or trial_result.error < result.error
        history.append(
            {
                "kept": len(fb_nodes) + len(take),
                "error": trial_result.error,
                "passed": trial_result.passed,
                "accepted": accepted,
                "nodes": [r.name for r in take],
            }
        )
        if accepted:
            fb_nodes.extend(take)
            exclude, cfg, path, result = trial, trial_cfg, trial_path, trial_result

    low = onnx.load(str(path))
    low = _stamp(low, opts)
    onnx.save(low, str(path))
    quantized = i8.quantized_nodes(low)
    ops_by_name = {n.name: n.op_type for n in prepared.graph.node}
    errs = {r.name: r.added for r in fb_nodes}
    report["kept"] = [
        {"name": n, "op": ops_by_name.get(n, "?"), "reason": why, **({"error": errs[n]} if n in errs else {})}
        for n, why in exclude.items()
    ]
    report["quantized_nodes"] = len(quantized)
    report["compute_nodes"] = sum(1 for n in prepared.graph.node if n.op_type not in ("Constant",))
    report["precision_map"] = precision_map(
        prepared, dict.fromkeys(quantized, "int8"), exclude, "fp32", f"not quantized by layout {cfg.name}"
    )
    if ranking:
        report["sensitivity"] = [r.to_dict() for r in ranking]
    hint = None
    counts = Counter(n.op_type for n in prepared.graph.node)
    if (
        opts.int8_mode == "static"
        and opts.target == "ort"
        and counts["MatMul"] + counts["Gemm"] > counts["Conv"]
    ):
        hint = (
            "static int8 quantizes activations per tensor, which transformers' outlier channels do not survive; "
            "try --int8-mode dynamic (MatMul weights only, activations quantized per run), or better calibration data"
        )
    _finish_gate(report, result, fb_nodes, history, opts, hint)
    if not quantized:
        none_left = ConversionError(
            "INT8: no node is left quantized (every candidate kept FP32); use --precision fp32 or fp16"
        )
        none_left.precision_report = report
        raise none_left

    if opts.measure_latency:
        if fb_nodes or "latency" not in report:
            progress.step("timing FP32 and the result (onnxruntime CPU, 1 thread, round-robin)")
            lat = measure([prep_path, path], rank_samples[0] if rank_samples else {})
            report["latency"] = _latency_dict(lat[0], lat[1])
        speed = report["latency"]["speedup"] or 0.0
        if enforce and speed < min_speedup:
            slower = ConversionError(
                f"INT8 is {speed:.2f}x the speed of FP32 on onnxruntime CPU (1 thread) with the best layout "
                f"({cfg.name}, {len(exclude)} node(s) kept FP32); nothing written",
                hint="INT8 slower than FP32 is not a result to ship: use --precision fp32/fp16, or --min-speedup 0 to write it anyway",
            )
            slower.precision_report = report
            raise slower
    return path


SENSITIVITY_MAX = 64


def _int8_sensitivity(
    prepared, prep_path: Path, low, cfg: i8.Config, candidates: set[str], samples, build, work: Path, progress
) -> list[fb.NodeError]:
    """Candidates worst first: each quantized alone, its error at the outputs (``fallback.sensitivity``).

    Past ``SENSITIVITY_MAX`` candidates, the ones measured are the worst by the local
    (activation-matching) ranking, so that the search stays minutes on big models.
    """
    ops = {n.name: n.op_type for n in prepared.graph.node}
    order = [n.name for n in prepared.graph.node if n.name in candidates]
    if len(order) > SENSITIVITY_MAX:
        progress.step("fallback: ranking nodes by added error (activation matching)")
        local = fb.rank_nodes(prepared, low, samples, candidates)
        order = [r.name for r in local[:SENSITIVITY_MAX]]
    ref_sess = ort_session(prep_path)
    names = [o.name for o in ref_sess.get_outputs()]
    refs = [dict(zip(names, ref_sess.run(names, session_feeds(ref_sess, s)), strict=False)) for s in samples]
    one = work / "int8_one_node.onnx"
    label = f"fallback: quantizing {len(order)} node(s) one at a time"
    advance = progress.track(label, len(order))
    try:
        return fb.sensitivity(
            [(name, ops.get(name, "?")) for name in order],
            lambda name: build(i8.Config(cfg.name, cfg.op_types, dict(cfg.exclude), only=[name]), one),
            refs,
            samples,
            on_node=advance,
        )
    finally:
        progress.done(label)


def _nothing_to_quantize(prepared) -> str:
    sub = sorted({n.op_type for n in prepared.graph.node if n.op_type in ("If", "Loop", "Scan")})
    where = (
        f"; its compute is inside {'/'.join(sub)} bodies, which onnxruntime's quantizer does not enter"
        if sub
        else ""
    )
    return (
        f"INT8: onnxruntime's quantizer finds nothing to quantize in this model's main graph{where}; "
        "use --precision fp32 or fp16"
    )


def _profiled_configs(
    prepared, prep_path: Path, widest: Path, configs: list[i8.Config], feeds, progress
) -> list[i8.Config]:
    """Layouts that also keep FP32 every node measured slower in int8 (onnxruntime's profiler).

    ``widest`` is the layout that quantizes the most nodes: its profile gives the
    int8 time of every candidate, the FP32 model's profile the float time.
    """
    from tensorsmith.precision import profile as pf

    progress.step("int8: profiling FP32 and INT8 kernels (onnxruntime CPU, 1 thread)")
    try:
        fp32 = pf.Attribution(prepared.graph, pf.kernel_times(prep_path, feeds))
        low = onnx.load(str(widest))
        int8 = pf.Attribution(prepared.graph, pf.kernel_times(widest, feeds))
    except Exception:  # profiling is an optimization: without it the plain layouts still compete
        return []
    slower = pf.slower_in_int8(prepared, fp32, int8, i8.quantized_nodes(low))
    if not slower:
        return []
    out = []
    for base in configs:
        if base.name in ("all-ops", "compute-only"):
            extra = {k: v for k, v in slower.items() if k not in base.exclude}
            if extra:
                out.append(i8.Config(f"{base.name}+profiled", base.op_types, {**base.exclude, **extra}))
    return out


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def _stamp(proto: onnx.ModelProto, opts: PrecisionOptions) -> onnx.ModelProto:
    """Record the precision in the model's metadata (``inspect`` shows it)."""
    keep = [p for p in proto.metadata_props if not p.key.startswith("tensorsmith.")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in (("tensorsmith.precision", opts.precision), ("tensorsmith.target", opts.target)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


__all__ = ["LowerResult", "load_data", "lower"]
