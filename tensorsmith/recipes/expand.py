"""From a validated ``Recipe`` to the list of ``Job``s: the models x targets matrix,
job overrides, paths resolved against the recipe's folder, and every check that
can be made before a job starts (each error names its file and line).

Options resolve in this order, later wins: ``defaults`` < the model < the target <
the job's override. ``jobs.build`` then turns them into the keyword arguments of
the library calls the job makes.
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tensorsmith import jobs as job_calls
from tensorsmith.convert.targets import DEFAULT_TARGET, get_target
from tensorsmith.errors import UsageError
from tensorsmith.recipes import schema
from tensorsmith.recipes.yaml_lines import Lines, format_path

MANIFEST_NAME = "tensorsmith-manifest.json"
TMP_DIR_NAME = ".tensorsmith-tmp"
LOCK_NAME = ".tensorsmith.lock"
PATH_OPTIONS = job_calls.PATH_OPTIONS


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
    function: str  # the library calls, for reports
    kwargs: dict[str, Any] = field(default_factory=dict)
    detect_error: str | None = None
    where: str = ""  # file:line of the job's definition
    key: str | None = None  # cache key, set by the runner
    runs_on: dict[str, str] = field(default_factory=dict)  # Ray label selector (target's, then job's)
    gpu: str | None = None  # the GPU type an engine is built for (a target's `gpus`)

    @property
    def precision(self) -> str | None:
        return self.options.get("precision")

    @property
    def needs_gpu(self) -> bool:
        """An engine build (not ``prepare_only``) needs a GPU of its own."""
        return get_target(self.to).builds_engine and not self.options.get("prepare_only")


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
    if ".." in re.split(r"[/\\]+", text):
        raise UsageError(
            f"{where}: {what}: {text!r} escapes the output folder ('..'); outputs stay inside output_dir"
        )
    norm = os.path.normpath(text)
    if norm in (".", "") or text.endswith(("/", "\\")):
        raise UsageError(f"{where}: {what}: {text!r} names a folder, not an output file")
    if norm.split(os.sep)[0] in (TMP_DIR_NAME, MANIFEST_NAME, LOCK_NAME):
        raise UsageError(f"{where}: {what}: {text!r} is reserved for tensorsmith's own files")
    return norm


def expand(recipe: schema.Recipe, lines: Lines, recipe_path: str | os.PathLike) -> Plan:
    """Models x targets, overrides applied, all checked; ``UsageError`` names the line."""
    recipe_path = str(recipe_path)
    base = Path(os.path.abspath(recipe_path)).parent
    output_dir = Path(_resolve_path(base, recipe.output_dir))
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(
            f"{lines.where(('output_dir',))}: output_dir: {output_dir} exists and is not a folder"
        )

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
    columns: list[tuple[int, str, str | None]] = []  # (target index, name, GPU type): one per GPU type
    for j, t in enumerate(recipe.targets):
        to = t.to or recipe.defaults.to or DEFAULT_TARGET
        precision = t.precision or recipe.defaults.precision
        name = t.name or (to if precision in (None, "fp32") else f"{to}-{precision}")
        if name in targets:
            raise UsageError(
                f"{lines.where(('targets', j))}: targets[{j}]: duplicate target name {name!r} "
                f"(first on line {lines.line(('targets', targets[name]))}; give each target a name)"
            )
        targets[name] = j
        target_names.append(name)
        if t.gpus:
            if not get_target(to).builds_engine:
                raise UsageError(
                    f"{lines.where(('targets', j, 'gpus'))}: targets[{j}].gpus: GPU types are for engine builds "
                    f"(to: trt), not to: {to}"
                )
            if len(set(t.gpus)) != len(t.gpus):
                raise UsageError(
                    f"{lines.where(('targets', j, 'gpus'))}: targets[{j}].gpus: a GPU type twice"
                )
            columns.extend((j, f"{name}-{gpu}", gpu) for gpu in t.gpus)
        else:
            columns.append((j, name, None))

    matrix: dict[str, tuple[int, int]] = {}
    column_of: dict[str, tuple[str, str | None]] = {}
    for i, m in enumerate(recipe.models):
        for j, tname, gpu in columns:
            jname = f"{m.name}-{tname}"
            column_of[jname] = (tname, gpu)
            if jname in matrix:
                pi, pj = matrix[jname]
                raise UsageError(
                    f"{lines.where(('models', i, 'name'))}: duplicate job name {jname!r}: models[{i}] x targets[{j}] "
                    f"and models[{pi}] x targets[{pj}] (line {lines.line(('models', pi, 'name'))}); "
                    "rename a model or a target"
                )
            matrix[jname] = (i, j)

    overrides: dict[str, int] = {}
    for k, entry in enumerate(recipe.jobs):
        loc = ("jobs", k, "name")
        if entry.name in overrides:
            raise UsageError(
                f"{lines.where(loc)}: jobs[{k}].name: duplicate job name {entry.name!r} "
                f"(first on line {lines.line(('jobs', overrides[entry.name], 'name'))})"
            )
        if entry.name not in matrix:
            names = list(matrix)
            raise UsageError(
                f"{lines.where(loc)}: jobs[{k}].name: {entry.name!r} is not a job of the models x targets matrix "
                f"(MODEL-TARGET: {', '.join(names[:6])}{', ...' if len(names) > 6 else ''})"
            )
        overrides[entry.name] = k

    jobs: list[Job] = []
    outputs: dict[str, str] = {}
    for jname, (i, j) in matrix.items():
        o = overrides.get(jname)
        if o is not None and not recipe.jobs[o].enabled:
            continue
        tname, gpu = column_of[jname]
        job = _resolve_job(recipe, lines, base, output_dir, jname, i, j, o, tname, outputs, gpu)
        jobs.append(job)
    return Plan(recipe_path, base, output_dir, jobs, recipe, lines)


def _resolve_job(
    recipe,
    lines: Lines,
    base: Path,
    output_dir: Path,
    jname: str,
    i: int,
    j: int,
    k: int | None,
    tname: str,
    outputs: dict[str, str],
    gpu: str | None = None,
) -> Job:
    model = recipe.models[i]
    target = recipe.targets[j]
    entry = recipe.jobs[k] if k is not None else None
    entry_index = k if k is not None else -1
    opts: dict[str, Any] = {}
    origins: dict[str, tuple] = {}
    layers: list[tuple[tuple[str | int, ...], dict[str, Any]]] = [
        (("defaults",), _set_options(recipe.defaults, schema.OPTION_KEYS)),
        (("models", i), _set_options(model, schema.SOURCE_KEYS)),
        (("targets", j), _set_options(target, schema.TARGET_KEYS)),
    ]
    if entry is not None:
        layers.append((("jobs", entry_index), _set_options(entry, schema.OPTION_KEYS)))
    for prefix, values in layers:
        for key, value in values.items():
            opts[key] = value
            origins[key] = (*prefix, key)
    explicit = {key for key, loc in origins.items() if loc[0] != "defaults"}
    job_where = lines.where(("jobs", k) if k is not None else ("models", i))

    def fail(key: str, message: str) -> UsageError:
        loc = origins.get(key, ("targets", j))
        return UsageError(f"{lines.where(loc)}: {format_path(loc)}: {message} (job {jname})")

    # the source and the files options name
    if entry is not None and entry.path is not None:
        raw, path_loc = entry.path, ("jobs", k, "path")
    else:
        raw, path_loc = model.path, ("models", i, "path")
    source = _resolve_path(base, raw)
    if not os.path.exists(source):
        if _FACTORY.match(raw) and opts.get("from") in (None, "torch-factory"):
            source = raw
        else:
            raise UsageError(
                f"{lines.where(path_loc)}: {format_path(path_loc)}: no such file or folder: {raw}"
            )
    for key in job_calls.PATH_OPTIONS:
        if key in opts and not (key == "calib" and opts[key] == "random"):
            p = _resolve_path(base, opts[key])
            if not os.path.exists(p):
                raise fail(key, f"no such file or folder: {opts[key]}")
            opts[key] = p
    for key in job_calls.LOOSE_PATH_OPTIONS:
        if key in opts:
            opts[key] = _resolve_path(base, opts[key])

    # the format: detected here so options can be checked; a corrupt file fails its own job only
    source_format, detect_error = opts.get("from"), None
    if source_format is None:
        from tensorsmith.convert import detect_format

        try:
            source_format = detect_format(source)
        except UsageError as exc:
            detect_error = exc.one_line()
    to = opts.get("to") or DEFAULT_TARGET
    opts["to"] = to
    target = get_target(to)
    try:
        function, kwargs = job_calls.build(opts, source_format, to, explicit)
    except job_calls.OptionError as exc:
        raise fail(exc.key if exc.key in origins else "to", exc.one_line()) from None

    # the output
    out_loc: tuple[str | int, ...]
    if entry is not None and entry.output is not None:
        template, out_loc = entry.output, ("jobs", entry_index, "output")
    else:
        template, out_loc = recipe.output, ("output",)
    fields = {
        "model": model.name,
        "target": tname,
        "job": jname,
        "to": to,
        "precision": opts.get("precision") or "fp32",
        "ext": target.extension,
        "gpu": gpu or "",
    }
    rel = _render_output(template, fields, lines.where(out_loc), format_path(out_loc))
    try:
        target.check_output(source, output_dir / rel)
    except UsageError as exc:
        raise UsageError(
            f"{lines.where(out_loc)}: {format_path(out_loc)}: {rel!r}: {exc.one_line()} (use {{ext}})"
        ) from None
    if rel in outputs:
        raise UsageError(
            f"{lines.where(out_loc)}: {format_path(out_loc)}: jobs {outputs[rel]!r} and {jname!r} would both write "
            f"{rel!r}; use {{model}} and {{target}} in the template"
        )
    outputs[rel] = jname
    out = output_dir / rel
    real_dir = os.path.realpath(output_dir)
    if os.path.commonpath([real_dir, os.path.realpath(out)]) != real_dir:
        raise UsageError(
            f"{lines.where(out_loc)}: {format_path(out_loc)}: {rel!r} leads outside the output folder"
        )
    inputs = [source] + [opts[key] for key in job_calls.PATH_OPTIONS if key in opts and opts[key] != "random"]
    if any(os.path.exists(p) and os.path.realpath(p) == os.path.realpath(out) for p in inputs):
        raise UsageError(
            f"{lines.where(out_loc)}: {format_path(out_loc)}: {rel!r} is an input of job {jname!r}; "
            "it would be overwritten"
        )
    return Job(
        name=jname,
        model=model.name,
        target=tname,
        source=source,
        source_format=source_format,
        to=to,
        output=str(out),
        output_rel=rel,
        output_dir=str(output_dir),
        options=opts,
        function=function,
        kwargs=kwargs,
        detect_error=detect_error,
        where=job_where,
        runs_on={
            **(recipe.targets[j].runs_on or {}),
            **((entry.runs_on if entry is not None else None) or {}),
        },
        gpu=gpu,
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


def cli_command(job: Job) -> str:
    """The ``tensorsmith`` command line that does what ``job`` does (recipe -> CLI)."""
    import shlex

    onnx_only = get_target(job.to).writes_onnx and not job_calls.is_framework(job.source_format)
    command = "optimize" if onnx_only else "convert"
    args = ["tensorsmith", command, job.source]
    if command == "convert":
        args += ["--to", job.to]
    args += ["-o", job.output]
    for key, value in job.options.items():
        if key == "to" or value is None or (key == "from" and command == "optimize"):
            continue
        flag = schema.flag_of(key)
        if flag is None:
            continue  # no flag (pass_options): only a recipe can say it
        if key in schema.NEGATED_FLAGS:
            if value is False:
                args.append(flag)
        elif key == "external_data":
            args.append("--external-data" if value else "--no-external-data")
        elif key in ("passes", "skip", "keep_fp32", "inputs", "outputs"):
            args += [flag, ",".join(value)]
        elif isinstance(value, list):
            for item in value:
                args += [flag, str(item)]
        elif value is True:
            args.append(flag)
        elif value is False:
            continue
        else:
            args += [flag, str(value)]
    return " ".join(shlex.quote(a) for a in args)
