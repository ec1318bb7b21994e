"""FP16: sample models through the FP16 gate, IO kept FP32 by default, onnx.checker,
values beyond the float16 range kept FP32, the converter's Cast defects repaired."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import tensorsmith
from tensorsmith.precision import fp16 as f16
from tensorsmith.precision import options_from_cli
from tests.helpers import parse

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"
FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def _opts(**kw):
    return options_from_cli("fp16", **kw).model_copy(update={"measure_latency": False})


def _elem(vi) -> int:
    return vi.type.tensor_type.elem_type


@pytest.mark.parametrize("name", ["cnn", "resblock", "transformer", "mobilenet_block"])
def test_fp16_sample_models_keep_io(name, tmp_path):
    out = tmp_path / f"{name}.fp16.onnx"
    report = tensorsmith.optimize_file(SAMPLES / f"{name}.onnx", out, precision=_opts())
    p = report.precision
    assert p["gate"]["passed"] and p["gate"]["worst_cosine"] >= 0.999
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert all(_elem(v) == FLOAT for v in proto.graph.input)
    assert all(_elem(v) == FLOAT for v in proto.graph.output)
    fp16_weights = [t for t in proto.graph.initializer if t.data_type == FLOAT16]
    assert fp16_weights, "weights are float16 in the graph"
    assert p["size"]["lowered"] < 0.65 * p["size"]["fp32"]
    # compare against the FP32 source with onnxruntime, on an input the gate did not see
    src = ort.InferenceSession(str(SAMPLES / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    low = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    i = src.get_inputs()[0]
    shape = [2 if not isinstance(d, int) else d for d in i.shape]
    if name == "transformer":
        shape = [2, 9, 64]
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    a, b = src.run(None, {i.name: x})[0], low.run(None, {i.name: x})[0]
    assert b.dtype == np.float32
    assert float(np.dot(a.ravel(), b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.999


def test_fp16_io_makes_inputs_and_outputs_float16(tmp_path):
    out = tmp_path / "cnn.fp16io.onnx"
    tensorsmith.optimize_file(SAMPLES / "cnn.onnx", out, precision=_opts(fp16_io=True))
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert [_elem(v) for v in proto.graph.input] == [FLOAT16]
    assert [_elem(v) for v in proto.graph.output] == [FLOAT16]


def test_initializer_beyond_fp16_range_is_kept_fp32(tmp_path):
    """x * 1e6 / 1e6: a float16 converter that clamps 1e6 to 65504 changes the result 15x."""
    proto = parse(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 8] x) => (float[1, 8] y) {
            h = Mul(x, big)
            r = Relu(h)
            y = Div(r, big)
        }""",
        {"big": np.array([1e6], np.float32)},
    )
    src = tmp_path / "big.onnx"
    onnx.save(proto, str(src))
    out = tmp_path / "big.fp16.onnx"
    report = tensorsmith.optimize_file(src, out, precision=_opts())
    kept = {k["name"]: k for k in report.precision["kept"]}
    assert any("beyond the float16 range" in k["reason"] for k in kept.values())
    x = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)
    (y,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, np.maximum(x, 0), rtol=2e-3, atol=1e-3)


def _defective_converter_output() -> onnx.ModelProto:
    """What onnxruntime's float16 converter (up to 1.31) wrote for two FP32-kept Pow nodes
    reading one float16 tensor: two identical Cast nodes (two producers of one value,
    invalid SSA), appended after the nodes that read them (out of topological order)."""
    half = onnx.helper.make_tensor_value_info
    nodes = [
        onnx.helper.make_node("Cast", ["x"], ["x16"], to=onnx.TensorProto.FLOAT16, name="in_cast"),
        onnx.helper.make_node("Relu", ["x16"], ["a"], name="relu"),
        onnx.helper.make_node("Pow", ["a32", "two"], ["p1"], name="pow1"),
        onnx.helper.make_node("Pow", ["a32", "three"], ["p2"], name="pow2"),
        onnx.helper.make_node("Add", ["p1", "p2"], ["y"], name="add"),
        onnx.helper.make_node("Cast", ["a"], ["a32"], to=onnx.TensorProto.FLOAT, name="pow1_cast"),
        onnx.helper.make_node("Cast", ["a"], ["a32"], to=onnx.TensorProto.FLOAT, name="pow2_cast"),
    ]
    graph = onnx.helper.make_graph(
        nodes,
        "g",
        [half("x", onnx.TensorProto.FLOAT, [4])],
        [half("y", onnx.TensorProto.FLOAT, [4])],
        [
            onnx.numpy_helper.from_array(np.array([2.0], np.float32), "two"),
            onnx.numpy_helper.from_array(np.array([3.0], np.float32), "three"),
        ],
        value_info=[half("a32", onnx.TensorProto.FLOAT, [4]), half("a32", onnx.TensorProto.FLOAT, [4])],
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)


def test_repair_merges_duplicate_casts_and_restores_order():
    """Our repair of the converter's duplicate, out-of-order Casts, on a model built with the defect."""
    proto = _defective_converter_output()
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(proto)  # the defect is real: the model is invalid as built
    repairs = f16.repair(proto)
    assert repairs["merged_casts"] == 1
    assert repairs["value_info_dropped"] == 1
    onnx.checker.check_model(proto)  # one producer per value, topologically sorted again
    assert [n.op_type for n in proto.graph.node].count("Cast") == 2
    x = np.array([0.5, -1.0, 2.0, 3.0], np.float32)
    (y,) = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )
    a = np.maximum(x, 0)
    np.testing.assert_allclose(y, a**2 + a**3, rtol=2e-3)


def _shared_fp16_tensor_model() -> onnx.ModelProto:
    return parse(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y) {
            a = Relu(x)
            p1 = Pow(a, two)
            p2 = Pow(a, three)
            y = Add(p1, p2)
        }""",
        {"two": np.array([2.0], np.float32), "three": np.array([3.0], np.float32)},
    )


def test_convert_keeps_pow_fp32_and_writes_a_valid_model():
    """Our behaviour end to end, whichever onnxruntime converter is installed."""
    proto = _shared_fp16_tensor_model()
    f16.ensure_node_names(proto)
    res = f16.convert(proto)
    onnx.checker.check_model(res.model)
    x = np.array([0.5, -1.0, 2.0, 3.0], np.float32)
    (y,) = ort.InferenceSession(res.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )
    a = np.maximum(x, 0)
    np.testing.assert_allclose(y, a**2 + a**3, rtol=2e-3)
    assert {k.op for k in res.kept} == {"Pow"}


def test_upstream_converter_still_writes_duplicate_casts():
    """A record, not a requirement: does the installed onnxruntime float16 converter still
    write duplicate Casts? Skipped once upstream no longer does (fixed in onnxruntime 1.32);
    then the repair above is a safety net for older versions."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    proto = _shared_fp16_tensor_model()
    f16.ensure_node_names(proto)
    out = convert_float_to_float16(
        proto,
        keep_io_types=True,
        op_block_list=list(DEFAULT_OP_BLOCK_LIST),
        node_block_list=[n.name for n in proto.graph.node if n.op_type == "Pow"],
    )
    outputs = [o for n in out.graph.node for o in n.output]
    if len(outputs) == len(set(outputs)):
        pytest.skip("the installed onnxruntime float16 converter no longer writes duplicate Casts")
    assert f16.repair(out)["merged_casts"] >= 1


def test_cast_to_float_inside_fp16_region_is_consistent(tmp_path):
    """A Cast(to=FLOAT) between float16 nodes (onnxconverter-common #320): its 'to'
    must follow the type its output gets, or onnxruntime refuses the model."""
    proto = parse(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y) {
            a = Relu(x)
            c = Cast<to = 1>(a)
            y = Sigmoid(c)
        }""",
    )
    src = tmp_path / "cast.onnx"
    onnx.save(proto, str(src))
    out = tmp_path / "cast.fp16.onnx"
    tensorsmith.optimize_file(src, out, passes=["remove-dead-code"], precision=_opts())
    model = onnx.load(str(out))
    f16.check(model)
    x = np.array([0.5, -1.0, 2.0, 3.0], np.float32)
    (y,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-np.maximum(x, 0))), rtol=2e-3)


def test_convert_torchscript_to_fp16(tmp_path):
    """convert --precision: the FP32 ONNX (verified against PyTorch) is lowered and gated against it."""
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from tensorsmith.cli import app

    src = SAMPLES / "frameworks" / "cnn_torchscript.pt"
    if not src.exists():
        pytest.skip("sample_models/frameworks not built")
    out = tmp_path / "cnn.fp16.onnx"
    result = CliRunner().invoke(
        app,
        [
            "convert",
            str(src),
            "-o",
            str(out),
            "--input-shape",
            "x=1x3x32x32",
            "--precision",
            "fp16",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert [_elem(v) for v in proto.graph.input] == [FLOAT]
    assert any(t.data_type == FLOAT16 for t in proto.graph.initializer)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no work folder left


def test_casts_for_a_kept_node_inside_an_if_branch_are_moved_into_it():
    """onnxruntime's converter writes the Casts around an FP32-kept node that sits in an If
    branch into the *main* graph, reading a value that only exists in the branch (invalid;
    measured on silero-vad op18). The repair moves them into the branch."""
    from onnx import TensorProto, helper, numpy_helper

    two = numpy_helper.from_array(np.array([2.0], np.float32), "two")
    then = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["m"], name="mul"),
            helper.make_node("Relu", ["m"], ["r"], name="relu"),
            helper.make_node("Pow", ["r", "two"], ["p"], name="pow"),
            helper.make_node("Relu", ["p"], ["t"], name="relu2"),
        ],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])],
    )
    other = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["e"], name="relu3")],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [4])],
    )
    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other)],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [two],
    )
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    res = f16.convert(proto)
    assert res.repairs["casts_moved_into_subgraphs"] >= 1
    onnx.checker.check_model(res.model, full_check=True)
    assert not any(n.op_type == "Cast" and "r" in n.input for n in res.model.graph.node)  # none left outside
    sess = ort.InferenceSession(res.model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.array([0.5, -1.0, 2.0, 3.0], np.float32)
    for c in (True, False):
        (y,) = sess.run(None, {"x": x, "c": np.array(c)})
        want = np.maximum(np.maximum(2 * x, 0) ** 2, 0) if c else np.maximum(x, 0)
        np.testing.assert_allclose(y, want, rtol=2e-3)


def test_fp16_refuses_an_already_quantized_model(tmp_path):
    """A Q/DQ model with int8 weights: exit 2 and one line, as --precision int8 does (it used
    to write float16 DequantizeLinear scales, which the opset rejects: exit 3)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from typer.testing import CliRunner

    from tensorsmith.cli import app

    src = SAMPLES / "cnn.onnx"
    name = onnx.load(str(src)).graph.input[0].name
    shape = [d.dim_value or 1 for d in onnx.load(str(src)).graph.input[0].type.tensor_type.shape.dim]

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.data = iter([{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.data, None)

    quantized = tmp_path / "cnn.qdq.onnx"
    quantize_static(str(src), str(quantized), Reader(), quant_format=QuantFormat.QDQ)
    out = tmp_path / "cnn.qdq.fp16.onnx"
    r = CliRunner().invoke(app, ["optimize", str(quantized), "-o", str(out), "--precision", "fp16"])
    assert r.exit_code == 2, r.output
    assert "already quantized" in r.output and "fp16 applies to float models" in r.output
    assert "Traceback" not in r.output
    assert not out.exists()
