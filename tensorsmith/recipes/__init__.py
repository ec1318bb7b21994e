"""Recipes: batch conversion from YAML, built for CI (``tensorsmith run RECIPE.yaml``).

- ``yaml_lines``: ``yaml.safe_load`` that remembers lines, so errors name them
- ``schema``:     the typed recipe (pydantic, unknown keys are errors)
- ``expand``:     models x targets -> jobs, overrides, every check before a job starts
- ``cache``:      job keys (content hashes), the manifest
- ``runner``:     jobs in parallel worker processes, atomic outputs
- ``reports``:    the live display, JSON / JUnit XML / Markdown reports

Python use::

    from tensorsmith.recipes import run_recipe
    result = run_recipe("recipes/demo.yaml", workers=2, junit="reports/junit.xml")
    result.exit_code   # 0 all passed, 1 some failed
"""

from __future__ import annotations

import os
from pathlib import Path

from tensorsmith.errors import UsageError


def run_recipe(
    recipe_path: str | os.PathLike,
    *,
    workers: int | None = None,
    only: list[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    report_json: str | os.PathLike | None = None,
    junit: str | os.PathLike | None = None,
    summary_md: str | os.PathLike | None = None,
    report_html: str | os.PathLike | None = None,
    events=None,
    executor=None,
):
    """Load, check and run a recipe; write the reports asked for. Returns a ``RunResult``.

    ``executor``: where the jobs run (``executors.make_executor("ray", ...)``); default
    the local process pool of ``workers`` processes.

    Raises ``UsageError`` (exit 2) before any job starts when the recipe is invalid.
    """
    from tensorsmith.recipes import reports, runner
    from tensorsmith.recipes.expand import load_plan, select

    for flag, path in (
        ("--report-json", report_json),
        ("--junit", junit),
        ("--summary-md", summary_md),
        ("--report-html", report_html),
    ):
        if path is not None and Path(path).is_dir():
            raise UsageError(f"{flag} {path}: is a directory, expected a file path")
    plan = load_plan(recipe_path)
    jobs = select(plan, only)
    result = runner.run(
        plan, jobs, workers=workers, force=force, dry_run=dry_run, events=events, executor=executor
    )
    if report_json is not None:
        reports.write_json(result, report_json)
    if junit is not None:
        reports.write_junit(result, junit)
    if summary_md is not None:
        reports.write_markdown(result, summary_md)
    html_path = report_html or (plan.recipe.report_html and plan.output_dir / plan.recipe.report_html)
    if html_path and not dry_run:  # --report-html / the recipe's report_html: matrix + a page per job
        from tensorsmith.html import write_recipe_pages

        write_recipe_pages(reports.to_json(result), html_path)
    return result


__all__ = ["run_recipe"]
