"""INT8: each sample model through its gate; TensorRT mode is structurally symmetric;
dynamic mode never writes ConvInteger; a planted bad calibration fails or is rescued."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import tensorsmith
from tensorsmith.errors import ConversionError, VerificationError
from tensorsmith.precision import int8 as i8
from tensorsmith.precision import options_from_cli

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"
SHAPES = {
    "cnn": ("input", (3, 32, 32)),
    "resblock": ("input", (3, 32, 32)),
    "mobilenet_block": ("input", (3, 64, 64)),
    "transformer": ("x", (12, 64)),
}


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """Per model: calibration .npz (40 samples), validation .npz (8 others), and a x100 copy of the calibration."""
    d = tmp_path_factory.mktemp("int8data")
    rng = np.random.default_rng(0)
    out = {}
    for name, (inp, shape) in SHAPES.items():
        x = rng.standard_normal((48, 1) + shape).astype(np.float32)
        paths = {"calib": d / f"{name}_calib.npz", "val": d / f"{name}_val.npz", "bad": d / f"{name}_bad.npz"}
        np.savez(paths["calib"], **{inp: x[:40]})
        np.savez(paths["val"], **{inp: x[40:]})
        np.savez(paths["bad"], **{inp: x[:40] * 100})
        out[name] = paths
    return out


def _opts(**kw):
    kw.setdefault("min_speedup", 0.0)  # speed is bench/precision.py's job: timings under xdist are noisy
    measure = kw.pop("measure_latency", False)
    opts = options_from_cli("int8", **kw)
    return opts.model_copy(update={"measure_latency": measure})


def _run(name, tmp_path, **kw):
    out = tmp_path / f"{name}.int8.onnx"
    report = tensorsmith.optimize_file(SAMPLES / f"{name}.onnx", out, precision=_opts(**kw))
    return out, report


@pytest.mark.parametrize("name", list(SHAPES))
def test_int8_sample_models_pass_their_gate(name, data, tmp_path):
    out, report = _run(name, tmp_path, calib=str(data[name]["calib"]), val=str(data[name]["val"]))
    p = report.precision
    assert out.is_file() and report.status == "ok"
    assert p["gate"]["passed"] and p["gate"]["worst_cosine"] >= 0.99
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    ops = {n.op_type for n in proto.graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert "ConvInteger" not in ops
    assert i8.opset(proto) >= 13
    assert p["quantized_nodes"] > 0
    assert p["calibration"]["samples"] == 40 and p["validation"]["samples"] == 8
    # the gate's numbers are real: recompute the cosine with onnxruntime against the FP32 source
    import onnxruntime as ort

    inp = SHAPES[name][0]
    x = np.load(data[name]["val"])[inp][0]
    ref = ort.InferenceSession(str(SAMPLES / f"{name}.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {inp: x}
    )[0]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {inp: x})[0]
    cos = float(np.dot(ref.ravel(), got.ravel()) / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cos >= 0.99
    if name in ("cnn", "resblock"):
        assert "BatchNormalization" not in ops  # Q/DQ only after BN was folded


def test_int8_trt_mode_is_symmetric_per_channel(data, tmp_path):
    out, report = _run("resblock", tmp_path, calib=str(data["resblock"]["calib"]), target="trt")
    proto = onnx.load(str(out))
    zps = i8.zero_points(proto)
    assert zps and all(np.all(z == 0) for _, z in zps)
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert all(
        inits[n.input[2]].dtype == np.int8
        for n in proto.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear")
        and len(n.input) > 2
        and n.input[2] in inits
        and inits[n.input[2]].dtype != np.int32
    )
    producers = {o: n for n in proto.graph.node for o in n.output}
    convs = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm")]
    assert convs
    # the classifier Gemm runs on one row (a GEMV): TensorRT placement leaves it in float
    # (Model Optimizer's find_nodes_from_matmul_to_exclude); every convolution is quantized
    gemv = [n for n in convs if n.input[1] not in producers]
    assert all(n.op_type == "Gemm" for n in gemv), [n.name for n in gemv]
    convs = [n for n in convs if n not in gemv]
    assert any(n.op_type == "Conv" for n in convs)
    for conv in convs:
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        w = inits[dq.input[0]]
        scale = inits[dq.input[1]]
        out_channels = w.shape[0] if conv.op_type == "Conv" else w.shape[0 if _attr(conv, "transB") else 1]
        assert scale.shape == (out_channels,), (conv.name, scale.shape, w.shape)
    assert report.precision["settings"]["activations"] == "QInt8 symmetric"


def _attr(node, name, default=0):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def test_int8_dynamic_mode_matmul_only(tmp_path):
    out, report = _run("transformer", tmp_path, int8_mode="dynamic")
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    assert "ConvInteger" not in ops
    assert report.precision["gate"]["passed"]
    assert report.precision["warnings"]  # no data given: the gate ran on random inputs and says so
    # the ladder counts the integer MatMuls as INT8 compute nodes, in the map and the written graph
    lad = report.precision["ladder"]
    assert lad["compute_counts"]["int8"] == lad["int8_weights"]["int8_weights"] >= 1


def test_planted_bad_calibration_fails_or_is_rescued(data, tmp_path):
    """Calibration data x100: the ranges are 100x too wide and every layout fails the
    gate. For the sample CNN the fallback rescues it: keeping the nodes that add the
    most error in FP32 passes the gate (a round that made the error worse is undone).
    Without a fallback budget the same data fails (next test)."""
    out = tmp_path / "cnn.int8.onnx"
    report = tensorsmith.optimize_file(
        SAMPLES / "cnn.onnx",
        out,
        # the fallback under test, not the accuracy steps: bias correction measured on the
        # planted x100 data would be 100x wrong on every INT8 node (README, precision ladder)
        precision=_opts(calib=str(data["cnn"]["bad"]), val=str(data["cnn"]["val"]), int8_steps=[]),
    )
    p = report.precision
    assert not any(layout["gate_passed"] for layout in p["layouts"]), "the planted calibration must hurt"
    fbk = p["fallback"]
    assert fbk["rounds"][0]["passed"] is False and fbk["rounds"][-1]["passed"] is True
    assert fbk["nodes"], "the fallback kept nodes in FP32"
    assert fbk["error_after"] < fbk["error_before"]
    assert all(n["error"] >= 0 and n["name"] for n in fbk["nodes"])
    kept = {k["name"]: k["reason"] for k in p["kept"]}
    assert all(kept[n["name"]].startswith("fallback") for n in fbk["nodes"])
    # undone rounds are reported and their nodes are not among the kept ones
    for r in fbk["rounds"][1:]:
        assert set(r["nodes"]) <= set(kept) if r["accepted"] else not set(r["nodes"]) & set(kept)
    assert p["quantized_nodes"] > 0
    # the rescue is real: the written model agrees with the FP32 source on the validation data
    import onnxruntime as ort

    x = np.load(data["cnn"]["val"])["input"]
    ref = ort.InferenceSession(str(SAMPLES / "cnn.onnx"), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    cosines = []
    for sample in x:
        a, b = ref.run(None, {"input": sample})[0].ravel(), got.run(None, {"input": sample})[0].ravel()
        cosines.append(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
    assert np.mean(cosines) >= 0.99  # the gate's measure: per-sample cosine, averaged
    assert min(cosines) == pytest.approx(p["gate"]["outputs"][0]["cosine_min"], abs=1e-4)


def test_planted_bad_calibration_without_fallback_fails_gate(data, tmp_path):
    out = tmp_path / "r.onnx"
    with pytest.raises(VerificationError, match="accuracy gate failed"):
        tensorsmith.optimize_file(
            SAMPLES / "resblock.onnx",
            out,
            precision=_opts(
                calib=str(data["resblock"]["bad"]), val=str(data["resblock"]["val"]), fallback_budget=0
            ),
        )
    assert not out.exists()


def test_fallback_rescues_a_sensitive_layer(tmp_path):
    """A strict gate (cosine 0.99999) fails with everything quantized; keeping the worst
    node(s) FP32 passes it, and the report names them with their error."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 1, 3, 32, 32)).astype(np.float32)
    calib = tmp_path / "c.npz"
    np.savez(calib, input=x)
    out = tmp_path / "resblock.int8.onnx"
    report = tensorsmith.optimize_file(
        SAMPLES / "resblock.onnx",
        out,
        # without accuracy steps: bias correction alone passes this gate, with nothing to rescue
        precision=_opts(calib=str(calib), min_cosine=0.99999, min_top1=0.0, int8_steps=[]),
    )
    fbk = report.precision["fallback"]
    assert report.precision["gate"]["passed"] and fbk["rounds"][0]["passed"] is False
    assert fbk["nodes"] and fbk["error_after"] < fbk["error_before"]
    kept = {k["name"] for k in report.precision["kept"]}
    assert {n["name"] for n in fbk["nodes"]} <= kept
    assert report.precision["quantized_nodes"] > 0


def test_int8_slower_than_fp32_is_refused(data, tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(ConversionError, match="speed of FP32"):
        tensorsmith.optimize_file(
            SAMPLES / "cnn.onnx",
            out,
            precision=_opts(calib=str(data["cnn"]["calib"]), min_speedup=1000.0, measure_latency=True),
        )
    assert not out.exists()


def test_an_already_quantized_model_is_refused(data, tmp_path):
    """Q/DQ nodes, or int8 weights cast to float at run time: onnxruntime's quantizer writes
    invalid models from these (measured on a real int8 MiniLM), so INT8 refuses them (exit 2)."""
    from onnx import TensorProto, helper, numpy_helper

    from tensorsmith.errors import UsageError

    first, _ = _run("cnn", tmp_path, calib=str(data["cnn"]["calib"]), val=str(data["cnn"]["val"]))
    again = tmp_path / "again.onnx"
    with pytest.raises(UsageError, match=r"already quantized \(it has DequantizeLinear, QuantizeLinear"):
        tensorsmith.optimize_file(first, again, precision=_opts(calib=str(data["cnn"]["calib"])))
    assert not again.exists()
    # the weight-only form: Cast(int8 initializer) * scale feeding a MatMul
    w = numpy_helper.from_array(np.ones((4, 4), np.int8), "w8")
    scale = numpy_helper.from_array(np.full((4,), 0.1, np.float32), "s")
    g = helper.make_graph(
        [
            helper.make_node("Cast", ["w8"], ["wf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["wf", "s"], ["w"]),
            helper.make_node("MatMul", ["x", "w"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w, scale],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert i8.already_quantized(model) == "1 int8 weight(s) are cast to float at run time"
    assert i8.already_quantized(onnx.load(str(SAMPLES / "cnn.onnx"))) == ""
