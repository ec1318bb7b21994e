"""Detect a model's format from its content (magic bytes, archive members), not its name."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

from tensorsmith.errors import UsageError

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise UsageError(f"{path}: damaged archive ({exc})") from None
    base = {n.split("/", 1)[-1] for n in names}
    if "config.json" in names and any(n.endswith(".weights.h5") or n == "model.weights.h5" for n in names):
        return "keras"
    if any(n.endswith(("serialized_exported_program.json", "models/model.json")) for n in names) or any(
        n.endswith("archive_format") for n in names
    ):
        return "torch-export"
    if any(n.endswith("constants.pkl") for n in names) or any("/code/" in n for n in names):
        return "torchscript"
    if "data.pkl" in base:
        raise UsageError(
            f"{path}: a pickled PyTorch checkpoint (torch.save of a module or dict), not a model archive",
            hint="pass 'module:factory' as the source and this file as --weights, or export TorchScript/torch.export",
        )
    raise UsageError(f"{path}: a zip archive that is not a Keras or PyTorch model")


def detect_format(path: str | os.PathLike) -> str:
    """Return the frontend name for ``path`` or raise ``UsageError``."""
    text = str(path)
    p = Path(text)
    if not p.exists():
        if _FACTORY.match(text):
            return "torch-factory"
        raise UsageError(f"{text}: no such file or directory")
    if p.is_dir():
        if (p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file():
            return "savedmodel"
        raise UsageError(f"{text}: is a directory and not a TensorFlow SavedModel (no saved_model.pb)")
    size = p.stat().st_size
    if size == 0:
        raise UsageError(f"{text}: file is empty")
    if p.name in ("saved_model.pb", "saved_model.pbtxt") and (p.parent / "variables").is_dir():
        raise UsageError(f"{text}: part of a SavedModel; pass its folder {p.parent}")
    with open(p, "rb") as fh:
        head = fh.read(64)
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(p)
    if head.startswith(HDF5_MAGIC):
        return "h5"
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "tflite"
    if head[:1] == b"\x80" and len(head) > 1 and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise UsageError(
            f"{text}: a Python pickle; tensorsmith does not unpickle files (it can run arbitrary code)",
        )
    suffix = p.suffix.lower()
    if suffix == ".tflite":
        raise UsageError(f"{text}: not a TensorFlow Lite flatbuffer (no TFL3 identifier)")
    if suffix in (".keras",):
        raise UsageError(f"{text}: not a Keras archive (not a zip file)")
    if suffix in (".h5", ".hdf5"):
        raise UsageError(f"{text}: not an HDF5 file")
    if suffix in (".pt", ".pth", ".pt2", ".jit"):
        raise UsageError(f"{text}: not a PyTorch archive (not a zip file)")
    # Protobuf: ModelProto starts with field 1 (ir_version, varint) -> 0x08;
    # GraphDef with field 1 (node, message) -> 0x0a. Check the cheap signal first.
    if head[:1] == b"\x08" or suffix == ".onnx":
        return "onnx"
    if head[:1] == b"\x0a" and suffix in (".pb", ".graphdef", ""):
        return "graphdef"
    if suffix == ".pb":
        return "graphdef"
    raise UsageError(f"{text}: unrecognised model format", hint="force one with --from")
