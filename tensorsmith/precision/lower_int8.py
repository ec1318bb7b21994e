"""INT8 lowering of the precision step (``step.lower`` calls ``lower_int8``): calibrate, time
the candidate Q/DQ layouts, gate, fall back node by node.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx

from tensorsmith.errors import ConversionError, UsageError, short
from tensorsmith.precision import fallback as fb
from tensorsmith.precision import int8 as i8
from tensorsmith.precision import int8_steps as i8s
from tensorsmith.precision import ladder
from tensorsmith.precision.latency import measure
from tensorsmith.precision.lowering import (
    copy_model,
    finish_gate,
    keep_list,
    latency_dict,
    stamp,
)
from tensorsmith.precision.upcast import has_float16_compute, upcast_float16
from tensorsmith.verify import ort_session, session_feeds


def lower_int8(proto, work, opts, gate, calib, rank_samples, progress, report) -> Path:
    already = i8.already_quantized(proto)
    if already:
        raise UsageError(
            f"the model is already quantized ({already}); onnxruntime's quantizer cannot quantize it again",
            hint="use it as it is, or start from its FP32 model",
        )
    if has_float16_compute(proto):
        # onnxruntime's quantizer writes float16 bias scales the opset rejects: INT8 starts from FP32
        proto = copy_model(proto)
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
        report["int8_steps"], changes = ladder.run_steps(prepared, steps, calib.samples if calib else [])
    else:
        changes = {}
    prep_path = work / "int8_input.onnx"
    onnx.save(prepared, str(prep_path))
    user = keep_list(prepared, opts.keep_fp32)
    settings = i8.Settings(target=opts.target, mode=opts.int8_mode, method=opts.calib_method)
    cache = work / "calibration.json"
    report["settings"] = {**settings.describe(), "precision_report": opts.precision_report}
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

    def build(cfg: i8.Config, out: Path, fp16: set[str] | None = None) -> Path:
        path = quantize(cfg, out)
        if changes or fp16:  # the ladder: restored weights out of INT8, float16 islands
            ladder.finish_build(path, changes, fp16 or set())
        return path

    def quantize(cfg: i8.Config, out: Path) -> Path:
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
    if report.get("calibration") and (searched := i8.search_report(cache)):  # --calib-method mse
        report["calibration"]["search"] = searched
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
        for cfg in profiled_configs(prepared, prep_path, built[0][1], configs, rank_samples[0], progress):
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
        report["latency"] = latency_dict(lat[0], lat[1 + chosen])
    report["layouts"] = timed
    cfg, path, result = built[chosen]
    report["layout"] = cfg.name

    # the ladder: nodes leave INT8 (FP16 first on TensorRT) while the gate fails (ladder.py)
    trt = opts.target == "trt" and opts.int8_mode == "static"

    def rank(low, at: i8.Config, candidates: set[str]) -> list[fb.NodeError]:
        return int8_sensitivity(prepared, prep_path, low, at, candidates, rank_samples, build, work, progress)

    def fp16_blocked() -> dict[str, str]:
        from tensorsmith.precision import fp16 as f16

        peaks = fb.activation_peaks(prepared, rank_samples) if rank_samples else {}
        return {k.name: k.reason for k in f16.plan_blocklist(prepared, peaks)}

    search = ladder.Search(build, gate, rank, fp16_blocked, work, opts.fallback_budget, trt, report["notes"])
    outcome = ladder.fallback(search, cfg, path, result)
    cfg, path, result, fb_nodes = outcome.cfg, outcome.path, outcome.result, outcome.fb_nodes
    exclude, history, ranking = cfg.exclude, outcome.history, outcome.ranking
    if ranking is None and opts.precision_report and opts.int8_mode == "static":
        # --precision-report: rank every quantized node even though the gate passed
        low = onnx.load(str(path))
        candidates = i8.quantized_nodes(low) - set(exclude)
        if candidates:
            ranking = rank(low, cfg, candidates)

    low = onnx.load(str(path))
    low = stamp(low, opts)
    onnx.save(low, str(path))
    quantized = i8.quantized_nodes(low)
    ops_by_name = {n.name: n.op_type for n in prepared.graph.node}
    errs = {r.name: r.added for r in fb_nodes}
    report["kept"] = [
        {
            "name": n,
            "op": ops_by_name.get(n, "?"),
            "reason": why,
            "precision": "fp16" if n in outcome.fp16 else "fp32",
            **({"error": errs[n]} if n in errs else {}),
        }
        for n, why in exclude.items()
    ]
    report["quantized_nodes"] = len(quantized)
    report["compute_nodes"] = sum(1 for n in prepared.graph.node if n.op_type not in ("Constant",))
    skipped = {}
    if trt:
        from tensorsmith.precision import trt_placement

        skipped = trt_placement.plan(prepared).skipped
    report.update(ladder.describe(prepared, low, outcome, trt=trt, skipped=skipped, layout=cfg.name))
    report["ladder"]["restored"] = sorted(set(changes) - quantized)
    if ranking:
        report["sensitivity"] = ladder.ranked_report(ranking, report["precision_map"])
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
    finish_gate(report, result, fb_nodes, history, opts, hint)
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
            report["latency"] = latency_dict(lat[0], lat[1])
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


def int8_sensitivity(
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


def profiled_configs(
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


__all__ = ["int8_sensitivity", "lower_int8", "profiled_configs"]
