"""The per-layer precision ladder of INT8: which nodes leave INT8, for which precision, and why.

Every quantizable node can be INT8, FP16 or FP32:

* TensorRT (``--target trt``): INT8 -> FP16 -> FP32. A node the fallback takes out of
  INT8 goes to FP16 first (explicit in the ONNX: ``ladder_graph.to_fp16``, since
  TensorRT 11 builds strongly typed networks); it goes on to FP32 only when the gate
  still fails with it in FP16 (``promote``), or when float16 cannot hold it (weights or
  activations beyond its range: ``fp16.plan_blocklist``).
* onnxruntime CPU (``--target ort``): INT8 -> FP32. onnxruntime's CPU provider has no
  fast float16 kernels (most float16 ops run by casting, measured 0.7-1.0x of FP32 in
  README "Precision: FP16 and INT8"), and the ``ort`` target's speed rule (never slower
  than FP32) stays.

The search keeps as many compute nodes in INT8 as it can: nodes leave INT8 a few per
round (1, 1, 2, 4, ...), worst first by *output* sensitivity (the output error each
causes quantized alone), a round that does not lower the gate error is undone and its
nodes not tried again, and the search stops at ``--fallback-budget`` nodes out of INT8.

Every node that ends out of INT8 gets the weights it had before the non-exact
accuracy steps (bias correction, learned rounding: ``ladder_graph.restore``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from tensorsmith.errors import ConversionError, short
from tensorsmith.precision import fallback as fb
from tensorsmith.precision import gate as gt
from tensorsmith.precision import int8 as i8
from tensorsmith.precision import int8_steps as i8s
from tensorsmith.precision import ladder_graph as lg
from tensorsmith.precision.lowering import copy_model, step_size

# accuracy steps that keep the FP32 function (a node kept out of INT8 may keep their change)
EXACT_STEPS = ("equalize", "smooth")
ORT_NOTE = (
    "onnxruntime target: INT8 -> FP32 (onnxruntime's CPU provider has no fast float16 kernels: "
    "most float16 ops run by casting, 0.7-1.0x of FP32 here)"
)
TRT_NOTE = "TensorRT target: INT8 -> FP16 -> FP32 (FP16 explicit in the graph: float16 islands with Casts)"
# why a node is where it is (``cause`` in the precision map)
CAUSES = {
    "quantized": "quantized",
    "sensitivity": "gate sensitivity (fallback)",
    "fp16-failed": "gate still failed with it in FP16",
    "fp16-range": "float16 cannot hold it",
    "island": "fused into an FP16 node",
    "speed": "speed rule (onnxruntime layout)",
    "user": "user exclusion (--keep-fp32)",
    "not-quantizable": "not quantized by the target's placement",
}


# ---------------------------------------------------------------------------
# accuracy steps, with the snapshot that restoring needs


def run_steps(prepared: onnx.ModelProto, steps, samples) -> tuple[dict, dict]:
    """``int8_steps.apply`` on ``prepared`` (in place), in two halves: the function-preserving
    steps first, then a snapshot, then the rest. Returns (report entry, weight changes
    of the second half: ``ladder_graph.weight_changes``)."""
    order = [s for s in i8s.STEPS if s in steps]
    first = next((i for i, s in enumerate(order) if s not in EXACT_STEPS), len(order))
    exact, rest = order[:first], order[first:]
    if not rest:
        return i8s.apply(prepared, list(steps), samples), {}
    head = i8s.apply(prepared, exact, samples) if exact else None
    before = copy_model(prepared)
    entry = i8s.apply(prepared, rest, samples)
    entry["steps"] = list(steps)
    if head is not None:
        entry["runs"] = head["runs"] + entry["runs"]
    return entry, lg.weight_changes(before, prepared)


def finish_build(path: Path, changes: dict, fp16: set[str]) -> dict:
    """After quantizing: restore the weights of the nodes left out of INT8, make ``fp16`` float16."""
    low = onnx.load(str(path))
    quantized = i8.quantized_nodes(low)
    restored = lg.restore(low, changes, quantized)
    stats: dict = {"restored": restored}
    if fp16:
        stats.update(lg.to_fp16(low, fp16 - quantized))
    onnx.save(low, str(path))
    return stats


# ---------------------------------------------------------------------------
# the search


@dataclass
class Outcome:
    cfg: i8.Config  # its ``exclude``: every node out of INT8 (FP16 ones too), with why
    path: Path
    result: gt.GateResult
    fb_nodes: list[fb.NodeError] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    fp16: dict[str, str] = field(default_factory=dict)  # node -> why, the FP16 rung (trt)
    promoted: dict[str, str] = field(default_factory=dict)  # FP16 -> FP32 by the gate
    ranking: list[fb.NodeError] | None = None


@dataclass
class Search:
    """What the search needs from the INT8 step (``lower_int8``)."""

    build: Callable[..., Path]  # (cfg, out, fp16=set()) -> path
    gate: Callable[[Path, str], gt.GateResult]
    rank: Callable[[onnx.ModelProto, i8.Config, set[str]], list[fb.NodeError]]
    fp16_blocked: Callable[[], dict[str, str]]  # node -> why float16 cannot hold it
    work: Path
    budget: int
    trt: bool
    notes: list[str]


def fallback(s: Search, cfg: i8.Config, path: Path, result: gt.GateResult) -> Outcome:
    """Take nodes out of INT8 while the gate fails (see the module doc)."""
    out = Outcome(cfg, path, result, history=[{"kept": 0, "error": result.error, "passed": result.passed}])
    tried: set[str] = set()
    blocked: dict[str, str] | None = None
    rounds = 0
    while not out.result.passed and len(out.fb_nodes) < s.budget and rounds < s.budget + 4:
        rounds += 1
        low = onnx.load(str(out.path))
        candidates = i8.quantized_nodes(low) - set(out.cfg.exclude)
        if not candidates - tried:
            break
        if out.ranking is None:  # once: a node's effect alone hardly depends on which others are kept
            out.ranking = s.rank(low, out.cfg, candidates)
        ranked = [r for r in out.ranking if r.name in candidates and r.name not in tried]
        take = ranked[: step_size(len(out.history), s.budget - len(out.fb_nodes))]
        if not take or len(take) >= len(candidates):
            # every quantized node out of INT8 is not a rescue: it is FP32 with extra steps
            s.notes.append("fallback stopped: the gate would pass only with no node quantized")
            break
        tried.update(r.name for r in take)
        why = {r.name: f"fallback: quantized alone, output error {r.added:.3g}" for r in take}
        new16: dict[str, str] = {}
        if s.trt:
            if blocked is None:
                blocked = s.fp16_blocked()
            for name in list(why):
                if name in blocked:
                    why[name] += f"; FP32, not FP16: {blocked[name]}"
                else:
                    new16[name] = why[name]
        trial_cfg = i8.Config(out.cfg.name, out.cfg.op_types, {**out.cfg.exclude, **why})
        trial16 = {**out.fp16, **new16}
        kept = len(out.fb_nodes) + len(take)
        entry: dict = {"kept": kept, "nodes": [r.name for r in take], "fp16": sorted(new16)}
        try:
            trial_path = s.build(trial_cfg, s.work / f"int8_fallback_{rounds}.onnx", set(trial16))
            trial = s.gate(trial_path, f"int8 with {kept} node(s) out of INT8")
        except ConversionError as exc:  # the quantizer wrote a model that does not load: undo
            out.history.append(
                {**entry, "error": None, "passed": False, "accepted": False, "failed": short(exc, 200)}
            )
            continue
        if new16 and not trial.passed:  # the next rung: were these nodes' FP16 the failure?
            up = _up_rung(s, trial_cfg, out.fp16, new16, trial, rounds)
            if up is not None:
                entry.update(fp16=[], fp16_error=trial.error, to="fp32")
                trial_path, trial, trial16 = up
                for name in new16:
                    trial_cfg.exclude[name] += "; FP32: the gate still failed with it in FP16"
                    out.promoted[name] = trial_cfg.exclude[name]
        accepted = trial.passed or trial.error < out.result.error
        out.history.append({**entry, "error": trial.error, "passed": trial.passed, "accepted": accepted})
        if accepted:
            out.fb_nodes.extend(take)
            out.cfg, out.path, out.result, out.fp16 = trial_cfg, trial_path, trial, trial16
        else:
            for name in new16:
                out.promoted.pop(name, None)
    if s.trt and out.fp16 and not out.result.passed:
        promote(s, out)
    return out


FP16_SHARE = 0.5  # FP32 instead of FP16 when FP16 leaves at least twice FP32's cosine error


def _up_rung(
    s: Search, cfg: i8.Config, fp16: dict[str, str], new16: dict[str, str], trial: gt.GateResult, rounds: int
) -> tuple[Path, gt.GateResult, dict[str, str]] | None:
    """The same round with ``new16`` in FP32 instead of FP16: (path, gate, fp16 nodes) when the
    gate fails *because of* their FP16 (FP32 passes, or leaves at most half the cosine error), else None."""
    try:
        path = s.build(cfg, s.work / f"int8_fallback_{rounds}_fp32.onnx", set(fp16))
        res = s.gate(path, f"int8 with {len(new16)} node(s) in FP32 instead of FP16")
    except ConversionError:
        return None
    # cosine only: top-1 agreement on a few validation samples flips on near ties, and would
    # credit FP32 with a whole sample's worth of error that float16 rounding did not cause
    if res.passed or (1.0 - res.worst_cosine) < FP16_SHARE * (1.0 - trial.worst_cosine):
        return path, res, dict(fp16)
    return None


def promote(s: Search, out: Outcome) -> None:
    """The gate still fails with nodes in FP16: move them to FP32, worst first, a round at
    a time; a round that does not lower the error is undone."""
    rank = {r.name: i for i, r in enumerate(out.ranking or [])}
    order = sorted(out.fp16, key=lambda n: rank.get(n, len(rank)))
    n = 0
    while order and not out.result.passed:
        n += 1
        take = order[: step_size(n, len(order))]
        order = order[len(take) :]
        trial16 = {k: v for k, v in out.fp16.items() if k not in take}
        entry: dict = {"kept": len(out.fb_nodes), "nodes": take, "to": "fp32"}
        try:
            path = s.build(out.cfg, s.work / f"int8_ladder_{n}.onnx", set(trial16))
            trial = s.gate(path, f"int8 with {len(take)} FP16 node(s) moved to FP32")
        except ConversionError as exc:
            out.history.append(
                {**entry, "error": None, "passed": False, "accepted": False, "failed": short(exc, 200)}
            )
            continue
        accepted = trial.passed or trial.error < out.result.error
        out.history.append({**entry, "error": trial.error, "passed": trial.passed, "accepted": accepted})
        if accepted:
            for name in take:
                out.promoted[name] = f"{out.fp16[name]}; FP32: the gate still failed with it in FP16"
                out.cfg.exclude[name] = out.promoted[name]
            out.fp16, out.path, out.result = trial16, path, trial


# ---------------------------------------------------------------------------
# the report


def _cause(name: str, why: str, out: Outcome) -> tuple[str, str]:
    if name in out.fp16:
        return "fp16", "sensitivity"
    if name in out.promoted:
        return "fp32", "fp16-failed"
    if why.startswith("--keep-fp32"):
        return "fp32", "user"
    if why.startswith("fallback"):
        return "fp32", "fp16-range" if "FP32, not FP16" in why else "sensitivity"
    return "fp32", "speed"


def describe(
    prepared: onnx.ModelProto,
    written: onnx.ModelProto,
    out: Outcome,
    *,
    trt: bool,
    skipped: dict[str, str],
    layout: str,
) -> dict:
    """``precision_map`` (every node: precision, cause, reason) and ``ladder`` (counts,
    INT8 weight fraction) for the report. ``skipped``: the placement's reasons (trt)."""
    # a compute node is INT8 when it reads INT8 weights; one that only reads a Q/DQ'd activation
    # (a tensor quantized for another reader) computes in float
    weights8, _ = lg.int8_weight_nodes(written)
    reads_dq = i8.quantized_nodes(written)
    quantized = {
        n.name for n in prepared.graph.node if n.name in (weights8 if n.op_type in lg.COMPUTE else reads_dq)
    }
    followers = lg.islands(prepared, set(out.fp16)) - set(out.fp16) if out.fp16 else set()
    island_of = {}
    if followers:
        for f in followers:
            island_of[f] = "fused into the FP16 island of its producer"
    pmap = []
    for n in prepared.graph.node:
        if n.op_type == "Constant":
            continue
        if n.name in quantized:
            prec, cause, why = "int8", "quantized", "quantized"
        elif n.name in out.cfg.exclude:
            why = out.cfg.exclude[n.name]
            prec, cause = _cause(n.name, why, out)
        elif n.name in followers:
            prec, cause, why = "fp16", "island", island_of[n.name]
        else:
            default = (
                "not a TensorRT INT8 entry (runs in float)" if trt else f"not quantized by layout {layout}"
            )
            prec, cause, why = "fp32", "not-quantizable", skipped.get(n.name, default)
        pmap.append({"name": n.name, "op": n.op_type, "precision": prec, "cause": cause, "reason": why})
    counts = Counter(e["precision"] for e in pmap)
    compute = Counter(e["precision"] for e in pmap if e["op"] in lg.COMPUTE)
    ladder = {
        "rungs": ["int8", "fp16", "fp32"] if trt else ["int8", "fp32"],
        "note": TRT_NOTE if trt else ORT_NOTE,
        "counts": {p: counts.get(p, 0) for p in ("int8", "fp16", "fp32")},
        "compute_counts": {p: compute.get(p, 0) for p in ("int8", "fp16", "fp32")},
        "causes": dict(Counter(e["cause"] for e in pmap)),
        "int8_weights": lg.int8_weight_fraction(written),
        "fp16_nodes": sorted(out.fp16),
        "promoted_to_fp32": sorted(out.promoted),
    }
    return {"precision_map": pmap, "ladder": ladder}


def ranked_report(ranking: list[fb.NodeError], pmap: list[dict]) -> list[dict]:
    """The sensitivity ranking (worst first) with each node's final precision and cause."""
    where = {e["name"]: e for e in pmap}
    return [
        {
            **r.to_dict(),
            "precision": where.get(r.name, {}).get("precision"),
            "cause": where.get(r.name, {}).get("cause"),
        }
        for r in ranking
    ]


__all__ = [
    "CAUSES",
    "EXACT_STEPS",
    "Outcome",
    "Search",
    "describe",
    "fallback",
    "finish_build",
    "promote",
    "ranked_report",
    "run_steps",
]
