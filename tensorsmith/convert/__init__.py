"""Frontends (a model file -> ONNX) and targets (what a job makes: ``convert/targets/``).

Both are registries keyed by name, each entry a module imported only when it is
used: ``tensorsmith --help`` and ONNX work never import TensorFlow or PyTorch.
Formats are detected by content (``detect.py``), with ``--from`` to force one.

A frontend module provides ``load(path, options) -> Imported`` and
``inspect(path) -> dict``; a target implements ``targets.Target``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tensorsmith.convert.detect import detect_format
from tensorsmith.errors import UsageError

# name -> (module, what it reads, the extra that provides its framework)
FRONTENDS: dict[str, tuple[str, str, str | None]] = {
    "onnx": ("tensorsmith.convert.frontends.onnx", "ONNX model (.onnx, external data beside it)", None),
    "savedmodel": ("tensorsmith.convert.frontends.savedmodel", "TensorFlow SavedModel directory", "tf"),
    "keras": ("tensorsmith.convert.frontends.keras", "Keras 3 .keras archive", "tf"),
    "h5": ("tensorsmith.convert.frontends.keras", "legacy Keras HDF5 .h5", "tf"),
    "graphdef": ("tensorsmith.convert.frontends.graphdef", "frozen TensorFlow GraphDef .pb", "tf"),
    "tflite": ("tensorsmith.convert.frontends.tflite", "TensorFlow Lite flatbuffer .tflite", "tf"),
    "torchscript": (
        "tensorsmith.convert.frontends.torchscript",
        "TorchScript archive (torch.jit.save)",
        "torch",
    ),
    "torch-export": ("tensorsmith.convert.frontends.torch_export", "torch.export archive .pt2", "torch"),
    "torch-factory": (
        "tensorsmith.convert.frontends.torch_factory",
        "module:factory spec with --weights state_dict",
        "torch",
    ),
}


def _import(module: str, what: str, extra: str | None) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing == "tensorsmith":
            raise  # a module of tensorsmith itself is missing: a broken install, not the user's mistake
        hint = f"pip install 'tensorsmith[{extra}]'" if extra else None
        raise UsageError(f"{what} needs the '{missing}' package, which is not installed", hint=hint) from None


def get_frontend(name: str) -> ModuleType:
    if name not in FRONTENDS:
        raise UsageError(f"unknown source format {name!r}; known: {', '.join(FRONTENDS)}")
    module, what, extra = FRONTENDS[name]
    return _import(module, what, extra)


__all__ = ["FRONTENDS", "detect_format", "get_frontend"]
