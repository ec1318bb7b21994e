"""``tensorsmith inspect``, ``passes`` and ``run`` (recipes)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from tensorsmith.cli.app import app, err_console, print_json, run_command, split_list
from tensorsmith.cli.options import FLAGS


@app.command()
def inspect(
    model: str = typer.Argument(..., metavar="MODEL", help="Model file or folder."),
    source_format: str | None = typer.Option(None, "--from", help="Force the format (default: detected)."),
    json_out: bool = FLAGS["json_out"][1],
) -> None:
    """Show a model's format, opset, inputs/outputs, op histogram and parameters."""

    def job() -> int:
        from tensorsmith.inspection import inspect_model

        info = inspect_model(model, source_format)
        if json_out:
            print_json(info)
        else:
            _render_inspect(info)
        return 0

    run_command(job, json_mode=json_out)


def _render_inspect(info: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from tensorsmith.units import human_bytes

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
def list_passes(json_out: bool = FLAGS["json_out"][1]) -> None:
    """List every graph pass, in default pipeline order, with a one-line description."""

    def job() -> int:
        from tensorsmith.passes import DEFAULT_PIPELINE, PASSES

        rows = [
            {"name": n, "description": PASSES[n].description, "default": n in DEFAULT_PIPELINE}
            for n in PASSES
        ]
        if json_out:
            print_json(rows)
        else:
            from rich.table import Table

            t = Table(header_style="bold")
            t.add_column("pass")
            t.add_column("description")
            for r in rows:
                t.add_row(str(r["name"]), str(r["description"]))
            Console(highlight=False).print(t)
        return 0

    run_command(job, json_mode=json_out)


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
    report_html: Path | None = typer.Option(
        None, "--report-html", help="Write an HTML report: the models x targets matrix, a page per job."
    ),
    executor: str = typer.Option(
        "local", "--executor", help="Where jobs run: local (process pool) or ray (a Ray cluster)."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)."
    ),
    cpus_per_job: float = typer.Option(1.0, "--cpus-per-job", help="CPUs each job asks Ray for."),
    max_retries: int = typer.Option(
        2, "--max-retries", min=0, help="Ray: tries again a job lost with its node or worker."
    ),
) -> None:
    """Run a recipe: models x targets in parallel; unchanged jobs are cached. Exit 0 all passed, 1 any failed, 2 bad recipe."""

    def job() -> int:
        from tensorsmith.recipes import run_recipe as run_file
        from tensorsmith.recipes.executors import make_executor
        from tensorsmith.recipes.reports import RichEvents, render_summary

        where = make_executor(
            executor,
            workers=jobs,
            ray_address=ray_address,
            cpus_per_job=cpus_per_job,
            max_retries=max_retries,
        )

        result = run_file(
            recipe,
            workers=jobs,
            only=split_list(only) or None,
            force=force,
            dry_run=dry_run,
            report_json=report_json,
            junit=junit,
            summary_md=summary_md,
            report_html=report_html,
            events=RichEvents(err_console),
            executor=where,
        )
        render_summary(result, Console(highlight=False))
        return result.exit_code

    run_command(job)
