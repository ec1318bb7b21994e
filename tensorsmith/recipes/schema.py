"""The recipe schema: typed, unknown keys are errors, every error names its line.

A recipe says what to convert into what::

    version: 1
    output_dir: ../build/models          # relative to the recipe file
    output: "{model}/{target}{ext}"      # a file inside output_dir, per job
    defaults: {rtol: 1.0e-4}             # any option, for every job
    models:                              # sources: name, path + source options
      - {name: cnn, path: ../sample_models/cnn.onnx, input_shape: {input: 1x3x32x32}}
    targets:                             # what to make: to, precision + target options
      - {name: onnx, to: onnx}
    jobs:                                # optional: override or add model x target jobs
      - {name: cnn-onnx, atol: 1.0e-4}

Option keys are the command-line flags of ``tensorsmith convert``/``optimize``
with ``_`` for ``-`` (``--input-shape`` -> ``input_shape``, ``--from`` -> ``from``);
an on/off flag is a boolean (``--no-verify`` -> ``verify: false``,
``--no-external-data`` -> ``external_data: false``); ``flag_of(key)`` gives the flag.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from tensorsmith.errors import UsageError
from tensorsmith.recipes.yaml_lines import Lines, format_path

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=128)]

DEFAULT_OUTPUT = "{model}.{target}{ext}"
DEFAULT_OUTPUT_DIR = "build/tensorsmith"
TEMPLATE_FIELDS = ("model", "target", "job", "to", "precision", "ext", "gpu")
# a Ray label selector: {LABEL: VALUE}; VALUE may be "!v", "in(a,b)" or "!in(a,b)" (Ray's syntax)
LabelSelector = dict[Annotated[str, Field(min_length=1)], Annotated[str, Field(min_length=1)]]


def _names(value: Any) -> Any:
    """``"a,b"`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]`` (as ``--passes a,b``)."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        out = []
        for item in value:
            if not isinstance(item, str):
                return value  # let pydantic name the bad item
            out.extend(x.strip() for x in item.split(",") if x.strip())
        return out
    return value


def _shapes(value: Any) -> Any:
    """``{x: 1x3x32x32}``, ``["x=1x3x32x32"]`` or ``"1x3x32x32"`` -> ``["x=1x3x32x32", ...]``."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        out = []
        for name, dims in value.items():
            if isinstance(dims, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
                dims = "x".join(str(d) for d in dims)
            elif isinstance(dims, int) and not isinstance(dims, bool):
                dims = str(dims)
            if not isinstance(dims, str):
                raise ValueError(f"shape of {name!r} must be like 1x3x224x224 or a list of integers")
            out.append(f"{name}={dims}")
        return out
    return value


def _pairs(value: Any) -> Any:
    """``{sr: 16000}`` or ``["sr=16000"]`` -> ``["sr=16000"]`` (as ``--input-value sr=16000``)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        out = []
        for name, item in value.items():
            if isinstance(item, bool):
                item = "true" if item else "false"
            elif item is None:
                item = "none"
            elif isinstance(item, list):
                item = "x".join(str(v) for v in item) if all(isinstance(v, int) for v in item) else str(item)
            out.append(f"{name}={item}")
        return out
    return value


NameList = Annotated[list[str] | None, BeforeValidator(_names)]
ValueList = Annotated[list[str] | None, BeforeValidator(_pairs)]
ProfileList = Annotated[list[str] | None, BeforeValidator(_pairs)]
ShapeList = Annotated[list[str] | None, BeforeValidator(_shapes)]
Tol = Annotated[float | None, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True)


class SourceOptions(_Strict):
    """Options about the source model and its data (allowed on ``models``, ``defaults``, ``jobs``)."""

    from_: str | None = Field(None, alias="from", description="--from: source format, when not detectable")
    input_shape: ShapeList = Field(None, description="--input-shape NAME=1x3x224x224 (a mapping or a list)")
    verify_data: str | None = Field(None, description="--verify-data: .npz of real inputs (validation data)")
    calib: str | None = Field(None, description="--calib: calibration data (.npz, folder) or 'random'")
    calib_preprocess: str | None = Field(None, description="--calib-preprocess for a folder of images")
    calib_loader: str | None = Field(None, description="--calib-loader module:function (runs your code)")
    val: str | None = Field(None, description="--val: validation data for the precision gate")
    signature: str | None = Field(None, description="--signature (SavedModel)")
    inputs: NameList = Field(None, description="--inputs (GraphDef)")
    outputs: NameList = Field(None, description="--outputs (GraphDef)")
    input_value: ValueList = Field(None, description="--input-value NAME=VALUE (a mapping or a list)")
    weights: str | None = Field(None, description="--weights state_dict for a module:factory source")
    trust_remote_code: bool | None = Field(None, description="--trust-remote-code")

    @field_validator("from_")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from tensorsmith.convert import FRONTENDS

        if value not in FRONTENDS:
            raise ValueError(f"unknown source format {value!r}; known: {', '.join(FRONTENDS)}")
        return value


class TargetOptions(_Strict):
    """Options about what to make (allowed on ``targets``, ``defaults`` and ``jobs``)."""

    to: str | None = Field(None, description="--to: target format")
    precision: str | None = Field(None, description="--precision")
    target: str | None = Field(None, description="--target: who runs the lowered model (ort, trt)")
    passes: NameList = Field(None, description="--passes: passes to run (default: all)")
    skip: NameList = Field(None, description="--skip: passes to leave out")
    pass_options: dict[str, dict[str, Any]] | None = Field(None, description="options per pass")
    optimize: bool | None = Field(None, description="false = --no-optimize")
    verify: bool | None = Field(None, description="false = --no-verify")
    rtol: Tol = Field(None, description="--rtol")
    atol: Tol = Field(None, description="--atol")
    external_data: bool | None = Field(None, description="--external-data / --no-external-data")
    max_iterations: int | None = Field(None, ge=1, description="--max-iterations")
    opset: int | None = Field(None, description="--opset")
    static: bool | None = Field(None, description="--static")
    nchw_inputs: bool | None = Field(None, description="--nchw-inputs")
    # precision (tensorsmith.precision)
    fp16_io: bool | None = Field(None, description="--fp16-io")
    calib_samples: int | None = Field(None, ge=1, description="--calib-samples")
    calib_method: str | None = Field(None, description="--calib-method")
    int8_mode: str | None = Field(None, description="--int8-mode")
    min_cosine: float | None = Field(None, description="--min-cosine")
    min_top1: float | None = Field(None, description="--min-top1")
    max_abs_error: float | None = Field(None, ge=0, description="--max-abs-error")
    max_rel_error: float | None = Field(None, ge=0, description="--max-rel-error")
    fallback_budget: int | None = Field(None, ge=0, description="--fallback-budget")
    min_speedup: float | None = Field(None, ge=0, description="--min-speedup")
    keep_fp32: NameList = Field(None, description="--keep-fp32")
    # TensorRT / TF-TRT
    shapes: ProfileList = Field(None, description="--shapes NAME=MIN:OPT:MAX (a mapping or a list)")
    max_batch: int | None = Field(None, ge=1, description="--max-batch")
    workspace: str | None = Field(None, description="--workspace, e.g. 4G")
    timing_cache: str | None = Field(None, description="--timing-cache FILE")
    builder_opt_level: int | None = Field(None, ge=0, le=5, description="--builder-opt-level")
    hardware_compat: str | None = Field(None, description="--hardware-compat")
    version_compat: bool | None = Field(None, description="--version-compat")
    trt_version: str | None = Field(None, description="--trt-version (lint)")
    prepare_only: bool | None = Field(None, description="--prepare-only")
    profile_strategy: str | None = Field(None, description="--profile-strategy (tftrt)")

    @field_validator("workspace", mode="before")
    @classmethod
    def _workspace_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("to")
    @classmethod
    def _known_target(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from tensorsmith.convert import BACKENDS

        if value not in BACKENDS:
            raise ValueError(f"unknown target {value!r}; known: {', '.join(BACKENDS)}")
        return value

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from tensorsmith.jobs import supported_precisions

        known = supported_precisions()
        if value not in known:
            raise ValueError(
                f"unknown or unsupported precision {value!r}; this tensorsmith supports: {', '.join(known)}"
            )
        return value

    @field_validator("passes", "skip")
    @classmethod
    def _known_passes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        from tensorsmith.passes import PASSES

        for name in value:
            if name not in PASSES:
                raise ValueError(f"unknown pass {name!r}; known passes: {', '.join(PASSES)}")
        return value

    @field_validator("pass_options")
    @classmethod
    def _known_pass_options(cls, value: dict | None) -> dict | None:
        if value is None:
            return value
        from tensorsmith.passes import PASSES

        for name, opts in value.items():
            if name not in PASSES:
                raise ValueError(f"options for unknown pass {name!r}; known passes: {', '.join(PASSES)}")
            options_cls = getattr(PASSES[name], "Options", None)
            if options_cls is not None and hasattr(options_cls, "model_validate"):
                try:
                    options_cls.model_validate(opts)
                except ValidationError as exc:
                    err = exc.errors()[0]
                    raise ValueError(f"pass {name!r}: {format_path(err['loc'])}: {err['msg']}") from None
        return value


class Options(SourceOptions, TargetOptions):
    """Every option: what ``defaults`` and ``jobs`` may set."""


SOURCE_KEYS = tuple(f.alias or n for n, f in SourceOptions.model_fields.items())
TARGET_KEYS = tuple(f.alias or n for n, f in TargetOptions.model_fields.items())
OPTION_KEYS = SOURCE_KEYS + TARGET_KEYS
# on/off flags whose recipe key is the positive word: `--no-verify` -> `verify: false`
NEGATED_FLAGS = {"verify": "--no-verify", "optimize": "--no-optimize"}
# recipe keys whose flag is not `--` + the key with `-` for `_`
SPECIAL_FLAGS = {"external_data": "--external-data/--no-external-data", "pass_options": None}


def flag_of(key: str) -> str | None:
    """The command-line flag of a recipe key (``None``: no flag, recipe only)."""
    if key in NEGATED_FLAGS:
        return NEGATED_FLAGS[key]
    if key in SPECIAL_FLAGS:
        return SPECIAL_FLAGS[key]
    return "--" + key.replace("_", "-")


class ModelEntry(SourceOptions):
    name: Name
    path: str = Field(..., min_length=1, description="model file, SavedModel folder or module:factory")


class Placement(_Strict):
    """Where a job runs with ``--executor ray`` (ignored by the local pool)."""

    runs_on: LabelSelector | None = Field(None, description="Ray label selector: {LABEL: VALUE}")


class TargetEntry(TargetOptions, Placement):
    name: Name | None = Field(None, description="default: `to`, plus `-precision` when given")
    gpus: list[Name] | None = Field(
        None, min_length=1, description="GPU types (ray.io/accelerator-type): one engine per type"
    )


class JobEntry(Options, Placement):
    """Overrides for one job of the matrix, found by its name (``MODEL-TARGET``)."""

    name: Name
    path: str | None = Field(None, min_length=1, description="override the model's path")
    output: str | None = Field(None, min_length=1, description="override the output template")
    enabled: bool = Field(True, description="false drops the job")


class Recipe(_Strict):
    version: Literal[1] = 1
    output_dir: str = Field(DEFAULT_OUTPUT_DIR, min_length=1, description="relative to the recipe file")
    output: str = Field(DEFAULT_OUTPUT, min_length=1, description="file template inside output_dir")
    defaults: Options = Field(default_factory=Options)
    models: list[ModelEntry] = Field(..., min_length=1)
    targets: list[TargetEntry] = Field(default_factory=lambda: [TargetEntry(to="onnx")], min_length=1)
    jobs: list[JobEntry] = Field(default_factory=list)


# ---------------------------------------------------------------------------
# errors with lines


def _hint_for_extra(loc: tuple, key: Any) -> str:
    section = loc[0] if loc else None
    key = str(key)
    if section == "models" and len(loc) == 2 and key in TARGET_KEYS:
        return f" ({key!r} is a target option: set it under targets, defaults or jobs)"
    if section == "targets" and len(loc) == 2 and key in SOURCE_KEYS:
        return f" ({key!r} is a model option: set it under models, defaults or jobs)"
    if section == "targets" and len(loc) == 2 and key == "path":
        return " (a target has no path; models do)"
    candidates = {
        "models": [*SOURCE_KEYS, "name", "path"],
        "targets": [*TARGET_KEYS, "name", "runs_on", "gpus"],
        "jobs": [*OPTION_KEYS, "name", "path", "output", "enabled", "runs_on"],
        "defaults": list(OPTION_KEYS),
    }.get(section, list(Recipe.model_fields))
    close = difflib.get_close_matches(key.replace("-", "_"), candidates, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return ""


def errors_to_usage(exc: ValidationError, lines: Lines) -> UsageError:
    """One ``UsageError`` naming file, line and key for pydantic's errors (first three)."""
    parts = []
    errors = exc.errors(include_url=False)
    for err in errors[:3]:
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            where = lines.where(loc, key=True)
            parts.append(f"{where}: {format_path(loc)}: unknown key{_hint_for_extra(loc[:-1], loc[-1])}")
            continue
        if kind == "missing":
            where = lines.where(loc[:-1])
            parts.append(f"{where}: {format_path(loc)}: required key is missing")
            continue
        msg = err["msg"]
        if kind == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif kind == "string_pattern_mismatch":
            msg = "names may use letters, digits, '.', '_' and '-', and start with a letter or digit"
        where = lines.where(loc)
        got = err.get("input")
        shown = ""
        if kind not in ("value_error",) and isinstance(got, (str, int, float, bool)) and len(str(got)) < 60:
            shown = f" (got {got!r})"
        parts.append(f"{where}: {format_path(loc)}: {msg}{shown}")
    text = "; ".join(parts)
    if len(errors) > 3:
        text += f" (+{len(errors) - 3} more)"
    return UsageError(text)


def parse(data: Any, lines: Lines) -> Recipe:
    """Validate loaded YAML data into a ``Recipe``; ``UsageError`` naming the line."""
    if data is None:
        raise UsageError(f"{lines.file}: the recipe is empty")
    if not isinstance(data, dict):
        raise UsageError(
            f"{lines.where(())}: a recipe is a mapping (models:, targets:, ...), not a {type(data).__name__}"
        )
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise errors_to_usage(exc, lines) from None


def check_name(value: str, what: str) -> str:
    if not re.match(NAME_PATTERN, value):
        raise UsageError(f"{what} {value!r}: names may use letters, digits, '.', '_' and '-'")
    return value


# ---------------------------------------------------------------------------
# --dump-recipe: a command line as a recipe

# command parameters that only change what is printed, not what is made
_DISPLAY_ONLY = {"json_out", "explain", "dump_recipe"}
# command parameter -> recipe key, where they differ
_PARAM_KEYS = {"source_format": "from", "qtarget": "target"}
_NEGATED_PARAMS = {"no_verify": "verify", "no_optimize": "optimize"}
_CLI_DEFAULTS = {"max_iterations": 8, "to": "onnx"}
_LIST_KEYS = ("passes", "skip", "keep_fp32", "inputs", "outputs")


def _model_name(source: str) -> str:
    from pathlib import PurePath

    stem = (
        PurePath(source.rstrip("/\\")).name if ":" not in source or "/" in source else source.split(":")[-1]
    )
    for suffix in (".onnx", ".pt2", ".pt", ".pth", ".keras", ".h5", ".pb", ".tflite"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "model"
    return name if re.match(NAME_PATTERN, name) else f"m-{name}"


def cli_options(params: dict[str, Any]) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """(source, output, model options, target options) of a command's parameters.

    ``params`` are the ``optimize``/``convert`` function's parameters (names as in
    ``cli.py``); the options use the recipe keys, so the command line, its
    ``--dump-recipe`` and ``tensorsmith.jobs`` all speak the same names. Options
    left at their defaults are left out.
    """
    import os

    params = dict(params)
    source = str(params.pop("input_path"))
    output = str(params.pop("output"))
    model: dict[str, Any] = {}
    target: dict[str, Any] = {}
    for pname, value in params.items():
        if pname in _DISPLAY_ONLY:
            continue
        if pname in _NEGATED_PARAMS:
            if value:
                key = _NEGATED_PARAMS[pname]
                (model if key in SOURCE_KEYS else target)[key] = False
            continue
        key = _PARAM_KEYS.get(pname, pname)
        if key in _LIST_KEYS:
            value = [x.strip() for v in (value or []) for x in str(v).split(",") if x.strip()] or None
        elif isinstance(value, (list, tuple)):
            value = [str(v) for v in value] or None
        elif isinstance(value, os.PathLike):
            value = str(value)
        if value is None or (value is False and key != "external_data"):
            continue
        if key in _CLI_DEFAULTS and value == _CLI_DEFAULTS[key]:
            continue
        if key not in OPTION_KEYS:
            raise UsageError(f"the option {pname!r} has no recipe key yet")
        (model if key in SOURCE_KEYS else target)[key] = value
    return source, output, model, target


def recipe_from_cli(command: str, params: dict[str, Any]) -> str:
    """The recipe (YAML text) that makes what ``tensorsmith COMMAND ...`` would make.

    ``params`` are the command function's parameters (names as in ``cli.py``).
    Paths are written as given, relative to the folder the command ran in: save
    the recipe in that folder (recipe paths are relative to the recipe file).
    """
    import os

    import yaml

    try:
        source, output, options, target = cli_options(params)
    except UsageError as exc:
        raise UsageError(f"--dump-recipe: {exc}; leave it out or run the command") from None
    model: dict[str, Any] = {"name": _model_name(source), "path": source, **options}
    to = target.get("to", "onnx")
    precision = target.get("precision")
    target = {
        "name": to if precision in (None, "fp32") else f"{to}-{precision}",
        "to": to,
        **{k: v for k, v in target.items() if k != "to"},
    }
    out_dir, out_name = os.path.split(output)
    recipe = {
        "version": 1,
        "output_dir": out_dir or ".",
        "output": out_name.replace("{", "{{").replace("}", "}}"),
        "models": [model],
        "targets": [target],
    }
    try:
        Recipe.model_validate(recipe)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(
            f"--dump-recipe: {format_path(err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
        ) from None
    head = (
        f"# tensorsmith recipe, from `tensorsmith {command} ... --dump-recipe`.\n"
        "# Paths are relative to this file: save it in the folder the command ran in,\n"
        "# then `tensorsmith run THIS.yaml` makes the same output.\n"
    )
    return head + yaml.safe_dump(recipe, sort_keys=False, default_flow_style=False)
