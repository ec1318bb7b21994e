"""INT8 of a model that computes in float16: upcast to float32 first (issue 12)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh
from typer.testing import CliRunner

from tensorsmith.cli import app
from tensorsmith.precision.upcast import has_float16_compute, upcast_float16


def fp16_encoder(path, io=TensorProto.FLOAT):
    """float32 in, Cast to float16, three float16 Conv(+Relu) layers, Cast back (a half-precision U-Net encoder)."""
    rng = np.random.default_rng(0)

    def w(name, shape):
        return nh.from_array((rng.standard_normal(shape) * 0.2).astype(np.float16), name)

    inits = [w("w1", (8, 3, 3, 3)), w("b1", (8,)), w("w2", (8, 8, 3, 3)), w("b2", (8,))]
    inits += [w("w3", (4, 8, 1, 1)), w("b3", (4,))]
    nodes = []
    x = "x"
    if io == TensorProto.FLOAT:
        nodes.append(oh.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16))
        x = "x16"
    nodes += [
        oh.make_node("Conv", [x, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c1"], ["r1"]),
        oh.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c2"], ["r2"]),
        oh.make_node("Conv", ["r2", "w3", "b3"], ["c3" if io == TensorProto.FLOAT else "y"]),
    ]
    if io == TensorProto.FLOAT:
        nodes.append(oh.make_node("Cast", ["c3"], ["y"], to=TensorProto.FLOAT))
    graph = oh.make_graph(
        nodes,
        "encoder16",
        [oh.make_tensor_value_info("x", io, [1, 3, 32, 32])],
        [oh.make_tensor_value_info("y", io, [1, 4, 32, 32])],
        inits,
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return model


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_upcast_computes_the_same_function_in_float32(tmp_path):
    for io in (TensorProto.FLOAT, TensorProto.FLOAT16):
        model = fp16_encoder(tmp_path / "m.onnx", io)
        assert has_float16_compute(model)
        up = onnx.ModelProto()
        up.CopyFrom(model)
        counts = upcast_float16(up)
        onnx.checker.check_model(up, full_check=True)
        assert not has_float16_compute(up) or io == TensorProto.FLOAT16  # boundary casts only
        assert counts["initializers"] == 6
        assert all(t.data_type == TensorProto.FLOAT for t in up.graph.initializer)
        # the interface is unchanged
        assert up.graph.input[0].type.tensor_type.elem_type == io
        assert up.graph.output[0].type.tensor_type.elem_type == io
        x = (
            np.random.default_rng(1)
            .standard_normal((1, 3, 32, 32))
            .astype(np.float32)
            .astype(np.float16 if io == TensorProto.FLOAT16 else np.float32)
        )
        ref, got = _run(model, x).astype(np.float32), _run(up, x).astype(np.float32)
        scale = np.abs(ref).max()
        np.testing.assert_allclose(got, ref, atol=2e-2 * scale)


def test_a_float32_model_is_not_touched(samples):
    model = onnx.load(str(samples / "cnn.onnx"))
    assert not has_float16_compute(model)


def test_int8_of_a_float16_compute_model_passes_the_gate(tmp_path):
    """Every layout onnxruntime's quantizer wrote for such a model failed to load (float16 bias scales)."""
    src = tmp_path / "encoder16.onnx"
    fp16_encoder(src)
    out = tmp_path / "encoder16.int8.onnx"
    r = CliRunner().invoke(
        app,
        [
            "optimize",
            str(src),
            "-o",
            str(out),
            "--precision",
            "int8",
            "--calib",
            "random",
            "--min-speedup",
            "0",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)["precision"]
    assert any("upcast to float32" in n for n in report["notes"])
    assert report["gate"]["passed"]
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
