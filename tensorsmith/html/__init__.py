"""Self-contained HTML reports: one page per conversion, one per recipe run.

Built from the very objects ``--json`` and ``run --report-json`` print (no second
source of numbers; the object is embedded in the page as ``#report-data``). One file,
no network: CSS, a few lines of script (the theme toggle) and the charts (inline SVG,
``tensorsmith.html.svg``) are all inside it.

- ``write_conversion_page(report, path, argv)``: ``optimize``/``convert``/``build``
  ``--report-html``; ``report`` is the job report, its dict, or the exception a failed
  job raised (the page then shows the failure and its exit code).
- ``write_recipe_pages(run_report, path)``: ``run --report-html`` and the recipe's
  ``report_html``; each job's page is written beside its output (``OUTPUT.html``) and
  the matrix page links to them.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAX_BYTES = 8 * 1024 * 1024  # the limit for one page


def clean(obj: Any) -> Any:
    """JSON-safe copy (NaN -> None, inf -> "inf"), as ``--json`` prints it."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def report_dict(report: Any) -> dict:
    """A job report, its ``to_dict()``, or the ``TensorsmithError`` of a failed job -> the ``--json`` object."""
    from tensorsmith.errors import TensorsmithError

    if isinstance(report, TensorsmithError):
        job = getattr(report, "job", None)
        out = job.to_dict() if job is not None else {"status": "failed", "output": None}
        if out.get("status") == "ok":
            out["status"] = "failed"
        out["error"] = report.one_line()
        out["exit_code"] = report.exit_code
        prec = getattr(report, "precision_report", None)
        if prec is not None and not out.get("precision"):
            out["precision"] = prec
        return clean(out)
    if hasattr(report, "to_dict"):
        return clean(report.to_dict())
    return clean(dict(report))


def command_line(argv: Sequence[str] | str | None) -> str | None:
    if argv is None:
        return None
    if isinstance(argv, str):
        return argv
    args = list(argv)
    if args:
        args[0] = "tensorsmith" if Path(args[0]).name in ("tensorsmith", "__main__.py", "cli.py") else args[0]
    return shlex.join(args)


def tool_versions(report: dict) -> dict[str, str | None]:
    """The versions a recipe's manifest records for such a job (``recipes.cache.versions``)."""
    from tensorsmith.recipes.cache import versions

    prec = report.get("precision")
    name = prec.get("precision") if isinstance(prec, dict) else prec
    try:
        return versions(report.get("source_format"), str(report.get("target") or "onnx"), name)
    except Exception:  # never fail a report over a version lookup
        from tensorsmith import __version__

        return {"tensorsmith": __version__}


def conversion_html(
    report: Any, argv: Sequence[str] | str | None = None, versions: dict | None = None
) -> str:
    from tensorsmith.html.conversion import conversion_page

    data = report_dict(report)
    vers = versions if versions is not None else data.get("versions") or tool_versions(data)
    page = conversion_page(data, argv=command_line(argv), versions=vers)
    if len(page.encode("utf-8")) > MAX_BYTES:  # a huge model: the page without the embedded copy
        page = conversion_page(data, argv=command_line(argv), versions=vers, embed=False)
    return page


def write_conversion_page(
    report: Any, path: str | os.PathLike, argv: Sequence[str] | str | None = None
) -> Path:
    """``--report-html PATH`` of ``optimize``/``convert``/``build``: write the page atomically."""
    return _write(path, conversion_html(report, argv))


def job_page_path(output_dir: str | os.PathLike, job: dict) -> Path | None:
    """Where a recipe job's page goes: beside its main output, ``OUTPUT.html``."""
    out = job.get("output")
    if not out:
        return None
    return Path(output_dir) / f"{out}.html"


def write_recipe_pages(run_report: dict, path: str | os.PathLike) -> Path:
    """``run --report-html PATH`` / ``report_html``: every job's page beside its output, then the matrix page."""
    from tensorsmith.html.recipe import recipe_page

    run = clean(run_report)
    target = Path(path)
    links: dict[str, str] = {}
    out_dir = run.get("output_dir") or "."
    for job in run.get("jobs", []):
        rep = job.get("report") if isinstance(job, dict) else None
        page = job_page_path(out_dir, job) if isinstance(rep, dict) else None
        if rep is None or page is None or not page.parent.is_dir():
            continue
        data = dict(rep)
        data.setdefault("exit_code", job.get("exit_code"))
        if job.get("error") and not data.get("error"):
            data["error"] = job.get("error")
        _write(page, conversion_html(data, job.get("command"), job.get("versions") or {}))
        links[str(job.get("name"))] = os.path.relpath(page.resolve(), target.resolve().parent)
    text = recipe_page(run, links=links)
    if len(text.encode("utf-8")) > MAX_BYTES:  # hundreds of jobs: the matrix without the embedded copy
        text = recipe_page(run, links=links, embed=False)
    return _write(target, text)


def check_path(path: str | os.PathLike | None) -> None:
    """Refuse a ``--report-html`` path that cannot be written (exit 2), before any work runs."""
    if path is None:
        return
    from tensorsmith.errors import UsageError

    p = Path(path)
    if p.is_dir():
        raise UsageError(f"--report-html {p}: is a directory, expected a file path")
    if not p.parent.is_dir():
        raise UsageError(f"--report-html {p}: folder {p.parent} does not exist")


def _write(path: str | os.PathLike, text: str) -> Path:
    from tensorsmith.errors import UsageError

    p = Path(path)
    check_path(p)
    data = text.encode("utf-8")
    if len(data) > MAX_BYTES:  # a table of every node of a huge model: keep the charts, say so
        raise UsageError(f"--report-html {p}: the page would be {len(data) / 2**20:.1f} MB (limit 8 MB)")
    from tensorsmith.recipes.cache import atomic_write_text

    atomic_write_text(p, text)
    return p


__all__ = ["check_path", "conversion_html", "write_conversion_page", "write_recipe_pages"]
