"""Bad recipes: exit 2 before any job starts, naming the file, the line and the key.

Also: the YAML loader keeps ``yaml.safe_load``'s semantics (and refuses what it
refuses), and the expansion of models x targets with job overrides.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tensorsmith.cli import app
from tensorsmith.errors import UsageError
from tensorsmith.recipes import yaml_lines
from tensorsmith.recipes.expand import load_plan

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"

GOOD_HEAD = """\
version: 1
output_dir: out
models:
  - name: cnn
    path: cnn.onnx
"""

BAD = {
    "invalid-yaml": (GOOD_HEAD + "  - name: [unclosed\n    path: x\n", 7, "invalid YAML"),
    "tab-indent": ("models:\n\t- name: cnn\n", 2, "invalid YAML"),
    "missing-model-path": (
        GOOD_HEAD + "  - name: resnet\n    path: models/resnet50.onnx\n",
        7,
        "models[1].path: no such file or folder: models/resnet50.onnx",
    ),
    "missing-path-key": (GOOD_HEAD + "  - name: resnet\n", 6, "models[1].path: required key is missing"),
    "unknown-target": (
        GOOD_HEAD + "targets:\n  - name: engine\n    to: tensorrt-9\n",
        8,
        "targets[0].to: unknown target 'tensorrt-9'",
    ),
    "unknown-precision": (
        GOOD_HEAD + "targets:\n  - to: onnx\n    precision: int4\n",
        8,
        "targets[0].precision: unknown or unsupported precision 'int4'",
    ),
    "unknown-source-format": (
        GOOD_HEAD + "    from: caffe\n",
        6,
        "models[0].from: unknown source format 'caffe'",
    ),
    "unknown-pass": (
        GOOD_HEAD + "targets:\n  - to: onnx\n    passes: [fold-constants, fuse-everything]\n",
        8,
        "unknown pass 'fuse-everything'",
    ),
    "duplicate-job-name": (
        GOOD_HEAD + "jobs:\n  - name: cnn-onnx\n    atol: 1.0e-3\n  - name: cnn-onnx\n    rtol: 1.0e-3\n",
        9,
        "jobs[1].name: duplicate job name 'cnn-onnx' (first on line 7)",
    ),
    "duplicate-model-name": (
        GOOD_HEAD + "  - name: cnn\n    path: cnn.onnx\n",
        6,
        "duplicate model name 'cnn'",
    ),
    "matrix-name-collision": (
        GOOD_HEAD + "  - name: cnn-a\n    path: cnn.onnx\ntargets:\n  - name: a-b\n  - name: b\n",
        6,
        "duplicate job name 'cnn-a-b'",
    ),
    "duplicate-target": (
        GOOD_HEAD + "targets:\n  - to: onnx\n  - to: onnx\n",
        8,
        "duplicate target name 'onnx'",
    ),
    "template-escapes": (
        GOOD_HEAD.replace("output_dir: out\n", 'output_dir: out\noutput: "../{model}.onnx"\n'),
        3,
        "output: '../cnn.onnx' escapes the output folder",
    ),
    "template-escapes-deeper": (
        GOOD_HEAD.replace("output_dir: out\n", 'output_dir: out\noutput: "{model}/../../x/{target}.onnx"\n'),
        3,
        "escapes the output folder",
    ),
    "job-output-escapes": (
        GOOD_HEAD + "jobs:\n  - name: cnn-onnx\n    output: ../../etc/cnn.onnx\n",
        8,
        "jobs[0].output: '../../etc/cnn.onnx' escapes the output folder",
    ),
    "template-absolute": (
        GOOD_HEAD.replace("output_dir: out\n", "output_dir: out\noutput: /tmp/{model}.onnx\n"),
        3,
        "absolute path",
    ),
    "template-unknown-field": (
        GOOD_HEAD.replace("output_dir: out\n", 'output_dir: out\noutput: "{modle}.onnx"\n'),
        3,
        "unknown field {modle}",
    ),
    "output-overwrites-source": (
        GOOD_HEAD.replace("output_dir: out\n", 'output_dir: .\noutput: "cnn.onnx"\n'),
        3,
        "'cnn.onnx' is an input of job 'cnn-onnx'; it would be overwritten",
    ),
    "same-output-twice": (
        GOOD_HEAD.replace("output_dir: out\n", 'output_dir: out\noutput: "{model}.onnx"\n')
        + "targets:\n  - name: a\n  - name: b\n",
        3,
        "would both write 'cnn.onnx'",
    ),
    "unknown-key": (
        GOOD_HEAD + "    input-shape: 1x3x32x32\n",
        6,
        "models[0].input-shape: unknown key (did you mean 'input_shape'?)",
    ),
    "target-option-on-model": (GOOD_HEAD + "    rtol: 0.1\n", 6, "'rtol' is a target option"),
    "unknown-top-level-key": ("modles: []\n" + GOOD_HEAD, 1, "modles: unknown key"),
    "bad-type": (GOOD_HEAD + "defaults:\n  max_iterations: many\n", 7, "defaults.max_iterations"),
    "negative-tolerance": (GOOD_HEAD + "defaults:\n  atol: -1\n", 7, "greater than or equal to 0"),
    "bad-shape": (GOOD_HEAD + "    input_shape: {input: 1xax3}\n", 6, "bad shape '1xax3'"),
    "duplicate-key": (GOOD_HEAD + "    path: other.onnx\n", 6, "key given twice (first on line 5)"),
    "job-not-in-matrix": (
        GOOD_HEAD + "jobs:\n  - name: cnn-trt\n",
        7,
        "'cnn-trt' is not a job of the models x targets",
    ),
    "job-model-key": (
        GOOD_HEAD + "jobs:\n  - name: cnn-onnx\n    model: cnn\n",
        8,
        "jobs[0].model: unknown key",
    ),
    "frontend-option-on-onnx": (
        GOOD_HEAD + "    signature: serving\n",
        6,
        "option 'signature' applies to TensorFlow and PyTorch sources",
    ),
    "trt-option-on-onnx-target": (
        GOOD_HEAD + "targets:\n  - to: onnx\n    workspace: 4G\n",
        8,
        "applies to 'to: trt'",
    ),
    "trt-output-named-onnx": (
        GOOD_HEAD.replace("output_dir: out\n", 'output_dir: out\noutput: "{model}.onnx"\n')
        + "targets:\n  - {to: trt, prepare_only: true}\n",
        3,
        "name it .plan",
    ),
    "tftrt-from-onnx": (
        GOOD_HEAD + "targets:\n  - to: tftrt\n",
        7,
        "converts a TensorFlow SavedModel folder",
    ),
    "bad-name": (GOOD_HEAD.replace("name: cnn", "name: my model"), 4, "models[0].name: names may use"),
    "missing-verify-data": (
        GOOD_HEAD + "    verify_data: data/val.npz\n",
        6,
        "no such file or folder: data/val.npz",
    ),
    "wrong-version": (
        "version: 3\n" + GOOD_HEAD.replace("version: 1\n", ""),
        1,
        "version: Input should be 1",
    ),
    "no-models": ("version: 1\nmodels: []\n", 2, "models: List should have at least 1 item"),
    "not-a-mapping": ("- cnn.onnx\n", 1, "a recipe is a mapping"),
    "python-tag": (GOOD_HEAD + "defaults: !!python/object/apply:os.system [echo hi]\n", 6, "invalid YAML"),
    "two-documents": (GOOD_HEAD + "---\nmodels: []\n", 6, "one YAML document"),
}


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    shutil.copy(SAMPLES / "cnn.onnx", tmp_path / "cnn.onnx")
    return tmp_path


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipe_exits_2_naming_the_line(case: str, folder: Path):
    text, line, message = BAD[case]
    recipe = folder / "recipe.yaml"
    recipe.write_text(text)
    result = CliRunner().invoke(app, ["run", str(recipe), "--junit", str(folder / "junit.xml")])
    assert result.exit_code == 2, result.output
    assert f"recipe.yaml:{line}:" in result.output, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1  # one line
    # before any job: nothing made, no report
    assert not (folder / "out").exists() and not (folder / "build").exists()
    assert not (folder / "junit.xml").exists()


def test_missing_and_unreadable_recipe(tmp_path: Path):
    result = CliRunner().invoke(app, ["run", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "no such recipe file" in result.output
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00models")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "bin.yaml")])
    assert result.exit_code == 2 and "not a UTF-8 text file" in result.output


@pytest.mark.parametrize(
    "text",
    [
        "a: &x {b: 1, c: [1, 2.5, 'x']}\nd: *x\ne: {<<: *x, b: 2}\nf: 1.0e-4\ng: 1e-4\nh: yes\ni: 2024-01-01\n",
        "- 1\n- {a: null, b: ~}\n- !!str 12\n",
    ],
)
def test_loader_has_safe_load_semantics(text: str):
    data, lines = yaml_lines.loads(text, "t.yaml")
    assert data == yaml.safe_load(text)


def test_lines_point_at_values_and_keys():
    text = "models:\n  - name: a\n    path: x.onnx\n  - name: b\n    path:\n      y.onnx\n"
    data, lines = yaml_lines.loads(text, "r.yaml")
    assert lines.line(("models", 1, "name")) == 4
    assert lines.line(("models", 1, "path")) == 6
    assert lines.line(("models", 1, "path"), key=True) == 5
    assert lines.line(("models", 1, "missing")) == 4  # falls back to the enclosing item
    assert lines.where(("models", 0)) == "r.yaml:2"


def test_matrix_expansion_overrides_and_extra_jobs(folder: Path):
    recipe = folder / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent("""\
        output_dir: out
        output: "{model}/{target}{ext}"
        defaults: {rtol: 1.0e-3, passes: [fold-constants]}
        models:
          - {name: a, path: cnn.onnx, input_shape: {input: [1, 3, 32, 32]}}
          - {name: b, path: cnn.onnx}
        targets:
          - {name: t1, to: onnx}
          - {name: t2, to: onnx, rtol: 1.0e-2, skip: "remove-dead-code,eliminate-cse"}
        jobs:
          - {name: a-t2, atol: 0.5, passes: [remove-dropout]}
          - {name: b-t1, enabled: false}
          - {name: b-t2, verify: false, output: custom/b.onnx, path: ./cnn.onnx}
        """)
    )
    plan = load_plan(recipe)
    jobs = {j.name: j for j in plan.jobs}
    assert list(jobs) == ["a-t1", "a-t2", "b-t2"]
    a1, a2, special = jobs["a-t1"], jobs["a-t2"], jobs["b-t2"]
    assert a1.options["rtol"] == 1e-3 and a1.options["input_shape"] == ["input=1x3x32x32"]
    assert a1.kwargs["onnx"]["input_shapes"] == {"input": [1, 3, 32, 32]}
    # precedence: defaults < model < target < job
    assert (
        a2.options["rtol"] == 1e-2
        and a2.options["atol"] == 0.5
        and a2.options["passes"] == ["remove-dropout"]
    )
    assert a2.options["skip"] == ["remove-dead-code", "eliminate-cse"]
    assert a2.kwargs["onnx"]["tolerance"].rtol == 1e-2 and a2.kwargs["onnx"]["tolerance"].atol == 0.5
    assert special.kwargs["onnx"]["verify"] is False and special.output_rel == "custom/b.onnx"
    assert a1.output_rel == "a/t1.onnx" and a1.function == "optimize_file"
    assert a1.source == str(folder / "cnn.onnx") and a1.source_format == "onnx"
    assert plan.output_dir == folder / "out"


def test_precision_accepted_only_when_the_pipeline_takes_it(folder: Path):
    from tensorsmith.jobs import supported_precisions

    recipe = folder / "recipe.yaml"
    recipe.write_text(GOOD_HEAD + "targets:\n  - {to: onnx, precision: fp16}\n")
    if "fp16" in supported_precisions():
        job = load_plan(recipe).jobs[0]
        assert job.kwargs["precision"].precision == "fp16" and job.name == "cnn-onnx-fp16"
        assert job.function == "optimize_file(precision)"
    else:
        with pytest.raises(UsageError, match=r"recipe.yaml:7: targets\[0\].precision"):
            load_plan(recipe)
    recipe.write_text(GOOD_HEAD + "targets:\n  - {to: onnx, precision: fp32}\n")
    assert load_plan(recipe).jobs[0].kwargs["precision"] is None


@pytest.mark.parametrize("name", ["demo.yaml", "frameworks.yaml"])
def test_example_recipes_are_valid(name: str):
    """The recipes in recipes/ expand (paths, formats, options) without running anything."""
    path = SAMPLES.parent / "recipes" / name
    if name == "frameworks.yaml" and not (SAMPLES / "frameworks" / "cnn_export.pt2").exists():
        pytest.skip("sample_models/frameworks not built")
    plan = load_plan(path)
    assert plan.jobs and all(j.source_format for j in plan.jobs)
    assert plan.output_dir.parent == SAMPLES.parent / "build"


def test_ci_example_runs_a_recipe_and_uploads_reports():
    text = (SAMPLES.parent / "recipes" / "ci" / "github-actions.yml").read_text()
    workflow = yaml.safe_load(text)
    steps = workflow["jobs"]["convert"]["steps"]
    runs = " ".join(s.get("run", "") for s in steps)
    assert (
        "tensorsmith run" in runs and "--junit" in runs and "--report-json" in runs and "--summary-md" in runs
    )
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in steps)
    assert (SAMPLES.parent / workflow["env"]["RECIPE"]).is_file()
