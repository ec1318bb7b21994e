"""``tensorsmith optimize`` and ``tensorsmith convert``: flags -> ``JobConfig`` -> ``tensorsmith.jobs``,
the code every recipe job runs too (``--dump-recipe`` prints that job as a recipe)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from tensorsmith.cli import options
from tensorsmith.cli.app import app, err_console, print_json, progress, run_command


def _job(command: str, source: str, output: Path, params: dict[str, Any]) -> int:
    from tensorsmith import jobs
    from tensorsmith.convert import detect_format, get_frontend
    from tensorsmith.convert.targets import DEFAULT_TARGET, get_target
    from tensorsmith.errors import UsageError
    from tensorsmith.recipes.schema import flag_of

    json_out, explain = params["json_out"], params["explain"]
    config = options.job_config(params)
    to = config.to or DEFAULT_TARGET
    target = get_target(to)
    fmt = config.source.from_ or detect_format(source)
    get_frontend(fmt)
    if command == "optimize" and jobs.is_framework(fmt):
        raise UsageError(
            f"{source}: optimize takes an ONNX model; this is {fmt}",
            hint=f"use tensorsmith convert {source} --to onnx",
        )
    opts = config.options()
    try:
        _, kwargs = jobs.build(dict(opts), fmt, to, set(opts))
    except jobs.OptionError as exc:
        raise UsageError(exc.one_line().replace(f"option {exc.key!r}", flag_of(exc.key) or exc.key)) from None
    job = jobs.Job(source, fmt, to, kwargs)
    jobs.check_output(job, output)
    console = Console(highlight=False)

    def show_lint(lint_report) -> None:
        if not json_out and not lint_report.clean:
            from tensorsmith.lint import render

            render(lint_report, console)

    lowered = target.lowers_in_graph and kwargs.get("precision") is not None
    from tensorsmith import html

    html.check_path(params.get("report_html"))
    with _job_progress(not json_out, lowered) as (step, prog):
        report = jobs.execute(job, output, step, prog, on_lint=show_lint)
    if params.get("report_html"):
        html.write_conversion_page(report, params["report_html"], sys.argv)
    if json_out:
        print_json(report.to_dict())
    else:
        report.render(console, explain=explain)
    return 0


@contextlib.contextmanager
def _job_progress(enabled: bool, precision: bool):
    """(step callback, precision progress): the spinner, or bars when a precision step runs."""
    if not precision:
        with progress(enabled) as step:
            yield step, None
        return
    from tensorsmith.precision.progress import rich_progress

    with rich_progress(err_console, enabled) as prog:
        yield prog.step, prog


def _dump_recipe(command: str, source: str, output: Path, params: dict[str, Any]) -> None:
    """``--dump-recipe``: print the command's options as a recipe; never runs the job."""

    def job() -> int:
        from tensorsmith.recipes.schema import recipe_from_config

        config = options.job_config(params)
        sys.stdout.write(recipe_from_config(command, source, str(output), config))
        sys.stdout.flush()
        return 0

    run_command(job)


def _command(command: str, params: dict[str, Any]) -> None:
    source, output = str(params.pop("input_path")), params["output"]
    if params["dump_recipe"]:
        _dump_recipe(command, source, output, params)
    run_command(
        lambda: _job(command, source, output, params),
        json_mode=params["json_out"],
        html=params.get("report_html"),
    )


def optimize(**params: Any) -> None:
    """Run graph passes on an ONNX model and verify the result against it."""
    _command("optimize", params)


def convert(**params: Any) -> None:
    """Convert a model to TARGET (onnx, trt, tftrt), optimize and verify it."""
    _command("convert", params)


optimize.__signature__ = options.signature(  # type: ignore[attr-defined]
    ("input_path", Path, typer.Argument(..., metavar="IN.onnx", help="ONNX model to optimize.")),
    options.OPTIMIZE_FLAGS,
)
convert.__signature__ = options.signature(  # type: ignore[attr-defined]
    (
        "input_path",
        str,
        typer.Argument(..., metavar="SRC", help="Model file, SavedModel folder or module:factory."),
    ),
    options.CONVERT_FLAGS,
)
app.command()(optimize)
app.command()(convert)
