"""Peak memory of ``tensorsmith optimize`` on a model whose weights exceed 2 GB.

    python bench/memory.py [--gb 3] [--markdown OUT.md] [--dir /tmp] [--keep]
    python bench/memory.py --gb 0.3          # quick mode

Generates, streaming (one tensor in memory at a time), a synthetic model with GB
gigabytes of fp32 weights in external data (``model.onnx.data``): a chain of
MatMul + BatchNormalization + Relu layers (K x K weights); every 3rd weight is
stored transposed behind a ``Transpose`` node (work for fold-constants), plus a
Dropout every 4th and an Identity every 5th layer (work for the remove passes).
Then, each in its own process:

* ``tensorsmith optimize IN -o OUT --no-verify --json`` (the CLI: default passes, so
  fold, fuse, remove, CSE, dead code; the output is written with external data);
* ``onnxsim IN OUT`` and ``onnxslim IN OUT`` (their CLIs);

and records the exit status, the last error line, wall time and the peak resident
set size (``ru_maxrss`` from ``wait4`` for that process, plus the peak of
anonymous / file-backed RSS polled from ``/proc/PID/status``), compared with the
bytes of the weights. Target: tensorsmith's peak RSS <= 1.3 x the weights.
With ``--check`` (default) the optimized model is then compared with the original
in onnxruntime on one random input. Everything generated is deleted at the end
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

GiB = 1024**3


def build_model(folder: Path, gb: float, k: int, seed: int = 0) -> dict:
    """Write ``folder/model.onnx`` + ``model.onnx.data`` streaming; returns a summary."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    data_name = "model.onnx.data"
    layer_bytes = k * k * 4
    n_layers = max(2, round(gb * GiB / layer_bytes))
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    offset = 0

    def external(name: str, arr: np.ndarray, fh) -> None:
        nonlocal offset
        t = TensorProto()
        t.name = name
        t.data_type = TensorProto.FLOAT
        t.dims.extend(arr.shape)
        t.data_location = TensorProto.EXTERNAL
        raw = np.ascontiguousarray(arr, dtype=np.float32)
        fh.write(raw.tobytes(order="C") if raw.nbytes < 1 << 20 else memoryview(raw).cast("B"))
        for key, val in (("location", data_name), ("offset", str(offset)), ("length", str(raw.nbytes))):
            e = t.external_data.add()
            e.key, e.value = key, val
        offset += raw.nbytes
        inits.append(t)

    cur = "input"
    scale = 1.0 / np.sqrt(k)
    weight_bytes = 0
    with open(folder / data_name, "wb") as fh:
        for i in range(n_layers):
            w = (rng.standard_normal((k, k), dtype=np.float32) * scale).astype(np.float32)
            transposed = i % 3 == 1
            wname = f"l{i}.w"
            if transposed:
                external(wname + "_t", np.ascontiguousarray(w.T), fh)
                nodes.append(
                    helper.make_node("Transpose", [wname + "_t"], [wname], name=f"l{i}.T", perm=[1, 0])
                )
            else:
                external(wname, w, fh)
            weight_bytes += w.nbytes
            del w
            bn = {
                "scale": (rng.random(k) + 0.5).astype(np.float32),
                "bias": (rng.standard_normal(k) * 0.1).astype(np.float32),
                "mean": (rng.standard_normal(k) * 0.1).astype(np.float32),
                "var": (rng.random(k) + 0.5).astype(np.float32),
            }
            for key, arr in bn.items():
                external(f"l{i}.{key}", arr, fh)
                weight_bytes += arr.nbytes
            nodes.append(helper.make_node("MatMul", [cur, wname], [f"l{i}.mm"], name=f"l{i}.MatMul"))
            nodes.append(
                helper.make_node(
                    "BatchNormalization",
                    [f"l{i}.mm"] + [f"l{i}.{x}" for x in bn],
                    [f"l{i}.bn"],
                    name=f"l{i}.BN",
                    epsilon=1e-5,
                )
            )
            nodes.append(helper.make_node("Relu", [f"l{i}.bn"], [f"l{i}.relu"], name=f"l{i}.Relu"))
            cur = f"l{i}.relu"
            if i % 4 == 2:
                nodes.append(helper.make_node("Dropout", [cur], [f"l{i}.drop"], name=f"l{i}.Dropout"))
                cur = f"l{i}.drop"
            if i % 5 == 3:
                nodes.append(helper.make_node("Identity", [cur], [f"l{i}.id"], name=f"l{i}.Identity"))
                cur = f"l{i}.id"
    nodes.append(helper.make_node("Identity", [cur], ["output"], name="out.Identity"))
    graph = helper.make_graph(
        nodes,
        "big_chain",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", k])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", k])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tensorsmith-bench"
    )
    model.ir_version = 8
    with open(folder / "model.onnx", "wb") as fh:
        fh.write(model.SerializeToString())
    return {
        "layers": n_layers,
        "k": k,
        "nodes": len(nodes),
        "weight_bytes": weight_bytes,
        "data_bytes": (folder / data_name).stat().st_size,
    }


def _status_kb(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(val.split()[0])
    except (OSError, ValueError):
        pass
    return out


def measure(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run ``cmd``; exit status, output tail, wall time, peak RSS (wait4) and polled peaks."""
    t0 = time.perf_counter()
    out_f = tempfile.TemporaryFile()
    err_f = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, env=env, cwd=str(_common.ROOT))
    peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            st = _status_kb(proc.pid)
            for k in peaks:
                peaks[k] = max(peaks[k], st.get(k, 0))
            stop.wait(0.05)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    timed_out = False
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            timed_out = True
            proc.kill()
            pid, status, ru = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    stop.set()
    th.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    out_f.seek(0)
    err_f.seek(0)
    stdout = out_f.read().decode(errors="replace")
    stderr = err_f.read().decode(errors="replace")
    return {
        "rc": proc.returncode,
        "timed_out": timed_out,
        "wall": wall,
        "maxrss": ru.ru_maxrss * 1024,  # Linux: kB
        "peak_anon": peaks["RssAnon"] * 1024,
        "peak_file": peaks["RssFile"] * 1024,
        "stdout": stdout,
        "stderr": stderr,
    }


def last_error_line(res: dict) -> str:
    text = (res["stderr"] or "") + "\n" + (res["stdout"] or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keys = (
        "error",
        "Error",
        "exceed",
        "2GB",
        "2 GB",
        "protobuf",
        "Killed",
        "MemoryError",
        "failed",
        "Exception",
    )
    hits = [ln for ln in lines if any(k in ln for k in keys)]
    pick = hits[-1] if hits else (lines[-1] if lines else "")
    return _common.one_line(pick, 220)


def check_outputs(src: Path, dst: Path, k: int) -> str:
    """Compare the optimized model with the original in onnxruntime (one sample, batch 2)."""
    code = f"""
import json, numpy as np, onnxruntime as ort
from tensorsmith.verify import compare, Tolerance
x = np.random.default_rng(0).standard_normal((2, {k})).astype(np.float32)
so = ort.SessionOptions(); so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
ref = dict(zip(["output"], ort.InferenceSession({str(src)!r}, so).run(["output"], {{"input": x}})))
got = dict(zip(["output"], ort.InferenceSession({str(dst)!r}, so).run(["output"], {{"input": x}})))
c = compare(ref, got, Tolerance())[0]
print(json.dumps({{"passed": c.passed, "max_abs": c.max_abs_diff, "scale": c.scale, "reason": c.reason}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(_common.ROOT))
    if proc.returncode != 0:
        return "check failed to run: " + _common.one_line(
            (proc.stderr or "").strip().splitlines()[-1:] or [""]
        )
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return (
        f"{'equal' if r['passed'] else 'DIFFERENT'}: max abs diff {r['max_abs']:.2e} (output scale "
        f"{r['scale']:.2e}) {r['reason']}"
    ).strip()


def gb(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=3.0, help="GiB of weights (default 3; 0.3 = quick mode)")
    ap.add_argument("--k", type=int, default=4096, help="layer width (weights K x K fp32)")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where to generate (needs ~3x GB free)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per tool")
    ap.add_argument("--tools", default="tensorsmith,onnxsim,onnxslim")
    ap.add_argument(
        "--no-check", dest="check", action="store_false", help="skip the onnxruntime output check"
    )
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--markdown", metavar="OUT.md")
    args = ap.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    free = shutil.disk_usage(args.dir).free
    need = args.gb * GiB * 3.2
    if free < need:
        print(f"error: {args.dir} has {gb(free)} free, needs about {gb(need)}", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="ts-memory-", dir=args.dir))
    bindir = Path(sys.executable).parent
    rows = []
    try:
        src_dir = root / "src"
        src_dir.mkdir()
        t0 = time.perf_counter()
        info = build_model(src_dir, args.gb, args.k)
        log(
            f"built {info['layers']} layers, {info['nodes']} nodes, weights {gb(info['weight_bytes'])} "
            f"in {time.perf_counter() - t0:.0f} s"
        )
        src = src_dir / "model.onnx"
        wb = info["weight_bytes"]
        # interpreter + imports alone, for reference
        base = measure([str(bindir / "tensorsmith"), "passes"], 120)
        tools = [t for t in args.tools.split(",") if t]
        for tool in tools:
            out_dir = root / f"out-{tool}"
            out_dir.mkdir()
            dst = out_dir / "model.onnx"
            if tool == "tensorsmith":
                cmd = [
                    str(bindir / "tensorsmith"),
                    "optimize",
                    str(src),
                    "-o",
                    str(dst),
                    "--no-verify",
                    "--json",
                ]
            elif tool == "onnxsim":
                cmd = [str(bindir / "onnxsim"), str(src), str(dst)]
            elif tool == "onnxslim":
                cmd = [str(bindir / "onnxslim"), str(src), str(dst)]
            else:
                raise SystemExit(f"unknown tool {tool}")
            log(f"running {tool} ...")
            res = measure(cmd, args.timeout)
            written = [p for p in out_dir.rglob("*") if p.is_file()]
            res["written"] = sum(p.stat().st_size for p in written)
            res["written_files"] = sorted(
                f"{p.relative_to(out_dir)} ({gb(p.stat().st_size)})" for p in written
            )
            res["tool"] = tool
            res["ok"] = res["rc"] == 0 and dst.is_file()
            res["error"] = (
                ""
                if res["ok"]
                else (
                    f"timed out after {args.timeout:.0f} s"
                    if res["timed_out"]
                    else f"exit {res['rc']}: {last_error_line(res)}"
                )
            )
            if tool == "tensorsmith" and res["ok"]:
                try:
                    rep = json.loads(res["stdout"])
                    res["nodes"] = f"{rep.get('nodes_before')} -> {rep.get('nodes_after')}"
                    res["passes"] = ", ".join(
                        f"{p['name']} {p['seconds']:.1f}s" for p in rep.get("passes", [])
                    )
                    res["files"] = [Path(f).name for f in rep.get("files", [])]
                except Exception:
                    pass
            if res["ok"] and args.check:
                res["check"] = check_outputs(src, dst, args.k)
            log(
                f"  {tool}: rc {res['rc']}, {res['wall']:.0f} s, peak RSS {gb(res['maxrss'])} "
                f"({res['maxrss'] / wb:.2f}x weights) {res['error']}"
            )
            rows.append(res)
            shutil.rmtree(out_dir, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    L = [
        f"## Memory: {gb(wb)} of weights in external data ({info['layers']} x MatMul[{args.k}x{args.k}]+BN+Relu, "
        f"{info['nodes']} nodes)",
        "",
        f"Machine: {_common.machine_notes()}",
        "",
        f"Peak RSS = ru_maxrss of the tool's process (wait4); anon/file = peaks of RssAnon/RssFile polled every "
        f"50 ms (file-backed = memory-mapped weights). Baseline (`tensorsmith passes`: interpreter + imports): "
        f"{base['maxrss'] / 1024**2:.0f} MiB.",
        "",
        "| tool | result | wall s | peak RSS | x weights | peak anon | peak file-backed | written | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        notes = []
        if r.get("nodes"):
            notes.append(f"nodes {r['nodes']}")
        if r.get("written_files"):
            notes.append(
                "wrote "
                + ", ".join(r["written_files"][:4])
                + (f" (+{len(r['written_files']) - 4} files)" if len(r["written_files"]) > 4 else "")
            )
        if r.get("check"):
            notes.append(r["check"])
        if r.get("passes"):
            notes.append(r["passes"])
        result = "ok" if r["ok"] else f"FAILED ({r['error']})"
        L.append(
            f"| {r['tool']} | {result} | {r['wall']:.0f} | {gb(r['maxrss'])} | {r['maxrss'] / wb:.2f} | "
            f"{gb(r['peak_anon'])} | {gb(r['peak_file'])} | {gb(r['written'])} | {'; '.join(notes)} |"
        )
    L.append("")
    ts = next((r for r in rows if r["tool"] == "tensorsmith"), None)
    if ts is not None:
        verdict = "meets" if ts["ok"] and ts["maxrss"] <= 1.3 * wb else "MISSES"
        L.append(
            f"tensorsmith {verdict} the target (peak RSS <= 1.3 x weights = {gb(1.3 * wb)}): "
            f"{gb(ts['maxrss'])} = {ts['maxrss'] / wb:.2f}x."
        )
        L.append("")
    text = "\n".join(L)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
