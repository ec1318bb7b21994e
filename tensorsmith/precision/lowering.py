"""What the FP16 and INT8 lowerings share: the crash-culprit search, the gate's last round,
kept-node lists, latency dicts and the model's precision stamp.
"""

from __future__ import annotations

import onnx

from tensorsmith.errors import UsageError, VerificationError
from tensorsmith.precision import PrecisionOptions
from tensorsmith.precision import fallback as fb
from tensorsmith.precision import gate as gt

RANK_SAMPLES = 4


def latency_dict(base, low) -> dict:
    return {
        "fp32_ms": round(base.median_ms, 4),
        "ms": round(low.median_ms, 4),
        "speedup": round(base.median_ms / low.median_ms, 3) if low.median_ms > 0 else None,
        "runs": low.runs,
        "threads": 1,
        "provider": "onnxruntime CPUExecutionProvider",
    }


def keep_list(proto: onnx.ModelProto, keep: list[str]) -> dict[str, str]:
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


def step_size(round_no: int, left: int) -> int:
    """Nodes to add to FP32 in this fallback round: 1, 1, 2, 4, ... (never past the budget)."""
    return max(1, min(left, 2 ** max(0, round_no - 2)))


def finish_gate(
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


def copy_model(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def stamp(proto: onnx.ModelProto, opts: PrecisionOptions) -> onnx.ModelProto:
    """Record the precision in the model's metadata (``inspect`` shows it)."""
    keep = [p for p in proto.metadata_props if not p.key.startswith("tensorsmith.")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in (("tensorsmith.precision", opts.precision), ("tensorsmith.target", opts.target)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


__all__ = [
    "MAX_CRASH_CULPRITS",
    "RANK_SAMPLES",
    "copy_model",
    "finish_gate",
    "keep_list",
    "latency_dict",
    "precision_map",
    "stamp",
    "step_size",
]
