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
from pathlib import Path
from typing import Callable, Optional

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
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version."),
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


def _split_list(values: Optional[list[str]]) -> list[str]:
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

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("starting", total=None)
        yield lambda msg: progress.update(task, description=msg)


# Options shared by optimize and convert ------------------------------------------------
OutputOpt = typer.Option(..., "-o", "--output", help="Where to write the result (written atomically).")
PassesOpt = typer.Option(None, "--passes", help="Comma-separated passes to run (default: all, see `tensorsmith passes`).")
SkipOpt = typer.Option(None, "--skip", help="Pass to leave out (repeatable or comma-separated).")
ShapeOpt = typer.Option(None, "--input-shape", help="NAME=1x3x224x224 for verification inputs (repeatable).")
NoVerifyOpt = typer.Option(False, "--no-verify", help="Skip the numeric check against the source.")
VerifyDataOpt = typer.Option(None, "--verify-data", help=".npz of real inputs (arrays named after the inputs).")
RtolOpt = typer.Option(None, "--rtol", help="Relative tolerance, of each output's scale (default 1e-4).")
AtolOpt = typer.Option(None, "--atol", help="Absolute tolerance (default 1e-5).")
ExtOpt = typer.Option(None, "--external-data/--no-external-data",
                      help="Weights in OUT.onnx.data beside the model (default: only when over 2 GB).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables.")
ExplainOpt = typer.Option(False, "--explain", help="Say why passes left candidates alone.")
IterOpt = typer.Option(8, "--max-iterations", min=1, help="Cap on pass-manager iterations.")


def _optimize_job(
    input_path: Path, output: Path, passes, skip, input_shape, no_verify, verify_data, rtol, atol,
    external_data, max_iterations, json_out: bool, explain: bool,
) -> int:
    from tensorsmith.pipeline import optimize_file
    from tensorsmith.report import render_job
    from tensorsmith.shapes import parse_input_shapes
    from tensorsmith.verify import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance

    shapes = parse_input_shapes(input_shape)
    tol = Tolerance(rtol=DEFAULT_RTOL if rtol is None else rtol, atol=DEFAULT_ATOL if atol is None else atol)
    if tol.rtol < 0 or tol.atol < 0:
        from tensorsmith.errors import UsageError

        raise UsageError("--rtol and --atol must be >= 0")
    with _progress(not json_out) as step:
        report = optimize_file(
            input_path, output,
            passes=_split_list(passes) or None,
            skip=_split_list(skip),
            input_shapes=shapes,
            verify=not no_verify,
            verify_data=verify_data,
            tolerance=tol,
            external_data=external_data,
            max_iterations=max_iterations,
            on_step=step,
        )
    if json_out:
        _print_json(report.to_dict())
    else:
        render_job(report, Console(highlight=False), explain=explain)
    return 0


@app.command()
def optimize(
    input_path: Path = typer.Argument(..., metavar="IN.onnx", help="ONNX model to optimize."),
    output: Path = OutputOpt,
    passes: Optional[list[str]] = PassesOpt,
    skip: Optional[list[str]] = SkipOpt,
    input_shape: Optional[list[str]] = ShapeOpt,
    no_verify: bool = NoVerifyOpt,
    verify_data: Optional[Path] = VerifyDataOpt,
    rtol: Optional[float] = RtolOpt,
    atol: Optional[float] = AtolOpt,
    external_data: Optional[bool] = ExtOpt,
    max_iterations: int = IterOpt,
    json_out: bool = JsonOpt,
    explain: bool = ExplainOpt,
) -> None:
    """Run graph passes on an ONNX model and verify the result against it."""
    _run(lambda: _optimize_job(input_path, output, passes, skip, input_shape, no_verify, verify_data,
                               rtol, atol, external_data, max_iterations, json_out, explain),
         json_mode=json_out)


@app.command()
def convert(
    input_path: str = typer.Argument(..., metavar="SRC", help="Model file, SavedModel folder or module:factory."),
    to: str = typer.Option("onnx", "--to", help="Target format."),
    output: Path = OutputOpt,
    source_format: Optional[str] = typer.Option(None, "--from", help="Force the source format (default: detected)."),
    passes: Optional[list[str]] = PassesOpt,
    skip: Optional[list[str]] = SkipOpt,
    input_shape: Optional[list[str]] = ShapeOpt,
    no_verify: bool = NoVerifyOpt,
    verify_data: Optional[Path] = VerifyDataOpt,
    rtol: Optional[float] = RtolOpt,
    atol: Optional[float] = AtolOpt,
    external_data: Optional[bool] = ExtOpt,
    max_iterations: int = IterOpt,
    json_out: bool = JsonOpt,
    explain: bool = ExplainOpt,
) -> None:
    """Convert a model to TARGET (onnx), optimize and verify it."""

    def job() -> int:
        from tensorsmith.convert import detect_format, get_backend, get_frontend

        get_backend(to)
        fmt = source_format or detect_format(input_path)
        get_frontend(fmt)
        if fmt != "onnx":
            from tensorsmith.errors import UsageError

            raise UsageError(f"converting from {fmt} is not available yet")
        return _optimize_job(Path(input_path), output, passes, skip, input_shape, no_verify, verify_data,
                             rtol, atol, external_data, max_iterations, json_out, explain)

    _run(job, json_mode=json_out)


@app.command()
def inspect(
    model: str = typer.Argument(..., metavar="MODEL", help="Model file or folder."),
    source_format: Optional[str] = typer.Option(None, "--from", help="Force the format (default: detected)."),
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
    for key in ("path", "format", "opset", "ir_version", "producer", "framework_version", "nodes",
                "parameters", "parameter_bytes", "file_bytes", "external_data"):
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
            t.add_row(escape(v["name"]), str(v.get("dtype")),
                      "?" if shape is None else escape("[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"))
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

        rows = [{"name": n, "description": PASSES[n].description, "default": n in DEFAULT_PIPELINE} for n in PASSES]
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


if __name__ == "__main__":  # pragma: no cover
    app()
