"""`tensorsmith run RECIPE.yaml`: parallel jobs, reports, the cache, failures, SIGKILL.

Every run here goes through the real worker processes (spawned), on copies of the
sample ONNX models in a temporary folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from typer.testing import CliRunner

from tensorsmith.cli import app

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_models"
MANIFEST = "tensorsmith-manifest.json"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_recipe(folder: Path, recipe: dict, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _invoke(*args: str):
    return CliRunner().invoke(app, ["run", *args])


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    """A folder with copies of three sample models (the tests change and break them)."""
    models = tmp_path / "models"
    models.mkdir()
    for name in ("cnn", "resblock", "mobilenet_block"):
        shutil.copy(SAMPLES / f"{name}.onnx", models / f"{name}.onnx")
    return tmp_path


def _matrix_recipe() -> dict:
    return {
        "version": 1,
        "output_dir": "out",
        "output": "{model}/{target}{ext}",
        "defaults": {"rtol": 1e-4, "atol": 1e-5},
        "models": [
            {"name": "cnn", "path": "models/cnn.onnx", "input_shape": {"input": "1x3x32x32"}},
            {"name": "resblock", "path": "models/resblock.onnx"},
            {"name": "mobilenet", "path": "models/mobilenet_block.onnx"},
        ],
        "targets": [
            {"name": "full", "to": "onnx"},
            {
                "name": "cleanup",
                "to": "onnx",
                "passes": ["remove-dropout", "remove-identity", "remove-dead-code"],
            },
        ],
    }


def _feeds(path: Path) -> dict:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) else 2 for d in inp.shape]
        feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _run_model(path: Path, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_matrix_runs_in_parallel_writes_reports_and_caches(work: Path):
    recipe = _write_recipe(work, _matrix_recipe())
    reports = work / "reports"
    args = [
        str(recipe),
        "--jobs",
        "2",
        "--report-json",
        str(reports / "run.json"),
        "--junit",
        str(reports / "junit.xml"),
        "--summary-md",
        str(reports / "summary.md"),
    ]
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    out = work / "out"
    report = json.loads((reports / "run.json").read_text())
    assert report["counts"] == {"total": 6, "ok": 6, "cached": 0, "failed": 0, "would-run": 0}
    assert report["workers"] == 2
    names = [j["name"] for j in report["jobs"]]
    assert names == [
        "cnn-full",
        "cnn-cleanup",
        "resblock-full",
        "resblock-cleanup",
        "mobilenet-full",
        "mobilenet-cleanup",
    ]
    # two worker processes really ran jobs
    assert len({j["worker_pid"] for j in report["jobs"]}) == 2
    manifest = json.loads((out / MANIFEST).read_text())
    for job in report["jobs"]:
        target = out / job["output"]
        assert target.is_file()
        onnx.checker.check_model(onnx.load(str(target)))
        entry = manifest["jobs"][job["name"]]
        assert entry["status"] == "ok" and entry["key"] == job["key"]
        assert entry["outputs"][0]["sha256"] == _sha(target)
        assert entry["inputs"]["source"]["files"]
        assert entry["versions"]["onnxruntime"] == ort.__version__
        assert entry["seconds"]["total"] > 0 and "verify" in entry["seconds"]
        ver = job["verification"]
        assert ver["passed"] and ver["max_abs_diff"] <= 1e-5 + 1e-4 * max(o["scale"] for o in ver["outputs"])
    # the numbers are real: the optimized model matches its source in onnxruntime
    src, opt = work / "models" / "resblock.onnx", out / "resblock" / "full.onnx"
    feeds = _feeds(src)
    for a, b in zip(_run_model(src, feeds), _run_model(opt, feeds), strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    full = next(j for j in report["jobs"] if j["name"] == "cnn-full")
    assert full["report"]["ops_after"].get("BatchNormalization", 0) == 0  # fused
    cleanup = next(j for j in report["jobs"] if j["name"] == "cnn-cleanup")
    assert cleanup["report"]["ops_after"].get("BatchNormalization", 0) > 0  # only the passes asked for

    suite = ET.parse(reports / "junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "6" and suite.get("failures") == "0"
    assert len(suite.findall("testcase")) == 6
    summary = (reports / "summary.md").read_text()
    assert "**6 job(s): 6 ok**" in summary and "`mobilenet-cleanup`" in summary

    # second run: everything cached, no conversion work (outputs untouched)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.onnx")}
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    report2 = json.loads((reports / "run.json").read_text())
    assert report2["counts"]["cached"] == 6 and report2["workers"] == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.onnx")} == mtimes
    cached = next(j for j in report2["jobs"] if j["name"] == "resblock-full")
    assert (
        cached["verification"]["max_abs_diff"]
        == next(j for j in report["jobs"] if j["name"] == "resblock-full")["verification"]["max_abs_diff"]
    )
    assert ET.parse(reports / "junit.xml").getroot().find("testsuite").get("failures") == "0"

    # a change to one model re-runs only its jobs
    model = onnx.load(str(work / "models" / "resblock.onnx"))
    model.doc_string = "retrained"
    onnx.save(model, str(work / "models" / "resblock.onnx"))
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    report3 = json.loads((reports / "run.json").read_text())
    status = {j["name"]: j["status"] for j in report3["jobs"]}
    assert status == {
        "cnn-full": "cached",
        "cnn-cleanup": "cached",
        "resblock-full": "ok",
        "resblock-cleanup": "ok",
        "mobilenet-full": "cached",
        "mobilenet-cleanup": "cached",
    }
    assert {j["why"] for j in report3["jobs"] if j["status"] == "ok"} == {"source changed"}

    # an output changed behind our back is rebuilt; --force rebuilds everything
    (out / "cnn" / "full.onnx").write_bytes(b"tampered")
    result = _invoke(*args[:1], "--report-json", str(reports / "run.json"))
    assert result.exit_code == 0, result.output
    status = {j["name"]: j["status"] for j in json.loads((reports / "run.json").read_text())["jobs"]}
    assert status["cnn-full"] == "ok" and status["cnn-cleanup"] == "cached"
    onnx.checker.check_model(onnx.load(str(out / "cnn" / "full.onnx")))
    result = _invoke(
        *args[:1], "--force", "--only", "mobilenet-*", "--report-json", str(reports / "run.json")
    )
    assert result.exit_code == 0, result.output
    report5 = json.loads((reports / "run.json").read_text())
    assert [(j["name"], j["status"]) for j in report5["jobs"]] == [
        ("mobilenet-full", "ok"),
        ("mobilenet-cleanup", "ok"),
    ]
    # --only keeps the other jobs' manifest entries
    assert len(json.loads((out / MANIFEST).read_text())["jobs"]) == 6
    assert not (out / ".tensorsmith-tmp").exists()


def test_corrupt_model_fails_only_its_jobs(work: Path):
    data = (work / "models" / "resblock.onnx").read_bytes()
    (work / "models" / "resblock.onnx").write_bytes(data[: len(data) // 3])
    recipe = _matrix_recipe()
    recipe["targets"] = recipe["targets"][:1]
    path = _write_recipe(work, recipe)
    reports = work / "reports"
    result = _invoke(
        str(path),
        "--jobs",
        "2",
        "--junit",
        str(reports / "junit.xml"),
        "--report-json",
        str(reports / "run.json"),
        "--summary-md",
        str(reports / "summary.md"),
    )
    assert result.exit_code == 1, result.output
    report = json.loads((reports / "run.json").read_text())
    status = {j["name"]: j["status"] for j in report["jobs"]}
    assert status == {"cnn-full": "ok", "resblock-full": "failed", "mobilenet-full": "ok"}
    bad = next(j for j in report["jobs"] if j["name"] == "resblock-full")
    assert (
        bad["exit_code"] == 2
        and "resblock.onnx" in bad["error"]
        and "not a readable ONNX model" in bad["error"]
    )
    assert (work / "out" / "cnn" / "full.onnx").is_file() and (
        work / "out" / "mobilenet" / "full.onnx"
    ).is_file()
    assert not (work / "out" / "resblock").exists()

    suite = ET.parse(reports / "junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    failure = cases["resblock-full"].find("failure")
    assert failure is not None and "not a readable ONNX model" in failure.get("message")
    assert "\n" not in failure.get("message")
    assert cases["cnn-full"].find("failure") is None
    assert "### Failures" in (reports / "summary.md").read_text()
    manifest = json.loads((work / "out" / MANIFEST).read_text())
    assert manifest["jobs"]["resblock-full"]["status"] == "failed"
    # fixed model: the next run redoes only the failed job
    shutil.copy(SAMPLES / "resblock.onnx", work / "models" / "resblock.onnx")
    result = _invoke(str(path), "--report-json", str(reports / "run.json"))
    assert result.exit_code == 0, result.output
    status = {j["name"]: j["status"] for j in json.loads((reports / "run.json").read_text())["jobs"]}
    assert status == {"cnn-full": "cached", "resblock-full": "ok", "mobilenet-full": "cached"}


def test_verification_failure_is_a_failed_job_with_its_numbers(work: Path):
    recipe = {
        "output_dir": "out",
        "models": [{"name": "cnn", "path": "models/cnn.onnx"}],
        "targets": [
            {"name": "exact", "to": "onnx", "rtol": 0.0, "atol": 0.0},
            {"name": "loose", "to": "onnx"},
        ],
    }
    path = _write_recipe(work, recipe)
    result = _invoke(str(path), "--report-json", str(work / "run.json"), "--junit", str(work / "junit.xml"))
    assert result.exit_code == 1, result.output
    jobs = {j["name"]: j for j in json.loads((work / "run.json").read_text())["jobs"]}
    exact = jobs["cnn-exact"]
    assert (
        exact["status"] == "failed" and exact["exit_code"] == 4 and exact["error_type"] == "VerificationError"
    )
    assert exact["verification"]["passed"] is False and exact["verification"]["max_abs_diff"] > 0
    assert not (work / "out" / "cnn.exact.onnx").exists()  # nothing written for a failed check
    assert jobs["cnn-loose"]["status"] == "ok" and (work / "out" / "cnn.loose.onnx").is_file()
    case = [
        c for c in ET.parse(work / "junit.xml").getroot().iter("testcase") if c.get("name") == "cnn-exact"
    ][0]
    assert case.find("failure").get("type") == "VerificationError"
    assert "max_abs_diff" in case.find("failure").text


def test_dry_run_runs_nothing_and_only_selects(work: Path):
    path = _write_recipe(work, _matrix_recipe())
    result = _invoke(str(path), "--dry-run", "--only", "cnn-*", "--report-json", str(work / "dry.json"))
    assert result.exit_code == 0, result.output
    report = json.loads((work / "dry.json").read_text())
    assert [(j["name"], j["status"]) for j in report["jobs"]] == [
        ("cnn-full", "would-run"),
        ("cnn-cleanup", "would-run"),
    ]
    assert report["jobs"][1]["command"].startswith("tensorsmith optimize ")
    assert "--passes remove-dropout,remove-identity,remove-dead-code" in report["jobs"][1]["command"]
    assert not (work / "out").exists()
    result = _invoke(str(path), "--only", "nope-*")
    assert result.exit_code == 2 and "--only 'nope-*' matches no job" in result.output


def test_dump_recipe_round_trip(work: Path, monkeypatch):
    """`optimize ... --dump-recipe` -> recipe -> `run` makes the very same file."""
    monkeypatch.chdir(work)
    (work / "direct").mkdir()
    args = [
        "models/cnn.onnx",
        "-o",
        "direct/cnn.opt.onnx",
        "--skip",
        "eliminate-cse",
        "--input-shape",
        "input=1x3x32x32",
        "--rtol",
        "1e-3",
    ]
    runner = CliRunner()
    dumped = runner.invoke(app, ["optimize", *args, "--dump-recipe"])
    assert dumped.exit_code == 0, dumped.output
    recipe = yaml.safe_load(dumped.stdout)
    assert recipe["models"] == [
        {"name": "cnn", "path": "models/cnn.onnx", "input_shape": ["input=1x3x32x32"]}
    ]
    assert recipe["targets"] == [{"name": "onnx", "to": "onnx", "skip": ["eliminate-cse"], "rtol": 0.001}]
    assert not (work / "direct" / "cnn.opt.onnx").exists()  # --dump-recipe runs nothing
    direct = runner.invoke(app, ["optimize", *args])
    assert direct.exit_code == 0, direct.output
    reference = _sha(work / "direct" / "cnn.opt.onnx")
    (work / "direct" / "cnn.opt.onnx").unlink()
    (work / "dumped.yaml").write_text(dumped.stdout)
    result = _invoke("dumped.yaml", "--report-json", "run.json")
    assert result.exit_code == 0, result.output
    assert _sha(work / "direct" / "cnn.opt.onnx") == reference
    job = json.loads((work / "run.json").read_text())["jobs"][0]
    assert (
        job["command"].split()[:2] == ["tensorsmith", "optimize"] and "--skip eliminate-cse" in job["command"]
    )
    # convert too, with --from
    dumped = runner.invoke(
        app,
        [
            "convert",
            "models/cnn.onnx",
            "--to",
            "onnx",
            "--from",
            "onnx",
            "-o",
            "x/y.onnx",
            "--no-verify",
            "--dump-recipe",
        ],
    )
    assert dumped.exit_code == 0, dumped.output
    recipe = yaml.safe_load(dumped.stdout)
    assert recipe["models"][0]["from"] == "onnx" and recipe["targets"][0]["verify"] is False
    assert recipe["output_dir"] == "x" and recipe["output"] == "y.onnx"


def test_a_dying_worker_fails_its_job_only(work: Path):
    """A worker killed mid-job (a native crash, the OOM killer) breaks the process pool;
    the jobs in flight run again one at a time, so only the culprit fails."""
    from tensorsmith.recipes import runner
    from tensorsmith.recipes.expand import load_plan

    shutil.copy(SAMPLES / "transformer.onnx", work / "models" / "transformer.onnx")
    recipe = _matrix_recipe()
    recipe["targets"] = recipe["targets"][:1]
    recipe["models"][1] = {
        "name": "big",
        "path": "models/transformer.onnx",
        "input_shape": {"x": "8x1024x64"},
    }
    recipe["models"] += [{"name": f"cnn{i}", "path": "models/cnn.onnx"} for i in (2, 3)]  # still pending then
    plan = load_plan(_write_recipe(work, recipe))

    class KillBig(runner.Events):
        killed: list[int] = []

        def job_worker(self, name: str, pid: int) -> None:
            if name == "big-full":
                self.killed.append(pid)
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)  # let the pool notice first: the next submit then meets a broken pool

    events = KillBig()
    result = runner.run(plan, plan.jobs, workers=2, events=events)
    status = {r["name"]: r["status"] for r in result.records}
    assert status == {
        "cnn-full": "ok",
        "big-full": "failed",
        "mobilenet-full": "ok",
        "cnn2-full": "ok",
        "cnn3-full": "ok",
    }
    assert events.killed
    bad = next(r for r in result.records if r["name"] == "big-full")
    assert bad["error_type"] == "WorkerDied" and "worker process running this job died" in bad["error"]
    assert result.exit_code == 1
    assert not (work / "out" / "big").exists() and not (work / "out" / ".tensorsmith-tmp").exists()


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "tensorsmith"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from tensorsmith.cli import app; app()"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_mid_run_then_rerun_completes(work: Path):
    """kill -9 after the first job finished: no partial output; the re-run does the rest only."""
    shutil.copy(SAMPLES / "transformer.onnx", work / "models" / "transformer.onnx")
    recipe = {
        "output_dir": "out",
        "output": "{job}{ext}",
        "models": [
            {"name": "cnn", "path": "models/cnn.onnx"},
            # big verification inputs: about a second a job, so the kill lands mid-run
            {"name": "big", "path": "models/transformer.onnx", "input_shape": {"x": "8x1024x64"}},
        ],
        "targets": [{"name": "a", "to": "onnx"}, {"name": "b", "to": "onnx", "skip": ["eliminate-cse"]}],
    }
    path = _write_recipe(work, recipe)
    out = work / "out"
    proc = subprocess.Popen(
        [*_cli(), "run", str(path), "--jobs", "1"],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    done: list[str] = []
    manifest: dict = {}
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / MANIFEST).exists():
                manifest = json.loads((out / MANIFEST).read_text())  # written atomically: always whole
                done = [n for n, e in manifest["jobs"].items() if e["status"] == "ok"]
                if done:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert done and len(done) < 4
    # the orphaned worker notices and exits by itself
    worker = manifest["jobs"][done[0]]["worker_pid"]
    t0 = time.monotonic()
    while _alive(worker) and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert not _alive(worker)
    # whatever is in place is whole: a complete model or nothing
    for f in out.glob("*.onnx"):
        onnx.checker.check_model(onnx.load(str(f)))
    rerun = subprocess.run(
        [*_cli(), "run", str(path), "--jobs", "1", "--report-json", "run.json"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads((work / "run.json").read_text())
    status = {j["name"]: j["status"] for j in report["jobs"]}
    assert all(status[n] == "cached" for n in done), [
        (j["name"], j["status"], j.get("why")) for j in report["jobs"]
    ]
    assert all(s == "ok" for n, s in status.items() if n not in done)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".tensorsmith.lock", MANIFEST, "big-a.onnx", "big-b.onnx", "cnn-a.onnx", "cnn-b.onnx"]
    )
    leftovers = [p for p in work.rglob("*") if p.name.endswith(".tmp") or ".tensorsmith-tmp" in p.parts]
    assert leftovers == []
    for f in out.glob("*.onnx"):
        onnx.checker.check_model(onnx.load(str(f)))


@pytest.mark.slow
def test_precision_trt_and_framework_targets(work: Path):
    """Targets from the other issues through a recipe: a TorchScript source, fp16, int8 and
    a TensorRT-ready ONNX (prepare_only: no TensorRT needed); numbers checked against the source."""
    torch = pytest.importorskip("torch")
    scripted = SAMPLES / "frameworks" / "cnn_torchscript.pt"
    if not scripted.exists():
        pytest.skip("sample_models/frameworks not built (python sample_models/build.py)")
    from tensorsmith.jobs import supported_precisions

    if not {"fp16", "int8"} <= set(supported_precisions()):
        pytest.skip("this tensorsmith has no fp16/int8 precision step")
    recipe = {
        "output_dir": "out",
        "output": "{model}/{target}{ext}",
        "defaults": {"calib": "random"},  # used by the int8 job only
        "models": [
            {"name": "cnn", "path": "models/cnn.onnx"},
            {"name": "torch", "path": str(scripted), "input_shape": {"x": "1x3x32x32"}},
        ],
        "targets": [
            {"name": "fp32", "to": "onnx"},
            {"name": "fp16", "to": "onnx", "precision": "fp16"},
            {"name": "int8", "to": "onnx", "precision": "int8", "min_speedup": 0},
            {"name": "trt", "to": "trt", "prepare_only": True},
        ],
        "jobs": [{"name": "torch-int8", "enabled": False}, {"name": "torch-trt", "enabled": False}],
    }
    path = _write_recipe(work, recipe)
    result = _invoke(
        str(path),
        "--jobs",
        "2",
        "--report-json",
        str(work / "run.json"),
        "--summary-md",
        str(work / "summary.md"),
    )
    assert result.exit_code == 0, result.output
    jobs = {j["name"]: j for j in json.loads((work / "run.json").read_text())["jobs"]}
    assert set(jobs) == {"cnn-fp32", "cnn-fp16", "cnn-int8", "cnn-trt", "torch-fp32", "torch-fp16"}
    out = work / "out"
    assert jobs["torch-fp32"]["function"] == "convert_file"
    assert jobs["torch-fp16"]["function"] == "convert_file(precision)"  # passes run once (issue 11)
    assert jobs["cnn-fp32"]["options"] == {"to": "onnx"}  # the default calib did not reach fp32 jobs

    # the converted model matches PyTorch's own output
    module = torch.jit.load(str(scripted)).eval()
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    got = _run_model(out / "torch" / "fp32.onnx", {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # fp16: half the weights' bytes, fp32 inputs kept, close to the source
    half = onnx.load(str(out / "cnn" / "fp16.onnx"))
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in half.graph.initializer)
    feeds = _feeds(work / "models" / "cnn.onnx")
    ref = _run_model(work / "models" / "cnn.onnx", feeds)[0]
    np.testing.assert_allclose(_run_model(out / "cnn" / "fp16.onnx", feeds)[0], ref, rtol=1e-2, atol=1e-2)
    assert jobs["cnn-fp16"]["report"]["precision"]["gate"]["passed"] is True
    assert jobs["cnn-fp16"]["report"]["size_after"] < 0.6 * jobs["cnn-fp16"]["report"]["size_before"]
    # int8: Q/DQ in the graph
    ops = {n.op_type for n in onnx.load(str(out / "cnn" / "int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # trt, prepare_only: the ready-to-build ONNX and its lint report, and the command to build it
    trt = jobs["cnn-trt"]
    assert [o["path"] for o in trt["outputs"]] == ["cnn/trt.trt.onnx", "cnn/trt.trt.lint.json"]
    assert (out / "cnn" / "trt.trt.onnx").is_file() and not (out / "cnn" / "trt.plan").exists()
    assert trt["report"]["build_command"].startswith("tensorsmith build ")
    assert str(out / "cnn" / "trt.trt.onnx") in trt["report"]["build_command"]  # final paths, not staging
    assert "TensorRT engines to build on a GPU machine" in (work / "summary.md").read_text()


def test_external_data_outputs_are_recorded_and_stale_files_removed(work: Path):
    recipe = {
        "output_dir": "out",
        "models": [{"name": "res", "path": "models/resblock.onnx"}],
        "targets": [{"name": "ext", "to": "onnx", "external_data": True}],
    }
    path = _write_recipe(work, recipe)
    result = _invoke(str(path), "--report-json", str(work / "run.json"))
    assert result.exit_code == 0, result.output
    job = json.loads((work / "run.json").read_text())["jobs"][0]
    assert [o["path"] for o in job["outputs"]] == ["res.ext.onnx", "res.ext.onnx.data"]
    data = work / "out" / "res.ext.onnx.data"
    assert data.is_file() and job["outputs"][1]["sha256"] == _sha(data)
    onnx.checker.check_model(str(work / "out" / "res.ext.onnx"))
    # the same job without external data: the old .onnx.data must not linger
    recipe["targets"][0]["external_data"] = False
    _write_recipe(work, recipe)
    result = _invoke(str(path), "--report-json", str(work / "run.json"))
    assert result.exit_code == 0, result.output
    job = json.loads((work / "run.json").read_text())["jobs"][0]
    assert job["why"] == "options changed" and [o["path"] for o in job["outputs"]] == ["res.ext.onnx"]
    assert not data.exists()
