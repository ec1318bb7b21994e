"""The Ray executor against the local process pool: per-job overhead and throughput.

    python bench/recipes_scale.py [--jobs 12] [--nodes 1,2,3] [--markdown OUT.md]

A recipe of ``--jobs`` small real jobs (copies of sample_models/cnn.onnx -> optimized,
verified ONNX) runs with ``--force``:

1. on the local pool with one worker, and on a one-node, one-CPU local Ray cluster: the
   per-job overhead is (wall time - the jobs' own time) / jobs for each, and the Ray
   executor's extra cost per job is the difference (target: at most 0.5 s);
2. on local Ray clusters of 1, 2 and 3 nodes (one CPU each): jobs per second.

Every run is done twice and the second (warm: worker processes started, libraries
imported) is reported beside the first (cold). The Ray clusters run inside a private
network namespace (``unshare -n``, loopback only; the script re-runs itself there),
so Ray never binds or advertises the machine's address. Needs root for ``unshare``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

INSIDE = "TENSORSMITH_BENCH_NETNS"


def _recipe(work: Path, jobs: int) -> Path:
    import yaml

    models = work / "models"
    models.mkdir(parents=True, exist_ok=True)
    shutil.copy(_common.ROOT / "sample_models" / "cnn.onnx", models / "cnn.onnx")
    path = work / "bench.yaml"
    recipe = {
        "version": 1,
        "output_dir": "out",
        "models": [{"name": f"cnn{i}", "path": "models/cnn.onnx"} for i in range(jobs)],
        "targets": [{"name": "onnx", "to": "onnx"}],
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _timed(path: Path, **kwargs) -> dict:
    from tensorsmith.recipes import run_recipe

    t0 = time.perf_counter()
    result = run_recipe(path, force=True, **kwargs)
    wall = time.perf_counter() - t0
    assert result.exit_code == 0, [(r["name"], r.get("error")) for r in result.records]
    own = sum(r["seconds"]["total"] for r in result.records)
    n = len(result.records)
    return {"wall": wall, "own": own, "jobs": n, "overhead": (wall - own) / n, "per_s": n / wall}


def inside(args) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from tensorsmith.recipes.ray_executor import RayExecutor

    work = Path(tempfile.mkdtemp(prefix="ts-bench-ray-"))
    out: dict = {"jobs": args.jobs}
    try:
        path = _recipe(work, args.jobs)
        out["local"] = [_timed(path, workers=1) for _ in range(2)]
        loopback = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
        t0 = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={"include_dashboard": False, **loopback})
        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        out["cluster_start_s"] = time.perf_counter() - t0
        out["ray"] = {}
        for k in range(1, max(args.nodes) + 1):
            if k > 1:
                cluster.add_node(**loopback)
                cluster.wait_for_nodes()
            if k in args.nodes:
                out["ray"][k] = [_timed(path, executor=RayExecutor()) for _ in range(2)]
        ray.shutdown()
        cluster.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def render(res: dict) -> str:
    local_cold, local = res["local"]
    lines = [
        f"{res['jobs']} jobs (sample CNN -> optimized, verified ONNX), `--force`; "
        f"local Ray cluster started in {res['cluster_start_s']:.1f} s (not counted).",
        "",
        "| executor | nodes x CPUs | wall s (cold) | wall s (warm) | jobs' own s (warm) | overhead s/job (warm) | jobs/s (warm) |",
        "|---|---|---|---|---|---|---|",
        f"| local pool | 1 x 1 | {local_cold['wall']:.2f} | {local['wall']:.2f} | {local['own']:.2f} "
        f"| {local['overhead']:.3f} | {local['per_s']:.2f} |",
    ]
    for k, (cold, warm) in sorted(res["ray"].items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"| ray | {k} x 1 | {cold['wall']:.2f} | {warm['wall']:.2f} | {warm['own']:.2f} "
            f"| {warm['overhead']:.3f} | {warm['per_s']:.2f} |"
        )
    one = res["ray"].get(1) or res["ray"].get("1")
    if one:
        extra = (one[1]["wall"] - local["wall"]) / res["jobs"]
        verdict = "within" if extra <= 0.5 else "OVER"
        lines += [
            "",
            f"Ray executor's extra cost per job against the local pool (1 CPU each, warm): "
            f"{extra:+.3f} s ({verdict} the 0.5 s target); cold: "
            f"{(one[0]['wall'] - local_cold['wall']) / res['jobs']:+.3f} s.",
        ]
    lines += ["", f"Machine: {os.cpu_count()} cores. " + _common.one_line(str(_common.versions()), 300)]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--nodes", default="1,2,3", help="cluster sizes to time (local nodes, 1 CPU each)")
    ap.add_argument("--markdown", help="also write the table here")
    ap.add_argument("--json-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.nodes = sorted({int(x) for x in args.nodes.split(",")})
    if os.environ.get(INSIDE) != "1":
        if shutil.which("unshare") is None:
            print(
                "recipes_scale: needs `unshare` (util-linux) for a loopback-only Ray cluster", file=sys.stderr
            )
            return 2
        with tempfile.TemporaryDirectory() as tmp:
            json_out = Path(tmp) / "res.json"
            cmd = [sys.executable, *sys.argv, "--json-out", str(json_out)]
            inner = "ip link set lo up && exec " + " ".join(f"'{c}'" for c in cmd)
            env = dict(os.environ, **{INSIDE: "1"})
            env.pop("RAY_ADDRESS", None)
            rc = subprocess.run(["unshare", "-n", "bash", "-c", inner], env=env).returncode
            if rc != 0 or not json_out.exists():
                print(f"recipes_scale: the run in the network namespace failed (exit {rc})", file=sys.stderr)
                return rc or 1
            res = json.loads(json_out.read_text())
        text = render(res)
        print(text)
        if args.markdown:
            Path(args.markdown).write_text(text + "\n")
        return 0
    res = inside(args)
    Path(args.json_out).write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
