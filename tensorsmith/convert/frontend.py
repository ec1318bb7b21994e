"""What every frontend shares: its options, what it hands back, and the checks on its ONNX.

A frontend (``convert/frontends/<format>.py``) turns a model in its own framework
into an ONNX file in ``options.work_dir`` and returns an :class:`Imported`: the
file, a *source runner* that runs the original model in its own runtime on feeds
named after the ONNX inputs and returns outputs named after the ONNX outputs, and
notes for the report. Nothing here imports TensorFlow or PyTorch.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tensorsmith.errors import ConversionError, UsageError, short

# The ONNX opset written when --opset is not given. 18 is the lowest opset the
# torch.export (dynamo) exporter writes and the highest tf2onnx 1.17 knows, so one
# default fits every frontend.
DEFAULT_OPSET = 18
BATCH_DIM = "batch"

SourceRunner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class FrontendOptions:
    """Everything ``tensorsmith convert`` can tell a frontend."""

    format: str
    work_dir: Path
    opset: int | None = None
    input_shapes: dict[str, list[int]] = field(default_factory=dict)  # ONNX input name -> dims
    input_values: dict[str, Any] = field(default_factory=dict)  # non-tensor forward args
    static: bool = False
    signature: str | None = None  # SavedModel signature
    inputs: list[str] | None = None  # GraphDef overrides
    outputs: list[str] | None = None
    nchw_inputs: bool = False
    weights: Path | None = None  # module:factory state_dict
    weights_key: str | None = None  # where the state dict sits in a checkpoint dict (dotted)
    weights_non_strict: bool = False  # load_state_dict(strict=False): list missing/unexpected keys
    trust_remote_code: bool = False
    on_step: Callable[[str], None] = lambda _msg: None

    @property
    def target_opset(self) -> int:
        return self.opset or DEFAULT_OPSET


@dataclass
class Imported:
    """A converted model: the ONNX file and how to run its source."""

    onnx_path: Path
    run_source: SourceRunner
    framework: str  # "TensorFlow 2.21.0", "PyTorch 2.13.0+cpu"
    converter: str  # "tf2onnx 1.17.0", "torch.onnx (TorchScript exporter)"
    notes: list[str] = field(default_factory=list)
    close: Callable[[], None] = lambda: None
    # what to tell a user whose conversion check fails, where the source knows better than
    # "float rounding" (a TFLite model that computes with int8 kernels)
    verify_hint: str | None = None


# ---------------------------------------------------------------------------- options


def parse_input_values(items: list[str] | None) -> dict[str, Any]:
    """``["sr=16000", "flag=true"]`` -> ``{"sr": 16000, "flag": True}``.

    Values are Python literals (int, float, bool, str, tuples), read with
    ``ast.literal_eval``: nothing is executed. ``true``/``false``/``none`` are
    accepted in lower case; anything else that is not a literal is a string.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--input-value: expected NAME=VALUE, got {item!r}")
        if name in out:
            raise UsageError(f"--input-value: {name!r} given twice")
        text = text.strip()
        lowered = {"true": True, "false": False, "none": None}
        if text.lower() in lowered:
            out[name] = lowered[text.lower()]
            continue
        try:
            out[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[name] = text
    return out


def split_names(values: list[str] | None) -> list[str] | None:
    names = [v.strip() for item in values or [] for v in item.split(",") if v.strip()]
    return names or None


# ------------------------------------------------------------------------ ONNX checks


def _all_nodes(graph):
    import onnx

    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_nodes(g)


def unknown_ops(proto) -> list[tuple[str, str]]:
    """(op, node name) of every node whose op has no schema at the model's opset.

    Custom domains onnxruntime implements (``com.microsoft``) are left to the
    onnxruntime load check; any other domain is unknown by definition.
    """
    import onnx

    opsets = {(o.domain or ""): o.version for o in proto.opset_import}
    local = {(f.domain, f.name) for f in proto.functions}
    bad = []
    for node in _all_nodes(proto.graph):
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        if (node.domain, node.op_type) in local or domain == "com.microsoft":
            continue
        if domain in ("", "ai.onnx.ml"):
            version = opsets.get(domain, opsets.get("ai.onnx", DEFAULT_OPSET))
            try:
                onnx.defs.get_schema(node.op_type, version, domain)
                continue
            except Exception:
                pass
        bad.append(
            (node.op_type if not node.domain else f"{node.domain}::{node.op_type}", node.name or "(unnamed)")
        )
    return bad


def check_convertible(proto, path: str | os.PathLike, *, converter: str) -> None:
    """Exit 3 for a converter result with ops ONNX does not define, or that onnxruntime refuses.

    tf2onnx keeps an op it cannot convert as a node of the TensorFlow op type and
    still writes the file; this turns that into an error naming the op and node.
    """
    bad = unknown_ops(proto)
    if bad:
        ops = sorted({op for op, _ in bad})
        first = dict(reversed(bad))
        listed = ", ".join(f"{op} (node {first[op]!r})" for op in ops[:5])
        more = f" and {len(ops) - 5} more op type(s)" if len(ops) > 5 else ""
        raise ConversionError(
            f"{converter} could not convert {len(bad)} node(s): {listed}{more} are not ONNX operators",
        )
    from tensorsmith.verify import ort_session

    try:
        ort_session(path)
    except Exception as exc:
        raise ConversionError(
            f"the converted model does not load in onnxruntime: {short(exc, 240)}"
        ) from None


def name_batch_dims(proto, renames: dict[str, str] | None = None) -> dict[str, str]:
    """Give the converter's anonymous dynamic batch dims the name ``batch``.

    Dim 0 of every graph input that is unknown or carries a converter-made symbol
    (``unk__12``, ``s77``) becomes ``batch``, and the same symbol is renamed
    wherever it appears (outputs, value_info). Returns the renames made.
    """
    renames = dict(renames or {})
    anonymous = []
    for vi in proto.graph.input:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape") or not tt.shape.dim:
            continue
        d0 = tt.shape.dim[0]
        if d0.HasField("dim_value"):
            continue
        if not d0.dim_param:
            anonymous.append(d0)
        elif _generated_symbol(d0.dim_param) and d0.dim_param not in renames:
            renames[d0.dim_param] = BATCH_DIM
    for d0 in anonymous:
        d0.dim_param = BATCH_DIM
    if renames:
        for vi in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
            tt = vi.type.tensor_type
            if vi.type.HasField("tensor_type") and tt.HasField("shape"):
                for d in tt.shape.dim:
                    if d.HasField("dim_param") and d.dim_param in renames:
                        d.dim_param = renames[d.dim_param]
    if anonymous or renames:
        _batch_to_outputs(proto)
    return renames


def _batch_to_outputs(proto) -> None:
    """An output whose dim 0 is a converter symbol gets ``batch`` where shape inference says so."""
    import onnx

    todo = []
    for i, vi in enumerate(proto.graph.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape") and tt.shape.dim:
            d0 = tt.shape.dim[0]
            if not d0.HasField("dim_value") and (not d0.dim_param or _generated_symbol(d0.dim_param)):
                todo.append(i)
    if not todo:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.value_info[:]
    for i in todo:
        probe.graph.output[i].type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, strict_mode=False)
    except Exception:
        return
    for i in todo:
        tt = inferred.graph.output[i].type.tensor_type
        if tt.HasField("shape") and tt.shape.dim and tt.shape.dim[0].dim_param == BATCH_DIM:
            proto.graph.output[i].type.tensor_type.shape.dim[0].dim_param = BATCH_DIM


def _generated_symbol(name: str) -> bool:
    import re

    # tf2onnx writes unk__12, torch.export s77
    return bool(re.fullmatch(r"unk__\d+|s\d+", name))


def fix_input_shapes(proto, shapes: dict[str, list[int]]) -> None:
    """Make the named graph inputs static and re-infer every other shape from them.

    For converters that ignore a shape override (tf2onnx's TFLite reader).
    """
    import onnx

    for vi in proto.graph.input:
        if vi.name not in shapes or not vi.type.HasField("tensor_type"):
            continue
        shape = vi.type.tensor_type.shape
        shape.Clear()
        for d in shapes[vi.name]:
            shape.dim.add().dim_value = int(d)
    del proto.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception:
        return
    proto.CopyFrom(inferred)


def rename_io(proto, renames: dict[str, str]) -> None:
    """Rename graph inputs/outputs (and every use of them) in a ModelProto."""
    if not renames:
        return
    taken = {vi.name for vi in [*proto.graph.input, *proto.graph.output]}
    renames = {k: v for k, v in renames.items() if k != v and (v not in taken or v in renames)}

    def fix(graph):
        for vi in [*graph.input, *graph.output, *graph.value_info]:
            if vi.name in renames:
                vi.name = renames[vi.name]
        for init in graph.initializer:
            if init.name in renames:
                init.name = renames[init.name]
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name in renames:
                    node.input[i] = renames[name]
            for i, name in enumerate(node.output):
                if name in renames:
                    node.output[i] = renames[name]
            for attr in node.attribute:
                if attr.g.node or attr.g.input or attr.g.output:
                    fix(attr.g)
                for g in attr.graphs:
                    fix(g)

    fix(proto.graph)


def onnx_io(proto) -> tuple[list[str], list[str]]:
    inits = {i.name for i in proto.graph.initializer}
    return [v.name for v in proto.graph.input if v.name not in inits], [v.name for v in proto.graph.output]


def map_outputs(names: list[str], values: list[Any], *, what: str) -> dict[str, np.ndarray]:
    """Name the source's flat outputs after the ONNX outputs, in order."""
    if len(names) != len(values):
        raise ConversionError(
            f"{what} returned {len(values)} output(s) but the ONNX model has {len(names)} ({', '.join(names)})"
        )
    return {n: np.asarray(v) for n, v in zip(names, values, strict=False)}


@contextlib.contextmanager
def quiet(*loggers: str):
    """Silence converters' warnings, log chatter and prints (they are not errors here)."""
    saved = []
    for name in loggers:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.CRITICAL)  # what matters is raised as our own error
    try:
        # converters print graph dumps on stdout, which --json owns
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


@contextlib.contextmanager
def quiet_native(fds: tuple[int, ...] = (1, 2)):
    """Route what native code writes to fds 1 and 2 (absl, oneDNN, graph dumps) to a temp file."""
    import sys
    import tempfile

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = []
    try:
        for fd in fds:
            saved.append((fd, os.dup(fd)))
    except OSError:  # no such fd (embedded use): nothing to silence
        for _fd, dup in saved:
            os.close(dup)
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            for fd, _dup in saved:
                os.dup2(tmp.fileno(), fd)
            yield
        finally:
            for fd, dup in saved:
                os.dup2(dup, fd)
                os.close(dup)


def dir_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def spec_dict(name: str, dtype, shape) -> dict:
    """An inspect() input/output entry, as ``inspection.inspect_onnx`` writes them."""
    return {
        "name": name,
        "dtype": str(np.dtype(dtype)) if dtype is not None else None,
        "shape": None
        if shape is None
        else [None if d is None or (isinstance(d, int) and d < 0) else d for d in shape],
    }
