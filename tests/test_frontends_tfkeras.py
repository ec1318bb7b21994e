"""Keras 2 (tf_keras) models: legacy .h5 and SavedModel written by tf.keras convert too."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from tensorsmith.cli import app

tf_keras = pytest.importorskip("tf_keras")


@pytest.fixture(scope="module")
def keras2_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfk")
    k = tf_keras
    model = k.Sequential(
        [
            k.layers.Input((16, 16, 3)),
            k.layers.Conv2D(8, 3),
            k.layers.BatchNormalization(),
            k.layers.ReLU(),
            k.layers.Dropout(0.3),
            k.layers.GlobalAveragePooling2D(),
            k.layers.Dense(4),
        ]
    )
    rng = np.random.default_rng(0)
    model.layers[1].set_weights(
        [
            rng.uniform(0.5, 1.5, 8).astype("f"),
            rng.standard_normal(8).astype("f"),
            rng.standard_normal(8).astype("f"),
            rng.uniform(0.5, 1.5, 8).astype("f"),
        ]
    )
    model.save(d / "k2.h5")
    model.save(d / "k2_savedmodel", save_format="tf")
    x = rng.standard_normal((3, 16, 16, 3)).astype(np.float32)
    return d, model, x, np.asarray(model(x, training=False))


@pytest.mark.parametrize("name, fmt", [("k2.h5", "h5"), ("k2_savedmodel", "savedmodel")])
def test_keras2_files_convert_and_match_tf(keras2_files, name, fmt):
    d, _, x, ref = keras2_files
    out = d / f"{fmt}.onnx"
    r = CliRunner().invoke(app, ["convert", str(d / name), "--to", "onnx", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout)
    assert j["source_format"] == fmt and j["verification"]["passed"]
    assert "BatchNormalization" not in j["ops_after"]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]  # batch 3: the batch stayed dynamic
    np.testing.assert_allclose(got, ref, atol=1e-5 + 1e-4 * np.abs(ref).max(), rtol=0)
