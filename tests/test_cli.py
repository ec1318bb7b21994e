"""The command line: every command, every exit code, bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import run
from typer.testing import CliRunner

from tensorsmith.cli import app

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def cnn(tmp_path):
    return SAMPLES / "cnn.onnx"


def test_help_lists_commands():
    r = invoke("--help")
    assert r.exit_code == 0
    for cmd in ("optimize", "convert", "inspect", "passes"):
        assert cmd in r.output


def test_help_and_onnx_work_import_no_framework(tmp_path):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from tensorsmith.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        f"r2 = CliRunner().invoke(app, ['optimize', r'{SAMPLES / 'cnn.onnx'}', '-o', r'{tmp_path / 'o.onnx'}'])\n"
        "assert r.exit_code == 0 and r2.exit_code == 0, r2.output\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'tensorrt', 'tf2onnx', 'keras') if m in sys.modules]\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_optimize_table(cnn, tmp_path):
    out = tmp_path / "cnn.opt.onnx"
    r = invoke("optimize", cnn, "-o", out)
    assert r.exit_code == 0, r.output
    assert out.exists()
    for word in ("BatchNormalization", "Dropout", "fuse-conv-bn", "verification", "pass"):
        assert word in r.output
    onnx.checker.check_model(onnx.load(out))


def test_optimize_json_and_numbers(cnn, tmp_path):
    out = tmp_path / "cnn.opt.onnx"
    r = invoke("optimize", cnn, "-o", out, "--json")
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout)
    assert j["status"] == "ok" and j["output"] == str(out)
    assert j["nodes_after"] < j["nodes_before"]
    assert "BatchNormalization" not in j["ops_after"] and "Dropout" not in j["ops_after"]
    names = [p["name"] for p in j["passes"]]
    assert "fuse-conv-bn" in names and all({"name", "modified", "seconds"} <= set(p) for p in j["passes"])
    v = j["verification"]
    assert v["passed"] and v["max_abs_diff"] <= 1e-4 and v["outputs"][0]["name"] == "logits"
    # independent check: the written file matches the source
    x = {"input": np.random.default_rng(5).standard_normal((3, 3, 32, 32)).astype(np.float32)}
    a, b = run(onnx.load(cnn), x)[0], run(onnx.load(out), x)[0]
    np.testing.assert_allclose(b, a, atol=1e-5 + 1e-4 * np.abs(a).max(), rtol=0)


def test_passes_and_skip(cnn, tmp_path):
    out = tmp_path / "o.onnx"
    r = invoke("optimize", cnn, "-o", out, "--passes", "remove-dropout,remove-dead-code", "--json")
    j = json.loads(r.stdout)
    assert [p["name"] for p in j["passes"]] == ["remove-dropout", "remove-dead-code"]
    assert "BatchNormalization" in j["ops_after"] and "Dropout" not in j["ops_after"]
    r = invoke("optimize", cnn, "-o", out, "--skip", "fuse-conv-bn", "--json")
    j = json.loads(r.stdout)
    assert "fuse-conv-bn" not in [p["name"] for p in j["passes"]]
    assert j["ops_after"]["BatchNormalization"] == 2


def test_verification_failure_exit_4_and_no_output(cnn, tmp_path):
    out = tmp_path / "o.onnx"
    # fusion changes rounding: a zero tolerance must fail
    r = invoke("optimize", cnn, "-o", out, "--rtol", "0", "--atol", "0")
    assert r.exit_code == 4, r.output
    assert "verification failed" in r.output
    assert not out.exists()
    assert os.listdir(tmp_path) == []
    r = invoke("optimize", cnn, "-o", out, "--rtol", "0", "--atol", "0", "--json")
    assert r.exit_code == 4
    j = json.loads(r.stdout)
    assert j["status"] == "verification-failed" and j["verification"]["passed"] is False
    assert not out.exists()


def test_no_verify(cnn, tmp_path):
    r = invoke("optimize", cnn, "-o", tmp_path / "o.onnx", "--no-verify", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["verification"] is None


def test_verify_data(cnn, tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, input=np.random.default_rng(0).standard_normal((4, 2, 3, 32, 32)).astype(np.float32))
    r = invoke("optimize", cnn, "-o", tmp_path / "o.onnx", "--verify-data", data, "--json")
    assert r.exit_code == 0, r.output
    v = json.loads(r.stdout)["verification"]
    assert v["samples"] == 4 and v["inputs"] == str(data)


def test_input_shape(cnn, tmp_path):
    r = invoke("optimize", cnn, "-o", tmp_path / "o.onnx", "--input-shape", "input=3x3x32x32", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["verification"]["input_shapes"]["input"] == [3, 3, 32, 32]


def test_source_that_fails_on_generated_inputs_points_to_verify_data(tmp_path):
    # the integer input must be 0..2 (it indexes a 3-row table through a Gather on a
    # computed index, so no bound can be guessed): generated values out of range
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[N] i) => (float[N, 2] y) {
            j = Mul (i, k)
            y = Gather (table, j)
        }"""
    )
    model.graph.initializer.extend(
        [
            onnx.numpy_helper.from_array(np.ones((3, 2), np.float32), "table"),
            onnx.numpy_helper.from_array(np.array(5, np.int64), "k"),
        ]
    )
    src = tmp_path / "g.onnx"
    onnx.save(model, src)
    r = invoke("optimize", src, "-o", tmp_path / "o.onnx")
    assert r.exit_code == 2
    assert "fails on generated inputs" in r.output and "--verify-data" in r.output
    data = tmp_path / "d.npz"
    np.savez(data, i=np.array([0, 0, 0]))
    r = invoke("optimize", src, "-o", tmp_path / "o.onnx", "--verify-data", data)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "make",
    [
        lambda p: None,  # missing
        lambda p: p.write_bytes(b""),  # empty
        lambda p: p.write_bytes(os.urandom(2048)),  # random bytes
        lambda p: p.mkdir(),  # a directory
        lambda p: p.write_bytes((SAMPLES / "cnn.onnx").read_bytes()[:5000]),  # truncated
    ],
    ids=["missing", "empty", "random", "directory", "truncated"],
)
def test_bad_inputs_exit_2_one_line(tmp_path, make):
    bad = tmp_path / "bad.onnx"
    make(bad)
    for cmd in (
        ["optimize", bad, "-o", tmp_path / "o.onnx"],
        ["inspect", bad],
        ["convert", bad, "--to", "onnx", "-o", tmp_path / "o.onnx"],
    ):
        r = invoke(*cmd)
        assert r.exit_code == 2, (cmd, r.output)
        assert "Traceback" not in r.output
        err_lines = [line for line in r.output.splitlines() if line.startswith("error:")]
        assert len(err_lines) == 1, r.output
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--input-shape", "input=1x3xfoo"], "bad shape"),
        (["--input-shape", "nope=1x3x32x32"], "unknown input"),
        (["--passes", "fold-constants,bogus"], "unknown pass 'bogus'"),
        (["--skip", "bogus"], "unknown pass 'bogus'"),
    ],
)
def test_bad_options_exit_2(cnn, tmp_path, args, words):
    r = invoke("optimize", cnn, "-o", tmp_path / "o.onnx", *args)
    assert r.exit_code == 2, r.output
    assert words in r.output
    assert not (tmp_path / "o.onnx").exists()


def test_output_folder_missing_is_created(cnn, tmp_path):
    # issue 12: a missing -o folder is created (it was refused with exit 2 "does not exist")
    r = invoke("optimize", cnn, "-o", tmp_path / "nope" / "o.onnx")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "nope").iterdir()) == ["o.onnx"]
    (tmp_path / "file").write_text("x")
    r = invoke("optimize", cnn, "-o", tmp_path / "file" / "o.onnx")
    assert r.exit_code == 2 and "is a file" in r.output, r.output


def test_convert_output_folder_missing_is_created(cnn, tmp_path):
    r = invoke("convert", cnn, "--to", "onnx", "-o", tmp_path / "a" / "b" / "c.onnx")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["c.onnx"]
    r = invoke("convert", cnn, "--to", "trt", "--prepare-only", "-o", tmp_path / "build" / "m.plan")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "build").iterdir()) == ["m.trt.lint.json", "m.trt.onnx"]


def test_failing_pass_exit_3(cnn, tmp_path, monkeypatch):
    from tensorsmith import passes as passes_mod
    from tensorsmith.passes.base import Pass

    class Broken(Pass):
        name = "broken"
        description = "raises"

        def call(self, model):
            raise ValueError("this pass is broken")

    monkeypatch.setitem(passes_mod.PASSES, "broken", Broken)
    r = invoke("optimize", cnn, "-o", tmp_path / "o.onnx", "--passes", "broken")
    assert r.exit_code == 3
    assert "pass 'broken' failed: this pass is broken" in r.output
    assert not (tmp_path / "o.onnx").exists()


def test_convert_onnx_to_onnx(cnn, tmp_path):
    r = invoke("convert", cnn, "--to", "onnx", "-o", tmp_path / "c.onnx", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["verification"]["passed"]
    r = invoke("convert", cnn, "--to", "bogus", "-o", tmp_path / "c2.onnx")
    assert r.exit_code == 2 and "unknown target" in r.output


def test_inspect(cnn):
    r = invoke("inspect", cnn, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["format"] == "onnx" and info["opset"] == 17
    assert info["inputs"][0]["name"] == "input" and info["inputs"][0]["shape"] == ["batch", 3, 32, 32]
    assert info["ops"]["BatchNormalization"] == 2
    w = sum(int(np.prod(i.dims)) for i in onnx.load(cnn).graph.initializer)
    assert info["parameters"] >= w
    r = invoke("inspect", cnn)
    assert r.exit_code == 0 and "[batch, 3, 32, 32]" in r.output


def test_passes_command():
    r = invoke("passes", "--json")
    rows = json.loads(r.stdout)
    from tensorsmith.passes import PASSES

    assert [row["name"] for row in rows] == list(PASSES)
    r = invoke("passes")
    assert all(name in r.output for name in PASSES)


def test_debug_shows_traceback(tmp_path):
    r = runner.invoke(
        app, ["--debug", "optimize", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.onnx")]
    )
    assert r.exit_code == 2


def test_cli_entry_point_runs(tmp_path):
    exe = Path(sys.executable).parent / "tensorsmith"
    p = subprocess.run(
        [str(exe), "optimize", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o.onnx")],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and p.stderr.startswith("error:")
