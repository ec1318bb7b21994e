"""Precision: FP16 and INT8 in the ONNX graph, with calibration, an accuracy gate and fallback.

``PrecisionOptions`` is what ``--precision`` and its flags build; ``lower`` (in
``step.py``) turns an optimized FP32 model file into an FP16 or INT8 one, gates it
against the FP32 model on validation samples, keeps the nodes that lose the
accuracy in FP32 until the gate passes, and measures its onnxruntime CPU
latency. Modules: ``calibration`` (data), ``fp16``, ``int8``, ``gate``,
``fallback`` (ranking nodes by added error), ``latency``, ``progress``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
    calib_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    val: str | None = None
    int8_mode: Literal["static", "dynamic"] = "static"
    min_cosine: float | None = Field(None, ge=-1.0, le=1.0)
    min_top1: float | None = Field(None, ge=0.0, le=1.0)
    max_abs: float | None = Field(None, ge=0.0)
    max_rel: float | None = Field(None, ge=0.0)
    fallback_budget: int = Field(10, ge=0)
    min_speedup: float | None = Field(None, ge=0.0)
    keep_fp32: list[str] = Field(default_factory=list)  # node names or op types the user keeps FP32
    measure_latency: bool = True
    int8_steps: list[Literal["equalize", "bias-correction"]] | None = None  # int8_steps.py; None: its DEFAULT

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
        return self


def options_from_cli(
    precision: str | None,
    *,
    target: str | None = None,
    fp16_io: bool = False,
    calib: str | None = None,
    calib_preprocess: str | None = None,
    calib_loader: str | None = None,
    calib_samples: int | None = None,
    calib_method: str | None = None,
    val: str | None = None,
    int8_mode: str | None = None,
    min_cosine: float | None = None,
    min_top1: float | None = None,
    max_abs: float | None = None,
    max_rel: float | None = None,
    fallback_budget: int | None = None,
    min_speedup: float | None = None,
    keep_fp32: list[str] | None = None,
    int8_steps: list[str] | None = None,
) -> PrecisionOptions:
    """Build (and check) options from CLI values; ``None`` means the default."""
    values = {
        "precision": (precision or "fp32").lower(),
        "target": (target or "ort").lower(),
        "fp16_io": fp16_io,
        "calib": calib,
        "calib_preprocess": calib_preprocess,
        "calib_loader": calib_loader,
        "calib_samples": calib_samples,
        "calib_method": calib_method.lower() if calib_method else None,
        "val": val,
        "int8_mode": int8_mode.lower() if int8_mode else None,
        "min_cosine": min_cosine,
        "min_top1": min_top1,
        "max_abs": max_abs,
        "max_rel": max_rel,
        "fallback_budget": fallback_budget,
        "min_speedup": min_speedup,
        "keep_fp32": keep_fp32,
        "int8_steps": int8_steps,
    }
    if values["target"] in ("tensorrt", "trt"):
        values["target"] = "trt"
    elif values["target"] in ("onnxruntime", "ort", "cpu", "onnx"):
        values["target"] = "ort"
    choices = {
        "precision": PRECISIONS,
        "target": TARGETS,
        "calib_method": ("minmax", "entropy", "percentile"),
        "int8_mode": ("static", "dynamic"),
    }
    for key, allowed in choices.items():
        if values[key] is not None and values[key] not in allowed:
            flag = "--" + key.replace("_", "-")
            raise UsageError(f"{flag} {values[key]!r}: choose one of {', '.join(allowed)}")
    try:
        opts = PrecisionOptions(**{k: v for k, v in values.items() if v is not None})
    except Exception as exc:  # pydantic ValidationError: name the flag
        errors = getattr(exc, "errors", list)()
        if errors:
            err = errors[0]
            flag = "--" + str(err["loc"][0]).replace("_", "-")
            raise UsageError(f"{flag}: {err['msg']}") from None
        raise UsageError(str(exc).splitlines()[0]) from None
    return opts.check()


def lower(*args, **kwargs):
    """See ``tensorsmith.precision.step.lower``."""
    from tensorsmith.precision.step import lower as _lower

    return _lower(*args, **kwargs)


__all__ = ["INT8_NEEDS_DATA", "PRECISIONS", "PrecisionOptions", "lower", "options_from_cli"]
