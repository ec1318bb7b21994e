"""FP16 lowering of the precision step (``step.lower`` calls ``lower_fp16``): convert, gate,
keep the worst nodes FP32 while the gate fails.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from tensorsmith import sandbox
from tensorsmith.errors import UsageError
from tensorsmith.precision import fallback as fb
from tensorsmith.precision import fp16 as f16
from tensorsmith.precision import int8 as i8
from tensorsmith.precision.lowering import (
    MAX_CRASH_CULPRITS,
    RANK_SAMPLES,
    copy_model,
    finish_gate,
    keep_list,
    precision_map,
    stamp,
    step_size,
)


def lower_fp16(proto, work, opts, gate, rank_samples, calib, val, progress, report) -> Path:
    already = i8.already_quantized(proto)
    if already:
        # onnxruntime's float16 converter would retype the DequantizeLinear scales to float16,
        # which the opset does not allow with int8 data: refuse, as int8 does
        raise UsageError(
            f"the model is already quantized ({already}); --precision fp16 applies to float models",
            hint="use it as it is, or start from its FP32 model",
        )
    half = f16.already_float16(proto)
    if half:
        # onnxruntime's float16 converter would add a second producer for outputs the model
        # already casts back to float32; there is nothing left to lower
        raise UsageError(
            f"the model already computes in float16 ({half}); --precision fp16 applies to float32 models",
            hint="use it as it is (optimize without --precision), or start from its FP32 model",
        )
    proto = copy_model(proto)
    f16.ensure_node_names(proto)
    user = keep_list(proto, opts.keep_fp32)
    progress.step("fp16: measuring activation ranges")
    peaks = fb.activation_peaks(proto, (calib.samples if calib else val.samples)[:RANK_SAMPLES])
    fb_nodes: list[fb.NodeError] = []
    path = work / "fp16.onnx"

    def build(extra: dict[str, str]) -> f16.Fp16Result:
        progress.step("fp16: converting")
        res = f16.convert(proto, keep_io=not opts.fp16_io, activation_max=peaks, extra_nodes=extra)
        onnx.save(stamp(res.model, opts), str(path))
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
        take = ranked[: step_size(len(history), opts.fallback_budget - len(fb_nodes))]
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
    finish_gate(report, result, fb_nodes, history, opts)
    return path


__all__ = ["lower_fp16"]
