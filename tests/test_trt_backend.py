"""The TensorRT backend (``build``, ``convert --to trt``) against a RECORDING STAND-IN for
``tensorrt`` (tests/fake_tensorrt.py, injected through sys.modules): these tests check
tensorsmith's own logic around the TensorRT API (profiles from --shapes, flag selection
for TensorRT 10 vs 11, the sidecar, error mapping, the timing cache round trip, the
verification runner). They do not show that real TensorRT accepts what we send; the
``gpu`` tests at the end do that, where ``tensorrt`` imports and a GPU is present.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import fake_tensorrt  # noqa: E402  (the recording stand-in, NOT TensorRT)
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from tensorsmith.cli import app
from tensorsmith.convert import trt as trt_backend
from tensorsmith.convert.trt import memory as trt_memory
from tensorsmith.convert.trt.profiles import Profile, parse_profile_specs
from tensorsmith.errors import ConversionError, UsageError

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_models"
GPU = {"name": "Fake GPU (test)", "compute_capability": "8.6", "source": "test"}
runner = CliRunner()


@pytest.fixture
def fake_trt(monkeypatch):
    """Install the stand-in as ``tensorrt`` plus a GPU and host "device" memory; returns a configurer."""
    from tensorsmith import machine

    monkeypatch.setattr(machine, "current_gpu", lambda: dict(GPU))
    monkeypatch.setattr(trt_backend, "missing_for_build", lambda: [])
    monkeypatch.setattr(trt_memory, "device_memory", lambda: fake_tensorrt.HostMemory())

    def setup(**config):
        return fake_tensorrt.install(monkeypatch, **config)

    setup()
    return setup


def calls(name):
    return [c for c in fake_tensorrt.STATE["calls"] if c[0] == name]


def build(args, json_out=True):
    res = runner.invoke(app, ["build", *map(str, args), *(["--json"] if json_out else [])])
    data = None
    if json_out and res.stdout.strip().startswith("{"):
        data = json.loads(res.stdout)
    return res, data


@pytest.fixture(scope="module")
def fp16_model(tmp_path_factory):
    """A graph that carries FP16 (an FP16 weight cast up), dynamic batch."""
    w = numpy_helper.from_array(np.linspace(-1, 1, 4).astype(np.float16), "w16")
    g = helper.make_graph(
        [
            helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["x", "w"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [w],
    )
    p = tmp_path_factory.mktemp("fp16") / "fp16.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(p))
    return p


@pytest.fixture(scope="module")
def qdq_model(tmp_path_factory):
    """Symmetric INT8 Q/DQ (onnxruntime's quantizer, TensorRT settings)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    class Reader:
        i = 0

        def get_next(self):
            self.i += 1
            if self.i > 3:
                return None
            return {"input": np.random.default_rng(self.i).standard_normal((1, 3, 32, 32)).astype(np.float32)}

    p = tmp_path_factory.mktemp("qdq") / "cnn_int8.onnx"
    quantize_static(
        str(SAMPLES / "cnn.onnx"),
        str(p),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return p


# -- small parsers -----------------------------------------------------------------------


def test_parse_workspace():
    assert trt_backend.parse_workspace("4G") == 4 << 30
    assert trt_backend.parse_workspace("512MiB") == 512 << 20
    assert trt_backend.parse_workspace("1048576") == 1 << 20
    assert trt_backend.parse_workspace(None) is None
    with pytest.raises(UsageError):
        trt_backend.parse_workspace("lots")


def test_parse_profile_specs():
    got = parse_profile_specs(["x=1x3x224x224:8x3x224x224:32x3x224x224", "m=1x16"])
    assert got["x"].min == [1, 3, 224, 224] and got["x"].max == [32, 3, 224, 224]
    assert got["m"].min == got["m"].opt == got["m"].max == [1, 16]
    assert parse_profile_specs(["1x3:2x3:4x3"])[""].opt == [2, 3]
    for bad in (["x=1x3:2x3"], ["x=1x3:2x3x4:5x3"], ["x=4x3:2x3:8x3"], ["=1x3"], ["x=1x3", "x=2x3"]):
        with pytest.raises(UsageError):
            parse_profile_specs(bad)


def test_prepared_paths():
    assert trt_backend.prepared_onnx_path("/a/model.plan") == Path("/a/model.trt.onnx")
    assert trt_backend.sidecar_path("/a/model.plan") == Path("/a/model.plan.json")
    assert trt_backend.lint_report_path("/a/m.engine") == Path("/a/m.trt.lint.json")


# -- profiles --------------------------------------------------------------------------


def test_profiles_from_shapes(fake_trt, tmp_path):
    plan = tmp_path / "tf.plan"
    res, data = build([SAMPLES / "transformer.onnx", "-o", plan, "--shapes", "x=1x4x64:2x16x64:8x128x64"])
    assert res.exit_code == 0, res.output
    assert calls("IOptimizationProfile.set_shape") == [
        ("IOptimizationProfile.set_shape", ("x", (1, 4, 64), (2, 16, 64), (8, 128, 64)), {})
    ]
    assert data["profiles"]["x"]["source"] == "--shapes"
    assert data["verification"]["passed"] and data["verification"]["samples"] == 2  # OPT and MAX
    assert data["verification"]["input_shapes"] == {"x": [2, 16, 64]}
    assert plan.is_file() and trt_backend.sidecar_path(plan).is_file()


def test_default_batch_profile(fake_trt, tmp_path):
    res, data = build([SAMPLES / "cnn.onnx", "-o", tmp_path / "cnn.plan", "--max-batch", "4"])
    assert res.exit_code == 0, res.output
    assert calls("IOptimizationProfile.set_shape")[0][1] == (
        "input",
        (1, 3, 32, 32),
        (1, 3, 32, 32),
        (4, 3, 32, 32),
    )
    assert data["profiles"]["input"]["source"] == "default batch"


def test_dynamic_input_without_profile_is_named(fake_trt, tmp_path):
    res, data = build([SAMPLES / "transformer.onnx", "-o", tmp_path / "t.plan"])
    assert res.exit_code == 2
    assert "no optimization profile for dynamic input(s) x (dynamic axes 0 (batch), 1 (seq))" in res.output
    assert fake_trt_untouched() and not list(tmp_path.iterdir())


def fake_trt_untouched():
    return not fake_tensorrt.STATE["builders"]


def test_bad_profile_rank(fake_trt, tmp_path):
    res, _ = build(
        [SAMPLES / "cnn.onnx", "-o", tmp_path / "c.plan", "--shapes", "input=1x3x32:1x3x32:2x3x32"]
    )
    assert res.exit_code == 2 and "rank 3" in res.output


# -- network typing and builder flags: TensorRT 10 vs 11 ---------------------------------

STRONG = 1 << int(fake_tensorrt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


@pytest.mark.parametrize(
    "version, model, precision, network_flags, builder_flags, engine",
    [
        ("10.13.3.9", "cnn", None, 0, [], "fp32"),
        ("10.13.3.9", "cnn", "fp16", 0, ["FP16"], "fp16"),
        ("10.13.3.9", "fp16", None, STRONG, [], "fp16"),
        ("10.13.3.9", "qdq", None, STRONG, [], "int8"),
        ("11.2.1.2", "cnn", None, STRONG, [], "fp32"),
        ("11.2.1.2", "fp16", None, STRONG, [], "fp16"),
        ("11.2.1.2", "qdq", "int8", STRONG, [], "int8"),
    ],
)
def test_flag_selection(
    fake_trt, tmp_path, fp16_model, qdq_model, version, model, precision, network_flags, builder_flags, engine
):
    fake_trt(version=version)
    src = {"cnn": SAMPLES / "cnn.onnx", "fp16": fp16_model, "qdq": qdq_model}[model]
    args = [src, "-o", tmp_path / "m.plan"] + (["--precision", precision] if precision else [])
    res, data = build(args)
    assert res.exit_code == 0, res.output
    net_flags = calls("Builder.create_network")[0][1][0]
    if version.startswith("11"):
        # TensorRT 11: every network is strongly typed; we pass the flag whenever the graph is typed
        assert not hasattr(fake_tensorrt.BuilderFlag, "FP16")
    assert net_flags == network_flags
    assert sorted(c[1][0] for c in calls("IBuilderConfig.set_flag")) == builder_flags
    assert data["precision"] == engine and data["typing"] == ("strong" if network_flags else "weak")


def test_trt11_refuses_fp16_flag_on_fp32_graph(fake_trt, tmp_path):
    fake_trt(version="11.2.1.2")
    res, data = build([SAMPLES / "cnn.onnx", "-o", tmp_path / "m.plan", "--precision", "fp16"])
    assert res.exit_code == 3
    assert "TensorRT 11 builds strongly typed networks only" in res.output
    assert "--precision fp16 first" in res.output
    assert fake_trt_untouched() or not calls("Builder.build_serialized_network")


def test_int8_needs_qdq(fake_trt, tmp_path):
    res, _ = build([SAMPLES / "cnn.onnx", "-o", tmp_path / "m.plan", "--precision", "int8"])
    assert res.exit_code == 3 and "no QuantizeLinear/DequantizeLinear" in res.output


def test_old_tensorrt_refused(fake_trt, tmp_path):
    fake_trt(version="8.6.1.6")
    res, _ = build([SAMPLES / "cnn.onnx", "-o", tmp_path / "m.plan"])
    assert res.exit_code == 3 and "TensorRT 8.6.1.6 is too old" in res.output


# -- builder options, sidecar ---------------------------------------------------------------


def test_builder_options_and_sidecar(fake_trt, tmp_path):
    plan = tmp_path / "cnn.plan"
    cache = tmp_path / "tc.bin"
    res, data = build(
        [
            SAMPLES / "cnn.onnx",
            "-o",
            plan,
            "--workspace",
            "512M",
            "--builder-opt-level",
            "5",
            "--hardware-compat",
            "ampere_plus",
            "--version-compat",
            "--timing-cache",
            cache,
        ]
    )
    assert res.exit_code == 0, res.output
    config = fake_tensorrt.STATE["configs"][0]
    assert config.pool_limits == {"WORKSPACE": 512 << 20}
    assert config.builder_optimization_level == 5
    assert config.hardware_compatibility_level == fake_tensorrt.HardwareCompatibilityLevel.AMPERE_PLUS
    assert "VERSION_COMPATIBLE" in config.flags  # and the runner allowed the embedded lean runtime
    side = json.loads(trt_backend.sidecar_path(plan).read_text())
    assert side["tensorrt_version"] == fake_tensorrt.__version__
    assert side["gpu"]["name"] == GPU["name"] and side["gpu"]["compute_capability"] == "8.6"
    assert side["profiles"]["input"]["max"] == [8, 3, 32, 32]
    assert side["precision"] == {
        "engine": "fp32",
        "graph": "fp32",
        "requested": None,
        "typing": "weak",
        "builder_flags": [],
    }
    assert side["source_onnx"]["sha256"] == hashlib.sha256((SAMPLES / "cnn.onnx").read_bytes()).hexdigest()
    assert side["flags"] == {
        "workspace": 512 << 20,
        "builder_optimization_level": 5,
        "hardware_compatibility_level": "AMPERE_PLUS",
        "version_compatible": True,
        "timing_cache": str(cache),
        "max_batch": 8,
    }
    assert side["verification"]["passed"] is True
    assert data["files"] == [str(plan), str(trt_backend.sidecar_path(plan))]
    assert json.loads(plan.read_bytes())["fake_tensorrt_plan"]  # the stand-in's "engine"
    res, _ = build([SAMPLES / "cnn.onnx", "-o", plan, "--hardware-compat", "volta"])
    assert res.exit_code == 2


def test_hardware_compat_level_missing_in_this_tensorrt_exit_2(fake_trt, tmp_path, monkeypatch):
    # issue 17: TensorRT 10.8 has no HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY; the
    # stand-in's enum is narrowed here to 10.8's members (NONE, AMPERE_PLUS)
    import enum

    fake_trt(version="10.8.0.43")
    narrowed = enum.IntEnum("HardwareCompatibilityLevel", ["NONE", "AMPERE_PLUS"], start=0)
    monkeypatch.setattr(fake_tensorrt, "HardwareCompatibilityLevel", narrowed)
    plan = tmp_path / "cnn.plan"
    res, _ = build([SAMPLES / "cnn.onnx", "-o", plan, "--hardware-compat", "same_compute_capability"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "TensorRT 10.8.0.43 has no HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY" in text
    assert "10.9 and later 10.x releases, and 11.x have it" in text
    assert "Traceback" not in res.output and "AttributeError" not in res.output
    assert not list(tmp_path.iterdir())
    # the levels 10.8 has still build
    res, _ = build([SAMPLES / "cnn.onnx", "-o", plan, "--hardware-compat", "ampere_plus"])
    assert res.exit_code == 0, res.output
    assert fake_tensorrt.STATE["configs"][-1].hardware_compatibility_level == narrowed.AMPERE_PLUS


def test_input_shape_is_the_default_profile(fake_trt, tmp_path):
    # issue 17: --input-shape for an input with dynamic non-batch dims is its profile
    # (MIN=OPT=MAX there, the batch axis 1:1:--max-batch) when --shapes does not name it
    plan = tmp_path / "t.plan"
    args = ["convert", str(SAMPLES / "transformer.onnx"), "--to", "trt", "-o", str(plan)]
    res = runner.invoke(app, [*args, "--input-shape", "x=2x16x64", "--max-batch", "4", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["profiles"]["x"] == {
        "min": [1, 16, 64],
        "opt": [1, 16, 64],
        "max": [4, 16, 64],
        "source": "--input-shape",
    }
    assert calls("IOptimizationProfile.set_shape") == [
        ("IOptimizationProfile.set_shape", ("x", (1, 16, 64), (1, 16, 64), (4, 16, 64)), {})
    ]
    assert not [f for f in data["lint"]["findings"] if f["rule"] == "dynamic-no-profile"]
    # --shapes still wins
    res = runner.invoke(
        app, [*args, "--input-shape", "x=2x16x64", "--shapes", "x=1x8x64:2x8x64:2x32x64", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["profiles"]["x"]["source"] == "--shapes"
    # --prepare-only: the printed build command carries the profile, so `build` needs no --shapes
    out = tmp_path / "prep"
    res = runner.invoke(
        app,
        [
            "convert",
            str(SAMPLES / "transformer.onnx"),
            "--to",
            "trt",
            "-o",
            str(out / "t.plan"),
            "--input-shape",
            "x=2x16x64",
            "--prepare-only",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    prepared = json.loads(res.stdout)
    assert "--shapes x=1x16x64:1x16x64:8x16x64" in prepared["build_command"]
    lint = json.loads((out / "t.trt.lint.json").read_text())
    assert lint["profiles"]["x"]["source"] == "--input-shape"
    assert not [f for f in lint["findings"] if f["rule"] == "dynamic-no-profile"]
    res, data = build([out / "t.trt.onnx", "-o", out / "t.plan", "--shapes", "x=1x16x64:1x16x64:8x16x64"])
    assert res.exit_code == 0, res.output


# -- error mapping -------------------------------------------------------------------------


def test_parser_errors_per_node(fake_trt, tmp_path):
    fake_trt(reject_ops={"Conv"})
    res, data = build([SAMPLES / "cnn.onnx", "-o", tmp_path / "m.plan"])
    assert res.exit_code == 3
    assert data["status"] == "failed" and len(data["parser_errors"]) == 2
    e = data["parser_errors"][0]
    assert (
        e["op"] == "Conv" and e["name"] and e["code"] == "UNSUPPORTED_NODE" and "No importer" in e["message"]
    )
    res, _ = build([SAMPLES / "cnn.onnx", "-o", tmp_path / "m.plan"], json_out=False)
    assert res.exit_code == 3
    assert "TensorRT's ONNX parser failed on 2 node(s)" in res.output and "(Conv): No importer" in res.output
    assert not list(tmp_path.iterdir())


def test_build_failure_reports_tensorrt_message(fake_trt, tmp_path):
    fake_trt(fail_build=True)
    res, _ = build([SAMPLES / "cnn.onnx", "-o", tmp_path / "m.plan"], json_out=False)
    assert res.exit_code == 3 and "could not find any implementation" in res.output
    assert not list(tmp_path.iterdir())


def test_verification_failure_leaves_nothing(fake_trt, tmp_path):
    fake_trt(perturb=0.5)
    res, data = build([SAMPLES / "cnn.onnx", "-o", tmp_path / "m.plan"])
    assert res.exit_code == 4
    assert data["status"] == "verification-failed" and data["verification"]["passed"] is False
    assert not list(tmp_path.iterdir())


def test_fp16_engine_judged_by_precision_gate(fake_trt, tmp_path, fp16_model):
    """An FP16 engine is judged by the precision work's gate (cosine), not by FP32 tolerances."""
    pytest.importorskip("tensorsmith.precision.gate")
    fake_trt(perturb=2e-3)  # well above the FP32 gate, far inside cosine 0.999
    res, data = build([fp16_model, "-o", tmp_path / "m.plan"])
    assert res.exit_code == 0, res.output
    assert any("precision gate" in n for n in data["verification"]["notes"])
    res, data = build([SAMPLES / "cnn.onnx", "-o", tmp_path / "c.plan"])  # FP32: the tolerance applies
    assert res.exit_code == 4


def test_no_tensorrt_here_exit_3(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    res = runner.invoke(app, ["build", str(SAMPLES / "cnn.onnx"), "-o", str(tmp_path / "m.plan")])
    if not trt_backend.missing_for_build():
        pytest.skip("this machine has TensorRT and a GPU")
    assert res.exit_code == 3
    assert "cannot build a TensorRT engine on this machine" in res.output and "GPU" in res.output
    assert not list(tmp_path.iterdir())


# -- timing cache --------------------------------------------------------------------------


def test_timing_cache_round_trip(fake_trt, tmp_path):
    cache = tmp_path / "shared.cache"
    res, data = build([SAMPLES / "cnn.onnx", "-o", tmp_path / "a.plan", "--timing-cache", cache])
    assert res.exit_code == 0, res.output
    first = cache.read_bytes()
    assert first.startswith(b"FAKETC|fake-sm86|tactics-") and data["timing_cache"]["used"] is False
    fake_trt()
    res, data = build([SAMPLES / "resblock.onnx", "-o", tmp_path / "b.plan", "--timing-cache", cache])
    assert res.exit_code == 0, res.output
    assert calls("IBuilderConfig.create_timing_cache")[0][1] == (len(first),)  # the file was read in
    assert calls("IBuilderConfig.set_timing_cache")[0][2] == {"ignore_mismatch": False}
    assert data["timing_cache"]["used"] is True and data["timing_cache"]["loaded_bytes"] == len(first)
    entries = cache.read_bytes().decode().split("|", 2)[2].split(";")
    assert len(entries) == 2  # written back: the first build's entry plus this one's


def test_timing_cache_from_another_gpu(fake_trt, tmp_path):
    cache = tmp_path / "other.cache"
    cache.write_bytes(b"FAKETC|other-gpu|tactics-old")
    res, data = build([SAMPLES / "cnn.onnx", "-o", tmp_path / "a.plan", "--timing-cache", cache])
    assert res.exit_code == 0, res.output
    assert (
        "another GPU or TensorRT version" in data["timing_cache"]["note"] and not data["timing_cache"]["used"]
    )
    assert b"tactics-old" in cache.read_bytes()  # merged back (ignore_mismatch=True, as Polygraphy does)
    cache.write_bytes(b"garbage")
    fake_trt()
    res, data = build([SAMPLES / "cnn.onnx", "-o", tmp_path / "b.plan", "--timing-cache", cache])
    assert res.exit_code == 0 and "could not read" in data["timing_cache"]["note"]


# -- the runner ----------------------------------------------------------------------------


def test_engine_runner_binds_every_io_tensor(fake_trt, qdq_model):
    trt = fake_trt()
    opts = trt_backend.TrtOptions(verify=False)
    # build through the backend, then run the plan directly
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        trt_backend.build_engine(qdq_model, Path(d) / "q.plan", opts)
        plan = (Path(d) / "q.plan").read_bytes()
    mem = fake_tensorrt.HostMemory()
    r = trt_backend.EngineRunner(trt, plan, memory=mem)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    out = r.infer({"input": x})
    assert out["logits"].shape == (3, 10) and out["logits"].dtype == np.float32
    ctx = fake_tensorrt.STATE["contexts"][-1]
    assert set(ctx.addresses) == {"input", "logits"} and ctx.input_shapes == {"input": (3, 3, 32, 32)}
    assert mem.freed == 2 and not mem.buffers


# -- convert --to trt ---------------------------------------------------------------------------


def test_convert_to_trt_end_to_end(fake_trt, tmp_path):
    plan = tmp_path / "cnn.plan"
    res = runner.invoke(app, ["convert", str(SAMPLES / "cnn.onnx"), "--to", "trt", "-o", str(plan), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)  # one JSON object, the ONNX step inside it
    assert data["status"] == "ok" and data["target"] == "trt"
    assert data["onnx"]["status"] == "ok" and data["onnx"]["verification"]["passed"]
    assert data["lint"]["status"] == "clean"
    prepared = tmp_path / "cnn.trt.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cnn.plan",
        "cnn.plan.json",
        "cnn.trt.lint.json",
        "cnn.trt.onnx",
    ]
    side = json.loads((tmp_path / "cnn.plan.json").read_text())
    assert side["source_onnx"]["sha256"] == hashlib.sha256(prepared.read_bytes()).hexdigest()
    built = fake_tensorrt.STATE["builds"][0]
    assert built["onnx"] == str(prepared)
    assert "BatchNormalization" not in {
        n.op_type for n in onnx.load(str(prepared)).graph.node
    }  # optimized first


def test_convert_to_trt_int8_from_the_precision_work(fake_trt, tmp_path):
    """`convert --to trt --precision int8`: the precision work writes symmetric Q/DQ for TensorRT,
    lint finds nothing, TensorRT 11 builds it strongly typed, the gate judges the engine."""
    if "--precision" not in runner.invoke(app, ["convert", "--help"]).output:
        pytest.skip("the precision options (issue 4) are not on convert yet")
    fake_trt(version="11.2.1.2")
    res = runner.invoke(
        app,
        [
            "convert",
            str(SAMPLES / "cnn.onnx"),
            "--to",
            "trt",
            "-o",
            str(tmp_path / "q.plan"),
            "--precision",
            "int8",
            "--calib",
            "random",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["lint"]["status"] == "clean", data["lint"]["findings"]
    assert data["graph_precision"] == "int8" and data["typing"] == "strong" and data["builder_flags"] == []
    assert (
        any("precision gate" in n for n in data["verification"]["notes"]) and data["verification"]["passed"]
    )
    zps = [
        numpy_helper.to_array(t)
        for t in onnx.load(str(tmp_path / "q.trt.onnx")).graph.initializer
        if t.data_type in (TensorProto.INT8, TensorProto.UINT8) and t.dims in ([], [1])
    ]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)


def test_convert_to_trt_prints_lint_findings(fake_trt, tmp_path):
    res = runner.invoke(
        app, ["convert", str(SAMPLES / "transformer.onnx"), "--to", "trt", "-o", str(tmp_path / "t.plan")]
    )
    # lint names the dynamic input; the build then refuses it the same way (exit 2)
    assert res.exit_code == 2
    assert (
        "dynamic-no-profile" in res.output and "no optimization profile for dynamic input(s) x" in res.output
    )


def test_convert_to_trt_without_tensorrt_exit_3(tmp_path, monkeypatch):
    monkeypatch.setattr(
        trt_backend,
        "missing_for_build",
        lambda: ["the tensorrt Python package is not installed", "no NVIDIA GPU found"],
    )
    res = runner.invoke(
        app,
        [
            "convert",
            str(SAMPLES / "cnn.onnx"),
            "--to",
            "trt",
            "-o",
            str(tmp_path / "c.plan"),
            "--shapes",
            "input=1x3x32x32:2x3x32x32:4x3x32x32",
        ],
    )
    assert res.exit_code == 3
    assert (
        "cannot build a TensorRT engine on this machine: the tensorrt Python package is not installed"
        in res.output
    )
    assert "--prepare-only" in res.output
    assert (
        f"tensorsmith build {tmp_path / 'c.trt.onnx'} --to trt -o {tmp_path / 'c.plan'} --shapes "
        "input=1x3x32x32:2x3x32x32:4x3x32x32" in " ".join(res.output.split())
    )
    assert not list(tmp_path.iterdir())  # failed before converting anything


def test_convert_to_trt_prepare_only(tmp_path, monkeypatch):
    monkeypatch.setattr(trt_backend, "missing_for_build", lambda: ["no TensorRT"])
    plan = tmp_path / "rb.plan"
    res = runner.invoke(
        app,
        [
            "convert",
            str(SAMPLES / "resblock.onnx"),
            "--to",
            "trt",
            "-o",
            str(plan),
            "--prepare-only",
            "--json",
            "--workspace",
            "1G",
            "--timing-cache",
            "tc.bin",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["status"] == "prepared" and data["lint"]["status"] == "clean"
    assert data["build_command"].endswith(f"-o {plan} --workspace {1 << 30} --timing-cache tc.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rb.trt.lint.json", "rb.trt.onnx"]
    lint = json.loads((tmp_path / "rb.trt.lint.json").read_text())
    assert lint["status"] == "clean" and lint["profiles"]["input"]["source"] == "default batch"
    onnx.checker.check_model(str(tmp_path / "rb.trt.onnx"))
    # the prepared ONNX then builds with `tensorsmith build` (here: the stand-in)
    res = runner.invoke(
        app, ["convert", str(SAMPLES / "resblock.onnx"), "--to", "trt", "-o", str(plan), "--prepare-only"]
    )
    assert res.exit_code == 0 and "on a GPU machine with TensorRT 10/11 run:" in res.output


def test_convert_to_trt_refuses_onnx_output_name(tmp_path):
    res = runner.invoke(
        app,
        [
            "convert",
            str(SAMPLES / "cnn.onnx"),
            "--to",
            "trt",
            "-o",
            str(tmp_path / "x.onnx"),
            "--prepare-only",
        ],
    )
    assert res.exit_code == 2 and "name it .plan" in res.output


def test_help_and_lint_never_import_tensorrt():
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom tensorsmith.cli import app\n"
        "r = CliRunner()\nfor a in (['--help'], ['build', '--help'], ['convert', '--help'], "
        f"['lint', {str(SAMPLES / 'cnn.onnx')!r}]):\n    r.invoke(app, a)\n"
        "print(','.join(m for m in ('tensorrt', 'tensorflow', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


# -- the real thing (GPU machines) ----------------------------------------------------------------


def _real_tensorrt_or_skip():
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("needs TensorRT: the tensorrt package is not installed here")
    import tensorrt

    if getattr(tensorrt, "IS_FAKE", False):
        pytest.skip("tensorrt is the test stand-in")
    from tensorsmith import machine

    if machine.current_gpu() is None:
        pytest.skip("needs an NVIDIA GPU: none found")
    return tensorrt


@pytest.mark.gpu
def test_real_tensorrt_build_and_verify(tmp_path):
    trt = _real_tensorrt_or_skip()
    plan = tmp_path / "cnn.plan"
    cache = tmp_path / "tc.bin"
    res, data = build(
        [
            SAMPLES / "cnn.onnx",
            "-o",
            plan,
            "--timing-cache",
            cache,
            "--shapes",
            "input=1x3x32x32:4x3x32x32:8x3x32x32",
        ]
    )
    assert res.exit_code == 0, res.output
    assert data["tensorrt_version"] == trt.__version__ and data["verification"]["passed"]
    assert plan.stat().st_size > 0 and cache.stat().st_size > 0
    res, data = build([SAMPLES / "resblock.onnx", "-o", tmp_path / "rb.plan", "--timing-cache", cache])
    assert res.exit_code == 0 and data["timing_cache"]["used"], res.output


@pytest.mark.gpu
def test_real_tensorrt_parser_error(tmp_path):
    _real_tensorrt_or_skip()
    proto = helper.make_model(
        helper.make_graph(
            [helper.make_node("Det", ["x"], ["y"], name="the_det")],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    p = tmp_path / "det.onnx"
    onnx.save(proto, str(p))
    res, data = build([p, "-o", tmp_path / "det.plan"])
    assert res.exit_code == 3 and data["parser_errors"] and data["parser_errors"][0]["op"] == "Det"


@pytest.mark.gpu
def test_real_tensorrt_int8_qdq(tmp_path, qdq_model):
    _real_tensorrt_or_skip()
    res, data = build([qdq_model, "-o", tmp_path / "q.plan"])
    assert res.exit_code == 0, res.output
    assert data["typing"] == "strong" and data["precision"] == "int8"


def test_select_mode_unit():
    from tensorsmith.lint.trt import GraphPrecision

    fp32, fp16, qdq = (
        GraphPrecision(set(), False, False),
        GraphPrecision(set(), True, False),
        GraphPrecision({"int8"}, False, False),
    )
    assert trt_backend.select_mode(10, fp32, None).builder_flags == []
    m = trt_backend.select_mode(10, qdq, "fp16")
    assert not m.strongly_typed and m.builder_flags == ["FP16", "INT8"]
    assert trt_backend.select_mode(11, qdq, None).strongly_typed
    assert trt_backend.select_mode(10, fp16, "fp16").strongly_typed
    with pytest.raises(ConversionError):
        trt_backend.select_mode(11, fp32, "fp16")
    assert Profile([1], [2], [3]).text() == "1:2:3"
