"""``tensorsmith lint --for trt``: rules on small graphs, the sample models, INT8 from
onnxruntime's quantizer and from tensorsmith.precision, and real third-party models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from tensorsmith.cli import app
from tensorsmith.errors import UsageError
from tensorsmith.lint import lint_file, trt_ops
from tensorsmith.lint.trt import parse_trt_version

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import parse  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_models"
runner = CliRunner()


def save(tmp_path, proto, name="m.onnx") -> Path:
    p = tmp_path / name
    onnx.save(proto, str(p))
    return p


def rules(report) -> dict[str, int]:
    return report.counts()


# -- the op table -------------------------------------------------------------------


def test_op_table_versions():
    sup10_0, uns10_0 = trt_ops.table_for((10, 0))
    sup10_15, _ = trt_ops.table_for((10, 15))
    sup11, uns11 = trt_ops.table_for((11, 2))
    assert "Attention" not in sup10_0 and "Attention" in uns10_0  # added in 10.14
    assert "Attention" in sup10_15 and "RMSNormalization" in sup10_15
    assert "Swish" in sup11 and "Swish" not in sup10_15
    assert "DFT" in sup11 and "DFT" not in trt_ops.table_for((11, 0))[0]
    assert "NonMaxSuppression" in sup10_15 and "Det" in uns11 and "Unique" in uns11
    assert "INT64" in sup10_15["Add"] and "INT64" not in sup10_15["Conv"]
    assert len(sup10_15) > 150


@pytest.mark.parametrize(
    "text, want",
    [
        (None, (10, 15)),
        ("10", (10, 15)),
        ("10.x", (10, 15)),
        ("10.8", (10, 8)),
        ("10.13.3.9", (10, 13)),
        ("11.x", (11, 2)),
        ("11.0", (11, 0)),
    ],
)
def test_parse_trt_version(text, want):
    assert parse_trt_version(text) == want


@pytest.mark.parametrize("text", ["8.6", "9.x", "ten"])
def test_parse_trt_version_rejects(text):
    with pytest.raises(UsageError):
        parse_trt_version(text)


# -- rules on small graphs ---------------------------------------------------------------


def test_unsupported_and_custom_ops(tmp_path):
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17, "com.acme" : 1]>
        g (float[3,3] x) => (float[3,3] y, float det) {
            a = Relu(x)
            y = com.acme.Fancy(a)
            det = Det(x)
        }
    """)
    r = lint_file(save(tmp_path, proto))
    found = {(f.rule, f.op) for f in r.findings}
    assert found == {("unsupported-op", "Det"), ("custom-op", "com.acme::Fancy")}
    assert not r.clean and len(r.errors) == 2


def test_version_specific_ops(tmp_path):
    proto = onnx.parser.parse_model("""
        <ir_version: 11, opset_import: ["" : 23]>
        g (float[2,4,8] x, float[8] s) => (float[2,4,8] y) { y = RMSNormalization(x, s) }
    """)
    p = save(tmp_path, proto)
    assert lint_file(p, trt_version="10.15").clean
    old = lint_file(p, trt_version="10.8")
    assert rules(old) == {"unsupported-op": 1, "opset": 1}
    assert "from TensorRT 10.15" in next(f for f in old.findings if f.rule == "unsupported-op").message
    assert (
        next(f for f in old.findings if f.rule == "opset").severity == "warning"
    )  # 10.8: range not documented
    r100 = lint_file(p, trt_version="10.0")
    assert next(f for f in r100.findings if f.rule == "opset").severity == "error"  # 10.0 documents 9-20


def test_opset_rule(tmp_path):
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,3] x) => (float[2,3] y) { y = Relu(x) }
    """)
    proto.opset_import[0].version = 8
    r = lint_file(save(tmp_path, proto))
    assert rules(r) == {"opset": 1} and r.errors


def test_local_functions_are_checked_inside(tmp_path):
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17, "local" : 1]>
        g (float[2,3] x) => (float[2,3] y) { y = local.MyAct(x) }
        <domain: "local", opset_import: ["" : 17]>
        MyAct (a) => (b) { b = Relu(a) }
    """)
    assert lint_file(save(tmp_path, proto)).clean
    bad = parse("""
        <ir_version: 8, opset_import: ["" : 17, "local" : 1]>
        g (float[2,3] x) => (float[2,3] y) { y = local.MyAct(x) }
        <domain: "local", opset_import: ["" : 17]>
        MyAct (a) => (b) { b = Unique(a) }
    """)
    r = lint_file(save(tmp_path, bad, "bad.onnx"))
    assert [f.rule for f in r.findings] == ["unsupported-op"]
    assert "function local:MyAct" in r.findings[0].node


def test_restrictions(tmp_path):
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,1,8,8] x, int64[1] k) => (float[1,1,16,16] y, float[1,1,7,7] p, float[1,1,8,1] t) {
            sc = Constant <value = float[4] {1.0, 1.0, 2.0, 2.0}> ()
            y = Resize <mode = "cubic"> (x, , sc)
            p = MaxPool <kernel_shape = [2, 2], dilations = [2, 2]> (x)
            t, ti = TopK <sorted = 0, axis = -1> (x, k)
        }
    """)
    r = lint_file(save(tmp_path, proto))
    msgs = " | ".join(f.message for f in r.findings if f.rule == "op-restriction")
    assert "Resize mode 'cubic'" in msgs and "dilations" in msgs and "sorted=0" in msgs


def _qdq_model(act_zp_type: str, act_zp: int, w_axis: int = 0, act_per_channel: bool = False):
    zp_vals = "{" + ", ".join([str(act_zp)] * (3 if act_per_channel else 1)) + "}"
    zp_shape = "[3]" if act_per_channel else ""
    sc_vals = "{0.1, 0.1, 0.1}" if act_per_channel else "{0.1}"
    text = f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,3,8,8] x) => (float[1,4,6,6] y) {{
            s = Constant <value = float{zp_shape} {sc_vals}> ()
            z = Constant <value = {act_zp_type}{zp_shape} {zp_vals}> ()
            q = QuantizeLinear <axis = 1> (x, s, z)
            dq = DequantizeLinear <axis = 1> (q, s, z)
            ws = Constant <value = float[4] {{0.01, 0.02, 0.03, 0.04}}> ()
            wz = Constant <value = int8[4] {{0, 0, 0, 0}}> ()
            wq = Constant <value = int8[4,3,3,3] {{{", ".join(["1"] * 108)}}}> ()
            wdq = DequantizeLinear <axis = {w_axis}> (wq, ws, wz)
            y = Conv(dq, wdq)
        }}
    """
    return parse(text)


def test_qdq_symmetric_int8_is_clean(tmp_path):
    r = lint_file(save(tmp_path, _qdq_model("int8", 0)))
    assert r.clean, r.findings
    assert r.precision == "int8"


def test_qdq_uint8_asymmetric(tmp_path):
    r = lint_file(save(tmp_path, _qdq_model("uint8", 128)))
    assert rules(r) == {"qdq-uint8": 2, "qdq-zero-point": 2}
    assert "found 128" in next(f for f in r.findings if f.rule == "qdq-zero-point").message


def test_qdq_axis_rules(tmp_path):
    r = lint_file(save(tmp_path, _qdq_model("int8", 0, act_per_channel=True)))
    assert rules(r) == {"qdq-axis": 2}
    assert "activation" in r.findings[0].message


def test_qdq_weight_axis_mismatch(tmp_path):
    proto = _qdq_model("int8", 0)
    # per-channel scales along axis 1 would need 3 scales: make them so, on the wrong axis
    for n in proto.graph.node:
        if n.output[0] == "ws":
            n.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.full(3, 0.01, np.float32)))
        if n.output[0] == "wz":
            n.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.zeros(3, np.int8)))
        if n.output[0] == "wdq":
            n.attribute[0].i = 1
    r = lint_file(save(tmp_path, proto))
    assert [f.rule for f in r.findings] == ["qdq-axis"]
    assert "axis 1" in r.findings[0].message and "axis 0" in r.findings[0].message


def test_fp16_rules(tmp_path):
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float16[2,64] x) => (float16[2,64] y, float16[2,64] sm) {
            m = ReduceMean <axes = [-1]> (x)
            d = Sub(x, m)
            sq = Mul(d, d)
            v = ReduceMean <axes = [-1]> (sq)
            y = Div(d, v)
            e = Exp(x)
            s = ReduceSum <keepdims = 1> (e)
            sm = Div(e, s)
        }
    """)
    r = lint_file(save(tmp_path, proto))
    assert r.precision == "fp16"
    assert rules(r) == {"fp16-layernorm": 1, "fp16-reduce": 1, "fp16-softmax": 1}
    # a max-subtracted softmax is fine (the max reaches Sub through Expand)
    safe = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float16[2,64] x) => (float16[2,64] sm) {
            mx = ReduceMax <axes = [-1], keepdims = 1> (x)
            shp = Shape(x)
            mb = Expand(mx, shp)
            d = Sub(x, mb)
            e = Exp(d)
            s = ReduceSum <keepdims = 1> (e)
            sm = Div(e, s)
        }
    """)
    assert rules(lint_file(save(tmp_path, safe, "safe.onnx"))) == {"fp16-reduce": 1}


def test_fp16_range_only_when_fp16(tmp_path):
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,3] x) => (float[2,3] y) {
            big = Constant <value = float[1] {-1e9}> ()
            y = Add(x, big)
        }
    """)
    p = save(tmp_path, proto)
    assert lint_file(p).clean  # an FP32 engine: no FP16 risk
    r10 = lint_file(p, precision="fp16", trt_version="10.x")  # weak typing + FP16 flag
    assert rules(r10) == {"fp16-range": 1} and "1e+09" in r10.findings[0].message
    r11 = lint_file(p, precision="fp16", trt_version="11.x")
    assert "precision-not-in-graph" in rules(r11)


def test_int8_requested_without_qdq(tmp_path):
    r = lint_file(SAMPLES / "cnn.onnx", precision="int8")
    assert rules(r) == {"precision-not-in-graph": 1}


def test_int64_and_double_casts(tmp_path):
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[2,3] a, int64[3,2] b, double[3] d) => (int64[2,2] y, uint8[3] u) {
            y = MatMul(a, b)
            f = Cast <to = 1> (d)
            u8 = Cast <to = 2> (f)
            u = Identity(u8)
        }
    """)
    r = lint_file(save(tmp_path, proto))
    assert rules(r) == {"int64-cast": 1, "double-cast": 1, "uint8-internal": 1}
    assert next(f for f in r.findings if f.rule == "int64-cast").op == "MatMul"


def test_dynamic_inputs_and_profiles(tmp_path):
    r = lint_file(SAMPLES / "transformer.onnx")
    assert rules(r) == {"dynamic-no-profile": 1} and "seq" in r.findings[0].message
    r = lint_file(SAMPLES / "transformer.onnx", shapes=["x=1x4x64:2x16x64:8x128x64"])
    assert r.clean and r.profiles["x"]["max"] == [8, 128, 64]
    r = lint_file(SAMPLES / "cnn.onnx", max_batch=32)
    assert r.clean and r.profiles["input"] == {
        "min": [1, 3, 32, 32],
        "opt": [1, 3, 32, 32],
        "max": [32, 3, 32, 32],
        "source": "default batch",
    }
    with pytest.raises(UsageError, match="fixed at 3"):
        lint_file(SAMPLES / "cnn.onnx", shapes=["input=1x4x32x32:1x4x32x32:2x4x32x32"])
    with pytest.raises(UsageError, match="unknown input"):
        lint_file(SAMPLES / "cnn.onnx", shapes=["nope=1x3x32x32"])
    with pytest.raises(UsageError, match="MIN <= OPT <= MAX"):
        lint_file(SAMPLES / "cnn.onnx", shapes=["input=4x3x32x32:1x3x32x32:8x3x32x32"])


@pytest.mark.parametrize("name", ["cnn", "resblock", "mobilenet_block"])
def test_sample_models_lint_clean(name):
    r = lint_file(SAMPLES / f"{name}.onnx")
    assert r.clean, r.findings
    assert r.profiles["input"]["source"] == "default batch"


# -- INT8 from onnxruntime's quantizer and from tensorsmith.precision --------------------


class _Reader:
    def __init__(self, n=4):
        self.i, self.n = 0, n

    def get_next(self):
        if self.i >= self.n:
            return None
        self.i += 1
        return {"input": np.random.default_rng(self.i).standard_normal((1, 3, 32, 32)).astype(np.float32)}


@pytest.fixture(scope="module")
def ort_quantized(tmp_path_factory):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    d = tmp_path_factory.mktemp("q")
    out = {}
    for mode, act, extra in (
        ("ort", QuantType.QUInt8, {}),
        # symmetric INT8, but onnxruntime's default INT32 biases: the parser rejects those
        ("trt-int32-bias", QuantType.QInt8, {"ActivationSymmetric": True, "WeightSymmetric": True}),
        (
            "trt",
            QuantType.QInt8,
            {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        ),
    ):
        p = d / f"{mode}.onnx"
        quantize_static(
            str(SAMPLES / "resblock.onnx"),
            str(p),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=act,
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options=extra,
        )
        out[mode] = p
    return out


def test_onnxruntime_qdq_trt_style_clean_ort_style_not(ort_quantized):
    # symmetric INT8 with float biases: nothing the parser rejects (onnxruntime's op set
    # still quantizes BatchNormalization weights: placement warnings, not errors)
    trt = lint_file(ort_quantized["trt"])
    assert not trt.errors, trt.errors
    assert set(rules(trt)) <= {"qdq-placement"}
    ort = lint_file(ort_quantized["ort"])
    assert {"qdq-uint8", "qdq-zero-point"} <= set(rules(ort))
    assert all(f.severity == "error" for f in ort.findings if f.rule != "qdq-placement")


def test_onnxruntime_default_qdq_errors_name_int32_bias_and_uint8(ort_quantized):
    """onnxruntime's default QDQ (UINT8 activations, INT32 biases) and its symmetric flavour
    (INT32 biases only): errors naming each rejected DequantizeLinear."""
    for mode in ("ort", "trt-int32-bias"):
        r = lint_file(ort_quantized[mode])
        int32 = [f for f in r.findings if f.rule == "qdq-type"]
        proto = onnx.load(str(ort_quantized[mode]))
        inits = {t.name: t.data_type for t in proto.graph.initializer}
        expected = {
            n.name
            for n in proto.graph.node
            if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) == onnx.TensorProto.INT32
        }
        assert expected and {f.node for f in int32} == expected
        assert all(f.severity == "error" and "int32" in f.message for f in int32)
    ort = lint_file(ort_quantized["ort"])
    uint8 = [f for f in ort.findings if f.rule == "qdq-uint8"]
    assert uint8 and all(f.node and "uint8" in f.message for f in uint8)


def test_qdq_type_scale_axis_and_blocked(tmp_path):
    proto = parse("""
        <ir_version: 9, opset_import: ["" : 21]>
        g (float[1,4,8,8] x) => (float[1,4,8,8] y, float[4,4] z, float[4] b) {
            s = Constant <value = float {0.1}> ()
            neg = Constant <value = float {-0.1}> ()
            q = QuantizeLinear (x, s)
            dq = DequantizeLinear (q, neg)
            w = Constant <value = int8[4,4,1,1] {1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1}> ()
            ws = Constant <value = float[3] {0.1, 0.1, 0.1}> ()
            wdq = DequantizeLinear <axis = 0> (w, ws)
            y = Conv (dq, wdq)
            m = Constant <value = int8[4,4] {1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1}> ()
            ms = Constant <value = float[2,4] {0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1}> ()
            z = DequantizeLinear <axis = 0, block_size = 2> (m, ms)
            bq = Constant <value = int32[4] {1, 2, 3, 4}> ()
            bs = Constant <value = float {0.01}> ()
            b = DequantizeLinear (bq, bs)
        }
    """)
    r = lint_file(save(tmp_path, proto))
    got = {(f.rule, f.node) for f in r.findings}
    assert ("qdq-scale", "dq") in got or any(f.rule == "qdq-scale" and "> 0" in f.message for f in r.findings)
    axis = [f.message for f in r.findings if f.rule == "qdq-axis"]
    assert any("3 scales along axis 0" in m for m in axis), axis
    assert any("blocked" in m for m in axis), axis
    assert any(f.rule == "qdq-type" and f.tensor == "bq" for f in r.findings), r.findings


def test_qdq_placement_warnings(tmp_path):
    """Q/DQ before Softmax and on a constant feeding Pad: warnings; the same graph with
    Q/DQ only at the Conv/Add entries: clean."""

    def model(bad: bool):
        qx = "dx" if bad else "x"
        add_b = "dr" if bad else "r"
        return parse(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,4,8,8] x) => (float[1,4,8,8] y, float[1,4,8,8] sm, float[1,4,8,8] sm0) {{
            s = Constant <value = float {{0.05}}> ()
            z = Constant <value = int8 {{0}}> ()
            w = Constant <value = int8[4,4,1,1] {{1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1}}> ()
            ws = Constant <value = float[4] {{0.1, 0.1, 0.1, 0.1}}> ()
            wz = Constant <value = int8[4] {{0, 0, 0, 0}}> ()
            wdq = DequantizeLinear <axis = 0> (w, ws, wz)
            qx0 = QuantizeLinear (x, s, z)
            dx = DequantizeLinear (qx0, s, z)
            c = Conv (dx, wdq)
            r = Relu (c)
            qr = QuantizeLinear (r, s, z)
            dr = DequantizeLinear (qr, s, z)
            y = Add ({add_b}, dx)
            sm0 = Softmax <axis = 1> ({qx})
            pads = Constant <value = int64[8] {{0, 0, 0, 0, 0, 0, 0, 0}}> ()
            pv = Constant <value = float {{0.5}}> ()
            qpv = QuantizeLinear (pv, s, z)
            dpv = DequantizeLinear (qpv, s, z)
            sm = Pad ({qx}, pads, {"dpv" if bad else "pv"})
        }}
        """)

    bad = lint_file(save(tmp_path, model(True), "bad.onnx"))
    msgs = [f.message for f in bad.findings if f.rule == "qdq-placement"]
    assert all(f.severity == "warning" for f in bad.findings if f.rule == "qdq-placement")
    assert any("Softmax" in m for m in msgs), msgs
    assert any("quantized constant" in m and "Pad" in m for m in msgs), msgs
    good = model(False)
    for out in ("qr", "dr", "qpv", "dpv"):
        good.graph.node.remove(next(n for n in good.graph.node if n.output[0] == out))
    r = lint_file(save(tmp_path, good, "good.onnx"))
    assert r.clean, r.findings


@pytest.fixture(scope="module")
def precision_int8(tmp_path_factory):
    """INT8 models written by tensorsmith.precision (issue 4) for both targets."""
    try:
        from tensorsmith.precision import int8
    except ImportError as exc:
        pytest.skip(f"tensorsmith.precision has not landed: {exc}")
    needed = ("prepare", "Settings", "Config", "quantize")
    if not all(hasattr(int8, n) for n in needed):
        pytest.skip(
            f"tensorsmith.precision.int8 lacks {', '.join(n for n in needed if not hasattr(int8, n))}"
        )
    import onnx_ir as ir

    from tensorsmith.model_io import load
    from tensorsmith.optimizer import optimize

    d = tmp_path_factory.mktemp("prec")
    model = load(SAMPLES / "resblock.onnx")
    optimize(model)
    proto, _ = int8.prepare(ir.serde.serialize_model(model))
    src = d / "prepared.onnx"
    onnx.save(proto, str(src))
    samples = [_Reader(8).get_next() for _ in range(4)]
    out = {}
    for target in ("trt", "ort"):
        p = d / f"{target}.onnx"
        int8.quantize(
            src,
            p,
            int8.Settings(target=target),
            int8.Config("all-ops"),
            cache_path=d / f"calib-{target}.json",
            calib_samples=samples,
        )
        out[target] = p
    return out


def test_precision_int8_trt_mode_lints_clean(precision_int8):
    r = lint_file(precision_int8["trt"])
    assert r.clean, [f.to_dict() for f in r.findings]
    assert "int8" in r.precision


def test_precision_int8_ort_mode_has_findings(precision_int8):
    r = lint_file(precision_int8["ort"])
    assert "qdq-uint8" in rules(r), rules(r)


# -- the CLI ---------------------------------------------------------------------------


def test_cli_exit_codes_and_json(tmp_path):
    res = runner.invoke(app, ["lint", str(SAMPLES / "cnn.onnx")])
    assert res.exit_code == 0, res.output
    assert "clean" in res.output
    res = runner.invoke(app, ["lint", str(SAMPLES / "transformer.onnx"), "--json"])
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert data["status"] == "findings" and data["rules"] == {"dynamic-no-profile": 1}
    assert data["target_version"] == "10.15" and data["errors"] == 1
    res = runner.invoke(
        app,
        [
            "lint",
            str(SAMPLES / "transformer.onnx"),
            "--trt-version",
            "11.x",
            "--shapes",
            "x=1x1x64:1x16x64:4x64x64",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["target_version"] == "11.2"


def test_cli_usage_errors(tmp_path):
    res = runner.invoke(app, ["lint", str(tmp_path / "missing.onnx")])
    assert res.exit_code == 2
    res = runner.invoke(app, ["lint", str(SAMPLES / "cnn.onnx"), "--for", "coreml"])
    assert res.exit_code == 2 and "unknown lint target" in res.output
    res = runner.invoke(app, ["lint", str(SAMPLES / "cnn.onnx"), "--trt-version", "8.6"])
    assert res.exit_code == 2 and "TensorRT 10 and 11" in res.output


# -- real third-party models -------------------------------------------------------------

# model -> (--shapes, rules expected with those profiles, rules expected with --precision fp16)
THIRDPARTY = {
    "ppocr_rec_v4": (["x=1x3x48x160:1x3x48x320:4x3x48x640"], {}, {"fp16-layernorm": 5}),
    "ppocr_det_v4": (["x=1x3x320x320:1x3x640x640:2x3x960x960"], {}, {"fp16-range": 1}),
    "nudenet_320n": (["images=1x3x320x320:1x3x320x320:4x3x320x320"], {}, {}),
    "minilm_l3_paraphrase": (
        ["input_ids=1x8:1x128:8x256", "attention_mask=1x8:1x128:8x256"],
        {},
        {"fp16-range": 1, "fp16-reduce": 2},
    ),
    "magika_v3_3": ([], {}, {"fp16-layernorm": 2, "fp16-reduce": 3}),
}


@pytest.mark.thirdparty
@pytest.mark.parametrize("name", list(THIRDPARTY))
def test_thirdparty_models(name):
    from tests import thirdparty

    try:
        path = thirdparty.fetch(name)
    except thirdparty.ThirdPartyUnavailable as exc:
        pytest.skip(str(exc))
    shapes, want, want_fp16 = THIRDPARTY[name]
    r = lint_file(path, shapes=shapes)
    assert rules(r) == want, [f.to_dict() for f in r.findings]
    r16 = lint_file(path, shapes=shapes, precision="fp16")
    assert rules(r16) == want_fp16, [f.to_dict() for f in r16.findings]
    if not shapes:
        return
    assert "dynamic-no-profile" in rules(lint_file(path))  # without profiles: named
