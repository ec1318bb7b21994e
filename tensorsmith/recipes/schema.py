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
``--no-external-data`` -> ``external_data: false``). ``OPTION_FLAGS`` lists them.
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
TEMPLATE_FIELDS = ("model", "target", "job", "to", "precision", "ext")


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


NameList = Annotated[list[str] | None, BeforeValidator(_names)]
ShapeList = Annotated[list[str] | None, BeforeValidator(_shapes)]
Tol = Annotated[float | None, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True)


class SourceOptions(_Strict):
    """Options about the source model (allowed on ``models``, ``defaults`` and ``jobs``)."""

    from_: str | None = Field(None, alias="from", description="--from: source format, when not detectable")
    input_shape: ShapeList = Field(None, description="--input-shape NAME=1x3x224x224 (a mapping or a list)")
    verify_data: str | None = Field(None, description="--verify-data: .npz of real inputs (validation data)")

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
    passes: NameList = Field(None, description="--passes: passes to run (default: all)")
    skip: NameList = Field(None, description="--skip: passes to leave out")
    pass_options: dict[str, dict[str, Any]] | None = Field(None, description="options per pass")
    verify: bool | None = Field(None, description="false = --no-verify")
    rtol: Tol = Field(None, description="--rtol")
    atol: Tol = Field(None, description="--atol")
    external_data: bool | None = Field(None, description="--external-data / --no-external-data")
    max_iterations: int | None = Field(None, ge=1, description="--max-iterations")

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
        from tensorsmith.recipes.expand import supported_precisions

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
# recipe key -> command-line flag (for docs and --dump-recipe)
OPTION_FLAGS = {
    "from": "--from", "input_shape": "--input-shape", "verify_data": "--verify-data",
    "to": "--to", "precision": "--precision", "passes": "--passes", "skip": "--skip",
    "pass_options": None, "verify": "--no-verify", "rtol": "--rtol", "atol": "--atol",
    "external_data": "--external-data/--no-external-data", "max_iterations": "--max-iterations",
}


class ModelEntry(SourceOptions):
    name: Name
    path: str = Field(..., min_length=1, description="model file, SavedModel folder or module:factory")


class TargetEntry(TargetOptions):
    name: Name | None = Field(None, description="default: `to`, plus `-precision` when given")


class JobEntry(Options):
    name: Name
    model: Name | None = Field(None, description="for a job that is not in the matrix")
    target: Name | None = Field(None, description="for a job that is not in the matrix")
    path: str | None = Field(None, min_length=1, description="override the model's path")
    output: str | None = Field(None, min_length=1, description="override the output template")
    enabled: bool = Field(True, description="false drops the job from the matrix")


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
    if section == "models" and len(loc) == 3 and key in TARGET_KEYS:
        return f" ({key!r} is a target option: set it under targets, defaults or jobs)"
    if section == "targets" and len(loc) == 3 and key in SOURCE_KEYS:
        return f" ({key!r} is a model option: set it under models, defaults or jobs)"
    if section == "targets" and len(loc) == 3 and key == "path":
        return " (a target has no path; models do)"
    candidates = {
        "models": [*SOURCE_KEYS, "name", "path"],
        "targets": [*TARGET_KEYS, "name"],
        "jobs": [*OPTION_KEYS, "name", "model", "target", "path", "output", "enabled"],
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
        raise UsageError(f"{lines.where(())}: a recipe is a mapping (models:, targets:, ...), not a {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise errors_to_usage(exc, lines) from None


def check_name(value: str, what: str) -> str:
    if not re.match(NAME_PATTERN, value):
        raise UsageError(f"{what} {value!r}: names may use letters, digits, '.', '_' and '-'")
    return value
