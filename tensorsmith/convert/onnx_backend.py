"""The ONNX backend: write the optimized model (external data when over 2 GB or asked)."""

from __future__ import annotations

from tensorsmith.model_io import save, stage  # noqa: F401
