"""Precision: FP16 and INT8 in the ONNX graph, with calibration, an accuracy gate and fallback.

``PrecisionOptions`` is what ``--precision`` and its flags build; ``step.lower``
turns an optimized FP32 model file into an FP16 or INT8 one, gates it against the FP32 model on validation samples, keeps the nodes that lose the
accuracy in FP32 until the gate passes, and measures its onnxruntime CPU
latency. Modules: ``calibration`` (data), ``fp16``, ``int8``, ``gate``,
``fallback`` (ranking nodes by added error), ``latency``, ``progress``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tensorsmith.errors import UsageError

PRECISIONS = ("fp32", "fp16", "int8")
TARGETS = ("ort", "trt")

INT8_NEEDS_DATA = (
    "--precision int8 needs calibration data: --calib DIR_OR_FILE.npz (arrays named after the inputs), "
    '--calib IMAGES_DIR with --calib-preprocess "resize=224,mean=...,std=...,layout=NCHW", '
    "--calib-loader module:function (your own code), or --calib random (smoke tests only: "
    "the result is not meaningful); --int8-mode dynamic (MatMul only) needs none"
)


class PrecisionOptions(BaseModel):
    """Options of the precision step (CLI flags of the same names)."""

    model_config = ConfigDict(extra="forbid")

    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    target: Literal["ort", "trt"] = "ort"
    fp16_io: bool = False
    calib: str | None = None
    calib_preprocess: str | None = None
    calib_loader: str | None = None
    calib_samples: int = Field(100, ge=1)
    calib_method: Literal["minmax", "entropy", "percentile", "mse"] = "minmax"
    val: str | None = None
    int8_mode: Literal["static", "dynamic"] = "static"
    min_cosine: float | None = Field(None, ge=-1.0, le=1.0)
    min_top1: float | None = Field(None, ge=0.0, le=1.0)
    max_abs_error: float | None = Field(None, ge=0.0)
    max_rel_error: float | None = Field(None, ge=0.0)
    fallback_budget: int = Field(10, ge=0)
    min_speedup: float | None = Field(None, ge=0.0)
    keep_fp32: list[str] = Field(default_factory=list)  # node names or op types the user keeps FP32
    measure_latency: bool = True
    int8_steps: list[Literal["equalize", "smooth", "mse-weights", "adaround", "bias-correction"]] | None = (
        None  # int8_steps.py; None: its DEFAULT
    )
    precision_report: bool = False  # rank every quantized node by sensitivity, even when the gate passes

    @property
    def max_abs(self) -> float | None:
        """The gate's threshold name (``gate.GateThresholds``) for ``max_abs_error``."""
        return self.max_abs_error

    @property
    def max_rel(self) -> float | None:
        return self.max_rel_error

    @property
    def lowered(self) -> bool:
        return self.precision != "fp32"

    def check(self) -> PrecisionOptions:
        """Cross-flag rules; raises ``UsageError`` (exit 2)."""
        if self.calib and self.calib_loader:
            raise UsageError("give --calib or --calib-loader, not both")
        if self.precision == "int8" and self.int8_mode == "static" and not (self.calib or self.calib_loader):
            raise UsageError(INT8_NEEDS_DATA)
        if self.precision == "int8" and self.int8_mode == "dynamic" and self.target == "trt":
            raise UsageError(
                "--int8-mode dynamic writes onnxruntime's MatMulInteger ops, which TensorRT does not run; "
                "use static Q/DQ (--calib) for --target trt"
            )
        if self.precision != "int8" and self.int8_mode == "dynamic":
            raise UsageError("--int8-mode applies to --precision int8 only")
        if self.precision == "fp32" and (self.calib or self.calib_loader or self.val or self.fp16_io):
            raise UsageError("--calib, --calib-loader, --val and --fp16-io need --precision fp16 or int8")
        if self.fp16_io and self.precision != "fp16":
            raise UsageError("--fp16-io applies to --precision fp16 only")
        if self.precision_report and (self.precision != "int8" or self.int8_mode != "static"):
            raise UsageError(
                "--precision-report ranks INT8 layers: it applies to --precision int8 (static) only"
            )
        return self


CHOICES: dict[str, tuple[str, ...]] = {
    "precision": PRECISIONS,
    "target": TARGETS,
    "calib_method": ("minmax", "entropy", "percentile", "mse"),
    "int8_mode": ("static", "dynamic"),
}
TARGET_ALIASES = {"tensorrt": "trt", "onnxruntime": "ort", "cpu": "ort", "onnx": "ort"}


def options_from_config(settings: Mapping[str, Any], *, default_target: str = "ort") -> PrecisionOptions:
    """Check the precision stage of a job's configuration (``config.PrecisionConfig``'s keys,
    the flags' names); ``None`` means the default, ``default_target`` who runs the model
    unless ``--target`` says."""
    values = {k: v for k, v in settings.items() if v is not None}
    values["precision"] = values.get("precision") or "fp32"
    values["target"] = values.get("target") or default_target
    for key, allowed in CHOICES.items():
        if key in values:
            value = str(values[key]).lower()
            values[key] = TARGET_ALIASES.get(value, value) if key == "target" else value
            if values[key] not in allowed:
                flag = "--" + key.replace("_", "-")
                raise UsageError(f"{flag} {values[key]!r}: choose one of {', '.join(allowed)}")
    try:
        opts = PrecisionOptions(**values)
    except ValidationError as exc:  # name the flag
        err = exc.errors()[0]
        raise UsageError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    return opts.check()


def options_from_cli(precision: str | None, **flags: Any) -> PrecisionOptions:
    """``options_from_config`` from keyword arguments named after the flags (``calib=...``)."""
    return options_from_config({"precision": precision, **flags})


__all__ = [
    "INT8_NEEDS_DATA",
    "PRECISIONS",
    "PrecisionOptions",
    "options_from_cli",
    "options_from_config",
]
