"""Sanity tests for the committed sample models (built by sample_models/build.py)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = REPO_ROOT / "sample_models"
FRAMEWORKS = SAMPLES / "frameworks"

# name -> (input name, per-batch input shape, expected output shape fn)
ONNX_SAMPLES = {
    "cnn": ("input", lambda b: (b, 3, 32, 32), lambda b: (b, 10)),
    "resblock": ("input", lambda b: (b, 3, 32, 32), lambda b: (b, 10)),
    "transformer": ("x", lambda b: (b, 5 + b, 64), lambda b: (b, 5 + b, 64)),
    "mobilenet_block": ("input", lambda b: (b, 3, 64, 64), lambda b: (b, 10)),
}


def _path(name: str) -> Path:
    return SAMPLES / f"{name}.onnx"


@pytest.fixture(scope="module")
def models():
    return {name: onnx.load(str(_path(name))) for name in ONNX_SAMPLES}


def _ops(model) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


@pytest.mark.parametrize("name", list(ONNX_SAMPLES))
def test_onnx_valid_single_file(name, models):
    model = models[name]
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}.get("") == 17
    assert not list(SAMPLES.glob(f"{name}.onnx*.data")), "sample must not use external data"
    for init in model.graph.initializer:
        assert init.data_location != onnx.TensorProto.EXTERNAL
    # dynamic batch dim named "batch"
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param == "batch"


@pytest.mark.parametrize("name", list(ONNX_SAMPLES))
@pytest.mark.parametrize("batch", [1, 4])
def test_onnx_runs_in_ort(name, batch):
    input_name, in_shape, out_shape = ONNX_SAMPLES[name]
    sess = ort.InferenceSession(str(_path(name)), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [input_name]
    x = np.random.default_rng(batch).standard_normal(in_shape(batch)).astype(np.float32)
    (y,) = sess.run(None, {input_name: x})
    assert y.shape == out_shape(batch)
    assert y.dtype == np.float32
    assert np.isfinite(y).all()


def test_cnn_ops(models):
    ops = _ops(models["cnn"])
    assert ops["BatchNormalization"] == 2
    assert ops["Dropout"] == 1
    assert ops["Conv"] == 2
    (drop,) = [n for n in models["cnn"].graph.node if n.op_type == "Dropout"]
    assert len(drop.input) >= 2 and drop.input[1], "Dropout should carry its ratio input"


def test_resblock_ops(models):
    ops = _ops(models["resblock"])
    assert ops["Add"] >= 2  # skip connections
    assert ops["BatchNormalization"] >= 5
    # the downsample branch: a 1x1 conv
    kernels = [
        tuple(_attr(n, "kernel_shape", [])) for n in models["resblock"].graph.node if n.op_type == "Conv"
    ]
    assert (1, 1) in kernels


def test_transformer_ops(models):
    ops = _ops(models["transformer"])
    assert ops["Softmax"] >= 1
    assert ops["MatMul"] >= 4
    assert ops["Dropout"] >= 1
    layernorm = ops["LayerNormalization"] >= 1 or (ops["ReduceMean"] >= 2 and ops["Sqrt"] >= 1)
    assert layernorm
    dims = models["transformer"].graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", "seq", 64]


def test_mobilenet_ops(models):
    model = models["mobilenet_block"]
    ops = _ops(model)
    assert ops["HardSwish"] >= 1
    assert ops["HardSigmoid"] >= 1
    assert ops["GlobalAveragePool"] >= 1
    inits = {i.name: i for i in model.graph.initializer}
    depthwise = []
    for n in model.graph.node:
        if n.op_type == "Conv" and _attr(n, "group", 1) > 1:
            w = inits[n.input[1]]
            out_ch, in_per_group = w.dims[0], w.dims[1]
            depthwise.append(_attr(n, "group") == out_ch and in_per_group == 1)
    assert depthwise and all(depthwise), "expected depthwise convs with group == channels"


def test_cnn_onnx_matches_torch():
    torch = pytest.importorskip("torch")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from sample_models.torch_cnn import build_cnn

    model = build_cnn(seed=12345)  # different init: weights must come from the file
    state = torch.load(FRAMEWORKS / "cnn_state_dict.pth", weights_only=True)
    model.load_state_dict(state)
    model.eval()

    sess = ort.InferenceSession(str(_path("cnn")), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    (got,) = sess.run(None, {"input": x})
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
