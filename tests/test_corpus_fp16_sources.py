"""Sources that already compute in float16 (the corpus's PP-OCR copies written by
onnxruntime's float16 converter): --precision fp16 has nothing to lower and says so.

On ppocr_cls_v2 in float16 the converter, run again, added a second producer for the
output the model already casts back to float32 (exit 3, "two producers").
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass
from onnxruntime.transformers.float16 import convert_float_to_float16
from typer.testing import CliRunner

from tensorsmith.cli import app
from tensorsmith.precision import fp16 as f16

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


def _half(src: Path, dest: Path) -> Path:
    """``src`` as onnxruntime's converter writes it: float16 weights and compute, float32 I/O."""
    model = ir.from_proto(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True))
    TopologicalSortPass()(model)
    onnx.save(ir.to_proto(model), str(dest))
    return dest


def test_already_float16_counts_weight_values():
    assert f16.already_float16(onnx.load(str(SAMPLES / "cnn.onnx"))) == ""
    half = convert_float_to_float16(onnx.load(str(SAMPLES / "cnn.onnx")), keep_io_types=True)
    assert "float weight values are float16" in f16.already_float16(half)


def test_fp16_on_a_float16_model_is_exit_2_and_writes_nothing(tmp_path):
    src = _half(SAMPLES / "cnn.onnx", tmp_path / "cnn.fp16.onnx")
    onnx.checker.check_model(str(src), full_check=True)
    out = tmp_path / "out.onnx"
    r = CliRunner().invoke(app, ["optimize", str(src), "-o", str(out), "--precision", "fp16"])
    assert r.exit_code == 2, r.output
    assert "already computes in float16" in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_fp32_optimize_of_a_float16_model_still_works(tmp_path):
    src = _half(SAMPLES / "cnn.onnx", tmp_path / "cnn.fp16.onnx")
    out = tmp_path / "out.onnx"
    r = CliRunner().invoke(app, ["optimize", str(src), "-o", str(out)])
    assert r.exit_code == 0, r.output
    onnx.checker.check_model(str(out), full_check=True)
