"""The command line. One function per command; no logic beyond parsing and printing.

Exit codes (README, "Exit codes"): 0 success, 2 bad usage or unreadable input,
3 conversion/pass failure, 4 verification failure. Errors are one line on stderr;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import contextlib
import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    name="tensorsmith",
    help="Convert, optimize and verify trained models (ONNX, TensorFlow, PyTorch).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

_state = {"debug": False}
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _version_callback(value: bool) -> None:
    if value:
        from tensorsmith import __version__

        typer.echo(f"tensorsmith {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    _state["debug"] = debug


def _fail(message: str, code: int) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise typer.Exit(code)


def _run(fn: Callable[[], int | None], *, json_mode: bool = False, job_holder: dict | None = None) -> None:
    """Call ``fn`` mapping tensorsmith errors to one stderr line and an exit code."""
    from tensorsmith.errors import TensorsmithError

    try:
        code = fn() or 0
    except typer.Exit:
        raise
    except TensorsmithError as exc:
        if _state["debug"]:
            traceback.print_exc()
        if json_mode:
            job = getattr(exc, "job", None)
            payload = job.to_dict() if job is not None else {"status": "failed", "output": None}
            if payload.get("status") == "ok":
                payload["status"] = "failed"
            payload["error"] = exc.one_line()
            payload["exit_code"] = exc.exit_code
            _print_json(payload)
        _fail(exc.one_line(), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # a bug or an unexpected library failure
        if _state["debug"]:
            traceback.print_exc()
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        _fail(f"internal error: {type(exc).__name__}: {text} (run with --debug for the traceback)", 3)
    raise typer.Exit(code)


def _print_json(obj) -> None:
    import json

    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    sys.stdout.write(json.dumps(clean(obj), indent=2, default=str) + "\n")
    sys.stdout.flush()


def _split_list(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


@contextlib.contextmanager
def _progress(enabled: bool):
    """A transient spinner on stderr; yields a callback taking a step description."""
    if not enabled or not err_console.is_terminal:
        yield lambda _msg: None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=None)
        yield lambda msg: progress.update(task, description=msg)


# Options shared by optimize and convert ------------------------------------------------
OutputOpt = typer.Option(..., "-o", "--output", help="Where to write the result (written atomically).")
PassesOpt = typer.Option(
    None, "--passes", help="Comma-separated passes to run (default: all, see `tensorsmith passes`)."
)
SkipOpt = typer.Option(None, "--skip", help="Pass to leave out (repeatable or comma-separated).")
ShapeOpt = typer.Option(None, "--input-shape", help="NAME=1x3x224x224 for verification inputs (repeatable).")
NoVerifyOpt = typer.Option(False, "--no-verify", help="Skip the numeric check against the source.")
VerifyDataOpt = typer.Option(
    None, "--verify-data", help=".npz of real inputs (arrays named after the inputs)."
)
RtolOpt = typer.Option(None, "--rtol", help="Relative tolerance, of each output's scale (default 1e-4).")
AtolOpt = typer.Option(None, "--atol", help="Absolute tolerance (default 1e-5).")
ExtOpt = typer.Option(
    None,
    "--external-data/--no-external-data",
    help="Weights in OUT.onnx.data beside the model (default: only when over 2 GB).",
)
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables.")
ExplainOpt = typer.Option(False, "--explain", help="Say why passes left candidates alone.")
IterOpt = typer.Option(8, "--max-iterations", min=1, help="Cap on pass-manager iterations.")
FoldDequantOpt = typer.Option(
    False,
    "--fold-dequantize",
    help="Fold Cast(int8 weight) * scale chains (faster with ORT opts off; file up to 4x).",
)


def _fold_dequantize(params: dict) -> None:
    """``--fold-dequantize`` is fold-constants' ``fold_dequantize`` pass option (recipe key ``pass_options``)."""
    if params.pop("fold_dequantize", False):
        params["pass_options"] = {"fold-constants": {"fold_dequantize": True}}


DumpRecipeOpt = typer.Option(
    False, "--dump-recipe", help="Print this command as a recipe (YAML for `tensorsmith run`) and exit."
)
# Precision (README, "Precision: FP16 and INT8"); built into tensorsmith.precision.PrecisionOptions
PrecisionOpt = typer.Option(
    None, "--precision", help="fp32 (default), fp16 or int8: lower the precision in the graph."
)
QTargetOpt = typer.Option(
    None, "--target", help="Who runs the lowered model: ort (onnxruntime CPU, default) or trt."
)
Fp16IoOpt = typer.Option(
    False, "--fp16-io", help="FP16: make inputs/outputs float16 too (default: kept FP32)."
)
CalibOpt = typer.Option(
    None, "--calib", help="INT8 calibration data: .npz, folder of .npz/.npy/images, or 'random'."
)
CalibPreOpt = typer.Option(
    None, "--calib-preprocess", help='Images: "resize=224,mean=..,..,..,std=..,..,..,layout=NCHW".'
)
CalibLoaderOpt = typer.Option(
    None, "--calib-loader", help="module:function returning samples (runs your code)."
)
CalibSamplesOpt = typer.Option(None, "--calib-samples", help="Calibration samples to use (default 100).")
CalibMethodOpt = typer.Option(None, "--calib-method", help="minmax (default), entropy or percentile.")
ValOpt = typer.Option(
    None, "--val", help="Validation data for the accuracy gate (default: held back from --calib)."
)
Int8ModeOpt = typer.Option(None, "--int8-mode", help="static (Q/DQ, default) or dynamic (MatMul only).")
MinCosOpt = typer.Option(
    None, "--min-cosine", help="Gate: minimum cosine per output (fp16 0.999, int8 0.99)."
)
MinTop1Opt = typer.Option(None, "--min-top1", help="Gate: minimum top-1 agreement, 0-1 (int8 0.99).")
MaxAbsOpt = typer.Option(
    None, "--max-abs-error", help="Gate: maximum absolute error per output (default: none)."
)
MaxRelOpt = typer.Option(None, "--max-rel-error", help="Gate: maximum error relative to the output's scale.")
BudgetOpt = typer.Option(
    None, "--fallback-budget", help="Most nodes the fallback may keep in FP32 (default 10)."
)
MinSpeedOpt = typer.Option(
    None, "--min-speedup", help="INT8 on ort: fail unless this much faster than FP32 (default 1.0)."
)
KeepFp32Opt = typer.Option(
    None, "--keep-fp32", help="Node name or op type to keep FP32 (repeatable or comma-separated)."
)


# TensorRT / TF-TRT options (convert --to trt|tftrt, build, lint) ------------------------
TrtShapesOpt = typer.Option(
    None,
    "--shapes",
    help="TensorRT/TF-TRT profile NAME=MIN:OPT:MAX, e.g. x=1x3x224x224:8x3x224x224:32x3x224x224 (repeatable).",
)
TrtMaxBatchOpt = typer.Option(
    None, "--max-batch", min=1, help="Default profile for a dynamic batch axis: 1:1:N (default 8)."
)
TrtWorkspaceOpt = typer.Option(None, "--workspace", help="TensorRT workspace memory pool limit, e.g. 4G.")
TrtTimingCacheOpt = typer.Option(
    None, "--timing-cache", help="TensorRT timing cache: read, then written back (shared across builds)."
)
TrtOptLevelOpt = typer.Option(
    None, "--builder-opt-level", min=0, max=5, help="TensorRT builder optimization level 0-5."
)
TrtHwCompatOpt = typer.Option(
    None,
    "--hardware-compat",
    help="TensorRT hardware compatibility: ampere_plus, same_compute_capability or none.",
)
TrtVersionCompatOpt = typer.Option(
    False, "--version-compat", help="Build a version-compatible TensorRT engine."
)
TrtVersionOpt = typer.Option(
    None,
    "--trt-version",
    help="TensorRT version the lint checks for: 10.x, 10.8, 11.x (default: installed, else 10.x).",
)


def _flag(key: str) -> str:
    """The command-line flag of a recipe/job option key."""
    return {
        "from": "--from",
        "target": "--target",
        "verify": "--no-verify",
        "optimize": "--no-optimize",
        "input_value": "--input-value",
    }.get(key, "--" + key.replace("_", "-"))


def _job(command: str, params: dict) -> int:
    """``optimize`` and ``convert``: the command's flags -> the job options a recipe
    uses (same names) -> ``tensorsmith.jobs``, the code every recipe job runs too."""
    from tensorsmith import jobs
    from tensorsmith.convert import detect_format, get_backend, get_frontend
    from tensorsmith.errors import UsageError
    from tensorsmith.recipes.schema import cli_options

    json_out, explain = params["json_out"], params.get("explain", False)
    source, output, model_opts, target_opts = cli_options(params)
    opts = {**model_opts, **target_opts}
    to = opts.get("to", "onnx")
    get_backend(to)
    fmt = opts.get("from") or detect_format(source)
    get_frontend(fmt)
    if command == "optimize" and fmt != "onnx":
        raise UsageError(
            f"{source}: optimize takes an ONNX model; this is {fmt}",
            hint=f"use tensorsmith convert {source} --to onnx",
        )
    try:
        _, kwargs = jobs.build(dict(opts), fmt, to, set(opts))
    except jobs.OptionError as exc:
        raise UsageError(exc.one_line().replace(f"option {exc.key!r}", _flag(exc.key))) from None
    job = jobs.Job(source, fmt, to, kwargs)
    out = Path(output)
    jobs.check_output(job, out)
    console = Console(highlight=False)

    def show_lint(lint_report) -> None:
        if not json_out and not lint_report.clean:
            from tensorsmith.lint import render

            render(lint_report, console)

    lowered = to != "tftrt" and kwargs.get("precision") is not None
    with _job_progress(not json_out, lowered) as (step, prog):
        report = jobs.execute(job, out, step, prog, on_lint=show_lint)
    if json_out:
        _print_json(report.to_dict())
    else:
        from tensorsmith.report import render_any

        render_any(report, console, explain=explain)
    return 0


@contextlib.contextmanager
def _job_progress(enabled: bool, precision: bool):
    """(step callback, precision progress): the spinner, or bars when a precision step runs."""
    if not precision:
        with _progress(enabled) as step:
            yield step, None
        return
    from tensorsmith.precision.progress import rich_progress

    with rich_progress(err_console, enabled) as prog:
        yield prog.step, prog


@app.command()
def optimize(
    input_path: Path = typer.Argument(..., metavar="IN.onnx", help="ONNX model to optimize."),
    output: Path = OutputOpt,
    passes: list[str] | None = PassesOpt,
    skip: list[str] | None = SkipOpt,
    input_shape: list[str] | None = ShapeOpt,
    no_verify: bool = NoVerifyOpt,
    verify_data: Path | None = VerifyDataOpt,
    rtol: float | None = RtolOpt,
    atol: float | None = AtolOpt,
    external_data: bool | None = ExtOpt,
    max_iterations: int = IterOpt,
    fold_dequantize: bool = FoldDequantOpt,
    json_out: bool = JsonOpt,
    explain: bool = ExplainOpt,
    dump_recipe: bool = DumpRecipeOpt,
    precision: str | None = PrecisionOpt,
    qtarget: str | None = QTargetOpt,
    fp16_io: bool = Fp16IoOpt,
    calib: str | None = CalibOpt,
    calib_preprocess: str | None = CalibPreOpt,
    calib_loader: str | None = CalibLoaderOpt,
    calib_samples: int | None = CalibSamplesOpt,
    calib_method: str | None = CalibMethodOpt,
    val: str | None = ValOpt,
    int8_mode: str | None = Int8ModeOpt,
    min_cosine: float | None = MinCosOpt,
    min_top1: float | None = MinTop1Opt,
    max_abs_error: float | None = MaxAbsOpt,
    max_rel_error: float | None = MaxRelOpt,
    fallback_budget: int | None = BudgetOpt,
    min_speedup: float | None = MinSpeedOpt,
    keep_fp32: list[str] | None = KeepFp32Opt,
) -> None:
    """Run graph passes on an ONNX model and verify the result against it."""
    params = dict(locals())
    _fold_dequantize(params)
    if dump_recipe:
        _dump_recipe("optimize", params)
    _run(lambda: _job("optimize", params), json_mode=json_out)


@app.command()
def convert(
    input_path: str = typer.Argument(
        ..., metavar="SRC", help="Model file, SavedModel folder or module:factory."
    ),
    to: str = typer.Option("onnx", "--to", help="Target format."),
    output: Path = OutputOpt,
    source_format: str | None = typer.Option(
        None, "--from", help="Force the source format (default: detected)."
    ),
    passes: list[str] | None = PassesOpt,
    skip: list[str] | None = SkipOpt,
    input_shape: list[str] | None = ShapeOpt,
    no_verify: bool = NoVerifyOpt,
    verify_data: Path | None = VerifyDataOpt,
    rtol: float | None = RtolOpt,
    atol: float | None = AtolOpt,
    external_data: bool | None = ExtOpt,
    max_iterations: int = IterOpt,
    json_out: bool = JsonOpt,
    explain: bool = ExplainOpt,
    dump_recipe: bool = DumpRecipeOpt,
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset to write (default 18)."),
    static: bool = typer.Option(
        False, "--static", help="Fix every dimension (default: the batch dim is dynamic)."
    ),
    input_value: list[str] | None = typer.Option(
        None, "--input-value", help="NAME=VALUE: bind a non-tensor forward argument as a constant (PyTorch)."
    ),
    signature: str | None = typer.Option(
        None, "--signature", help="SavedModel signature (default serving_default)."
    ),
    inputs: list[str] | None = typer.Option(
        None, "--inputs", help="GraphDef input tensors (default: Placeholders)."
    ),
    outputs: list[str] | None = typer.Option(
        None, "--outputs", help="GraphDef output tensors (default: nodes nothing consumes)."
    ),
    nchw_inputs: bool = typer.Option(False, "--nchw-inputs", help="TensorFlow: make 4-D NHWC inputs NCHW."),
    weights: Path | None = typer.Option(
        None, "--weights", help="state_dict for a module:factory source (loaded with weights_only=True)."
    ),
    trust_remote_code: bool = typer.Option(
        False,
        "--trust-remote-code",
        help="Allow full unpickling of --weights / .pt2 payloads that weights_only refuses (runs arbitrary code).",
    ),
    no_optimize: bool = typer.Option(
        False, "--no-optimize", help="Skip the graph passes (convert and verify only)."
    ),
    shapes: list[str] | None = TrtShapesOpt,
    max_batch: int | None = TrtMaxBatchOpt,
    workspace: str | None = TrtWorkspaceOpt,
    timing_cache: Path | None = TrtTimingCacheOpt,
    builder_opt_level: int | None = TrtOptLevelOpt,
    hardware_compat: str | None = TrtHwCompatOpt,
    version_compat: bool = TrtVersionCompatOpt,
    trt_version: str | None = TrtVersionOpt,
    prepare_only: bool = typer.Option(
        False,
        "--prepare-only",
        help="--to trt: write the ready-to-build ONNX and lint report; build nothing.",
    ),
    profile_strategy: str | None = typer.Option(
        None, "--profile-strategy", help="--to tftrt: Range, Optimal (default) or Range+Optimal."
    ),
    precision: str | None = PrecisionOpt,
    qtarget: str | None = QTargetOpt,
    fp16_io: bool = Fp16IoOpt,
    calib: str | None = CalibOpt,
    calib_preprocess: str | None = CalibPreOpt,
    calib_loader: str | None = CalibLoaderOpt,
    calib_samples: int | None = CalibSamplesOpt,
    calib_method: str | None = CalibMethodOpt,
    val: str | None = ValOpt,
    int8_mode: str | None = Int8ModeOpt,
    min_cosine: float | None = MinCosOpt,
    min_top1: float | None = MinTop1Opt,
    max_abs_error: float | None = MaxAbsOpt,
    max_rel_error: float | None = MaxRelOpt,
    fallback_budget: int | None = BudgetOpt,
    min_speedup: float | None = MinSpeedOpt,
    keep_fp32: list[str] | None = KeepFp32Opt,
) -> None:
    """Convert a model to TARGET (onnx, trt, tftrt), optimize and verify it."""
    params = dict(locals())
    if dump_recipe:
        _dump_recipe("convert", params)
    _run(lambda: _job("convert", params), json_mode=json_out)


@app.command()
def inspect(
    model: str = typer.Argument(..., metavar="MODEL", help="Model file or folder."),
    source_format: str | None = typer.Option(None, "--from", help="Force the format (default: detected)."),
    json_out: bool = JsonOpt,
) -> None:
    """Show a model's format, opset, inputs/outputs, op histogram and parameters."""

    def job() -> int:
        from tensorsmith.inspection import inspect_model

        info = inspect_model(model, source_format)
        if json_out:
            _print_json(info)
        else:
            _render_inspect(info)
        return 0

    _run(job, json_mode=json_out)


def _render_inspect(info: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from tensorsmith.report import human_bytes

    console = Console(highlight=False)
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    for key in (
        "path",
        "format",
        "opset",
        "ir_version",
        "producer",
        "framework_version",
        "nodes",
        "parameters",
        "parameter_bytes",
        "file_bytes",
        "external_data",
    ):
        if key in info and info[key] not in (None, "", []):
            value = info[key]
            if key.endswith("bytes"):
                value = f"{human_bytes(value)} ({value:,} B)"
            elif key == "parameters":
                value = f"{value:,}"
            elif isinstance(value, list):
                value = ", ".join(map(str, value))
            head.add_row(key.replace("_", " "), escape(str(value)))
    console.print(head)
    for kind in ("inputs", "outputs"):
        t = Table(title=kind, title_justify="left", header_style="bold")
        t.add_column("name")
        t.add_column("dtype")
        t.add_column("shape")
        for v in info.get(kind, []):
            shape = v.get("shape")
            t.add_row(
                escape(v["name"]),
                str(v.get("dtype")),
                "?"
                if shape is None
                else escape("[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"),
            )
        console.print(t)
    if info.get("ops"):
        t = Table(title="ops", title_justify="left", header_style="bold")
        t.add_column("op")
        t.add_column("count", justify="right")
        for op, n in info["ops"].items():
            t.add_row(escape(op), str(n))
        console.print(t)


@app.command("passes")
def list_passes(json_out: bool = JsonOpt) -> None:
    """List every graph pass, in default pipeline order, with a one-line description."""

    def job() -> int:
        from tensorsmith.passes import DEFAULT_PIPELINE, PASSES

        rows = [
            {"name": n, "description": PASSES[n].description, "default": n in DEFAULT_PIPELINE}
            for n in PASSES
        ]
        if json_out:
            _print_json(rows)
        else:
            from rich.table import Table

            t = Table(header_style="bold")
            t.add_column("pass")
            t.add_column("description")
            for r in rows:
                t.add_row(r["name"], r["description"])
            Console(highlight=False).print(t)
        return 0

    _run(job, json_mode=json_out)


def _dump_recipe(command: str, params: dict) -> None:
    """``--dump-recipe``: print the command's options as a recipe; never runs the job."""

    def job() -> int:
        from tensorsmith.recipes.schema import recipe_from_cli

        sys.stdout.write(recipe_from_cli(command, params))
        sys.stdout.flush()
        return 0

    _run(job)


@app.command("run")
def run_recipe(
    recipe: Path = typer.Argument(..., metavar="RECIPE.yaml", help="Recipe file (see README, Recipes)."),
    jobs: int | None = typer.Option(
        None, "--jobs", "-j", min=1, help="Worker processes (default: the core count)."
    ),
    only: list[str] | None = typer.Option(
        None, "--only", help="Run only this job (repeatable; patterns like 'cnn-*')."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the recipe, list the jobs and what is cached; run nothing."
    ),
    force: bool = typer.Option(False, "--force", help="Ignore the cache: run every selected job."),
    report_json: Path | None = typer.Option(
        None, "--report-json", help="Write a JSON report: every job, every number."
    ),
    junit: Path | None = typer.Option(None, "--junit", help="Write JUnit XML: one test case per job."),
    summary_md: Path | None = typer.Option(
        None, "--summary-md", help="Write a Markdown summary (for a CI job summary)."
    ),
) -> None:
    """Run a recipe: models x targets in parallel; unchanged jobs are cached. Exit 0 all passed, 1 any failed, 2 bad recipe."""

    def job() -> int:
        from tensorsmith.recipes import run_recipe as run_file
        from tensorsmith.recipes.reports import RichEvents, render_summary

        result = run_file(
            recipe,
            workers=jobs,
            only=_split_list(only) or None,
            force=force,
            dry_run=dry_run,
            report_json=report_json,
            junit=junit,
            summary_md=summary_md,
            events=RichEvents(err_console),
        )
        render_summary(result, Console(highlight=False))
        return result.exit_code

    _run(job)


# --------------------------------------------------------------------------------------
# TensorRT and TF-TRT: lint, build, doctor, and convert --to trt|tftrt (README, "TensorRT and TF-TRT")


def _trt_options(
    shapes,
    max_batch,
    workspace,
    timing_cache,
    builder_opt_level,
    hardware_compat,
    version_compat,
    precision,
    no_verify,
    verify_data,
    rtol,
    atol,
):
    """``tensorsmith build``'s flags -> the same ``TrtOptions`` a ``convert --to trt`` job builds."""
    from tensorsmith import jobs

    values = {
        "shapes": shapes,
        "max_batch": max_batch,
        "workspace": workspace,
        "timing_cache": timing_cache,
        "builder_opt_level": builder_opt_level,
        "hardware_compat": hardware_compat,
        "version_compat": version_compat,
        "verify": not no_verify,
        "verify_data": verify_data,
        "rtol": rtol,
        "atol": atol,
    }
    tolerance = jobs._tolerance(values) if rtol is not None or atol is not None else None
    return jobs.trt_options(values, precision=precision, tolerance=tolerance)


@app.command()
def lint(
    model: Path = typer.Argument(..., metavar="MODEL.onnx", help="ONNX model to check."),
    target: str = typer.Option("trt", "--for", help="Deployment target to check for (trt)."),
    trt_version: str | None = TrtVersionOpt,
    shapes: list[str] | None = TrtShapesOpt,
    max_batch: int | None = TrtMaxBatchOpt,
    precision: str | None = typer.Option(
        None,
        "--precision",
        help="fp32, fp16 or int8: the precision the engine will run at (default: the graph's).",
    ),
    json_out: bool = JsonOpt,
) -> None:
    """Check an ONNX model for TensorRT without a GPU or TensorRT. Exit 0 clean, 1 findings."""

    def job() -> int:
        from tensorsmith.convert.profiles import DEFAULT_MAX_BATCH
        from tensorsmith.lint import lint_file, render

        options = {"shapes": shapes, "max_batch": max_batch or DEFAULT_MAX_BATCH, "precision": precision}
        if trt_version is not None:
            options["trt_version"] = trt_version
        report = lint_file(model, target=target, **options)
        if json_out:
            _print_json(report.to_dict())
        else:
            render(report, Console(highlight=False))
        return 0 if report.clean else 1

    _run(job, json_mode=json_out)


@app.command()
def build(
    model: Path = typer.Argument(
        ..., metavar="MODEL.onnx", help="Ready-to-build ONNX (from convert --to trt --prepare-only)."
    ),
    to: str = typer.Option("trt", "--to", help="Target: trt."),
    output: Path = OutputOpt,
    shapes: list[str] | None = TrtShapesOpt,
    max_batch: int | None = TrtMaxBatchOpt,
    workspace: str | None = TrtWorkspaceOpt,
    timing_cache: Path | None = TrtTimingCacheOpt,
    builder_opt_level: int | None = TrtOptLevelOpt,
    hardware_compat: str | None = TrtHwCompatOpt,
    version_compat: bool = TrtVersionCompatOpt,
    precision: str | None = typer.Option(
        None,
        "--precision",
        help="fp32, fp16 or int8 (default: what the graph carries). TensorRT 10 can build an FP32 graph "
        "with the FP16 flag; TensorRT 11 needs the precision in the graph.",
    ),
    no_verify: bool = NoVerifyOpt,
    verify_data: Path | None = VerifyDataOpt,
    rtol: float | None = typer.Option(None, "--rtol", help="Relative tolerance (default: by precision)."),
    atol: float | None = typer.Option(None, "--atol", help="Absolute tolerance (default: by precision)."),
    json_out: bool = JsonOpt,
) -> None:
    """Build a TensorRT engine from an ONNX model on this GPU machine, verify it, write .plan + .plan.json."""

    def job() -> int:
        from tensorsmith.errors import ConversionError, UsageError

        if to != "trt":
            raise UsageError(f"--to {to}: build makes TensorRT engines only (--to trt)")
        from tensorsmith.convert import trt_backend

        opts = _trt_options(
            shapes,
            max_batch,
            workspace,
            timing_cache,
            builder_opt_level,
            hardware_compat,
            version_compat,
            precision,
            no_verify,
            verify_data,
            rtol,
            atol,
        )
        from tensorsmith.model_io import load_proto

        load_proto(model)  # unreadable input: exit 2 before anything else
        from tensorsmith.jobs import name_single_profile

        name_single_profile(opts, model)
        lint_report = _trt_lint(model, opts, json_out)
        missing = trt_backend.missing_for_build()
        if missing:
            raise ConversionError(
                f"cannot build a TensorRT engine on this machine: {'; '.join(missing)}",
                hint="run this command on a machine with an NVIDIA GPU and TensorRT 10 or 11",
            )
        try:
            with _progress(not json_out) as step:
                report = trt_backend.build_engine(model, output, opts, on_step=step)
        except Exception as exc:
            report = getattr(exc, "job", None)
            if report is not None:
                report.lint = lint_report.to_dict()
            raise
        report.lint = lint_report.to_dict()
        if json_out:
            _print_json(report.to_dict())
        else:
            trt_backend.render(report, Console(highlight=False))
        return 0

    _run(job, json_mode=json_out)


def _trt_lint(onnx_path, opts, json_out: bool, trt_version: str | None = None):
    """Lint for TensorRT before a build and print what it finds (never fatal: TensorRT decides)."""
    from tensorsmith.lint import render
    from tensorsmith.lint.trt import lint_trt

    report = lint_trt(
        onnx_path,
        trt_version=trt_version,
        shapes=opts.shapes,
        max_batch=opts.max_batch,
        precision=opts.precision,
    )
    if not json_out and not report.clean:
        render(report, Console(highlight=False))
    return report


@app.command()
def doctor(json_out: bool = JsonOpt) -> None:
    """Versions, GPUs, and which --to targets and precisions this machine can produce (and why not)."""

    def job() -> int:
        from tensorsmith import doctor as doc

        info = doc.collect()
        if json_out:
            _print_json(info)
        else:
            doc.render(info, Console(highlight=False))
        return 0

    _run(job, json_mode=json_out)


if __name__ == "__main__":  # pragma: no cover
    app()
