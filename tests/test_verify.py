"""Verification: input generation, comparison rules, --verify-data."""

from __future__ import annotations

import numpy as np
import pytest

from tensorsmith.errors import UsageError
from tensorsmith.shapes import InputSpec, parse_input_shapes, resolve_shapes
from tensorsmith.verify import Tolerance, compare, load_verify_data, random_inputs


def spec(name, shape, dtype=np.float32):
    return InputSpec(name, np.dtype(dtype), shape)


def test_defaults_for_symbolic_dims_and_shared_symbols():
    specs = [
        spec("img", ["N", 3, "H", "W"]),
        spec("ids", ["N", "seq"], np.int64),
        spec("mask", ["N", "seq"], np.int64),
    ]
    shapes, notes = resolve_shapes(specs)
    assert shapes == {"img": [1, 3, 224, 224], "ids": [1, 16], "mask": [1, 16]}
    assert any("batch default" in n for n in notes) and any("spatial default" in n for n in notes)


def test_nhwc_spatial_default():
    shapes, _ = resolve_shapes([spec("x", ["N", "H", "W", 3])])
    assert shapes["x"] == [1, 224, 224, 3]


def test_overrides_fill_symbols_everywhere():
    specs = [spec("ids", ["N", "seq"], np.int64), spec("mask", ["N", "seq"], np.int64)]
    shapes, _ = resolve_shapes(specs, parse_input_shapes(["ids=2x7"]))
    assert shapes == {"ids": [2, 7], "mask": [2, 7]}


@pytest.mark.parametrize(
    "items, words",
    [
        (["x=1x3xabc"], "bad shape"),
        (["=1x3"], "missing input name"),
        (["x=1x3", "x=1x4"], "given twice"),
        # the user's own text is quoted back, and a ':' separator gets a hint
        (["x:1,3,48,192"], r"bad shape 'x:1,3,48,192'.*NAME=1x3x224x224"),
    ],
)
def test_bad_shape_syntax(items, words):
    with pytest.raises(UsageError, match=words):
        parse_input_shapes(items)


def test_shape_conflicts():
    specs = [spec("x", ["N", 3, 8])]
    with pytest.raises(UsageError, match="unknown input"):
        resolve_shapes(specs, {"y": [1, 3, 8]})
    with pytest.raises(UsageError, match="rank"):
        resolve_shapes(specs, {"x": [1, 3]})
    with pytest.raises(UsageError, match="conflicts"):
        resolve_shapes(specs, {"x": [1, 4, 8]})
    assert resolve_shapes(specs, parse_input_shapes(["2x3x8"]))[0] == {"x": [2, 3, 8]}


def test_random_inputs_are_seeded_and_integers_safe():
    specs = [spec("x", [2, 3]), spec("i", [50], np.int64), spec("b", [4], np.bool_)]
    a = random_inputs(specs, {"x": [2, 3], "i": [50], "b": [4]})
    b = random_inputs(specs, {"x": [2, 3], "i": [50], "b": [4]})
    np.testing.assert_array_equal(a["x"], b["x"])
    assert a["i"].min() >= 0 and a["i"].max() < 10 and a["b"].dtype == np.bool_


def test_compare_rules():
    tol = Tolerance()
    ref = np.array([1.0, -2.0, 100.0], np.float32)
    ok = compare({"y": ref}, {"y": ref + 5e-3}, tol)[0]  # 5e-3 <= 1e-5 + 1e-4*100
    assert ok.passed and ok.scale == 100.0 and abs(ok.max_rel_diff - 5e-5) < 1e-6
    bad = compare({"y": ref}, {"y": ref + 2e-2}, tol)[0]
    assert not bad.passed and "max abs diff" in bad.reason
    shape = compare({"y": ref}, {"y": ref[:2]}, tol)[0]
    assert not shape.passed and "shape" in shape.reason
    nan = compare({"y": np.array([np.nan, 1.0])}, {"y": np.array([np.nan, 1.0])}, tol)[0]
    assert nan.passed
    nan2 = compare({"y": np.array([np.nan, 1.0])}, {"y": np.array([0.0, 1.0])}, tol)[0]
    assert not nan2.passed
    ints = compare({"y": np.array([1, 2])}, {"y": np.array([1, 3])}, tol)[0]
    assert not ints.passed and "exact" in ints.reason
    dtype = compare({"y": ref}, {"y": ref.astype(np.float16)}, tol)[0]
    assert not dtype.passed and "dtype" in dtype.reason


def test_verify_data_samples(tmp_path):
    specs = [spec("x", ["N", 3])]
    f = tmp_path / "d.npz"
    np.savez(f, x=np.zeros((5, 2, 3), np.float32))
    samples = load_verify_data(f, specs)
    assert len(samples) == 5 and samples[0]["x"].shape == (2, 3)
    np.savez(f, x=np.zeros((2, 3), np.float32))
    assert len(load_verify_data(f, specs)) == 1
    np.savez(f, y=np.zeros((2, 3), np.float32))
    with pytest.raises(UsageError, match="no array for input"):
        load_verify_data(f, specs)
    np.savez(f, x=np.zeros((2, 4), np.float32))
    with pytest.raises(UsageError, match="expects"):
        load_verify_data(f, [spec("x", ["N", 3])])
    f.write_bytes(b"junk")
    with pytest.raises(UsageError, match="not a readable"):
        load_verify_data(f, specs)


def _specs_model(tmp_path):
    """Inputs of every kind: symbolic, unknown and fixed dims, an int input, no shape, and an
    initializer that is also listed as an input (not a real input)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", None, 8])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [2, "seq"])
    free = helper.make_tensor_value_info("free", TensorProto.FLOAT16, None)
    w_in = helper.make_tensor_value_info("w", TensorProto.FLOAT, [8])
    w = helper.make_tensor("w", TensorProto.FLOAT, [8], [0.5] * 8)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["y"]),
        helper.make_node("Identity", ["ids"], ["i2"]),
        helper.make_node("Identity", ["free"], ["f2"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [x, ids, free, w_in],
        [
            y,
            helper.make_tensor_value_info("i2", TensorProto.INT64, None),
            helper.make_tensor_value_info("f2", TensorProto.FLOAT16, None),
        ],
        [w],
    )
    path = tmp_path / "specs.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_input_specs_from_ir_match_the_proto_reading(tmp_path):
    """optimize_file checks --input-shape on the loaded onnx_ir model (no second parse of the file):
    both readers must agree on every input."""
    from pathlib import Path

    from tensorsmith import model_io
    from tensorsmith.verify import input_specs_from_ir, input_specs_from_proto

    samples = sorted((Path(__file__).resolve().parents[1] / "sample_models").glob("*.onnx"))
    for path in [_specs_model(tmp_path), *samples]:
        a = input_specs_from_proto(model_io.load_proto(path))
        b = input_specs_from_ir(model_io.load(path))
        assert [(s.name, s.dtype, s.shape) for s in a] == [(s.name, s.dtype, s.shape) for s in b], path
    specs = input_specs_from_ir(model_io.load(_specs_model(tmp_path)))
    assert [(s.name, s.shape) for s in specs] == [("x", ["N", None, 8]), ("ids", [2, "seq"]), ("free", [])]


@pytest.mark.parametrize(
    "raw, want",
    [
        (
            "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Reshape node. Name:'r' "
            "Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/reshape_helper.h:91 "
            "onnxruntime::ReshapeHelper::ReshapeHelper(const onnxruntime::TensorShape&, onnxruntime::TensorShapeVector&, bool) "
            "input_shape_size == requested_shape_size was false. The input tensor cannot be reshaped to the requested shape. "
            "Input shape:{1,112,120}, requested shape:{1,1,28,120}",
            "Non-zero status code returned while running Reshape node. Name:'r' Status Message: The input tensor cannot be "
            "reshaped to the requested shape. Input shape:{1,112,120}, requested shape:{1,1,28,120}",
        ),
        (
            "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: x for the following indices\n"
            " index: 2 Got: 5 Expected: 4\n Please fix either the inputs/outputs or the model.",
            "Got invalid dimensions for input: x for the following indices index: 2 Got: 5 Expected: 4 Please fix either "
            "the inputs/outputs or the model.",
        ),
        (
            "shape mismatch in layer 'conv1'",
            "shape mismatch in layer 'conv1'",
        ),  # not onnxruntime's: unchanged
    ],
)
def test_short_keeps_onnxruntime_messages_to_what_a_user_can_act_on(raw, want):
    from tensorsmith.errors import short

    assert short(RuntimeError(raw), 400) == want


def test_a_failing_source_model_is_one_line_without_onnxruntime_logs(tmp_path, capfd):
    """onnxruntime's own logger is silenced: the CLI prints one line (exit 2), nothing else."""
    import onnx
    from onnx import TensorProto, helper
    from typer.testing import CliRunner

    from tensorsmith.cli import app

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [5, 5])
    g = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"])], "g", [x], [y], [shape])
    src = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(src))
    result = CliRunner().invoke(app, ["optimize", str(src), "-o", str(tmp_path / "o.onnx")])
    captured = capfd.readouterr()
    assert result.exit_code == 2, result.output
    lines = [line for line in (result.output + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cannot be reshaped" in lines[0], lines
    assert "onnxruntime_src" not in lines[0] and "[E:onnxruntime" not in captured.err
    assert not (tmp_path / "o.onnx").exists()
