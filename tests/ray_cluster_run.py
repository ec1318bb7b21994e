"""A real local Ray cluster (head + two labelled workers) and the recipe runs the Ray
executor tests check: run by tests/test_recipes_ray.py INSIDE A PRIVATE NETWORK
NAMESPACE (``unshare -n``, loopback only), never on its own.

``python ray_cluster_run.py WORK`` writes WORK/results.json: one entry per scenario.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_models"
WORK = Path(sys.argv[1])
RESULTS: dict = {}


def recipe(name: str, data: dict) -> Path:
    path = WORK / name
    path.write_text(yaml.safe_dump({"version": 1, **data}, sort_keys=False))
    return path


def manifest(folder: str) -> dict:
    return json.loads((WORK / folder / "tensorsmith-manifest.json").read_text())["jobs"]


def scenario(fn):
    t0 = time.monotonic()
    try:
        RESULTS[fn.__name__] = fn()
    except Exception:
        RESULTS[fn.__name__] = {"error": traceback.format_exc()}
    RESULTS[fn.__name__]["seconds"] = round(time.monotonic() - t0, 1)
    (WORK / "results.json").write_text(json.dumps(RESULTS, indent=1, default=str))


class Notes:
    def __init__(self):
        self.notes: list[str] = []

    def start(self, *a): ...
    def job_started(self, *a): ...
    def job_step(self, *a): ...
    def job_worker(self, *a): ...
    def job_finished(self, *a): ...
    def stop(self): ...

    def note(self, text: str) -> None:
        self.notes.append(text)


def records(result) -> dict:
    return {r["name"]: r for r in result.records}


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    from tensorsmith.recipes import run_recipe
    from tensorsmith.recipes.ray_executor import RayExecutor

    models = WORK / "models"
    models.mkdir(parents=True, exist_ok=True)
    for name in ("cnn.onnx", "mobilenet_block.onnx", "resblock.onnx"):
        shutil.copy(SAMPLES / name, models / name)
    (WORK / "markers").mkdir()
    os.environ["TENSORSMITH_TEST_MARKERS"] = str(WORK / "markers")

    t0 = time.monotonic()
    loopback = {"node_ip_address": "127.0.0.1"}
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, **loopback}
    )
    worker_args = {"num_cpus": 1, "num_gpus": 1, **loopback}
    workers = {
        "A100": cluster.add_node(labels={"pool": "w", "ray.io/accelerator-type": "A100"}, **worker_args),
        "L4": cluster.add_node(labels={"pool": "w", "ray.io/accelerator-type": "L4"}, **worker_args),
    }
    cluster.wait_for_nodes()
    ray.init(
        address=cluster.address,
        runtime_env={"worker_process_setup_hook": "ray_helpers.fake_gpu_setup"},
        log_to_driver=False,
        logging_level="WARNING",
    )
    nodes = ray.nodes()
    RESULTS["cluster"] = {
        "seconds": round(time.monotonic() - t0, 1),
        "address": cluster.address,
        "addresses": sorted({n["NodeManagerAddress"] for n in nodes}),
        "workers": {gpu: node.node_id for gpu, node in workers.items()},
        "nodes": len(nodes),
    }

    main_models = [
        {"name": "cnn", "path": "models/cnn.onnx"},
        {"name": "mobilenet", "path": "models/mobilenet_block.onnx"},
        {"name": "resblock", "path": "models/resblock.onnx"},
        {
            "name": "slow",
            "path": "ray_helpers:slow_cnn",
            "from": "torch-factory",
            "input_shape": {"x": "1x3x32x32"},
        },
    ]
    main_targets = [
        {"name": "onnx", "to": "onnx"},
        {"name": "pinned", "to": "onnx", "skip": ["fuse-conv-bn"], "runs_on": {"pool": "w"}},
    ]
    only_pinned = [{"name": "slow-onnx", "enabled": False}]
    main = recipe(
        "main.yaml",
        {"output_dir": "out", "models": main_models, "targets": main_targets, "jobs": only_pinned},
    )
    local = recipe(
        "local.yaml",
        {"output_dir": "out-local", "models": main_models, "targets": main_targets, "jobs": only_pinned},
    )

    def done_when():
        """The issue's check: the CLI with --executor ray on the 3-node cluster, against a local run."""
        os.environ["TENSORSMITH_TEST_SLOW_S"] = "0"
        # a shell starts the CLI with SIGINT at its default and unblocked; a child of this harness
        # (pytest-xdist worker -> unshare -> this script with Ray's threads) may inherit it ignored
        # or blocked, and then no Ctrl-C reaches it: start the CLI as a terminal would
        terminal = (
            "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
        )
        cli = [sys.executable, "-c", terminal + "from tensorsmith.cli import app; app()"]
        ran = subprocess.run(
            [
                *cli,
                "run",
                str(main),
                "--executor",
                "ray",
                "--ray-address",
                cluster.address,
                "--report-json",
                str(WORK / "a.json"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        loc = run_recipe(local, workers=2)
        return {
            "rc": ran.returncode,
            "stderr": ran.stderr[-3000:],
            "ray": manifest("out"),
            "local": manifest("out-local"),
            "local_exit": loc.exit_code,
            "report": json.loads((WORK / "a.json").read_text()) if (WORK / "a.json").exists() else None,
        }

    def gpu_types():
        path = recipe(
            "gpu.yaml",
            {
                "output_dir": "out-gpu",
                "models": [{"name": "cnn", "path": "models/cnn.onnx"}],
                "targets": [{"name": "trt", "to": "trt", "gpus": ["A100", "L4"]}],
            },
        )
        res = run_recipe(path, executor=RayExecutor())
        out = WORK / "out-gpu"
        sidecars = {p.name: json.loads(p.read_text()) for p in out.glob("*.json") if "manifest" not in p.name}
        return {
            "exit": res.exit_code,
            "records": records(res),
            "files": sorted(p.name for p in out.iterdir()),
            "sidecars": sidecars,
        }

    def two_runs():
        path = recipe(
            "two.yaml",
            {"output_dir": "out-two", "models": main_models[:3], "targets": main_targets[:1]},
        )
        results: dict = {}

        def go(key, only):
            results[key] = run_recipe(path, only=only, executor=RayExecutor())

        threads = [
            threading.Thread(target=go, args=("a", ["cnn-*", "mobilenet-*"])),
            threading.Thread(target=go, args=("b", None)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        third = run_recipe(path, executor=RayExecutor())
        from tensorsmith.recipes import cache

        jobs = manifest("out-two")
        return {
            "exits": [results["a"].exit_code, results["b"].exit_code],
            "ran": {k: {n: r["status"] for n, r in records(v).items()} for k, v in results.items()},
            "manifest": {n: e["status"] for n, e in jobs.items()},
            "intact": {n: cache.outputs_intact(e, WORK / "out-two") for n, e in jobs.items()},
            "third": {n: r["status"] for n, r in records(third).items()},
            "leftovers": sorted(p.name for p in (WORK / "out-two").iterdir()),
        }

    def crash():
        path = recipe(
            "crash.yaml",
            {
                "output_dir": "out-crash",
                "models": [
                    {"name": "cnn", "path": "models/cnn.onnx"},
                    {
                        "name": "boom",
                        "path": "ray_helpers:crashing",
                        "from": "torch-factory",
                        "input_shape": {"x": "1x3x32x32"},
                    },
                ],
            },
        )
        res = run_recipe(path, executor=RayExecutor(max_retries=1))
        return {
            "exit": res.exit_code,
            "records": records(res),
            "files": sorted(p.name for p in (WORK / "out-crash").iterdir()),
        }

    def no_such_label():
        path = recipe(
            "mars.yaml",
            {
                "output_dir": "out-mars",
                "models": [{"name": "cnn", "path": "models/cnn.onnx"}],
                "targets": [{"name": "onnx"}, {"name": "mars", "to": "onnx", "runs_on": {"pool": "mars"}}],
            },
        )
        notes = Notes()
        t = time.monotonic()
        res = run_recipe(path, executor=RayExecutor(), events=notes)
        return {
            "exit": res.exit_code,
            "records": records(res),
            "notes": notes.notes,
            "took": time.monotonic() - t,
        }

    def interrupt():
        """Ctrl-C (SIGINT) on the CLI while the slow job runs: cancelled, nothing half-written."""
        import signal

        os.environ["TENSORSMITH_TEST_SLOW_S"] = "6"
        for p in (WORK / "markers").iterdir():
            p.unlink()
        path = recipe(
            "stop.yaml",
            {"output_dir": "out-stop", "models": main_models[3:], "targets": main_targets[1:]},
        )
        # a shell starts the CLI with SIGINT at its default and unblocked; a child of this harness
        # (pytest-xdist worker -> unshare -> this script with Ray's threads) may inherit it ignored
        # or blocked, and then no Ctrl-C reaches it: start the CLI as a terminal would
        terminal = (
            "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
        )
        cli = [sys.executable, "-c", terminal + "from tensorsmith.cli import app; app()"]
        probe = "import signal; print(signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))"
        inherited = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True
        ).stdout.strip()

        proc = subprocess.Popen(
            [*cli, "run", str(path), "--executor", "ray", "--ray-address", cluster.address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        t_start = time.monotonic()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not any((WORK / "markers").iterdir()):
            time.sleep(0.1)
        started = any((WORK / "markers").iterdir())
        signalled_after = time.monotonic() - t_start
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        time.sleep(8)  # longer than the job's factory waits: a job left running would have finished by now
        out = WORK / "out-stop"
        return {
            "started": started,
            "debug": {"inherited SIGINT handler, blocked": inherited, "signalled after s": signalled_after},
            "rc": proc.returncode,
            "stderr": err[-2000:],
            "files": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()),
        }

    def node_lost():
        """--force re-run; the worker running the slow pinned job is removed while it runs."""
        os.environ["TENSORSMITH_TEST_SLOW_S"] = "8"
        for p in (WORK / "markers").iterdir():
            p.unlink()
        by_id = {node.node_id: (gpu, node) for gpu, node in workers.items()}
        box: dict = {}
        runner_thread = threading.Thread(
            target=lambda: box.update(res=run_recipe(main, force=True, executor=RayExecutor()))
        )
        runner_thread.start()
        removed = None
        deadline = time.monotonic() + 300
        while removed is None and time.monotonic() < deadline and runner_thread.is_alive():
            for marker in (WORK / "markers").iterdir():
                node_id = marker.read_text()
                if node_id in by_id:
                    gpu, node = by_id[node_id]
                    time.sleep(1.0)  # the job is in flight there (its factory sleeps)
                    cluster.remove_node(node)
                    removed = {"id": node_id, "gpu": gpu, "at": time.monotonic()}
                    break
            time.sleep(0.1)
        runner_thread.join(timeout=600)
        res = box.get("res")
        return {
            "removed": removed,
            "exit": None if res is None else res.exit_code,
            "records": {} if res is None else records(res),
            "markers": sorted(p.read_text() for p in (WORK / "markers").iterdir()),
        }

    for fn in (done_when, gpu_types, two_runs, crash, no_such_label, interrupt, node_lost):
        scenario(fn)
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
