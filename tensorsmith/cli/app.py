"""The Typer app, its global options, and what every command shares: errors -> one line
and an exit code, JSON output, the progress spinner. The commands are in
``cli/jobs.py`` (optimize, convert), ``cli/info.py`` (inspect, passes, run) and
``cli/trt.py`` (lint, build, doctor); ``cli/options.py`` declares the flags.

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


def fail(message: str, code: int) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise typer.Exit(code)


def run_command(fn: Callable[[], int | None], *, json_mode: bool = False, html: Path | None = None) -> None:
    """Call ``fn`` mapping tensorsmith errors to one stderr line and an exit code.
    ``html`` (``--report-html``): a failed job's page is written from its error."""
    from tensorsmith.errors import TensorsmithError, UsageError

    try:
        code = fn() or 0
    except typer.Exit:
        raise
    except TensorsmithError as exc:
        if _state["debug"]:
            traceback.print_exc()
        if json_mode:
            payload = exc.job.to_dict() if exc.job is not None else {"status": "failed", "output": None}
            if payload.get("status") == "ok":
                payload["status"] = "failed"
            payload["error"] = exc.one_line()
            payload["exit_code"] = exc.exit_code
            print_json(payload)
        if html is not None and not isinstance(exc, UsageError):
            from tensorsmith.html import write_conversion_page

            with contextlib.suppress(TensorsmithError):
                write_conversion_page(exc, html, sys.argv)
        fail(exc.one_line(), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:  # a bug or an unexpected library failure
        if _state["debug"]:
            traceback.print_exc()
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        fail(f"internal error: {type(exc).__name__}: {text} (run with --debug for the traceback)", 3)
    raise typer.Exit(code)


def print_json(obj: object) -> None:
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


def split_list(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


@contextlib.contextmanager
def progress(enabled: bool):
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
