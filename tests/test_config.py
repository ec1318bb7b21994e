"""One job configuration (tensorsmith.config), the target registry, and the CLI flag table agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tensorsmith import config
from tensorsmith.cli import app
from tensorsmith.cli import options as cli_options
from tensorsmith.convert.targets import TARGETS, Report, get_target
from tensorsmith.errors import UsageError
from tensorsmith.recipes import schema

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
runner = CliRunner()


def test_every_key_is_declared_once_in_one_stage():
    keys = [k for model in config.STAGES.values() for k in config.keys_of(model)]
    assert len(keys) == len(set(keys))
    assert set(config.MODEL_KEYS) | set(config.TARGET_KEYS) == {*keys, "to"}
    assert not set(config.MODEL_KEYS) & set(config.TARGET_KEYS)


def test_recipe_sections_are_the_config_fields():
    assert schema.SOURCE_KEYS == config.MODEL_KEYS
    assert tuple(f.alias or n for n, f in schema.SourceOptions.model_fields.items()) == config.MODEL_KEYS
    assert tuple(f.alias or n for n, f in schema.TargetOptions.model_fields.items()) == config.TARGET_KEYS


def test_flat_options_round_trip_and_normalise():
    flat = {
        "to": "trt",
        "from": "onnx",
        "input_shape": {"x": [1, 3, 32, 32]},
        "skip": "fuse-conv-bn,eliminate-cse",
        "rtol": 1e-3,
        "precision": "FP16",
        "shapes": {"x": "1x3x32x32:4x3x32x32:8x3x32x32"},
        "workspace": 1024,
        "external_data": False,
    }
    cfg = config.JobConfig.from_options(flat)
    assert cfg.optimization.skip == ["fuse-conv-bn", "eliminate-cse"]
    assert cfg.source.input_shape == ["x=1x3x32x32"]
    assert cfg.precision.precision == "fp16"
    assert cfg.trt.workspace == "1024"
    out = cfg.options()
    assert out["to"] == "trt" and out["from"] == "onnx" and out["external_data"] is False
    assert config.JobConfig.from_options(out) == cfg


@pytest.mark.parametrize(
    "flat, words",
    [
        ({"to": "bogus"}, "unknown target 'bogus'"),
        ({"passes": ["nope"]}, "unknown pass 'nope'"),
        ({"precision": "int4"}, "unsupported precision 'int4'"),
        ({"rtol": -1}, "greater than or equal to 0"),
        ({"no_such_option": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_options_are_refused(flat, words):
    with pytest.raises(Exception) as info:
        config.JobConfig.from_options(flat)
    assert words in str(info.value)


def test_every_cli_flag_is_a_config_key():
    for name in {*cli_options.OPTIMIZE_FLAGS, *cli_options.CONVERT_FLAGS}:
        if name in cli_options.DISPLAY or name == "output":
            continue
        key = cli_options.PARAM_KEYS.get(name, name)
        assert key == "to" or key in config.KEY_STAGE, name
    # and every option of a stage a command can set has its flag (pass_options: recipes only)
    settable = {cli_options.PARAM_KEYS.get(n, n) for n in cli_options.CONVERT_FLAGS}
    assert set(config.KEY_STAGE) - settable == {"pass_options"}


def test_every_target_implements_the_protocol():
    for name in TARGETS:
        target = get_target(name)
        assert target.name == name
        for attr in ("description", "extension", "writes_onnx", "needs", "lowers_in_graph"):
            assert hasattr(target, attr), (name, attr)
        for method in ("applies", "refusal", "check_source", "plan", "check_output", "missing", "run"):
            assert callable(getattr(target, method)), (name, method)
    with pytest.raises(UsageError, match="unknown target 'bogus'"):
        get_target("bogus")


def test_cli_and_dumped_recipe_build_the_same_config(tmp_path):
    args = [
        "optimize",
        str(SAMPLES / "cnn.onnx"),
        "-o",
        str(tmp_path / "o.onnx"),
        "--skip",
        "fuse-conv-bn",
        "--rtol",
        "0.001",
        "--no-verify",
        "--input-shape",
        "input=1x3x32x32",
    ]
    r = runner.invoke(app, [*args, "--dump-recipe"])
    assert r.exit_code == 0, r.output
    recipe = schema.Recipe.model_validate(yaml.safe_load(r.stdout))
    from_recipe = {
        **recipe.models[0].model_dump(by_alias=True, exclude_none=True, exclude={"name", "path"}),
        **recipe.targets[0].model_dump(by_alias=True, exclude_none=True, exclude={"name"}),
    }
    params = {"input_path": args[1], "output": tmp_path / "o.onnx", "skip": ["fuse-conv-bn"], "rtol": 0.001}
    params.update(
        no_verify=True, input_shape=["input=1x3x32x32"], json_out=False, explain=False, dump_recipe=True
    )
    from_cli = cli_options.job_config(params)
    assert config.JobConfig.from_options(from_recipe) == from_cli.model_copy(update={"to": "onnx"})


def test_reports_render_and_serialise(tmp_path):
    out = tmp_path / "o.onnx"
    r = runner.invoke(
        app,
        [
            "convert",
            str(SAMPLES / "cnn.onnx"),
            "--to",
            "trt",
            "--prepare-only",
            "-o",
            str(tmp_path / "o.plan"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["status"] == "prepared" and data["onnx"]["verification"]["passed"]
    from tensorsmith import jobs

    _, kwargs = jobs.build({"to": "onnx"}, "onnx", "onnx", {"to"})
    report = jobs.execute(jobs.Job(str(SAMPLES / "cnn.onnx"), "onnx", "onnx", kwargs), out, lambda _m: None)
    assert isinstance(report, Report)
    from rich.console import Console

    console = Console(record=True, width=120)
    report.render(console)
    assert "fuse-conv-bn" in console.export_text() and report.to_dict()["status"] == "ok"


def test_framework_source_lowered_runs_the_passes_once(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import importlib

    calls = []
    # both modules (convert.job imports load_and_optimize by name)
    modules = [importlib.import_module(n) for n in ("tensorsmith.optimizer", "tensorsmith.convert.job")]
    for module in modules:
        real = module.load_and_optimize

        def counting(*args, _real=real, **kwargs):
            calls.append(args[0])
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, "load_and_optimize", counting)
    scripted = SAMPLES / "frameworks" / "cnn_torchscript.pt"
    if not scripted.exists():
        pytest.skip("sample_models/frameworks not built")
    out = tmp_path / "t.onnx"
    r = runner.invoke(
        app,
        [
            "convert",
            str(scripted),
            "-o",
            str(out),
            "--input-shape",
            "x=1x3x32x32",
            "--precision",
            "fp16",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert len(calls) == 1, calls  # the passes ran on the converted model only, not again on its FP32 copy
    assert data["passes"] and all(p["runs"] >= 1 for p in data["passes"])
    assert data["conversion"]["passes_verification"]["passed"]
    assert data["precision"]["precision"] == "fp16" and data["precision"]["gate"]["passed"]
    assert data["source_format"] == "torchscript" and out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.onnx"]  # no FP32 file left behind
