"""Bad input to the TensorFlow/PyTorch frontends: one line, the documented exit code, no file at -o."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import textwrap
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tensorsmith.cli import app

REPO = Path(__file__).resolve().parents[1]
FW = REPO / "sample_models" / "frameworks"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output, result.output
    return lines[0]


def expect(result, code: int, *needles: str, out: Path | None = None) -> str:
    assert result.exit_code == code, result.output
    line = error_line(result)
    for needle in needles:
        assert needle in line, line
    if out is not None:
        assert not out.exists(), "a failed run left a file at -o"
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "temp files left"
    return line


# ---------------------------------------------------------------------------- TensorFlow


def test_savedmodel_without_signatures(tf, tmp_path):
    module = tf.Module()
    module.v = tf.Variable(1.0)
    sm = tmp_path / "nosig"
    tf.saved_model.save(module, str(sm), signatures={})
    out = tmp_path / "o.onnx"
    expect(cli("convert", sm, "-o", out), 2, "no signatures", out=out)


def test_estimator_savedmodel_with_string_lookup_table(tf, tmp_path):
    """A TF1 Estimator-style SavedModel whose string lookup table is initialised by its
    main_op: grappler cannot import the signature as a function ("Failed to import
    metagraph", an internal error before); the TF1 loader takes over and the refusal
    names what ONNX cannot express, in one line."""
    tf1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        words = tf1.placeholder(tf.string, [None], name="words")
        x = tf1.placeholder(tf.float32, [None, 4], name="x")
        init = tf.lookup.KeyValueTensorInitializer(
            tf.constant(["a", "b", "c"]), tf.constant([0, 1, 2], tf.int64)
        )
        ids = tf.lookup.StaticHashTable(init, default_value=-1).lookup(words)
        emb = tf1.get_variable("emb", [4, 4], initializer=tf1.random_normal_initializer())
        w = tf1.get_variable("w", [4, 3], initializer=tf1.random_normal_initializer())
        y = tf.identity(tf.matmul(x + tf.gather(emb, tf.maximum(ids, 0)), w), name="y")
        with tf1.Session(graph=g) as sess:
            sess.run(tf1.global_variables_initializer())
            sess.run(tf1.tables_initializer())
            builder = tf1.saved_model.Builder(str(tmp_path / "estimator"))
            sig = tf1.saved_model.predict_signature_def({"words": words, "x": x}, {"y": y})
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map={"serving_default": sig}, main_op=tf1.tables_initializer()
            )
            builder.save()
    out = tmp_path / "estimator.onnx"
    line = expect(
        cli("convert", tmp_path / "estimator", "--to", "onnx", "-o", out), 3, "LookupTableFindV2", out=out
    )
    assert "internal error" not in line


def test_savedmodel_unknown_signature(tf, tmp_path):
    out = tmp_path / "o.onnx"
    expect(
        cli("convert", FW / "cnn_savedmodel", "--signature", "nope", "-o", out),
        2,
        "no signature 'nope'",
        "serving_default",
        out=out,
    )


@pytest.mark.parametrize(
    "content", [b"\x0a\x05hello this is not a graph" * 4, b"just some text\n" * 10, bytes(range(256)) * 4]
)
def test_pb_that_is_not_a_graphdef(tf, tmp_path, content):
    pb = tmp_path / "model.pb"
    pb.write_bytes(content)
    out = tmp_path / "o.onnx"
    expect(cli("convert", pb, "-o", out), 2, "model.pb", "GraphDef", out=out)


def test_graphdef_forced_on_an_onnx_file_is_refused(tf, tmp_path):
    out = tmp_path / "o.onnx"
    result = cli("convert", REPO / "sample_models" / "cnn.onnx", "--from", "graphdef", "-o", out)
    expect(result, 2, "GraphDef", out=out)


def test_corrupt_tflite(tf, tmp_path):
    good = (FW / "cnn.tflite").read_bytes()
    for name, data in (
        ("trunc.tflite", good[: len(good) // 3]),
        ("garbage.tflite", good[:8] + bytes(reversed(good[8:2000]))),
    ):
        p = tmp_path / name
        p.write_bytes(data)
        out = tmp_path / "o.onnx"
        expect(cli("convert", p, "-o", out), 2, name, "TensorFlow Lite", out=out)
    p = tmp_path / "nomagic.tflite"
    p.write_bytes(b"\x00" * 64)
    expect(cli("convert", p, "-o", tmp_path / "o.onnx"), 2, "not a TensorFlow Lite flatbuffer")


def test_keras_lambda_refused_by_safe_mode(tf, tmp_path):
    import keras

    inp = keras.Input((4,), name="x")
    model = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(inp))
    path = tmp_path / "lam.keras"
    model.save(path)
    out = tmp_path / "o.onnx"
    expect(cli("convert", path, "-o", out), 2, "safe_mode", out=out)


def test_unconvertible_tf_op_names_op_and_node(tf, tmp_path):
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        y = tf.math.lgamma(tf.abs(x) + 1.0, name="my_lgamma")
        tf.multiply(y, 2.0, name="out")
    pb = tmp_path / "lgamma.pb"
    pb.write_bytes(g.as_graph_def().SerializeToString())
    out = tmp_path / "o.onnx"
    expect(cli("convert", pb, "-o", out), 3, "Lgamma", "my_lgamma", out=out)


def test_unfrozen_graphdef(tf, tmp_path):
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        v = tf.compat.v1.get_variable("w", initializer=tf.ones([2, 2]), use_resource=True)
        tf.matmul(x, v, name="y")
    pb = tmp_path / "vars.pb"
    pb.write_bytes(g.as_graph_def().SerializeToString())
    expect(cli("convert", pb, "-o", tmp_path / "o.onnx"), 2, "not frozen")


def test_saved_model_pb_file_points_to_folder(tmp_path):
    sm = tmp_path / "sm"
    shutil.copytree(FW / "cnn_savedmodel", sm)
    expect(cli("inspect", sm / "saved_model.pb"), 2, "pass its folder")


def test_input_value_for_tf_is_refused(tf, tmp_path):
    expect(
        cli("convert", FW / "cnn.keras", "--input-value", "a=1", "-o", tmp_path / "o.onnx"),
        2,
        "--input-value",
    )


# ------------------------------------------------------------------------------ PyTorch


def test_factory_that_does_not_import(tmp_path):
    out = tmp_path / "o.onnx"
    expect(
        cli("convert", "no_such_pkg_xyz.models:build", "--input-shape", "x=1x3", "-o", out),
        2,
        "no_such_pkg_xyz.models:build",
        "cannot import module",
        out=out,
    )


def test_factory_module_that_raises_on_import(torch, tmp_path, monkeypatch):
    (tmp_path / "broken_mod.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.chdir(tmp_path)
    expect(cli("convert", "broken_mod:build", "-o", tmp_path / "o.onnx"), 2, "boom at import")


def test_factory_missing_attribute(torch, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    expect(
        cli("convert", "sample_models.torch_cnn:no_such_factory", "-o", tmp_path / "o.onnx"),
        2,
        "has no callable 'no_such_factory'",
    )


@pytest.fixture(scope="session")
def pickled_checkpoint(torch, tmp_path_factory) -> Path:
    """A checkpoint weights_only refuses: the state dict plus an argparse.Namespace."""
    from sample_models.torch_cnn import build_cnn

    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pth"
    torch.save({"state_dict": build_cnn(seed=0).state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    return path


def test_pickle_refused_by_weights_only(pickled_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "o.onnx"
    line = expect(
        cli(
            "convert",
            "sample_models.torch_cnn:build_cnn",
            "--weights",
            pickled_checkpoint,
            "--input-shape",
            "x=1x3x32x32",
            "-o",
            out,
        ),
        2,
        "weights_only=True",
        "--trust-remote-code",
        out=out,
    )
    assert "argparse.Namespace" in line


def test_trust_remote_code_is_the_explicit_opt_in(pickled_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "o.onnx"
    result = cli(
        "convert",
        "sample_models.torch_cnn:build_cnn",
        "--weights",
        pickled_checkpoint,
        "--trust-remote-code",
        "--input-shape",
        "x=1x3x32x32",
        "-o",
        out,
        "--json",
    )
    assert result.exit_code == 0, result.output
    rep = json.loads(result.output[result.output.index("{") : result.output.rindex("}") + 1])
    assert any("full unpickling (--trust-remote-code)" in n for n in rep["notes"])
    assert out.exists()


def test_weights_that_do_not_fit(torch, tmp_path, monkeypatch):
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    monkeypatch.chdir(REPO)
    expect(
        cli(
            "convert",
            "sample_models.torch_cnn:build_cnn",
            "--weights",
            wrong,
            "--input-shape",
            "x=1x3x32x32",
            "-o",
            tmp_path / "o.onnx",
        ),
        2,
        "does not fit",
        "Missing key",
    )


def test_pickled_module_as_source_is_refused(torch, tmp_path):
    from sample_models.torch_cnn import build_cnn

    p = tmp_path / "whole.pt"
    torch.save(build_cnn(), p)
    expect(cli("convert", p, "-o", tmp_path / "o.onnx"), 2, "pickled PyTorch checkpoint")


def test_pt2_with_pickled_payload_needs_trust(torch, tmp_path):
    src = FW / "cnn_export.pt2"
    bad = tmp_path / "pickled.pt2"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"]))
                config["config"][first]["use_pickle"] = True
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    out = tmp_path / "o.onnx"
    expect(cli("convert", bad, "-o", out), 2, "pickled Python objects", "--trust-remote-code", out=out)


def test_unconvertible_torchscript_names_the_op(torch, tmp_path):
    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.special.zeta(x, x + 2.0)  # no ONNX symbolic

    path = tmp_path / "zeta.pt"
    torch.jit.script(Net()).save(str(path))
    out = tmp_path / "o.onnx"
    expect(cli("convert", path, "--input-shape", "x=2x3", "-o", out), 3, "special_zeta", out=out)


def test_verification_failure_is_exit_4_and_writes_nothing(torch, tmp_path):
    out = tmp_path / "o.onnx"
    result = cli(
        "convert",
        FW / "cnn_torchscript.pt",
        "--input-shape",
        "x=1x3x32x32",
        "--rtol",
        "0",
        "--atol",
        "0",
        "-o",
        out,
    )
    if result.exit_code == 0:  # bit-exact on this machine: nothing to fail
        pytest.skip("conversion was bit-exact; no tolerance-0 failure to provoke")
    expect(result, 4, "differs from PyTorch", out=out)


def test_options_that_do_not_apply(torch, tmp_path):
    out = tmp_path / "o.onnx"
    expect(cli("convert", FW / "cnn_torchscript.pt", "--nchw-inputs", "-o", out), 2, "--nchw-inputs")
    expect(cli("convert", FW / "cnn_torchscript.pt", "--outputs", "y", "-o", out), 2, "--inputs/--outputs")
    expect(cli("convert", REPO / "sample_models" / "cnn.onnx", "--static", "-o", out), 2, "--static")


def test_unknown_input_value_name(torch, tmp_path):
    src = tmp_path / "m.pt"

    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    torch.jit.script(Net()).save(str(src))
    expect(
        cli("convert", src, "--input-shape", "x=1x2", "--input-value", "sr=1", "-o", tmp_path / "o.onnx"),
        2,
        "unknown argument(s) sr",
    )


def test_factory_spec_help_text_is_one_line(tmp_path):
    result = cli("convert", "not a spec", "-o", tmp_path / "o.onnx")
    expect(result, 2, "no such file or directory")
    assert textwrap.dedent(result.output).count("\n") <= 2


def test_hybrid_quantized_tflite_says_the_source_computes_in_int8(tf, tmp_path):
    """A dynamic-range (hybrid) quantized TFLite model: TFLite runs int8 kernels, the ONNX
    runs in float; the note says so, and a failed check names that cause instead of
    'float rounding'."""
    model = tf.keras.models.load_model(str(FW / "cnn.keras"))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    src = tmp_path / "cnn_hybrid.tflite"
    src.write_bytes(converter.convert())
    out = tmp_path / "cnn_hybrid.onnx"
    result = cli("convert", src, "-o", out, "--json")
    text = result.output
    report = json.loads(text[text.index("{") : text.rindex("}") + 1])
    assert any("hybrid quantization" in n for n in report["notes"]), report["notes"]
    if result.exit_code != 0:  # TFLite's int8 kernels differ from float by more than fp32 tolerance
        line = expect(result, 4, "computes with int8 kernels", "precision gate", out=out)
        assert "float rounding" not in line
