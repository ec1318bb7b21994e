"""Executors without a cluster: the recipe keys for Ray (runs_on, gpus), the flags, label
matching, and the lazy import of Ray. The cluster itself: tests/test_recipes_ray.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tensorsmith.cli import app
from tensorsmith.errors import UsageError
from tensorsmith.recipes.expand import load_plan

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _recipe(tmp_path: Path, targets: list, jobs: list | None = None) -> Path:
    shutil.copy(REPO / "sample_models" / "cnn.onnx", tmp_path / "cnn.onnx")
    data = {
        "version": 1,
        "output_dir": "out",
        "models": [{"name": "cnn", "path": "cnn.onnx"}],
        "targets": targets,
    }
    if jobs:
        data["jobs"] = jobs
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_gpus_expand_per_type_with_runs_on(tmp_path):
    path = _recipe(
        tmp_path,
        [
            {"name": "onnx", "runs_on": {"pool": "cpu"}},
            {"name": "trt", "to": "trt", "gpus": ["A100", "L4"], "runs_on": {"zone": "a"}},
        ],
        jobs=[{"name": "cnn-trt-L4", "runs_on": {"zone": "b"}}],
    )
    plan = load_plan(path)
    jobs = {j.name: j for j in plan.jobs}
    assert list(jobs) == ["cnn-onnx", "cnn-trt-A100", "cnn-trt-L4"]
    assert jobs["cnn-onnx"].runs_on == {"pool": "cpu"} and jobs["cnn-onnx"].gpu is None
    assert not jobs["cnn-onnx"].needs_gpu
    assert jobs["cnn-trt-A100"].gpu == "A100" and jobs["cnn-trt-A100"].runs_on == {"zone": "a"}
    assert jobs["cnn-trt-L4"].runs_on == {"zone": "b"}  # the job's override wins
    assert jobs["cnn-trt-A100"].needs_gpu
    assert jobs["cnn-trt-A100"].output_rel == "cnn.trt-A100.plan"


def test_gpu_template_field_and_prepare_only_needs_no_gpu(tmp_path):
    path = _recipe(tmp_path, [{"name": "trt", "to": "trt", "gpus": ["L4"], "prepare_only": True}])
    text = path.read_text().replace("output_dir: out", "output_dir: out\noutput: '{gpu}/{model}{ext}'")
    path.write_text(text)
    job = load_plan(path).jobs[0]
    assert job.output_rel == "L4/cnn.plan" and not job.needs_gpu


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"name": "x", "to": "onnx", "gpus": ["A100"]}, "GPU types are for engine builds"),
        ({"name": "x", "to": "trt", "gpus": ["A100", "A100"]}, "a GPU type twice"),
        ({"name": "x", "to": "trt", "gpus": []}, "targets[0].gpus"),
        ({"name": "x", "runs_on": ["pool"]}, "targets[0].runs_on"),
        ({"name": "x", "run_on": {"a": "b"}}, "did you mean 'runs_on'"),
    ],
)
def test_bad_placement_keys_exit_2_with_the_line(tmp_path, target, message):
    path = _recipe(tmp_path, [target])
    with pytest.raises(UsageError, match=r"r\.yaml:\d+") as err:
        load_plan(path)
    assert message in str(err.value)


def test_label_selector_matching():
    from tensorsmith.recipes.ray_executor import matches, unplaceable

    labels = {"pool": "w", "ray.io/accelerator-type": "L4"}
    assert matches({"pool": "w"}, labels)
    assert not matches({"pool": "cpu"}, labels)
    assert matches({"pool": "!cpu"}, labels) and not matches({"pool": "!w"}, labels)
    assert matches({"ray.io/accelerator-type": "in(A100, L4)"}, labels)
    assert not matches({"ray.io/accelerator-type": "!in(A100,L4)"}, labels)
    assert not matches({"zone": "a"}, labels) and matches({"zone": "!a"}, labels)

    from tensorsmith.recipes.expand import Job

    def job(**kw) -> Job:
        base = dict(
            name="j",
            model="m",
            target="t",
            source="s",
            source_format="onnx",
            to="onnx",
            output="o",
            output_rel="o",
            output_dir="d",
            options={},
            function="f",
        )
        return Job(**{**base, **kw})

    nodes = [
        {"Labels": {"pool": "w"}, "Resources": {"CPU": 2.0}},
        {"Labels": {"pool": "g", "ray.io/accelerator-type": "A100"}, "Resources": {"CPU": 1.0, "GPU": 1.0}},
    ]
    assert unplaceable(job(runs_on={"pool": "w"}), nodes, 1.0) is None
    assert "pool=mars" in unplaceable(job(runs_on={"pool": "mars"}), nodes, 1.0)
    assert "4 CPU" in unplaceable(job(runs_on={"pool": "w"}), nodes, 4.0)
    trt = job(to="trt", gpu="A100")
    assert unplaceable(trt, nodes, 1.0) is None
    assert "1 GPU" in unplaceable(job(to="trt", runs_on={"pool": "w"}), nodes, 1.0)
    assert "accelerator-type=L4" in unplaceable(job(to="trt", gpu="L4"), nodes, 1.0)


def test_executor_flags(tmp_path):
    path = _recipe(tmp_path, [{"name": "onnx"}])
    bad = runner.invoke(app, ["run", str(path), "--executor", "slurm"])
    assert bad.exit_code == 2 and "known executors: local, ray" in bad.output
    bad = runner.invoke(app, ["run", str(path), "--ray-address", "127.0.0.1:1"])
    assert bad.exit_code == 2 and "--ray-address needs --executor ray" in bad.output


def test_ray_is_imported_only_for_the_ray_executor():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from tensorsmith.cli import app\n"
        "import tensorsmith.recipes.runner, tensorsmith.recipes.executors\n"
        "assert CliRunner().invoke(app, ['run', '--help']).exit_code == 0\n"
        "print('ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_two_local_runs_at_once_share_the_folder(tmp_path):
    """The local pool too: two runs at once on one output folder both pass, the manifest
    is merged (every job recorded), and a third run finds everything cached."""
    import threading

    from tensorsmith.recipes import cache, run_recipe

    shutil.copy(REPO / "sample_models" / "resblock.onnx", tmp_path / "resblock.onnx")
    path = _recipe(tmp_path, [{"name": "onnx"}])
    data = yaml.safe_load(path.read_text())
    data["models"].append({"name": "resblock", "path": "resblock.onnx"})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    results: dict = {}

    def go(key, only):
        results[key] = run_recipe(path, workers=1, only=only)

    threads = [
        threading.Thread(target=go, args=("a", ["cnn-*"])),
        threading.Thread(target=go, args=("b", None)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["a"].exit_code == 0 and results["b"].exit_code == 0
    manifest = cache.Manifest.load(tmp_path / "out" / "tensorsmith-manifest.json")
    assert sorted(manifest.jobs) == ["cnn-onnx", "resblock-onnx"]
    assert all(cache.outputs_intact(e, tmp_path / "out") for e in manifest.jobs.values())
    third = run_recipe(path, workers=1)
    assert {r["status"] for r in third.records} == {"cached"}
    assert not (tmp_path / "out" / ".tensorsmith-tmp").exists()
