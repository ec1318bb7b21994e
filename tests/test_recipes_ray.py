"""``tensorsmith run --executor ray`` on a REAL local Ray cluster: a head and two workers
labelled ``pool=w`` (one ``ray.io/accelerator-type=A100``, one ``L4``, each with one
fake GPU resource), started by tests/ray_cluster_run.py INSIDE A PRIVATE NETWORK
NAMESPACE (``unshare -n``, then ``ip link set lo up``): Ray can bind and advertise
nothing but loopback. Engine builds use the recording TensorRT stand-in
(tests/fake_tensorrt.py, NOT TensorRT), put in each Ray worker by a setup hook.

One cluster serves every test here (starting one takes ~30 s on 2 cores): the
script runs each scenario once and writes what happened; each test checks one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


def _netns_ok() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare/ip not found"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a private network namespace: {probe.stderr.strip()[:200]}"
    return None


@pytest.fixture(scope="module")
def cluster_runs(tmp_path_factory) -> dict:
    why = _netns_ok()
    if why:
        pytest.skip(why)
    work = tmp_path_factory.mktemp("ray")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(HERE)]), RAY_ADDRESS="")
    env.pop("RAY_ADDRESS")
    script = f"ip link set lo up && exec {sys.executable} {HERE / 'ray_cluster_run.py'} {work}"
    proc = subprocess.run(
        ["unshare", "-n", "bash", "-c", script], env=env, capture_output=True, text=True, timeout=900
    )
    results = work / "results.json"
    assert results.exists(), proc.stderr[-4000:]
    data = json.loads(results.read_text())
    data["_work"] = str(work)
    data["_rc"] = proc.returncode
    return data


def _scenario(runs: dict, name: str) -> dict:
    data = runs.get(name)
    assert data is not None, f"scenario {name} did not run"
    assert "error" not in data, data.get("error")
    return data


def test_cluster_stays_on_loopback(cluster_runs):
    cluster = cluster_runs["cluster"]
    assert cluster["nodes"] == 3
    assert cluster["addresses"] == ["127.0.0.1"]
    assert cluster["address"].startswith("127.0.0.1:")
    assert cluster_runs["_rc"] == 0


def test_done_when_label_placement_and_same_outputs_as_local(cluster_runs):
    """The CLI with --executor ray: every job passes, the pinned jobs ran on labelled
    nodes only (the manifest says where), and every output equals a local run's."""
    done = _scenario(cluster_runs, "done_when")
    assert done["rc"] == 0, done["stderr"]
    assert done["local_exit"] == 0
    ray_jobs, local_jobs = done["ray"], done["local"]
    assert set(ray_jobs) == set(local_jobs) and len(ray_jobs) == 7
    workers = set(cluster_runs["cluster"]["workers"].values())
    for name, entry in ray_jobs.items():
        assert entry["status"] == "ok", (name, entry.get("error"))
        node = entry["node"]
        assert node["id"] and node["hostname"] and isinstance(node["labels"], dict)
        if name.endswith("-pinned"):
            assert node["labels"].get("pool") == "w" and node["id"] in workers, (name, node)
            assert node["gpu_type"] in ("A100", "L4")
        ray_sha = {o["path"]: o["sha256"] for o in entry["outputs"]}
        local_sha = {o["path"]: o["sha256"] for o in local_jobs[name]["outputs"]}
        assert ray_sha == local_sha and ray_sha, name
    # the hashes in the manifest are those of the files in place
    out = Path(cluster_runs["_work"]) / "out"
    for entry in ray_jobs.values():
        for o in entry["outputs"]:
            assert hashlib.sha256((out / o["path"]).read_bytes()).hexdigest() == o["sha256"]
    report = done["report"]
    assert report and {j["name"] for j in report["jobs"]} == set(ray_jobs)


def test_gpu_types_build_on_their_nodes(cluster_runs):
    """`gpus: [A100, L4]`: one engine per type, built on a node of that type (num_gpus=1);
    the file name and the sidecar carry the type; the ONNX is prepared once for both."""
    gpu = _scenario(cluster_runs, "gpu_types")
    assert gpu["exit"] == 0
    assert ".tensorsmith-tmp" not in gpu["files"]
    assert set(gpu["records"]) == {"cnn-trt-A100", "cnn-trt-L4"}
    for kind in ("A100", "L4"):
        record = gpu["records"][f"cnn-trt-{kind}"]
        assert record["status"] == "ok", record.get("error")
        assert record["node"]["gpu_type"] == kind
        assert record["node"]["id"] == cluster_runs["cluster"]["workers"][kind]
        assert f"cnn.trt-{kind}.plan" in gpu["files"]
        assert kind in gpu["sidecars"][f"cnn.trt-{kind}.plan.json"]["gpu"]["name"]
    # the prepare step ran once (on one node) and both builds used its ONNX
    reports = [gpu["records"][f"cnn-trt-{kind}"]["report"] for kind in ("A100", "L4")]
    assert reports[0]["prepared_on"]["id"] and reports[0]["prepared_on"] == reports[1]["prepared_on"]
    onnx_sha = {
        o["sha256"]
        for kind in ("A100", "L4")
        for o in gpu["records"][f"cnn-trt-{kind}"]["outputs"]
        if o["path"].endswith(".trt.onnx")
    }
    assert len(onnx_sha) == 1
    assert reports[0]["verification"]["passed"] and reports[0]["lint"]["status"] == "clean"


def test_two_runs_share_one_output_folder(cluster_runs):
    """Two runs at once on one cache and output folder: both pass, the manifest holds
    every job (merged, not overwritten), every output intact, a third run is all cached."""
    two = _scenario(cluster_runs, "two_runs")
    assert two["exits"] == [0, 0]
    assert set(two["ran"]["a"]) == {"cnn-onnx", "mobilenet-onnx"}
    assert two["manifest"] == {"cnn-onnx": "ok", "mobilenet-onnx": "ok", "resblock-onnx": "ok"}
    assert all(two["intact"].values())
    assert set(two["third"].values()) == {"cached"}
    assert ".tensorsmith-tmp" not in two["leftovers"]


def test_a_crashing_worker_fails_its_job_only(cluster_runs):
    crash = _scenario(cluster_runs, "crash")
    assert crash["exit"] == 1
    boom, cnn = crash["records"]["boom-onnx"], crash["records"]["cnn-onnx"]
    assert cnn["status"] == "ok"
    assert boom["status"] == "failed" and boom["error_type"] == "WorkerDied"
    assert "worker process running this job died" in boom["error"] and "2 tries" in boom["error"]
    assert not any(f.startswith("boom") for f in crash["files"])


def test_a_label_no_node_has_fails_fast(cluster_runs):
    mars = _scenario(cluster_runs, "no_such_label")
    assert mars["exit"] == 1
    bad = mars["records"]["cnn-mars"]
    assert bad["status"] == "failed" and bad["error_type"] == "Unplaceable"
    assert "pool=mars" in bad["error"] and "pool=w" in bad["error"]
    assert mars["records"]["cnn-onnx"]["status"] == "ok"
    assert any("pool=mars" in n for n in mars["notes"])
    assert mars["took"] < 60  # it did not wait for a node that will never come


def test_ctrl_c_cancels_and_leaves_no_output(cluster_runs):
    stop = _scenario(cluster_runs, "interrupt")
    assert stop["started"], "the job never started"
    assert stop["rc"] == 130, (stop["debug"], stop["stderr"])
    assert "interrupted" in stop["stderr"]
    # nothing in place, even after the job would have finished: it was cancelled
    assert not any(f.endswith(".onnx") and not f.startswith(".tensorsmith-tmp") for f in stop["files"]), stop[
        "files"
    ]


def test_a_node_removed_mid_run_is_retried_elsewhere(cluster_runs):
    """`--force` re-run; the worker running the slow pinned job is removed while the job
    runs: Ray retries it on the other labelled worker and every job passes."""
    lost = _scenario(cluster_runs, "node_lost")
    removed = lost["removed"]
    assert removed is not None, "no job started on a worker node"
    assert lost["exit"] == 0
    assert all(r["status"] == "ok" for r in lost["records"].values()), lost["records"]
    slow = lost["records"]["slow-pinned"]
    assert slow["node"]["id"] != removed["id"] and slow["node"]["labels"].get("pool") == "w"
    assert removed["id"] in lost["markers"] and slow["node"]["id"] in lost["markers"]
    assert all(r["node"]["id"] != removed["id"] or r["finished"] for r in lost["records"].values())
