"""TensorRT itself: the lazy import, what the machine lacks, the network mode
(typing and builder flags per TensorRT major version) and the logger.

``import tensorrt`` happens only in ``import_tensorrt``, called by the functions that
build or run an engine.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field

from tensorsmith.errors import ConversionError

MIN_MAJOR = 10


@dataclass
class NetworkMode:
    strongly_typed: bool
    builder_flags: list[str]
    precision: str  # what the engine computes in, for the gate: fp32 | fp16 | bf16 | int8
    graph: str  # what the graph carries
    notes: list[str] = field(default_factory=list)


def import_tensorrt():
    """``import tensorrt`` with a one-line error when it is missing or too old."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise ConversionError(
            f"TensorRT is not available: {(' '.join(str(exc).split()) or 'import tensorrt failed')[:160]}",
            hint="install it on a machine with an NVIDIA GPU (pip install tensorrt) and rerun",
        ) from None
    major = trt_major(trt)
    if major < MIN_MAJOR:
        raise ConversionError(
            f"TensorRT {trt.__version__} is too old: tensorsmith builds with TensorRT 10 or 11"
        )
    return trt


def trt_major(trt) -> int:
    m = re.match(r"(\d+)", str(getattr(trt, "__version__", "0")))
    return int(m.group(1)) if m else 0


def missing_for_build() -> list[str]:
    """What this machine lacks to build and run an engine (empty when it can)."""
    from tensorsmith import machine

    out = []
    why = machine.tensorrt_unavailable_reason()
    if why:
        out.append(why)
    why = machine.gpu_unavailable_reason()
    if why:
        out.append(why)
    return out


def select_mode(major: int, graph, requested: str | None) -> NetworkMode:
    """Network typing and builder flags for TensorRT ``major``, a graph whose precision
    is ``graph`` (``lint.trt.GraphPrecision``) and a requested precision."""
    requested = None if requested in (None, "auto") else requested
    typed = graph.has_qdq or graph.fp16 or graph.bf16
    if graph.has_qdq:
        compute = "int8"
    elif graph.fp16:
        compute = "fp16"
    elif graph.bf16:
        compute = "bf16"
    else:
        compute = "fp32"
    text = graph.text()
    if requested == "int8" and not graph.has_qdq:
        raise ConversionError(
            "INT8 asked for, but the graph has no QuantizeLinear/DequantizeLinear; tensorsmith builds INT8 "
            "engines from explicit Q/DQ only",
            hint="convert with --precision int8 first",
        )
    if major >= 11:
        if requested == "fp16" and not (graph.fp16 or graph.bf16):
            raise ConversionError(
                "FP16 asked for, but the graph is FP32 and TensorRT 11 builds strongly typed networks only "
                "(the precision must be in the ONNX)",
                hint="convert with --precision fp16 first",
            )
        return NetworkMode(True, [], compute, text, ["TensorRT 11: strongly typed (the only mode)"])
    if requested == "fp16" and not (graph.fp16 or graph.bf16):
        flags = ["FP16"] + (["INT8"] if graph.has_qdq else [])
        return NetworkMode(
            False,
            flags,
            "int8" if graph.has_qdq else "fp16",
            text,
            ["TensorRT 10: FP32 graph built with the FP16 flag (weak typing)"],
        )
    if typed:
        return NetworkMode(
            True, [], compute, text, ["TensorRT 10: strongly typed (the graph carries its precision)"]
        )
    return NetworkMode(False, [], "fp32", text)


def make_logger(trt):
    """A ``trt.ILogger`` that keeps errors and warnings for our error messages."""

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity, msg):
            text = " ".join(str(msg).split())
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(text)
            elif severity == trt.ILogger.Severity.WARNING:
                self.warnings.append(text)

    return _Logger()


def enum_name(value) -> str:
    """``ErrorCode.UNSUPPORTED_NODE`` -> ``UNSUPPORTED_NODE`` (pybind11 enums have ``.name``)."""
    if value is None:
        return ""
    return str(getattr(value, "name", None) or str(value).split(".")[-1])


def call_or_none(obj, name):
    fn = getattr(obj, name, None)
    if fn is None:
        return None
    try:
        return fn()
    except Exception:
        return None
