"""Planted conversion bugs: ``tensorsmith compare`` and the conversion check must flag
every one, noise floor or not, while correct conversions pass (issue 12)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper as oh
from onnx import numpy_helper as nh

from tensorsmith.compare_models import compare_models
from tensorsmith.verify import verify_models


def _init(model: onnx.ModelProto, name: str) -> tuple[int, np.ndarray]:
    i = next(k for k, t in enumerate(model.graph.initializer) if t.name == name)
    return i, nh.to_array(model.graph.initializer[i]).copy()


def _set(model: onnx.ModelProto, i: int, arr: np.ndarray) -> None:
    model.graph.initializer[i].CopyFrom(nh.from_array(arr, model.graph.initializer[i].name))


def _convs(model):
    return [n for n in model.graph.node if n.op_type == "Conv"]


def scale_one_channel(model):
    i, w = _init(model, _convs(model)[0].input[1])
    w[0] *= 1.01
    _set(model, i, w)


def flip_a_bias_sign(model):
    conv = next(n for n in _convs(model) if len(n.input) > 2)
    i, b = _init(model, conv.input[2])
    k = int(np.argmax(np.abs(b)))
    b[k] = -b[k]
    _set(model, i, b)


def pad_off_by_one(model):
    conv = next(n for n in _convs(model) if any(a.name == "pads" and max(a.ints) > 0 for a in n.attribute))
    pads = next(a for a in conv.attribute if a.name == "pads")
    rank = len(pads.ints) // 2
    new = list(pads.ints)
    new[rank - 1] += 1  # last spatial axis: one more before, one less after (same shape, shifted)
    new[2 * rank - 1] -= 1
    del pads.ints[:]
    pads.ints.extend(new)


def swap_two_output_channels(model):
    conv = _convs(model)[1]
    i, w = _init(model, conv.input[1])
    w[[0, 1]] = w[[1, 0]]
    _set(model, i, w)


def replace_an_activation(model):
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.CopyFrom(oh.make_node("LeakyRelu", list(relu.input), list(relu.output), name=relu.name, alpha=0.01))


BUGS = [scale_one_channel, flip_a_bias_sign, pad_off_by_one, swap_two_output_channels, replace_an_activation]


@pytest.fixture(params=["cnn", "resblock"])
def model(request, samples):
    return samples / f"{request.param}.onnx"


@pytest.mark.parametrize("bug", BUGS, ids=[b.__name__ for b in BUGS])
def test_every_planted_bug_is_flagged(model, bug, tmp_path):
    proto = onnx.load(str(model))
    try:
        bug(proto)
    except StopIteration:
        pytest.skip(f"{model.stem} has nowhere to plant {bug.__name__}")
    onnx.checker.check_model(proto)
    bugged = tmp_path / f"{model.stem}.{bug.__name__}.onnx"
    onnx.save(proto, str(bugged))
    report = compare_models(model, bugged)
    assert not report.passed, report.to_dict()
    # the noise floor was measured for the failing outputs and did not excuse them
    assert all(o.noise_floor is not None for o in report.outputs if not o.passed)
    check = verify_models(model, bugged, input_shapes={"input": [1, 3, 32, 32]})
    assert not check.passed, check.to_dict()


def test_a_correct_optimization_passes(model, tmp_path):
    import tensorsmith

    out = tmp_path / "opt.onnx"
    tensorsmith.optimize_file(model, out, verify=False)
    report = compare_models(model, out)
    assert report.passed, report.to_dict()
    assert all(o.max_rel_diff < 1e-5 for o in report.outputs)


def test_outputs_matched_by_position_when_names_differ(samples, tmp_path):
    proto = onnx.load(str(samples / "cnn.onnx"))
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        for k, name in enumerate(node.output):
            if name == old:
                node.output[k] = "renamed"
    proto.graph.output[0].name = "renamed"
    other = tmp_path / "renamed.onnx"
    onnx.save(proto, str(other))
    report = compare_models(samples / "cnn.onnx", other)
    assert report.passed and any("by position" in n for n in report.notes)


def test_noise_floor_excuses_noise_but_not_more():
    from tensorsmith.compare import NOISE_CAP, OutputCheck, within_noise
    from tensorsmith.tolerances import Tolerance

    tol = Tolerance(rtol=1e-4, atol=0.0)

    def check(diff):
        return OutputCheck("y", [4], diff, diff, 1.0, False, f"max abs diff {diff:.3g} > ...")

    noisy, bug, huge_noise = check(1.5e-4), check(5e-4), check(5e-3)
    notes = within_noise([noisy, bug], {"y": 1e-4}, tol)
    assert noisy.passed and noisy.noise_floor == 1e-4 and len(notes) == 1
    assert not bug.passed and "noise floor" in bug.reason
    within_noise([huge_noise], {"y": 1.0}, tol)  # a wildly noisy run excuses at most the cap
    assert not huge_noise.passed and NOISE_CAP * 1e-4 < 5e-3


def test_cli_compare_framework_source_against_its_onnx(tf, tmp_path, samples):
    """`tensorsmith compare` with TensorFlow as the reference: the conversion passes, the
    same ONNX with a planted bug is exit 4 with the noise floor beside the failing output."""
    import json

    from typer.testing import CliRunner

    from tensorsmith.cli import app

    src = samples / "frameworks" / "cnn_frozen.pb"
    if not src.exists():
        pytest.skip("sample_models/frameworks not built")
    good = tmp_path / "cnn.onnx"
    r = CliRunner().invoke(app, ["convert", str(src), "-o", str(good), "--json"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["compare", str(src), str(good), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["formats"] == ["graphdef", "onnx"]
    proto = onnx.load(str(good))
    swap_two_output_channels(proto)
    bad = tmp_path / "cnn.bug.onnx"
    onnx.save(proto, str(bad))
    r = CliRunner().invoke(app, ["compare", str(src), str(bad), "--json"])
    assert r.exit_code == 4, r.output
    failing = [o for o in json.loads(r.stdout)["outputs"] if not o["passed"]]
    assert failing and all(o["noise_floor"] is not None for o in failing)
