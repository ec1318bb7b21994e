"""Calibration data: sources, validation of names/shapes/dtypes/values, and the CLI around them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tensorsmith.cli import app
from tensorsmith.errors import UsageError
from tensorsmith.precision import calibration as cal
from tensorsmith.precision import options_from_cli
from tensorsmith.shapes import InputSpec

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"
SPEC = [InputSpec("input", np.dtype(np.float32), ["batch", 3, 32, 32])]
runner = CliRunner()


def _x(n, shape=(3, 32, 32), seed=0):
    return np.random.default_rng(seed).standard_normal((n, 1) + shape).astype(np.float32)


def test_npz_stacked_and_batch_split(tmp_path):
    np.savez(tmp_path / "a.npz", input=_x(5))
    assert len(cal.load_path(tmp_path / "a.npz", SPEC).samples) == 5
    np.savez(tmp_path / "b.npz", input=_x(4)[:, 0])  # [4, 3, 32, 32]: a batch of 4 -> 4 samples
    samples = cal.load_path(tmp_path / "b.npz", SPEC).samples
    assert len(samples) == 4 and samples[0]["input"].shape == (1, 3, 32, 32)


def test_folder_of_npy_and_limit(tmp_path):
    for i in range(6):
        np.save(tmp_path / f"s{i}.npy", _x(1, seed=i)[0])
    data = cal.load_path(tmp_path, SPEC, limit=4)
    assert len(data.samples) == 4 and data.files == 4


@pytest.mark.parametrize(
    "arrays, match",
    [
        (
            {"image": _x(2)},
            r"no array for input 'input' \(expected shape \[batch, 3, 32, 32\]\); found: image \[2, 1, 3, 32, 32\]",
        ),
        (
            {"input": _x(2, shape=(3, 16, 16))},
            r"input 'input' expects shape \[batch, 3, 32, 32\], found \[2, 1, 3, 16, 16\]",
        ),
        (
            {"input": np.zeros((2, 3), np.float32)},
            r"input 'input' expects shape \[batch, 3, 32, 32\], found \[2, 3\]",
        ),
        (
            {"input": np.zeros((2, 1, 3, 32, 32), np.int64)},
            r"array 'input' has dtype int64, input 'input' expects float32",
        ),
    ],
)
def test_bad_arrays_name_input_expected_and_found(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UsageError, match=match) as info:
        cal.load_path(path, SPEC)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_names_the_file(tmp_path, bad):
    x = _x(3)
    x[1, 0, 0, 0, 0] = bad
    np.savez(tmp_path / "ok.npz", input=_x(2))
    np.savez(tmp_path / "z_bad.npz", input=x)
    with pytest.raises(UsageError, match=r"z_bad\.npz: array 'input' contains (NaN|Inf)"):
        cal.load_path(tmp_path, SPEC)


def test_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(UsageError, match=r"empty: the folder holds no calibration data"):
        cal.load_path(tmp_path / "empty", SPEC)
    with pytest.raises(UsageError, match="no such file or folder"):
        cal.load_path(tmp_path / "nope", SPEC)


def test_images_with_preprocess(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    pre = "resize=32,mean=0.485,0.456,0.406,std=0.229,0.224,0.225,layout=NCHW"
    data = cal.load_path(tmp_path, SPEC, preprocess=pre)
    assert len(data.samples) == 3
    x = data.samples[0]["input"]
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
    # the same numbers by hand for one image
    img = np.asarray(
        Image.open(tmp_path / "im0.png").convert("RGB").resize((32, 32), Image.Resampling.BILINEAR),
        np.float32,
    )
    ref = ((img / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])).transpose(2, 0, 1)
    got = next(s["input"][0] for s in data.samples if np.allclose(s["input"][0], ref, atol=1e-5))
    np.testing.assert_allclose(got, ref, atol=1e-5)
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    with pytest.raises(UsageError, match=r"broken\.jpg: cannot decode image"):
        cal.load_path(tmp_path, SPEC, preprocess=pre)
    with pytest.raises(UsageError, match="images need --calib-preprocess"):
        cal.load_path(tmp_path, SPEC)
    with pytest.raises(UsageError, match="unknown key 'size'"):
        cal.parse_preprocess("size=3")


def test_loader_module_function(tmp_path, monkeypatch):
    (tmp_path / "my_calib.py").write_text(
        "import numpy as np\n"
        "def samples():\n"
        "    rng = np.random.default_rng(0)\n"
        "    for _ in range(5):\n"
        "        yield rng.standard_normal((1, 3, 32, 32)).astype('float32')\n"
        "def broken():\n"
        "    return [{'input': np.zeros((1, 3, 8, 8), 'float32')}]\n"
    )
    monkeypatch.chdir(tmp_path)
    assert len(cal.load_loader("my_calib:samples", SPEC).samples) == 5
    with pytest.raises(UsageError, match=r"my_calib:broken item 0: input 'input' expects shape"):
        cal.load_loader("my_calib:broken", SPEC)
    with pytest.raises(UsageError, match="has no function 'nope'"):
        cal.load_loader("my_calib:nope", SPEC)


def test_holdout_split_never_overlaps():
    data = cal.Dataset([{"input": np.full((1, 3, 32, 32), i, np.float32)} for i in range(20)], "x")
    calib, val = cal.split_holdout(data, 100)
    assert len(val.samples) == 4 and len(calib.samples) == 16
    cv = {float(s["input"].flat[0]) for s in calib.samples}
    vv = {float(s["input"].flat[0]) for s in val.samples}
    assert not cv & vv
    with pytest.raises(UsageError, match="not used for calibration"):
        cal.split_holdout(cal.Dataset(data.samples[:1], "one"), 100)


def test_options_rules():
    with pytest.raises(UsageError, match="--calib random"):
        options_from_cli("int8")
    with pytest.raises(UsageError, match="--precision 'int4': choose one of fp32, fp16, int8"):
        options_from_cli("int4")
    with pytest.raises(UsageError, match="--fp16-io applies to --precision fp16 only"):
        options_from_cli("int8", calib="random", fp16_io=True)
    with pytest.raises(UsageError, match="TensorRT"):
        options_from_cli("int8", int8_mode="dynamic", target="trt")
    assert options_from_cli("int8", int8_mode="dynamic").int8_mode == "dynamic"


# CLI ------------------------------------------------------------------------------


def test_cli_int8_without_calib_exits_2_explaining_choices(tmp_path):
    out = tmp_path / "o.onnx"
    result = runner.invoke(
        app, ["optimize", str(SAMPLES / "cnn.onnx"), "-o", str(out), "--precision", "int8"]
    )
    assert result.exit_code == 2
    for word in ("--calib", "--calib-preprocess", "--calib-loader", "random"):
        assert word in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_cli_bad_calibration_shape_exits_2(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=_x(4, shape=(3, 16, 16)))
    out = tmp_path / "o.onnx"
    result = runner.invoke(
        app,
        ["optimize", str(SAMPLES / "cnn.onnx"), "-o", str(out), "--precision", "int8", "--calib", str(bad)],
    )
    assert result.exit_code == 2, result.output
    assert "input 'input' expects shape [batch, 3, 32, 32], found [4, 1, 3, 16, 16]" in result.output
    assert not out.exists()


def test_cli_int8_json_report(tmp_path):
    calib = tmp_path / "c.npz"
    np.savez(calib, input=_x(30))
    out = tmp_path / "o.onnx"
    result = runner.invoke(
        app,
        [
            "optimize",
            str(SAMPLES / "resblock.onnx"),
            "-o",
            str(out),
            "--precision",
            "int8",
            "--calib",
            str(calib),
            "--min-speedup",
            "0",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{") :])
    p = payload["precision"]
    assert payload["status"] == "ok" and out.is_file()
    assert p["gate"]["passed"] and p["calibration"]["samples"] == 24 and p["validation"]["samples"] == 6
    rows = {r["precision"]: r for r in p["table"]}
    assert set(rows) == {"fp32", "int8"} and rows["int8"]["size"] < rows["fp32"]["size"]
    assert p["latency"]["fp32_ms"] > 0 and p["latency"]["speedup"] > 0
    assert "verification" in payload  # the fp32 keys stay


def test_cli_gate_failure_exits_4_without_output(tmp_path):
    calib = tmp_path / "c.npz"
    np.savez(calib, input=_x(20) * 100)
    val = tmp_path / "v.npz"
    np.savez(val, input=_x(6, seed=3))
    out = tmp_path / "o.onnx"
    result = runner.invoke(
        app,
        [
            "optimize",
            str(SAMPLES / "cnn.onnx"),
            "-o",
            str(out),
            "--precision",
            "int8",
            "--calib",
            str(calib),
            "--val",
            str(val),
            "--fallback-budget",
            "0",
            "--min-speedup",
            "0",
            "--target",
            "trt",
        ],
    )  # trt: one layout, no layout search
    assert result.exit_code == 4, result.output
    assert "accuracy gate failed" in result.output and not out.exists()


def test_cli_fp16_table(tmp_path):
    out = tmp_path / "o.onnx"
    result = runner.invoke(
        app, ["optimize", str(SAMPLES / "cnn.onnx"), "-o", str(out), "--precision", "fp16"]
    )
    assert result.exit_code == 0, result.output
    assert "precision: fp16" in result.output and "accuracy gate" in result.output
    assert "random inputs" in result.output  # no --val: said so


def test_model_that_computes_nan_on_the_calibration_data_is_exit_2(tmp_path):
    """Finite data the model turns into NaN (Log of negatives): onnxruntime's quantizer only
    says 'scale issue'; tensorsmith names the activation and the cause, exit 2, no output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Log", ["x"], ["logx"]), helper.make_node("Conv", ["logx", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
        [w],
    )
    src = tmp_path / "log.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(src))
    rng = np.random.default_rng(0)
    calib = tmp_path / "c.npz"
    np.savez(calib, x=-np.abs(rng.standard_normal((12, 1, 1, 8, 8))).astype(np.float32) - 0.1)  # Log: all NaN
    val = tmp_path / "v.npz"
    np.savez(val, x=np.abs(rng.standard_normal((4, 1, 1, 8, 8))).astype(np.float32) + 0.1)
    out = tmp_path / "o.onnx"
    result = runner.invoke(
        app,
        [
            "optimize",
            str(src),
            "-o",
            str(out),
            "--precision",
            "int8",
            "--calib",
            str(calib),
            "--val",
            str(val),
            "--min-speedup",
            "0",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "NaN/Inf on the calibration data" in result.output and "'logx'" in result.output
    assert not out.exists()


def test_entropy_calibration_keeps_stdout_to_the_json(tmp_path):
    """onnxruntime's entropy calibrator print()s its progress; with --json stdout must hold
    exactly one JSON object."""
    calib = tmp_path / "c.npz"
    np.savez(calib, input=_x(12))
    out = tmp_path / "o.onnx"
    result = runner.invoke(
        app,
        [
            "optimize",
            str(SAMPLES / "cnn.onnx"),
            "-o",
            str(out),
            "--precision",
            "int8",
            "--calib",
            str(calib),
            "--calib-method",
            "entropy",
            "--min-speedup",
            "0",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # the whole of stdout
    assert payload["precision"]["calibration"]["method"] == "entropy"
    assert "Finding optimal threshold" not in result.stdout
