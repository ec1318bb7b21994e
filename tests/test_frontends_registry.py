"""The source-format registry: one module per format, each with the frontend protocol."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from tensorsmith.convert import FRONTENDS

PACKAGE = Path(__file__).resolve().parents[1] / "tensorsmith" / "convert" / "frontends"


@pytest.mark.parametrize("fmt", sorted(FRONTENDS))
def test_every_format_module_has_load_and_inspect(fmt):
    module = importlib.import_module(FRONTENDS[fmt][0])
    assert module.__name__.startswith("tensorsmith.convert.frontends.")
    assert list(inspect.signature(module.load).parameters)[:2] in (["path", "opts"], ["path", "options"])
    assert "path" in inspect.signature(module.inspect).parameters
    formats = getattr(module, "FORMATS", None)
    assert formats is None or fmt in formats  # a module refuses formats it does not read


def test_format_modules_import_no_framework():
    code = (
        "import importlib, sys\n"
        "from tensorsmith.convert import FRONTENDS\n"
        "for m, _, _ in FRONTENDS.values(): importlib.import_module(m)\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'tf2onnx', 'keras') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_format_modules_are_small_and_import_no_private_names():
    for path in sorted(PACKAGE.glob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 600, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tensorsmith"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"


def test_onnx_format_module_runs_the_original_in_onnxruntime(tmp_path):
    import numpy as np
    import onnx
    from helpers import parse, run

    from tensorsmith.convert import get_frontend
    from tensorsmith.convert.frontend import FrontendOptions

    proto = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) { y = Relu (x) }"""
    )
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    frontend = get_frontend("onnx")
    imported = frontend.load(path, FrontendOptions(format="onnx", work_dir=tmp_path))
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    got = imported.run_source({"x": x})
    assert imported.onnx_path == path and list(got) == ["y"]
    np.testing.assert_array_equal(got["y"], run(proto, {"x": x})[0])
    imported.close()
    info = frontend.inspect(path)
    assert [i["name"] for i in info["inputs"]] == ["x"] and info["ops"] == {"Relu": 1}
