"""INT8 for TensorRT: calibration methods that differ on long tails, and the Q/DQ
placement (precision/trt_placement.py) on small graphs: Q/DQ only at Conv/MatMul entries
and the residual input of an Add, float biases, symmetric INT8 per-channel weights,
nothing on constant/shape paths, GEMV and few-channel convolutions left in float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tensorsmith.lint import lint_file
from tensorsmith.precision import int8 as i8
from tensorsmith.precision import trt_placement as tp


def _conv(name, x, w, y, **kw):
    return helper.make_node("Conv", [x, w], [y], name=name, pads=[1, 1, 1, 1], **kw)


def _residual_model(rng) -> onnx.ModelProto:
    """x -> conv1 -> relu -> conv2 -> Add(skip=r1) -> relu -> Reshape -> MatMul(W) -> Gemm, then a
    Reshape whose target is computed from Shape (a shape path)."""
    c = 16
    inits = [
        numpy_helper.from_array((rng.standard_normal((c, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.standard_normal((c, c, 3, 3)) * 0.1).astype(np.float32), "w2"),
        numpy_helper.from_array((rng.standard_normal(c) * 0.1).astype(np.float32), "b2"),
        numpy_helper.from_array((rng.standard_normal((c * 8 * 8, 32)) * 0.05).astype(np.float32), "wm"),
        numpy_helper.from_array((rng.standard_normal((32, 10)) * 0.1).astype(np.float32), "wg"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
        numpy_helper.from_array(np.array([4, -1], np.int64), "flatshape"),
    ]
    nodes = [
        _conv("conv1", "x", "w1", "c1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        helper.make_node("Reshape", ["r2", "flatshape"], ["flat"], name="reshape"),
        helper.make_node("MatMul", ["flat", "wm"], ["h"], name="matmul"),
        helper.make_node("Gemm", ["h", "wg"], ["g"], name="gemm_gemv"),
        # a shape computation: Shape -> Gather -> Concat -> Reshape target
        helper.make_node("Shape", ["g"], ["shp"], name="shape"),
        helper.make_node("Gather", ["shp", "zero"], ["n"], name="gather"),
        helper.make_node("Concat", ["n", "minus1"], ["newshape"], name="concat_shape", axis=0),
        helper.make_node("Reshape", ["g", "newshape"], ["y"], name="reshape_out"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 10])],
        inits,
    )
    return onnx.shape_inference.infer_shapes(
        helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    )


def test_plan_follows_the_tensorrt_rules():
    proto = _residual_model(np.random.default_rng(0))
    p = tp.plan(proto)
    # conv1 has 3 input channels but is the first layer with 16 outputs (Model Optimizer's
    # INT8 exception); the MatMul has M=4 rows, N=32; the Gemm too (N=10)
    assert p.nodes == ["conv1", "conv2", "add", "matmul", "gemm_gemv"]
    assert "add" in p.nodes and ("add", 0) in p.strip  # conv2's branch (input 0) stays float
    assert not p.skipped


def test_gemv_and_few_channel_convs_are_skipped():
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((4 * 8 * 8, 10)).astype(np.float32), "wg"),
    ]
    nodes = [
        _conv("small", "x", "w", "c"),
        helper.make_node("Flatten", ["c"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wg"], ["y"], name="gemv"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    proto = onnx.shape_inference.infer_shapes(
        helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    )
    p = tp.plan(proto)
    assert p.nodes == []
    assert "channels" in p.skipped["small"] and "GEMV" in p.skipped["gemv"]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    d = tmp_path_factory.mktemp("trtq")
    rng = np.random.default_rng(2)
    proto, _ = i8.prepare(_residual_model(rng))
    src = d / "m.onnx"
    onnx.save(proto, str(src))
    samples = [{"x": rng.standard_normal((4, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
    out = d / "m.trt.onnx"
    i8.quantize(
        src,
        out,
        i8.Settings(target="trt"),
        i8.Config("all-ops"),
        cache_path=d / "c.json",
        calib_samples=samples,
    )
    return src, out, samples


def test_quantized_graph_is_what_tensorrt_parses_and_fuses(quantized):
    src, out, samples = quantized
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    qs = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    # no INT32 (bias) DequantizeLinear, every zero point 0 and INT8
    assert all(inits[n.input[0]].dtype == np.int8 for n in dqs if n.input[0] in inits)
    assert all(np.all(z == 0) for _, z in i8.zero_points(proto))
    nodes = {n.name: n for n in proto.graph.node}
    assert nodes["conv2"].input[2] == "b2"  # the bias stays float
    # activation Q only at conv1/conv2/matmul inputs and the Add's residual input (r1, shared
    # with conv2's input): x, r1, flat
    assert sorted(q.input[0] for q in qs) == ["flat", "h", "r1", "x"]
    add = nodes["add"]
    assert add.input[0] == "c2"  # the convolution branch is float
    assert producer[add.input[1]].op_type == "DequantizeLinear"
    # weights per output channel: Conv axis 0, MatMul along its output features (axis 1)
    for name, axis, n_out in (("conv1", 0, 16), ("conv2", 0, 16), ("matmul", 1, 32)):
        dq = producer[nodes[name].input[1]]
        assert dq.op_type == "DequantizeLinear"
        assert inits[dq.input[1]].shape == (n_out,)
        assert next((a.i for a in dq.attribute if a.name == "axis"), 1) == axis
    # nothing on the shape path
    assert nodes["reshape_out"].input[1] == "newshape" and nodes["reshape"].input[1] == "flatshape"
    assert nodes["gather"].input == ["shp", "zero"]
    # lint: nothing TensorRT rejects, no reformat-layer Q/DQ
    assert lint_file(out).clean
    # numerically close to FP32 (onnxruntime CPU)
    import onnxruntime as ort

    a = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for s in samples[:3]:
        ra, rb = a.run(None, s)[0].ravel(), b.run(None, s)[0].ravel()
        assert float(ra @ rb / np.linalg.norm(ra) / np.linalg.norm(rb)) > 0.99


def _long_tail_model(path: Path) -> None:
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32)
    g = helper.make_graph(
        [
            _conv("c1", "x", "w1", "a"),
            helper.make_node("Relu", ["a"], ["r"], name="r1"),
            _conv("c2", "r", "w2", "y"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("target", ["trt", "ort"])
def test_calibration_methods_give_different_scales_on_long_tails(tmp_path, target):
    """Student-t (2 degrees of freedom) inputs: entropy and percentile clip the tail, so
    their scales are below minmax's and differ from each other (they were byte-identical
    to minmax before: onnxruntime's 128 bins for 128 levels leave one candidate)."""
    src = tmp_path / "m.onnx"
    _long_tail_model(src)
    rng = np.random.default_rng(3)
    samples = [{"x": rng.standard_t(2, (1, 3, 16, 16)).astype(np.float32)} for _ in range(16)]
    scales = {}
    for method in i8.CALIB_METHODS:
        out = tmp_path / f"{method}.onnx"
        i8.quantize(
            src,
            out,
            i8.Settings(target=target, method=method),
            i8.Config("all-ops"),
            cache_path=tmp_path / f"{method}.json",
            calib_samples=samples,
        )
        proto = onnx.load(str(out))
        inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        scales[method] = {
            n.input[0]: float(inits[n.input[1]]) for n in proto.graph.node if n.op_type == "QuantizeLinear"
        }
    for t in ("x", "r"):
        mm, en, pc = (scales[m][t] for m in ("minmax", "entropy", "percentile"))
        assert en < 0.8 * mm and pc < mm, (t, mm, en, pc)
        assert abs(en - pc) > 0.05 * mm, (t, en, pc)
