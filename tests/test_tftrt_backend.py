"""``convert --to tftrt``. TF-TRT cannot run here (TensorFlow 2.18+ has no TensorRT): the
exit-3 paths are tested for real; the conversion logic runs against a RECORDING
STAND-IN for ``TrtGraphConverterV2`` that copies the SavedModel (or, to test the
failure path, saves a different one), while the verification is real TensorFlow."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tensorsmith.cli import app
from tensorsmith.convert import tftrt_backend
from tensorsmith.convert.trt.profiles import parse_profile_specs
from tensorsmith.errors import ConversionError, UsageError, VerificationError

REPO = Path(__file__).resolve().parents[1]
SAVED = REPO / "sample_models" / "frameworks" / "cnn_savedmodel"
runner = CliRunner()


class FakeConverter:
    """Records what tensorsmith asks of TrtGraphConverterV2; 'converts' by copying the SavedModel."""

    instances: list["FakeConverter"] = []
    save_from: Path | None = None  # save this SavedModel instead (to make verification fail)

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = []
        self.calibration_batches = []
        self.build_shapes = []
        FakeConverter.instances.append(self)

    def convert(self, calibration_input_fn=None):
        self.calls.append("convert")
        if calibration_input_fn is not None:
            for sample in calibration_input_fn():
                self.calibration_batches.append({k: tuple(v.shape) for k, v in sample.items()})

    def build(self, input_fn):
        self.calls.append("build")
        for sample in input_fn():
            self.build_shapes.append({k: tuple(v.shape) for k, v in sample.items()})

    def save(self, output_saved_model_dir):
        self.calls.append("save")
        shutil.copytree(self.save_from or self.kwargs["input_saved_model_dir"], output_saved_model_dir)


@pytest.fixture
def fake_converter():
    FakeConverter.instances = []
    FakeConverter.save_from = None
    return FakeConverter


def test_cli_tftrt_here_exit_3_says_why(tmp_path):
    from tensorsmith import machine

    why = machine.tftrt_unavailable_reason()
    if why is None:
        pytest.skip("this TensorFlow can run TF-TRT")
    res = runner.invoke(app, ["convert", str(SAVED), "--to", "tftrt", "-o", str(tmp_path / "out")])
    assert res.exit_code == 3
    tf = machine.tensorflow_info()["version"]
    if tf and tuple(int(x) for x in tf.split(".")[:2]) > (2, 17):
        assert f"TensorFlow {tf} has no TF-TRT" in res.output
        assert "TensorFlow <= 2.17 built with TensorRT" in res.output
    assert not (tmp_path / "out").exists()


def test_cli_tftrt_needs_a_savedmodel(tmp_path):
    res = runner.invoke(
        app,
        ["convert", str(REPO / "sample_models" / "cnn.onnx"), "--to", "tftrt", "-o", str(tmp_path / "out")],
    )
    assert res.exit_code == 2 and "SavedModel" in res.output


def test_check_available_with_real_tensorflow(monkeypatch):
    """Past the version check, the real TensorFlow says it has no TensorRT: the second message."""
    pytest.importorskip("tensorflow")
    from tensorsmith import machine

    monkeypatch.setattr(machine, "tftrt_unavailable_reason", lambda *a: None)
    from tensorflow.compiler.tf2tensorrt import _pywrap_py_utils

    if _pywrap_py_utils.is_tensorrt_enabled():
        pytest.skip("this TensorFlow was built with TensorRT")
    with pytest.raises(ConversionError, match="was built without TensorRT; TF-TRT needs TensorFlow <= 2.17"):
        tftrt_backend.check_available()


def test_convert_with_recording_converter(tmp_path, fake_converter):
    pytest.importorskip("tensorflow")
    out = tmp_path / "cnn_tftrt"
    opts = tftrt_backend.TftrtOptions(
        precision="fp16", profile_strategy="Range", max_batch=4, workspace=1 << 30
    )
    report = tftrt_backend.convert_tftrt(SAVED, out, opts, converter_factory=fake_converter, check=False)
    conv = fake_converter.instances[0]
    assert conv.kwargs == {
        "input_saved_model_dir": str(SAVED),
        "input_saved_model_signature_key": "serving_default",
        "use_dynamic_shape": True,
        "dynamic_shape_profile_strategy": "Range",
        "precision_mode": "FP16",
        "minimum_segment_size": 3,
        "use_calibration": False,
        "max_workspace_size_bytes": 1 << 30,
    }
    assert conv.calls == ["convert", "build", "save"]
    assert conv.build_shapes == [{"input": (1, 32, 32, 3)}, {"input": (4, 32, 32, 3)}]  # MIN(=OPT), MAX
    assert report.verification.passed and report.profiles["input"]["max"] == [4, 32, 32, 3]
    assert (out / "saved_model.pb").is_file() and report.files == [str(out)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_int8_calibration_and_shapes(tmp_path, fake_converter):
    pytest.importorskip("tensorflow")
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(0).standard_normal((5, 1, 32, 32, 3)).astype(np.float32))
    opts = tftrt_backend.TftrtOptions(
        precision="int8",
        calibration_data=calib,
        shapes=parse_profile_specs(["input=1x32x32x3:2x32x32x3:8x32x32x3"]),
    )
    report = tftrt_backend.convert_tftrt(
        SAVED, tmp_path / "o", opts, converter_factory=fake_converter, check=False
    )
    conv = fake_converter.instances[0]
    assert conv.kwargs["precision_mode"] == "INT8" and conv.kwargs["use_calibration"] is True
    assert len(conv.calibration_batches) == 5 and conv.calibration_batches[0] == {"input": (1, 32, 32, 3)}
    assert conv.build_shapes == [
        {"input": (1, 32, 32, 3)},
        {"input": (2, 32, 32, 3)},
        {"input": (8, 32, 32, 3)},
    ]
    assert report.calibration_samples == 5
    tftrt_backend.convert_tftrt(
        SAVED,
        tmp_path / "o3",
        tftrt_backend.TftrtOptions(precision="int8", calibration_data=Path("random")),
        converter_factory=fake_converter,
        check=False,
    )
    assert len(fake_converter.instances[-1].calibration_batches) == 8
    with pytest.raises(UsageError, match="calibration samples"):
        tftrt_backend.convert_tftrt(
            SAVED,
            tmp_path / "o2",
            tftrt_backend.TftrtOptions(precision="int8"),
            converter_factory=fake_converter,
            check=False,
        )


def test_verification_failure_writes_nothing(tmp_path, fake_converter):
    tf = pytest.importorskip("tensorflow")

    class Other(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="input")])
        def serve(self, input):  # noqa: A002 - the signature's input name
            return {"output_0": tf.reduce_mean(input, axis=[1, 2])[:, :1] * tf.ones([1, 10])}

    other = tmp_path / "other_savedmodel"
    m = Other()
    tf.saved_model.save(m, str(other), signatures={"serving_default": m.serve})
    fake_converter.save_from = other
    out = tmp_path / "out"
    with pytest.raises(VerificationError, match="differs from the original"):
        tftrt_backend.convert_tftrt(
            SAVED, out, tftrt_backend.TftrtOptions(), converter_factory=fake_converter, check=False
        )
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other_savedmodel"]


def test_options_validated():
    with pytest.raises(UsageError):
        tftrt_backend.TftrtOptions(profile_strategy="Fastest").validate()
    with pytest.raises(UsageError):
        tftrt_backend.TftrtOptions(precision="fp8").validate()


@pytest.mark.gpu
def test_real_tftrt(tmp_path):
    from tensorsmith import machine

    why = machine.tftrt_unavailable_reason()
    if why:
        pytest.skip(f"needs TF-TRT: {why}")
    if machine.gpu_unavailable_reason():
        pytest.skip("needs an NVIDIA GPU")
    report = tftrt_backend.convert_tftrt(SAVED, tmp_path / "o", tftrt_backend.TftrtOptions(precision="fp16"))
    assert report.verification.passed
