"""Shared fixtures. pytest puts this folder and the repository root on sys.path
(``pythonpath`` in pyproject.toml), so tests import ``tests.helpers``,
``tests.thirdparty`` and ``fake_tensorrt`` without touching sys.path themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_models"


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh seeded generator per test: results never depend on which tests ran before."""
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def tf():
    """TensorFlow with tf2onnx, or the test is skipped."""
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    return tf


@pytest.fixture(scope="session")
def torch():
    """PyTorch, or the test is skipped."""
    return pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _reseed_module_rng(request):
    """A test module's ``rng`` (a module-level generator its helpers use) is re-seeded
    from its ``RNG_SEED`` before every test, so no test's data depends on which tests
    ran before it in that worker."""
    module = request.module
    if isinstance(getattr(module, "rng", None), np.random.Generator):
        module.rng = np.random.default_rng(getattr(module, "RNG_SEED", 0))
