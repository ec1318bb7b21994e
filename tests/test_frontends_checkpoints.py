"""Checkpoints for module:factory sources: the state dict nested under a key, and
checkpoints with extra or missing keys (--weights-key, --weights-non-strict; issue 12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tensorsmith.convert.frontend import FrontendOptions
from tensorsmith.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def factory(torch, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(REPO))
    from sample_models.torch_cnn import build_cnn

    return build_cnn


def _build(tmp_path, weights, **kw):
    from tensorsmith.convert.frontends.torch_factory import _build_factory

    opts = FrontendOptions(format="torch-factory", work_dir=tmp_path, weights=weights, **kw)
    return _build_factory("sample_models.torch_cnn:build_cnn", opts)


def _same(torch, a, b) -> bool:
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32))
    with torch.no_grad():
        return bool(np.allclose(a(x).numpy(), b(x).numpy(), atol=1e-6))


def test_state_dict_nested_under_a_key_is_found(torch, factory, tmp_path):
    trained = factory(seed=7)
    ckpt = tmp_path / "ckpt.pth"
    torch.save(
        {"epoch": 3, "model_state": trained.state_dict(), "optimizer": {"lr": torch.tensor(0.1)}}, ckpt
    )
    model, notes = _build(tmp_path, ckpt)
    assert _same(torch, model, trained.eval())


def test_weights_key_names_a_nested_state_dict(torch, factory, tmp_path):
    trained, other = factory(seed=7), factory(seed=8)
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"ema": {"model": trained.state_dict()}, "model": other.state_dict()}, ckpt)
    model, _ = _build(tmp_path, ckpt, weights_key="ema.model")
    assert _same(torch, model, trained.eval())
    model, _ = _build(tmp_path, ckpt)  # without the key: the usual "model"
    assert _same(torch, model, other.eval())


def test_errors_name_the_keys_found_and_tried(torch, factory, tmp_path):
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "a": factory(seed=1).state_dict(), "b": factory(seed=2).state_dict()}, ckpt)
    with pytest.raises(UsageError) as err:
        _build(tmp_path, ckpt)
    text = str(err.value)
    assert "keys epoch, a, b" in text and "tried state_dict" in text and "state dicts under: a, b" in text
    assert "--weights-key" in (err.value.hint or "")
    with pytest.raises(UsageError, match=r"no key 'c' in the checkpoint \(found: epoch, a, b\)"):
        _build(tmp_path, ckpt, weights_key="c")
    with pytest.raises(UsageError, match="'epoch' is not a state dict"):
        _build(tmp_path, ckpt, weights_key="epoch")


def test_non_strict_loads_what_fits_and_lists_the_rest(torch, factory, tmp_path):
    trained = factory(seed=7)
    state = dict(trained.state_dict())
    state["loss.weight"] = torch.ones(3)  # a loss's parameter saved with the model
    dropped = sorted(state)[0]
    del state[dropped]
    ckpt = tmp_path / "ckpt.pth"
    torch.save(state, ckpt)
    with pytest.raises(UsageError, match="does not fit") as err:
        _build(tmp_path, ckpt)
    assert "--weights-non-strict" in (err.value.hint or "")
    model, notes = _build(tmp_path, ckpt, weights_non_strict=True)
    note = next(n for n in notes if n.startswith("--weights-non-strict"))
    assert f"missing keys (factory's own values kept): {dropped}" in note
    assert "unexpected keys (ignored): loss.weight" in note
    fresh = factory()  # what the factory builds (its default seed)
    for name, value in model.state_dict().items():
        want = fresh.state_dict()[name] if name == dropped else trained.state_dict()[name]
        assert torch.equal(value, want), name


def test_key_options_need_weights(torch, tmp_path):
    from tensorsmith.convert.frontends.torch_common import check_options

    with pytest.raises(UsageError, match="go with --weights"):
        check_options(FrontendOptions(format="torch-factory", work_dir=tmp_path, weights_key="model"))


def test_cli_flags_reach_the_frontend_and_the_report(torch, factory, tmp_path):
    import json

    from typer.testing import CliRunner

    from tensorsmith.cli import app

    trained = factory(seed=7)
    state = dict(trained.state_dict())
    state["loss.weight"] = torch.ones(3)
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"ema": {"model": state}}, ckpt)
    out = tmp_path / "f.onnx"
    args = ["convert", "sample_models.torch_cnn:build_cnn", "--weights", str(ckpt), "--input-shape"]
    args += ["x=1x3x32x32", "-o", str(out), "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "--weights-key" in r.output  # nested twice: named, not guessed
    r = CliRunner().invoke(app, [*args, "--weights-key", "ema.model", "--weights-non-strict"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert any("unexpected keys (ignored): loss.weight" in n for n in report["notes"])
    assert report["verification"]["passed"]
