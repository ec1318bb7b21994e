"""TensorRT build options: ``TrtOptions``, ``--workspace`` sizes, output file names and
the ``tensorsmith build`` command that finishes a ``--prepare-only`` conversion."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from tensorsmith.convert.trt.profiles import DEFAULT_MAX_BATCH, Profile, input_shape_profiles
from tensorsmith.errors import UsageError
from tensorsmith.shapes import InputSpec
from tensorsmith.tolerances import Tolerance, tolerance_for

HARDWARE_COMPAT = {
    "none": "NONE",
    "ampere_plus": "AMPERE_PLUS",
    "ampere-plus": "AMPERE_PLUS",
    "same_compute_capability": "SAME_COMPUTE_CAPABILITY",
    "same-compute-capability": "SAME_COMPUTE_CAPABILITY",
}

# The first TensorRT release of each level whose name is not in every version we support
# (TensorRT 10.8's HardwareCompatibilityLevel has NONE and AMPERE_PLUS only: issue 17,
# from the tensorrt-cu12-bindings wheels' string tables).
HARDWARE_COMPAT_SINCE = {"SAME_COMPUTE_CAPABILITY": "10.9"}
# The default gates of an engine against onnxruntime on the same ONNX, by the precision
# it computes in: the engine rows of the one table in ``tensorsmith.tolerances``.
PRECISION_TOLERANCE = {p: tolerance_for(p, engine=True) for p in ("fp32", "fp16", "bf16", "int8")}


@dataclass
class TrtOptions:
    shapes: dict[str, Profile] = field(default_factory=dict)
    # --input-shape: the default profile of a dynamic input --shapes does not name
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    max_batch: int = DEFAULT_MAX_BATCH
    workspace: int | None = None  # bytes
    timing_cache: Path | None = None
    builder_opt_level: int | None = None  # 0..5
    hardware_compat: str | None = None  # none | ampere_plus | same_compute_capability
    version_compat: bool = False
    precision: str | None = None  # requested: fp32 | fp16 | int8 | None (what the graph carries)
    verify: bool = True
    verify_data: Path | None = None
    tolerance: Tolerance | None = None

    def validate(self) -> None:
        if self.builder_opt_level is not None and not 0 <= self.builder_opt_level <= 5:
            raise UsageError("--builder-opt-level must be 0..5")
        if self.hardware_compat is not None and self.hardware_compat.lower() not in HARDWARE_COMPAT:
            raise UsageError(
                f"--hardware-compat {self.hardware_compat}: expected none, ampere_plus or "
                "same_compute_capability"
            )
        if self.precision not in (None, "auto", "fp32", "fp16", "int8"):
            raise UsageError(f"--precision {self.precision}: expected fp32, fp16 or int8")
        if self.workspace is not None and self.workspace <= 0:
            raise UsageError("--workspace must be > 0")


def parse_workspace(text: str | None) -> int | None:
    """``4G``, ``512M``, ``2GiB``, ``1073741824`` -> bytes."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(text))
    if not m:
        raise UsageError(f"--workspace {text!r}: expected bytes or a size like 512M, 4G")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    value = int(float(m.group(1)) * scale)
    if value <= 0:
        raise UsageError("--workspace must be > 0")
    return value


def sidecar_path(plan_path: str | os.PathLike) -> Path:
    p = Path(plan_path)
    return p.with_name(p.name + ".json")


def prepared_onnx_path(plan_path: str | os.PathLike) -> Path:
    """Where ``convert --to trt`` writes the ready-to-build ONNX: ``OUT.plan`` -> ``OUT.trt.onnx``."""
    p = Path(plan_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(f"{stem}.trt.onnx")


def lint_report_path(plan_path: str | os.PathLike) -> Path:
    p = Path(plan_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(f"{stem}.trt.lint.json")


def build_command(onnx_path, plan_path, options: TrtOptions) -> str:
    """The ``tensorsmith build`` command that builds ``onnx_path`` on a GPU machine."""
    import shlex

    parts = ["tensorsmith", "build", str(onnx_path), "--to", "trt", "-o", str(plan_path)]
    for name, prof in options.shapes.items():
        if prof.source in ("--shapes", "--input-shape"):
            parts += ["--shapes", f"{name}={prof.text()}" if name else prof.text()]
    if options.max_batch != DEFAULT_MAX_BATCH:
        parts += ["--max-batch", str(options.max_batch)]
    if options.precision not in (None, "auto"):
        parts += ["--precision", options.precision]
    if options.workspace:
        parts += ["--workspace", str(options.workspace)]
    if options.timing_cache:
        parts += ["--timing-cache", str(options.timing_cache)]
    if options.builder_opt_level is not None:
        parts += ["--builder-opt-level", str(options.builder_opt_level)]
    if options.hardware_compat:
        parts += ["--hardware-compat", options.hardware_compat]
    if options.version_compat:
        parts.append("--version-compat")
    return " ".join(shlex.quote(p) for p in parts)


def add_input_shape_profiles(options: TrtOptions, specs: list[InputSpec]) -> None:
    """Add the ``--input-shape`` default profiles (``input_shape_profiles``) to ``options.shapes``,
    so the lint, the build and the printed ``tensorsmith build`` command all use them."""
    options.shapes.update(
        input_shape_profiles(specs, options.input_shapes, options.shapes, max_batch=options.max_batch)
    )
