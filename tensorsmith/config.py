"""One typed job configuration: what the ``optimize``/``convert`` flags and a recipe's entries both build.

A job's options are grouped by the stage that uses them, each stage a pydantic
model (``extra="forbid"``) whose field names are the recipe keys: the flag without
``--``, ``_`` for ``-`` (``--input-shape`` -> ``input_shape``; ``--from`` ->
``from``; an on/off flag by its positive word, ``--no-verify`` -> ``verify: false``).
``JobConfig`` composes the stages; ``JobConfig.from_options`` reads the flat
key -> value form a command line or a recipe job has, ``options()`` writes it back
(``--dump-recipe``).

A recipe takes the same fields flat, in two sections: a field marked ``MODEL`` is
about the source and its data (it goes under ``models``), the others under
``targets``; ``recipes/schema.py`` builds its sections from these models. Declaring
an option is one field here (plus, for a flag, one line in ``cli/options.py``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

# Field markers (json_schema_extra): the recipe section, and what a value names.
MODEL: dict[str, Any] = {"section": "models"}  # about the source model and its data
INPUT_PATH: dict[str, Any] = {"section": "models", "path": "input"}  # a file the job reads (hashed)
LOOSE_PATH: dict[str, Any] = {"path": "loose"}  # resolved against the recipe folder, not hashed
CODE: dict[str, Any] = {"section": "models", "code": True}  # module:function (its source is hashed)


# ---------------------------------------------------------------------------
# value forms: what a recipe may write, normalised to what the command line gives


def _names(value: Any) -> Any:
    """``"a,b"`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]`` (as ``--passes a,b``)."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        out: list[str] = []
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


def _workspace_text(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _known_format(value: str | None) -> str | None:
    from tensorsmith.convert import FRONTENDS

    if value is not None and value not in FRONTENDS:
        raise ValueError(f"unknown source format {value!r}; known: {', '.join(FRONTENDS)}")
    return value


def _known_target(value: str | None) -> str | None:
    from tensorsmith.convert.targets import TARGETS

    if value is not None and value not in TARGETS:
        raise ValueError(f"unknown target {value!r}; known: {', '.join(TARGETS)}")
    return value


def _known_precision(value: str | None) -> str | None:
    from tensorsmith.precision import PRECISIONS

    if value is not None and value not in PRECISIONS:
        raise ValueError(
            f"unknown or unsupported precision {value!r}; this tensorsmith supports: {', '.join(PRECISIONS)}"
        )
    return value


def _known_passes(value: list[str] | None) -> list[str] | None:
    from tensorsmith.passes import PASSES

    for name in value or []:
        if name not in PASSES:
            raise ValueError(f"unknown pass {name!r}; known passes: {', '.join(PASSES)}")
    return value


def _known_pass_options(value: dict | None) -> dict | None:
    from tensorsmith.passes import PASSES
    from tensorsmith.recipes.yaml_lines import format_path

    for name, opts in (value or {}).items():
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


NameList = Annotated[list[str] | None, BeforeValidator(_names)]
ValueList = Annotated[list[str] | None, BeforeValidator(_pairs)]
ProfileList = Annotated[list[str] | None, BeforeValidator(_pairs)]
ShapeList = Annotated[list[str] | None, BeforeValidator(_shapes)]
PassList = Annotated[list[str] | None, BeforeValidator(_names), AfterValidator(_known_passes)]
PassOptions = Annotated[dict[str, dict[str, Any]] | None, AfterValidator(_known_pass_options)]
FormatName = Annotated[str | None, AfterValidator(_known_format)]
TargetName = Annotated[str | None, AfterValidator(_known_target)]
PrecisionName = Annotated[
    str | None,
    BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v),
    AfterValidator(_known_precision),
]
Workspace = Annotated[str | None, BeforeValidator(_workspace_text)]
Tol = Annotated[float | None, Field(ge=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True)


# ---------------------------------------------------------------------------
# the stages


class SourceConfig(Strict):
    """The source model: its format and the input shapes to check it with."""

    from_: FormatName = Field(
        None, alias="from", description="--from: source format, when not detectable", json_schema_extra=MODEL
    )
    input_shape: ShapeList = Field(
        None, description="--input-shape NAME=1x3x224x224 (a mapping or a list)", json_schema_extra=MODEL
    )


class FrontendConfig(Strict):
    """Reading a TensorFlow or PyTorch source into ONNX (``convert.frontend.FrontendOptions``)."""

    signature: str | None = Field(None, description="--signature (SavedModel)", json_schema_extra=MODEL)
    inputs: NameList = Field(None, description="--inputs (GraphDef)", json_schema_extra=MODEL)
    outputs: NameList = Field(None, description="--outputs (GraphDef)", json_schema_extra=MODEL)
    input_value: ValueList = Field(
        None, description="--input-value NAME=VALUE (a mapping or a list)", json_schema_extra=MODEL
    )
    weights: str | None = Field(
        None, description="--weights state_dict for a module:factory source", json_schema_extra=INPUT_PATH
    )
    weights_key: str | None = Field(
        None,
        description="--weights-key: where the state dict sits in a checkpoint dict (dotted)",
        json_schema_extra=MODEL,
    )
    weights_non_strict: bool | None = Field(
        None,
        description="--weights-non-strict: load what fits, list missing/unexpected keys",
        json_schema_extra=MODEL,
    )
    trust_remote_code: bool | None = Field(None, description="--trust-remote-code", json_schema_extra=MODEL)
    opset: int | None = Field(None, description="--opset")
    static: bool | None = Field(None, description="--static")
    nchw_inputs: bool | None = Field(None, description="--nchw-inputs")
    optimize: bool | None = Field(None, description="false = --no-optimize (convert and verify only)")


class OptimizationConfig(Strict):
    """The graph passes."""

    passes: PassList = Field(None, description="--passes: passes to run (default: all)")
    skip: PassList = Field(None, description="--skip: passes to leave out")
    pass_options: PassOptions = Field(None, description="options per pass")
    max_iterations: int | None = Field(None, ge=1, description="--max-iterations")
    fold_dequantize: bool | None = Field(
        None, description="--fold-dequantize: fold Cast(int8 weight) * scale chains (file up to 4x larger)"
    )


class VerificationConfig(Strict):
    """The numeric check of the result against the source."""

    verify_data: str | None = Field(
        None, description="--verify-data: .npz of real inputs (validation data)", json_schema_extra=INPUT_PATH
    )
    verify: bool | None = Field(None, description="false = --no-verify")
    rtol: Tol = Field(None, description="--rtol")
    atol: Tol = Field(None, description="--atol")


class PrecisionConfig(Strict):
    """FP16/INT8 in the graph (``tensorsmith.precision.PrecisionOptions`` once checked)."""

    calib: str | None = Field(
        None, description="--calib: calibration data (.npz, folder) or 'random'", json_schema_extra=INPUT_PATH
    )
    calib_preprocess: str | None = Field(
        None, description="--calib-preprocess for a folder of images", json_schema_extra=MODEL
    )
    calib_loader: str | None = Field(
        None, description="--calib-loader module:function (runs your code)", json_schema_extra=CODE
    )
    val: str | None = Field(
        None, description="--val: validation data for the precision gate", json_schema_extra=INPUT_PATH
    )
    precision: PrecisionName = Field(None, description="--precision")
    target: str | None = Field(None, description="--target: who runs the lowered model (ort, trt)")
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
    int8_steps: NameList = Field(
        None,
        description="--int8-steps: equalize, smooth, mse-weights, adaround, bias-correction before INT8 quantization (default: none)",
    )
    precision_report: bool | None = Field(
        None, description="--precision-report: rank every INT8 layer by sensitivity, with its final precision"
    )


class TrtConfig(Strict):
    """TensorRT engine build (``to: trt``); the profile and workspace options serve TF-TRT too."""

    shapes: ProfileList = Field(None, description="--shapes NAME=MIN:OPT:MAX (a mapping or a list)")
    max_batch: int | None = Field(None, ge=1, description="--max-batch")
    workspace: Workspace = Field(None, description="--workspace, e.g. 4G")
    timing_cache: str | None = Field(None, description="--timing-cache FILE", json_schema_extra=LOOSE_PATH)
    builder_opt_level: int | None = Field(None, ge=0, le=5, description="--builder-opt-level")
    hardware_compat: str | None = Field(None, description="--hardware-compat")
    version_compat: bool | None = Field(None, description="--version-compat")
    trt_version: str | None = Field(None, description="--trt-version (lint)")
    prepare_only: bool | None = Field(None, description="--prepare-only")


class TftrtConfig(Strict):
    """TF-TRT conversion of a SavedModel (``to: tftrt``)."""

    profile_strategy: str | None = Field(None, description="--profile-strategy (tftrt)")


class OutputConfig(Strict):
    """How the output is written."""

    external_data: bool | None = Field(None, description="--external-data / --no-external-data")


class JobConfig(Strict):
    """Every option of one job, by stage. ``None`` everywhere means "the default"."""

    to: TargetName = Field(None, description="--to: target format")
    source: SourceConfig = Field(default_factory=SourceConfig)
    frontend: FrontendConfig = Field(default_factory=FrontendConfig)
    optimization: OptimizationConfig = Field(default_factory=OptimizationConfig)
    verification: VerificationConfig = Field(default_factory=VerificationConfig)
    precision: PrecisionConfig = Field(default_factory=PrecisionConfig)
    trt: TrtConfig = Field(default_factory=TrtConfig)
    tftrt: TftrtConfig = Field(default_factory=TftrtConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> JobConfig:
        """From flat recipe keys (``{"to": "trt", "rtol": 1e-3}``); pydantic's errors have
        ``loc`` ``(stage, key)``, or ``(key,)`` for a key no stage has."""
        nested: dict[str, Any] = {}
        for key, value in options.items():
            stage = KEY_STAGE.get(key)
            if stage is None:
                nested[key] = value  # `to`, or an unknown key: extra="forbid" names it
            else:
                nested.setdefault(stage, {})[key] = value
        return cls.model_validate(nested)

    def options(self) -> dict[str, Any]:
        """The flat recipe keys set (not ``None``), in stage order."""
        out: dict[str, Any] = {"to": self.to} if self.to is not None else {}
        for stage in STAGES:
            out.update(getattr(self, stage).model_dump(by_alias=True, exclude_none=True))
        return out


STAGES: dict[str, type[Strict]] = {
    name: field.annotation  # type: ignore[misc]
    for name, field in JobConfig.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
}


def keys_of(model: type[BaseModel]) -> tuple[str, ...]:
    """A model's recipe keys (aliases: ``from``)."""
    return tuple(f.alias or n for n, f in model.model_fields.items())


def _marked(mark: str, value: Any = True) -> tuple[str, ...]:
    out = []
    for stage in STAGES.values():
        for name, f in stage.model_fields.items():
            extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
            if extra.get(mark) == value:
                out.append(f.alias or name)
    return tuple(out)


KEY_STAGE: dict[str, str] = {key: stage for stage, model in STAGES.items() for key in keys_of(model)}
# recipe sections: the source and its data (`models`), the rest (`targets`)
MODEL_KEYS = _marked("section", "models")
TARGET_KEYS = ("to", *(k for k in KEY_STAGE if k not in MODEL_KEYS))
# options naming files: resolved against the recipe folder; their content goes into the cache key
PATH_OPTIONS = _marked("path", "input")
# resolved against the recipe folder, but neither required nor hashed (a cache the build reads and writes)
LOOSE_PATH_OPTIONS = _marked("path", "loose")
# options naming Python code (module:function): the module's source file goes into the cache key
CODE_OPTIONS = _marked("code")
# keys of a stage, by stage name
STAGE_KEYS: dict[str, tuple[str, ...]] = {name: keys_of(model) for name, model in STAGES.items()}


def field_of(key: str) -> tuple[Any, Any]:
    """(annotation, FieldInfo) of a recipe key, for building the recipe's flat sections."""
    if key == "to":
        f = JobConfig.model_fields["to"]
    else:
        model = STAGES[KEY_STAGE[key]]
        f = next(f for n, f in model.model_fields.items() if (f.alias or n) == key)
    return f.annotation, f


assert len(KEY_STAGE) == sum(len(k) for k in STAGE_KEYS.values()), "a recipe key is declared twice"
