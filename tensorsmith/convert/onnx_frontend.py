"""The ONNX frontend: the file is already ONNX; verification runs it in onnxruntime."""

from __future__ import annotations

from tensorsmith.inspection import inspect_onnx as inspect  # noqa: F401
from tensorsmith.model_io import load  # noqa: F401
