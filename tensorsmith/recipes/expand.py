"""From a validated ``Recipe`` to the list of ``Job``s: the models x targets matrix,
job overrides, paths resolved against the recipe's folder, and every check that
can be made before a job starts (each error names its file and line).

A job calls the library: ``tensorsmith.pipeline.optimize_file`` for an ONNX source
made into ONNX, ``tensorsmith.convert.pipeline.convert_file`` for anything else.
Recipe option keys map 1:1 to that function's keywords (``KWARGS``); an option the
function does not take is an error here, not a surprise in a worker.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tensorsmith.errors import UsageError
from tensorsmith.recipes import schema
from tensorsmith.recipes.yaml_lines import Lines, format_path

MANIFEST_NAME = "tensorsmith-manifest.json"
TMP_DIR_NAME = ".tensorsmith-tmp"
LOCK_NAME = ".tensorsmith.lock"
# what a target writes: the file extension for the default output template
TARGET_EXT = {"onnx": ".onnx", "trt": ".plan", "tftrt": ""}
# options whose value is a file: resolved against the recipe folder, hashed into the cache key
PATH_OPTIONS = ("verify_data",)

OPTIMIZE = "tensorsmith.pipeline:optimize_file"
CONVERT = "tensorsmith.convert.pipeline:convert_file"


def _tolerance(opts: dict) -> Any:
    from tensorsmith.verify import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance

    rtol, atol = opts.get("rtol"), opts.get("atol")
    return Tolerance(rtol=DEFAULT_RTOL if rtol is None else rtol, atol=DEFAULT_ATOL if atol is None else atol)


def _input_shapes(opts: dict) -> Any:
    from tensorsmith.shapes import parse_input_shapes

    return parse_input_shapes(opts["input_shape"])


# recipe key -> (function keyword, value builder). Keys not listed pass through as-is.
KWARGS: dict[str, tuple[str, Callable[[dict], Any]]] = {
    "input_shape": ("input_shapes", _input_shapes),
    "rtol": ("tolerance", _tolerance),
    "atol": ("tolerance", _tolerance),
    "from": ("source_format", lambda o: o["from"]),
}


@dataclass
class Job:
    """One model x target: everything a worker needs (picklable) and where it came from."""

    name: str
    model: str
    target: str
    source: str  # absolute path, or a module:factory spec
    source_format: str | None  # given or detected; None when detection failed
    to: str
    output: str  # absolute path of the main output
    output_rel: str  # relative to output_dir
    output_dir: str  # absolute
    options: dict[str, Any]  # resolved recipe options (recipe key names, absolute paths)
    function: str  # "module:function"
    kwargs: dict[str, Any] = field(default_factory=dict)
    detect_error: str | None = None
    where: str = ""  # file:line of the job's definition
    key: str | None = None  # cache key, set by the runner

    @property
    def precision(self) -> str | None:
        return self.options.get("precision")


@dataclass
class Plan:
    """An expanded recipe."""

    recipe_path: str
    recipe_dir: Path
    output_dir: Path
    jobs: list[Job]
    recipe: schema.Recipe
    lines: Lines

    @property
    def manifest_path(self) -> Path:
        return self.output_dir / MANIFEST_NAME


# ---------------------------------------------------------------------------
# what this tensorsmith supports (looked up at run time: other modules may add to it)


def _function(spec: str) -> Callable | None:
    module, _, name = spec.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            return None
        raise
    return getattr(mod, name, None)


def _parameters(fn: Callable) -> tuple[set[str], bool]:
    params = inspect.signature(fn).parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return set(params), var_kw


def supported_precisions() -> tuple[str, ...]:
    """Precisions a recipe may ask for: what the pipeline takes, ``fp32`` always."""
    for spec in ("tensorsmith.precision:PRECISIONS", "tensorsmith.pipeline:PRECISIONS"):
        try:
            value = _function(spec)
        except ImportError:
            value = None
        if value:
            return tuple(dict.fromkeys(("fp32", *value)))
    fn = _function(OPTIMIZE)
    if fn is not None and "precision" in _parameters(fn)[0]:
        ann = inspect.signature(fn).parameters["precision"].annotation
        args = getattr(ann, "__args__", None)
        if args and all(isinstance(a, str) for a in args):
            return tuple(dict.fromkeys(("fp32", *args)))
        return ("fp32", "fp16", "int8")
    return ("fp32",)


def function_for(source_format: str | None, to: str) -> str:
    return OPTIMIZE if (source_format in (None, "onnx") and to == "onnx") else CONVERT


def build_kwargs(opts: dict[str, Any], fn_spec: str, origins: dict[str, tuple], lines: Lines) -> dict[str, Any]:
    """Recipe options -> keywords of the job's function; unknown to it -> ``UsageError``."""
    fn = _function(fn_spec)
    params, var_kw = _parameters(fn) if fn is not None else (set(), False)
    kwargs: dict[str, Any] = {}
    for key, value in opts.items():
        if value is None:
            continue
        if fn_spec == OPTIMIZE and key in ("to", "from"):
            continue  # onnx -> onnx is what optimize_file does
        if key == "precision" and value == "fp32" and "precision" not in params:
            continue  # the default
        kw, build = KWARGS.get(key, (key, None))
        if kw not in params and not var_kw:
            where = lines.where(origins.get(key, ()), key=True)
            fname = fn_spec.replace(":", ".")
            raise UsageError(
                f"{where}: {format_path(origins.get(key, (key,)))}: option {key!r} is not supported for this job "
                f"by this tensorsmith ({fname} takes no {kw!r})"
            )
        try:
            kwargs[kw] = build(opts) if build else value
        except UsageError as exc:
            raise UsageError(f"{lines.where(origins.get(key, ()))}: {format_path(origins.get(key, (key,)))}: {exc.one_line()}") from None
    return kwargs


# ---------------------------------------------------------------------------
# expansion


def _set_options(model: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """The options a section sets explicitly (recipe key names)."""
    dumped = model.model_dump(by_alias=True, exclude_unset=True)
    return {k: dumped[k] for k in keys if k in dumped and dumped[k] is not None}


def _resolve_path(base: Path, value: str) -> str:
    if os.path.isabs(value):
        return os.path.normpath(value)
    return os.path.normpath(str(base / value))


_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def _render_output(template: str, fields: dict[str, str], where: str, what: str) -> str:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(f"{where}: {what}: bad template {template!r} ({exc})") from None
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name not in fields or spec or conv:
            raise UsageError(
                f"{where}: {what}: unknown field {{{name}}} in {template!r}; fields: "
                + ", ".join("{" + f + "}" for f in schema.TEMPLATE_FIELDS)
            )
    text = template.format(**fields)
    if os.path.isabs(text) or text.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", text):
        raise UsageError(f"{where}: {what}: {text!r} is an absolute path; outputs stay inside output_dir")
    parts = re.split(r"[/\\]+", text)
    if ".." in parts:
        raise UsageError(f"{where}: {what}: {text!r} escapes the output folder ('..'); outputs stay inside output_dir")
    norm = os.path.normpath(text)
    if norm in (".", "") or text.endswith(("/", "\\")):
        raise UsageError(f"{where}: {what}: {text!r} names a folder, not an output file")
    first = norm.split(os.sep)[0]
    if first in (TMP_DIR_NAME, MANIFEST_NAME, LOCK_NAME):
        raise UsageError(f"{where}: {what}: {text!r} is reserved for tensorsmith's own files")
    return norm


def expand(recipe: schema.Recipe, lines: Lines, recipe_path: str | os.PathLike) -> Plan:
    """Models x targets, overrides applied, all checked; ``UsageError`` names the line."""
    recipe_path = str(recipe_path)
    base = Path(os.path.abspath(recipe_path)).parent
    output_dir = Path(_resolve_path(base, recipe.output_dir))
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"{lines.where(('output_dir',))}: output_dir: {output_dir} exists and is not a folder")

    # names ----------------------------------------------------------------
    models: dict[str, int] = {}
    for i, m in enumerate(recipe.models):
        if m.name in models:
            raise UsageError(
                f"{lines.where(('models', i, 'name'))}: models[{i}].name: duplicate model name {m.name!r} "
                f"(first on line {lines.line(('models', models[m.name], 'name'))})"
            )
        models[m.name] = i
    targets: dict[str, int] = {}
    target_names = []
    for j, t in enumerate(recipe.targets):
        to = t.to or recipe.defaults.to or "onnx"
        name = t.name or (to if not t.precision else f"{to}-{t.precision}")
        if name in targets:
            raise UsageError(
                f"{lines.where(('targets', j))}: targets[{j}]: duplicate target name {name!r} "
                f"(first on line {lines.line(('targets', targets[name]))}; give each target a name)"
            )
        targets[name] = j
        target_names.append(name)

    matrix: dict[str, tuple[int, int]] = {}
    for i, m in enumerate(recipe.models):
        for j, tname in enumerate(target_names):
            jname = f"{m.name}-{tname}"
            if jname in matrix:
                pi, pj = matrix[jname]
                raise UsageError(
                    f"{lines.where(('models', i, 'name'))}: duplicate job name {jname!r}: models[{i}] x targets[{j}] "
                    f"and models[{pi}] x targets[{pj}] (line {lines.line(('models', pi, 'name'))}); rename a model or target"
                )
            matrix[jname] = (i, j)

    overrides: dict[str, int] = {}
    extra: list[tuple[str, int]] = []
    for k, entry in enumerate(recipe.jobs):
        loc = ("jobs", k, "name")
        if entry.name in overrides or any(entry.name == n for n, _ in extra):
            first = overrides.get(entry.name)
            if first is None:
                first = next(idx for n, idx in extra if n == entry.name)
            raise UsageError(
                f"{lines.where(loc)}: jobs[{k}].name: duplicate job name {entry.name!r} "
                f"(first on line {lines.line(('jobs', first, 'name'))})"
            )
        for field_name, known in (("model", models), ("target", targets)):
            value = getattr(entry, field_name)
            if value is not None and value not in known:
                raise UsageError(
                    f"{lines.where(('jobs', k, field_name))}: jobs[{k}].{field_name}: no {field_name} named {value!r}; "
                    f"known: {', '.join(known)}"
                )
        if entry.name in matrix:
            i, j = matrix[entry.name]
            if (entry.model not in (None, recipe.models[i].name)) or (entry.target not in (None, target_names[j])):
                raise UsageError(
                    f"{lines.where(loc)}: jobs[{k}].name: duplicate job name {entry.name!r}: it is already "
                    f"models[{i}] x targets[{j}] of the matrix"
                )
            overrides[entry.name] = k
        elif entry.model is None or entry.target is None:
            raise UsageError(
                f"{lines.where(loc)}: jobs[{k}]: {entry.name!r} is not a job of the models x targets matrix "
                f"({', '.join(list(matrix)[:8])}{', ...' if len(matrix) > 8 else ''}); to add a job give it "
                "both 'model' and 'target'"
            )
        else:
            extra.append((entry.name, k))

    # resolve ----------------------------------------------------------------
    planned: list[tuple[str, int, int, int | None]] = []
    for jname, (i, j) in matrix.items():
        k = overrides.get(jname)
        if k is not None and not recipe.jobs[k].enabled:
            continue
        planned.append((jname, i, j, k))
    for jname, k in extra:
        entry = recipe.jobs[k]
        if entry.enabled:
            planned.append((jname, models[entry.model], targets[entry.target], k))

    jobs: list[Job] = []
    outputs: dict[str, str] = {}
    for jname, i, j, k in planned:
        jobs.append(_resolve_job(recipe, lines, base, output_dir, jname, i, j, k, target_names[j], outputs))
    return Plan(recipe_path, base, output_dir, jobs, recipe, lines)


def _resolve_job(recipe, lines: Lines, base: Path, output_dir: Path, jname: str, i: int, j: int,
                 k: int | None, tname: str, outputs: dict[str, str]) -> Job:
    model = recipe.models[i]
    target = recipe.targets[j]
    entry = recipe.jobs[k] if k is not None else None
    # precedence: defaults < model < target < job
    opts: dict[str, Any] = {}
    origins: dict[str, tuple] = {}
    layers = [
        (("defaults",), _set_options(recipe.defaults, schema.OPTION_KEYS)),
        (("models", i), _set_options(model, schema.SOURCE_KEYS)),
        (("targets", j), _set_options(target, schema.TARGET_KEYS)),
    ]
    if entry is not None:
        layers.append((("jobs", k), _set_options(entry, schema.OPTION_KEYS)))
    for prefix, values in layers:
        for key, value in values.items():
            opts[key] = value
            origins[key] = (*prefix, key)
    job_where = lines.where(("jobs", k) if k is not None else ("models", i))

    # source
    if entry is not None and entry.path is not None:
        raw, path_loc = entry.path, ("jobs", k, "path")
    else:
        raw, path_loc = model.path, ("models", i, "path")
    source = _resolve_path(base, raw)
    if not os.path.exists(source):
        if _FACTORY.match(raw) and opts.get("from") in (None, "torch-factory"):
            source = raw
        else:
            raise UsageError(f"{lines.where(path_loc)}: {format_path(path_loc)}: no such file or folder: {raw}")
    for key in schema.OPTION_KEYS:
        if key in PATH_OPTIONS and key in opts:
            p = _resolve_path(base, opts[key])
            if not os.path.exists(p):
                raise UsageError(
                    f"{lines.where(origins[key])}: {format_path(origins[key])}: no such file or folder: {opts[key]}"
                )
            opts[key] = p
    # format: detected here so options can be checked; a corrupt file fails its job only
    source_format, detect_error = opts.get("from"), None
    if source_format is None:
        from tensorsmith.convert import detect_format

        try:
            source_format = detect_format(source)
        except UsageError as exc:
            detect_error = exc.one_line()
    to = opts.get("to") or "onnx"
    opts["to"] = to
    origins.setdefault("to", ("targets", j))

    fn_spec = function_for(source_format, to)
    if _function(fn_spec) is None:
        what = f"from {source_format}" if source_format not in (None, "onnx") else f"to {to}"
        raise UsageError(
            f"{lines.where(path_loc if fn_spec == CONVERT and to == 'onnx' else origins['to'])}: job {jname!r}: "
            f"converting {what} is not available in this tensorsmith ({fn_spec.replace(':', '.')} is missing)"
        )
    kwargs = build_kwargs(opts, fn_spec, origins, lines)

    # output
    if entry is not None and entry.output is not None:
        template, out_loc = entry.output, ("jobs", k, "output")
    else:
        template, out_loc = recipe.output, ("output",)
    fields = {
        "model": model.name, "target": tname, "job": jname, "to": to,
        "precision": opts.get("precision") or "fp32", "ext": TARGET_EXT.get(to, ""),
    }
    rel = _render_output(template, fields, lines.where(out_loc), format_path(out_loc))
    if rel in outputs:
        raise UsageError(
            f"{lines.where(out_loc)}: {format_path(out_loc)}: jobs {outputs[rel]!r} and {jname!r} would both write "
            f"{rel!r}; use {{model}} and {{target}} in the template"
        )
    outputs[rel] = jname
    out = output_dir / rel
    real_dir = os.path.realpath(output_dir)
    if os.path.commonpath([real_dir, os.path.realpath(out)]) != real_dir:
        raise UsageError(f"{lines.where(out_loc)}: {format_path(out_loc)}: {rel!r} leads outside the output folder")
    return Job(
        name=jname, model=model.name, target=tname, source=source, source_format=source_format, to=to,
        output=str(out), output_rel=rel, output_dir=str(output_dir), options=opts, function=fn_spec, kwargs=kwargs,
        detect_error=detect_error, where=job_where,
    )


def load_plan(recipe_path: str | os.PathLike) -> Plan:
    """Read, validate and expand a recipe file; every error is a ``UsageError`` with a line."""
    from tensorsmith.recipes import yaml_lines

    data, lines = yaml_lines.load(recipe_path)
    recipe = schema.parse(data, lines)
    return expand(recipe, lines, recipe_path)


def select(plan: Plan, only: list[str] | None) -> list[Job]:
    """Jobs whose name matches one of ``only`` (shell patterns: ``cnn-*``)."""
    if not only:
        return list(plan.jobs)
    import fnmatch

    chosen: set[str] = set()
    for pattern in only:
        hits = {job.name for job in plan.jobs if fnmatch.fnmatchcase(job.name, pattern)}
        if not hits:
            raise UsageError(
                f"--only {pattern!r} matches no job; jobs: {', '.join(j.name for j in plan.jobs)}"
            )
        chosen |= hits
    return [job for job in plan.jobs if job.name in chosen]
