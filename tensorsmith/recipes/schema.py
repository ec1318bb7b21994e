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
The options are declared once, by stage, in ``tensorsmith.config``; the
``models`` and ``targets`` sections here are built from those fields.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, create_model

from tensorsmith import config
from tensorsmith.convert.targets import DEFAULT_TARGET
from tensorsmith.errors import UsageError
from tensorsmith.recipes.yaml_lines import Lines, format_path

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=128)]

DEFAULT_OUTPUT = "{model}.{target}{ext}"
DEFAULT_OUTPUT_DIR = "build/tensorsmith"
TEMPLATE_FIELDS = ("model", "target", "job", "to", "precision", "ext", "gpu")
# a Ray label selector: {LABEL: VALUE}; VALUE may be "!v", "in(a,b)" or "!in(a,b)" (Ray's syntax)
LabelSelector = dict[Annotated[str, Field(min_length=1)], Annotated[str, Field(min_length=1)]]


_Strict = config.Strict


def _section(name: str, keys: tuple[str, ...], doc: str) -> type[_Strict]:
    """A flat recipe section with the fields of ``tensorsmith.config`` named ``keys``."""
    fields: dict[str, Any] = {}
    for key in keys:
        annotation, info = config.field_of(key)
        fields["from_" if key == "from" else key] = (annotation, info)
    model: type[config.Strict] = create_model(name, __base__=config.Strict, __doc__=doc, **fields)
    return model


SourceOptions = _section(
    "SourceOptions",
    config.MODEL_KEYS,
    "Options about the source model and its data (allowed on ``models``, ``defaults``, ``jobs``).",
)
TargetOptions = _section(
    "TargetOptions",
    config.TARGET_KEYS,
    "Options about what to make (allowed on ``targets``, ``defaults`` and ``jobs``).",
)


class Options(SourceOptions, TargetOptions):  # type: ignore[misc,valid-type]
    """Every option: what ``defaults`` and ``jobs`` may set."""


SOURCE_KEYS = config.MODEL_KEYS
TARGET_KEYS = config.TARGET_KEYS
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


class ModelEntry(SourceOptions):  # type: ignore[misc,valid-type]
    name: Name
    path: str = Field(..., min_length=1, description="model file, SavedModel folder or module:factory")


class Placement(_Strict):
    """Where a job runs with ``--executor ray`` (ignored by the local pool)."""

    runs_on: LabelSelector | None = Field(None, description="Ray label selector: {LABEL: VALUE}")


class TargetEntry(TargetOptions, Placement):  # type: ignore[misc,valid-type]
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
    targets: list[TargetEntry] = Field(
        default_factory=lambda: [TargetEntry(to=DEFAULT_TARGET)],  # type: ignore[call-arg]
        min_length=1,
    )
    jobs: list[JobEntry] = Field(default_factory=list)
    report_html: str | None = Field(None, min_length=1, description="HTML report, relative to output_dir")


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
    }.get(str(section), list(Recipe.model_fields))
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


def recipe_from_config(command: str, source: str, output: str, job: config.JobConfig) -> str:
    """The recipe (YAML text) that makes what ``tensorsmith COMMAND SOURCE -o OUTPUT ...`` would make.

    Paths are written as given, relative to the folder the command ran in: save
    the recipe in that folder (recipe paths are relative to the recipe file).
    """
    import os

    import yaml

    flat = job.options()
    options = {k: v for k, v in flat.items() if k in SOURCE_KEYS}
    target = {k: v for k, v in flat.items() if k not in SOURCE_KEYS}
    model: dict[str, Any] = {"name": _model_name(source), "path": source, **options}
    to = target.get("to", DEFAULT_TARGET)
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
