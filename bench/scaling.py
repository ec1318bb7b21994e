"""Does tensorsmith's optimizer scale linearly with the graph size?

    python bench/scaling.py [--sizes 100,1000,10000] [--markdown OUT.md] [--profile N]

Builds synthetic chains of N Conv+BatchNormalization+Relu blocks (a Dropout every 7th
block and an Identity every 5th, so every default pass has work), then times
``tensorsmith.load`` -> ``tensorsmith.optimize`` -> ``tensorsmith.save`` per N (median of
``--reps`` runs, each in a fresh process) and prints seconds per node and the growth
ratios ``t(10N)/t(N)/10`` (1.0 = linear; 10 would be quadratic). onnxsim and onnxslim
are timed on the same files at ``--peer-sizes`` (capped at ``--peer-timeout`` s each).

``--profile N`` runs cProfile on tensorsmith at size N and prints the functions with
the largest own time, so a non-linear phase can be traced to a file and function.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

CHANNELS = 8
SPATIAL = 8


def build_chain(n_blocks: int, path: Path, seed: int = 0) -> int:
    """Write the chain model to ``path``; returns its node count."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c = CHANNELS
    nodes, inits = [], []
    cur = "input"
    for i in range(n_blocks):
        w = rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.2
        b = rng.standard_normal(c).astype(np.float32) * 0.1
        scale = (rng.random(c) + 0.5).astype(np.float32)
        bias = (rng.standard_normal(c) * 0.1).astype(np.float32)
        mean = (rng.standard_normal(c) * 0.1).astype(np.float32)
        var = (rng.random(c) + 0.5).astype(np.float32)
        names = [f"b{i}.{k}" for k in ("w", "b", "scale", "bias", "mean", "var")]
        for name, arr in zip(names, (w, b, scale, bias, mean, var), strict=False):
            inits.append(numpy_helper.from_array(arr, name))
        nodes.append(
            helper.make_node(
                "Conv",
                [cur, names[0], names[1]],
                [f"b{i}.conv"],
                name=f"b{i}.Conv",
                pads=[1, 1, 1, 1],
                kernel_shape=[3, 3],
            )
        )
        nodes.append(
            helper.make_node(
                "BatchNormalization", [f"b{i}.conv", *names[2:]], [f"b{i}.bn"], name=f"b{i}.BN", epsilon=1e-5
            )
        )
        nodes.append(helper.make_node("Relu", [f"b{i}.bn"], [f"b{i}.relu"], name=f"b{i}.Relu"))
        cur = f"b{i}.relu"
        if i % 7 == 3:
            nodes.append(helper.make_node("Dropout", [cur], [f"b{i}.drop"], name=f"b{i}.Dropout"))
            cur = f"b{i}.drop"
        if i % 5 == 2:
            nodes.append(helper.make_node("Identity", [cur], [f"b{i}.id"], name=f"b{i}.Identity"))
            cur = f"b{i}.id"
    nodes.append(helper.make_node("Identity", [cur], ["output"], name="out.Identity"))
    graph = helper.make_graph(
        nodes,
        f"chain{n_blocks}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", c, SPATIAL, SPATIAL])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", c, SPATIAL, SPATIAL])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tensorsmith-bench"
    )
    model.ir_version = 8
    onnx.save(model, str(path))
    return len(nodes)


# ---------------------------------------------------------------------------
# workers (fresh process per run)


def worker(tool: str, src: str, dst: str, out_json: str) -> int:
    res: dict = {}
    try:
        if tool in ("tensorsmith", "tensorsmith-nogc"):
            import gc

            import onnxscript.optimizer  # noqa: F401  (imported lazily by fold-constants)

            if tool == "tensorsmith-nogc":
                gc.disable()  # diagnosis only: how much of the time is CPython's cyclic GC

            import tensorsmith

            c0, t0 = time.process_time(), time.perf_counter()
            model = tensorsmith.load(src)
            c1, t1 = time.process_time(), time.perf_counter()
            result = tensorsmith.optimize(model)
            c2, t2 = time.process_time(), time.perf_counter()
            tensorsmith.save(result.model, dst)
            c3, t3 = time.process_time(), time.perf_counter()
            res.update(
                load=t1 - t0,
                passes=t2 - t1,
                save=t3 - t2,
                seconds=t3 - t0,
                cpu_load=c1 - c0,
                cpu_passes=c2 - c1,
                cpu_save=c3 - c2,
                cpu=c3 - c0,
                nodes_before=result.nodes_before,
                nodes_after=result.nodes_after,
                iterations=result.iterations,
                per_pass={p.name: p.seconds for p in result.passes},
            )
        elif tool == "onnxsim":
            import onnx
            import onnxsim

            c0, t0 = time.process_time(), time.perf_counter()
            m, _ = onnxsim.simplify(onnx.load(src))
            onnx.save(m, dst)
            res.update(
                seconds=time.perf_counter() - t0, cpu=time.process_time() - c0, nodes_after=len(m.graph.node)
            )
        elif tool == "onnxslim":
            import onnx
            import onnxslim
            import onnxslim.core  # noqa: F401

            c0, t0 = time.process_time(), time.perf_counter()
            m = onnxslim.slim(onnx.load(src))
            onnx.save(m, dst)
            res.update(
                seconds=time.perf_counter() - t0, cpu=time.process_time() - c0, nodes_after=len(m.graph.node)
            )
        else:
            raise ValueError(tool)
    except BaseException as exc:  # noqa: BLE001
        res["error"] = _common.one_line(exc)
    Path(out_json).write_text(json.dumps(res))
    return 0


def run_worker(tool: str, src: Path, work: Path, timeout: float) -> dict:
    out = work / f"{src.stem}.{tool}.json"
    dst = work / f"{src.stem}.{tool}.out.onnx"
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        proc = _common.run_python([__file__, "--worker", tool, str(src), str(dst), str(out)], timeout=timeout)
    except Exception:
        return {"error": f"timeout: not done after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    if not out.is_file():
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [""]
        return {"error": f"worker died (exit {proc.returncode}) {tail[0]}"}
    res = json.loads(out.read_text())
    res["process"] = wall
    dst.unlink(missing_ok=True)
    return res


def profile(n: int, work: Path, top: int = 25) -> str:
    import cProfile
    import io
    import pstats

    import onnxscript.optimizer  # noqa: F401

    import tensorsmith

    src = work / f"chain{n}.onnx"
    if not src.exists():
        build_chain(n, src)
    pr = cProfile.Profile()
    pr.enable()
    model = tensorsmith.load(src)
    result = tensorsmith.optimize(model)
    tensorsmith.save(result.model, work / "prof.out.onnx")
    pr.disable()
    s = io.StringIO()
    st = pstats.Stats(pr, stream=s)
    st.sort_stats("tottime").print_stats(top)
    s.write("\n--- by cumulative time ---\n")
    st.sort_stats("cumulative").print_stats(top)
    return s.getvalue()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        return worker(*argv[1:5])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--peer-sizes", default="100,1000")
    ap.add_argument("--peer-timeout", type=float, default=120.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--markdown", metavar="OUT.md")
    ap.add_argument(
        "--profile", type=int, metavar="N", help="cProfile tensorsmith at N blocks and print the top"
    )
    ap.add_argument(
        "--no-gc-check",
        dest="gc_check",
        action="store_false",
        help="skip the extra run with Python's garbage collector disabled",
    )
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x]
    peer_sizes = [int(x) for x in args.peer_sizes.split(",") if x]
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    with tempfile.TemporaryDirectory(prefix="ts-scaling-") as tmp:
        work = Path(tmp)
        if args.profile:
            print(profile(args.profile, work))
            return 0
        rows = []
        srcs = {}
        for n in sizes:
            srcs[n] = work / f"chain{n}.onnx"
            rows.append(
                {
                    "n": n,
                    "nodes": build_chain(n, srcs[n]),
                    "runs": [],
                    "peers": {},
                    "nogc": None,
                    "failed": False,
                }
            )
        # repetitions interleave the sizes (100, 1000, 10000, 100, ...) so a slow spell on
        # this shared machine hits every size, not just one
        for r in range(args.reps):
            for row in rows:
                if row["failed"]:
                    continue
                n = row["n"]
                res = run_worker("tensorsmith", srcs[n], work, timeout=3600)
                if "error" in res:
                    log(f"N={n}: tensorsmith error: {res['error']}")
                    row["failed"] = True
                    continue
                row["runs"].append(res)
                log(
                    f"N={n} run {r + 1}: {res['seconds']:.2f} s wall, {res['cpu']:.2f} s CPU (load {res['load']:.2f}, "
                    f"passes {res['passes']:.2f}, save {res['save']:.2f}); nodes {res['nodes_before']} -> "
                    f"{res['nodes_after']}"
                )
                if args.gc_check and r == args.reps // 2:
                    nogc = run_worker("tensorsmith-nogc", srcs[n], work, timeout=3600)
                    row["nogc"] = nogc
                    if "error" not in nogc:
                        log(
                            f"N={n} with gc disabled: {nogc['cpu']:.2f} s CPU (load {nogc['cpu_load']:.2f}, passes "
                            f"{nogc['cpu_passes']:.2f}, save {nogc['cpu_save']:.2f})"
                        )
        for row in rows:
            n = row["n"]
            if n in peer_sizes:
                for tool in ("onnxsim", "onnxslim"):
                    row["peers"][tool] = run_worker(tool, srcs[n], work, timeout=args.peer_timeout)
                    log(
                        f"N={n}: {tool}: {row['peers'][tool].get('seconds', row['peers'][tool].get('error'))}"
                    )
            srcs[n].unlink(missing_ok=True)

    def med(row, key):
        vals = [r[key] for r in row["runs"]]
        return statistics.median(vals) if vals else None

    L = [
        "## Scaling: chains of N Conv+BN+Relu blocks (+ Dropout every 7th, Identity every 5th)",
        "",
        f"Machine: {_common.machine_notes()}",
        "",
        f"tensorsmith load -> optimize (default passes) -> save, median of {args.reps} runs, each in a fresh "
        f"process, sizes interleaved; {CHANNELS} channels, {SPATIAL}x{SPATIAL} input. Peers: one run each, capped at "
        f"{args.peer_timeout:.0f} s.",
        "",
        "Wall-clock seconds, with CPU seconds of the process in brackets (CPU time is less disturbed by the "
        "other jobs on this shared machine).",
        "",
        "| N blocks | nodes | nodes after | total s | load s | passes s | save s | µs per node (CPU) | per pass, wall s | onnxsim s | onnxslim s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        if not row["runs"]:
            L.append(f"| {row['n']} | {row['nodes']} | error |" + " |" * 8)
            continue
        tot = med(row, "seconds")
        per_pass = {}
        for r in row["runs"]:
            for k, v in r["per_pass"].items():
                per_pass.setdefault(k, []).append(v)
        pp = ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in per_pass.items())
        peer_cells = []
        for tool in ("onnxsim", "onnxslim"):
            p = row["peers"].get(tool)
            peer_cells.append(
                "—"
                if p is None
                else (f"error: {p['error']}" if "error" in p else f"{p['seconds']:.2f} [{p['cpu']:.2f}]")
            )
        L.append(
            f"| {row['n']} | {row['nodes']} | {row['runs'][0]['nodes_after']} | {tot:.2f} [{med(row, 'cpu'):.2f}] | "
            f"{med(row, 'load'):.2f} [{med(row, 'cpu_load'):.2f}] | {med(row, 'passes'):.2f} "
            f"[{med(row, 'cpu_passes'):.2f}] | {med(row, 'save'):.2f} [{med(row, 'cpu_save'):.2f}] | "
            f"{tot / row['nodes'] * 1e6:.0f} ({med(row, 'cpu') / row['nodes'] * 1e6:.0f}) | {pp} | "
            + " | ".join(peer_cells)
            + " |"
        )
    L.append("")
    L.append("Growth, t(N2)/t(N1) / (N2/N1): 1.0 = linear, N2/N1 = quadratic.")
    L.append("")
    for a, b in zip(rows, rows[1:], strict=False):
        if not a["runs"] or not b["runs"]:
            continue
        f = b["nodes"] / a["nodes"]
        parts = [
            f"total wall {med(b, 'seconds') / med(a, 'seconds') / f:.2f}",
            f"total CPU {med(b, 'cpu') / med(a, 'cpu') / f:.2f}",
        ]
        for key in ("load", "passes", "save"):
            parts.append(f"{key} CPU {med(b, 'cpu_' + key) / med(a, 'cpu_' + key) / f:.2f}")
        pa = {k: statistics.median([r["per_pass"][k] for r in a["runs"]]) for k in a["runs"][0]["per_pass"]}
        pb = {k: statistics.median([r["per_pass"][k] for r in b["runs"]]) for k in b["runs"][0]["per_pass"]}
        parts += [f"{k} (wall) {pb[k] / pa[k] / f:.2f}" for k in pa if pa[k] > 0]
        L.append(f"- N {a['n']} -> {b['n']}: " + ", ".join(parts))
        ga, gb_ = a.get("nogc"), b.get("nogc")
        if ga and gb_ and "error" not in ga and "error" not in gb_:
            L.append(
                f"  - same with Python's gc disabled (one run each): total CPU {gb_['cpu'] / ga['cpu'] / f:.2f}, "
                + ", ".join(
                    f"{k} CPU {gb_['cpu_' + k] / ga['cpu_' + k] / f:.2f}" for k in ("load", "passes", "save")
                )
                + f"; at N={b['n']} gc costs {1 - gb_['cpu'] / med(b, 'cpu'):.0%} of the CPU time"
            )
        for tool in ("onnxsim", "onnxslim"):
            pa_, pb_ = a["peers"].get(tool), b["peers"].get(tool)
            if pa_ and pb_ and "error" not in pa_ and "error" not in pb_:
                L.append(f"  - {tool}: total CPU {pb_['cpu'] / pa_['cpu'] / f:.2f}")
    L.append("")
    text = "\n".join(L)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
