"""The runner protocol, the one comparator and the one tolerance table."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import parse

from tensorsmith.compare import Comparison, judge_precision, run_and_compare
from tensorsmith.errors import UsageError
from tensorsmith.runners import FunctionRunner, OnnxRuntimeRunner, Runner
from tensorsmith.tolerances import TOLERANCES, Tolerance, defaults_for, tolerance_for

MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 3] y, int64[N] k) {
    m = MatMul (x, w)
    y = Relu (m)
    k = ArgMax <axis = 1, keepdims = 0> (m)
}"""
W = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(parse(MODEL, {"w": W}), path)
    return path


def numpy_model(scale: float = 1.0):
    def fn(feeds):
        m = feeds["x"].astype(np.float32) @ W
        return {"y": np.maximum(m, 0) * np.float32(scale), "k": m.argmax(axis=1).astype(np.int64)}

    return fn


class Counting(FunctionRunner):
    def __init__(self, fn):
        super().__init__(fn, "counting")
        self.events: list[str] = []

    def _activate(self):
        self.events.append("activate")

    def _deactivate(self):
        self.events.append("deactivate")


SAMPLES = [{"x": np.random.default_rng(i).standard_normal((2, 4)).astype(np.float32)} for i in range(3)]


def test_onnxruntime_and_a_function_agree(model_file):
    ref = Counting(numpy_model())
    result = run_and_compare(ref, OnnxRuntimeRunner(model_file), SAMPLES, Tolerance())
    assert result.passed and [o.name for o in result.outputs] == ["y", "k"]
    assert len(result.refs) == len(result.gots) == 3
    assert result.outputs[0].max_abs_diff < 1e-5 and result.outputs[1].max_abs_diff == 0.0
    assert ref.events == ["activate", "deactivate"] and not ref.active


def test_a_difference_fails_with_the_worst_sample_merged(model_file):
    result = run_and_compare(
        OnnxRuntimeRunner(model_file), FunctionRunner(numpy_model(1.01)), SAMPLES, Tolerance()
    )
    y = result.outputs[0]
    assert not result.passed and not y.passed and "max abs diff" in y.reason
    assert result.outputs[1].passed  # argmax unchanged by a positive scale
    worst = max(float(np.abs(r["y"] - g["y"]).max()) for r, g in zip(result.refs, result.gots, strict=True))
    assert y.max_abs_diff == pytest.approx(worst)


def test_runner_errors_are_mapped_and_runners_released(model_file):
    def broken(_feeds):
        raise RuntimeError("boom")

    ort = OnnxRuntimeRunner(model_file)
    with pytest.raises(UsageError, match="sample 0: boom"):
        run_and_compare(
            ort,
            FunctionRunner(broken),
            SAMPLES,
            Tolerance(),
            candidate_error=lambda i, _f, exc: UsageError(f"sample {i}: {exc}"),
        )
    assert not ort.active and ort.session is None
    with pytest.raises(RuntimeError, match="boom"):  # no mapping: raised as it is
        run_and_compare(ort, FunctionRunner(broken), SAMPLES, Tolerance())


def test_infer_activates_and_context_manager_deactivates(model_file):
    runner = OnnxRuntimeRunner(model_file)
    assert not runner.active
    out = runner.infer(SAMPLES[0])
    assert runner.active and out["y"].shape == (2, 3)
    with runner:
        pass
    assert not runner.active
    with pytest.raises(NotImplementedError):
        Runner().infer({})


def test_one_tolerance_table_serves_every_caller():
    from tensorsmith.convert import tftrt_backend  # noqa: F401 - imports cleanly without TensorFlow
    from tensorsmith.convert.trt import PRECISION_TOLERANCE
    from tensorsmith.precision.gate import Thresholds
    from tensorsmith.verify import DEFAULT_ATOL, DEFAULT_RTOL

    assert (DEFAULT_RTOL, DEFAULT_ATOL) == (1e-4, 1e-5) == (TOLERANCES["fp32"].rtol, TOLERANCES["fp32"].atol)
    assert Tolerance() == tolerance_for("fp32")
    # engines: FP32 layers run TF32, the rest by precision (the values the backends had)
    assert PRECISION_TOLERANCE == {
        "fp32": Tolerance(1e-3, 1e-4),
        "fp16": Tolerance(1e-2, 1e-3),
        "bf16": Tolerance(3e-2, 3e-3),
        "int8": Tolerance(5e-2, 1e-2),
    }
    assert tolerance_for("fp16", engine=True) == tolerance_for("fp16") == Tolerance(1e-2, 1e-3)
    assert tolerance_for("unknown", engine=True) == Tolerance(1e-3, 1e-4)
    # the precision gate's defaults are the same table's
    assert Thresholds.defaults("fp16").to_dict()["min_cosine"] == 0.999
    assert Thresholds.defaults("int8").min_cosine == 0.99 and Thresholds.defaults("int8").min_top1 == 0.99
    assert Thresholds.defaults("fp32").min_cosine is None
    assert defaults_for("bf16").min_cosine == 0.999


def test_judge_precision_uses_the_gate():
    ref = [{"y": np.linspace(1, 2, 20, dtype=np.float32).reshape(2, 10)}]
    got = [{"y": ref[0]["y"] * np.float32(1.05)}]
    from tensorsmith.compare import compare

    comparison = Comparison(compare(ref[0], got[0], Tolerance()), ref, got)
    assert not comparison.passed  # 5% off fails fp32 tolerances
    notes: list[str] = []
    assert judge_precision(comparison, "fp16", {"y"}, notes)  # same direction: cosine 1, top-1 agrees
    assert comparison.passed and "precision gate" in notes[0]
    got[0]["y"] = got[0]["y"][:, ::-1].copy()
    comparison = Comparison(compare(ref[0], got[0], Tolerance()), ref, got)
    assert not judge_precision(comparison, "int8", {"y"}, [])
    assert "cosine" in comparison.outputs[0].reason
