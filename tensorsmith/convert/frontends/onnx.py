"""ONNX models: the file is already ONNX; verification runs it in onnxruntime."""

from __future__ import annotations

from tensorsmith.inspection import inspect_onnx as inspect
from tensorsmith.model_io import load

__all__ = ["inspect", "load"]
