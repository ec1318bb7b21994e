"""The one tolerance table: precision -> default tolerances, for every comparison.

``Tolerance`` is the max-abs check of ``tensorsmith.compare`` (an output passes when
``max_abs <= atol + rtol * scale``); ``min_cosine``/``min_top1`` are the defaults of
the precision gate (``tensorsmith.precision.gate``) that judges FP16/BF16/INT8
results. Every caller takes its defaults from ``TOLERANCES`` through
``tolerance_for``/``gate_defaults``; ``--rtol/--atol``/``--min-cosine``/``--min-top1``
override them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Tolerance:
    rtol: float = 1e-4
    atol: float = 1e-5


@dataclass(frozen=True)
class PrecisionDefaults:
    rtol: float
    atol: float
    min_cosine: float | None = None
    min_top1: float | None = None

    @property
    def tolerance(self) -> Tolerance:
        return Tolerance(rtol=self.rtol, atol=self.atol)


TOLERANCES: dict[str, PrecisionDefaults] = {
    # float32 vs float32: a converted or optimized ONNX against its source (onnxruntime
    # with graph optimizations off, or the source framework)
    "fp32": PrecisionDefaults(rtol=1e-4, atol=1e-5),
    # an FP32 TensorRT / TF-TRT engine: TF32 is on by default in TensorRT for FP32
    # layers (10-bit mantissa inputs), hence looser than ONNX vs ONNX
    "tf32": PrecisionDefaults(rtol=1e-3, atol=1e-4),
    "fp16": PrecisionDefaults(rtol=1e-2, atol=1e-3, min_cosine=0.999),
    "bf16": PrecisionDefaults(rtol=3e-2, atol=3e-3, min_cosine=0.999),
    "int8": PrecisionDefaults(rtol=5e-2, atol=1e-2, min_cosine=0.99, min_top1=0.99),
}

DEFAULT_RTOL = TOLERANCES["fp32"].rtol
DEFAULT_ATOL = TOLERANCES["fp32"].atol


def defaults_for(precision: str | None, *, engine: bool = False) -> PrecisionDefaults:
    """The table's row for ``precision``; ``engine``: the result is a TensorRT/TF-TRT
    engine, whose FP32 layers compute in TF32 (unknown precisions: as FP32)."""
    key = precision if precision in TOLERANCES else "fp32"
    if engine and key == "fp32":
        key = "tf32"
    return TOLERANCES[key]


def tolerance_for(precision: str | None, *, engine: bool = False) -> Tolerance:
    """Default rtol/atol for results computed in ``precision`` (see ``defaults_for``)."""
    return defaults_for(precision, engine=engine).tolerance


__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "TOLERANCES",
    "PrecisionDefaults",
    "Tolerance",
    "defaults_for",
    "tolerance_for",
]
