"""What a run tells people and CI: a live Rich display, a summary table, and three
report files: JSON (every job, every number), JUnit XML (one test case per job,
a failed job is a ``<failure>`` carrying its one-line reason) and Markdown (for a
CI job summary such as ``$GITHUB_STEP_SUMMARY``). Report files are written
atomically.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

from tensorsmith.recipes import cache
from tensorsmith.recipes.runner import STATUS_CACHED, STATUS_FAILED, STATUS_OK, Events, RunResult

REPORT_FORMAT = "tensorsmith-run-report/1"


# ---------------------------------------------------------------------------
# numbers


def _fmt_seconds(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return ""
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def _fmt_diff(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    return f"{v:.2e}"


def _bytes(n: Any) -> str:
    from tensorsmith.units import human_bytes

    return human_bytes(n) if isinstance(n, (int, float)) and n else ""


def job_numbers(record: dict) -> dict[str, Any]:
    """The few numbers a table row shows."""
    report = record.get("report") or {}
    ver = record.get("verification") or report.get("verification") or {}
    seconds = record.get("seconds") or {}
    precision = report.get("precision")
    if not isinstance(precision, dict):
        precision = {}
    gate = precision.get("gate") or {}
    latency = precision.get("latency") or {}
    return {
        "seconds": seconds.get("total"),
        "nodes_before": report.get("nodes_before"),
        "nodes_after": report.get("nodes_after"),
        "size_before": report.get("size_before"),
        "size_after": report.get("size_after"),
        "max_abs_diff": ver.get("max_abs_diff") if ver else None,
        "verified": (ver.get("passed") if ver else None),
        "cosine": gate.get("worst_cosine"),
        "speedup": latency.get("speedup"),
        "build_command": report.get("build_command"),
    }


def _check(n: dict) -> str:
    """One cell: the max abs difference (fp32) or the gate's worst cosine (fp16/int8)."""
    if n["cosine"] is not None:
        return f"cos {n['cosine']:.5f}"
    return _fmt_diff(n["max_abs_diff"])


def _note(record: dict, *, table: bool = False) -> str:
    status = record["status"]
    if status == STATUS_FAILED:
        return record.get("error") or "failed"
    if status == STATUS_CACHED:
        return "" if table else "unchanged since " + str(record.get("cached_from") or "an earlier run")
    if status == "would-run":
        return f"{record.get('why', '')} -> {record.get('output')}"
    if status == STATUS_OK and record.get("why"):
        return record["why"]
    return ""


# ---------------------------------------------------------------------------
# the live display


class RichEvents(Events):
    """A progress row per running job on stderr; one line per finished job."""

    STYLE: ClassVar[dict[str, tuple[str, str]]] = {
        STATUS_OK: ("ok", "green"),
        STATUS_CACHED: ("cached", "cyan"),
        STATUS_FAILED: ("FAILED", "red"),
    }

    def __init__(self, console: Console):
        self.console = console
        self.progress: Progress | None = None
        self.overall: TaskID | None = None
        self.tasks: dict[str, TaskID] = {}

    def start(self, total: int, to_run: int, workers: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        cached = total - to_run
        self.console.print(
            f"[bold]{total} job(s)[/bold]: {to_run} to run on {workers} worker(s)"
            + (f", {cached} already done" if cached else "")
        )
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.fields[job]}", style="bold"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.overall = self.progress.add_task("", total=total, job="all jobs")

    def job_started(self, job) -> None:
        if self.progress is not None:
            self.tasks[job.name] = self.progress.add_task("queued", total=None, job=job.name)

    def job_step(self, name: str, message: str) -> None:
        task = self.tasks.get(name)
        if self.progress is not None and task is not None:
            self.progress.update(task, description=escape(message))

    def job_finished(self, record: dict) -> None:
        name = record["name"]
        task = self.tasks.pop(name, None)
        if self.progress is not None:
            if task is not None:
                self.progress.remove_task(task)
            if self.overall is not None:
                self.progress.advance(self.overall)
        nums = job_numbers(record)
        bits = []
        if record["status"] != STATUS_CACHED and nums["seconds"] is not None:
            bits.append(_fmt_seconds(nums["seconds"]))
        if nums["nodes_before"] is not None and nums["nodes_after"] is not None:
            bits.append(f"nodes {nums['nodes_before']}->{nums['nodes_after']}")
        if nums["max_abs_diff"] is not None:
            bits.append(f"max diff {_fmt_diff(nums['max_abs_diff'])}")
        if nums["cosine"] is not None:
            bits.append(f"cosine {nums['cosine']:.5f}")
        if nums["speedup"] is not None:
            bits.append(f"speed-up {nums['speedup']:.2f}x")
        if record["status"] == STATUS_FAILED:
            bits.append(f"exit {record.get('exit_code')}: {record.get('error')}")
        word, style = self.STYLE.get(record["status"], (record["status"], ""))
        self.console.print(
            f"  [{style}]{word:<7}[/] {escape(name)}  {escape('  '.join(bits))}", soft_wrap=True
        )

    def note(self, text: str) -> None:
        self.console.print(f"  [yellow]note[/yellow] {escape(text)}")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def render_summary(result: RunResult, console: Console) -> None:
    """The table printed at the end of a run (or of a --dry-run)."""
    title = f"{result.recipe} -> {result.output_dir}"
    t = Table(title=escape(title), title_justify="left", header_style="bold")
    longest = max((len(r["name"]) for r in result.records), default=8)
    t.add_column("job", overflow="fold", min_width=min(longest, 22))
    t.add_column("status", no_wrap=True)
    t.add_column("time", justify="right", no_wrap=True)
    t.add_column("nodes", justify="right", no_wrap=True)
    t.add_column("check", justify="right", no_wrap=True)
    t.add_column("note", overflow="fold", min_width=10)
    style = {STATUS_OK: "green", STATUS_CACHED: "cyan", STATUS_FAILED: "red", "would-run": "yellow"}
    for r in result.records:
        n = job_numbers(r)
        nodes = f"{n['nodes_before']}->{n['nodes_after']}" if n["nodes_after"] is not None else ""
        status = r["status"] + (f" ({r.get('exit_code')})" if r["status"] == STATUS_FAILED else "")
        t.add_row(
            escape(r["name"]),
            f"[{style.get(r['status'], '')}]{status}[/]",
            "" if r["status"] == STATUS_CACHED else _fmt_seconds(n["seconds"]),
            nodes,
            _check(n),
            escape(_note(r, table=True)),
        )
    console.print(t)
    c = result.counts()
    parts = [f"{c[k]} {k}" for k in ("ok", "cached", "failed", "would-run") if c[k]]
    console.print(f"{c['total']} job(s): {', '.join(parts) or 'none'} in {result.seconds:.1f} s")


# ---------------------------------------------------------------------------
# report files


def to_json(result: RunResult) -> dict:
    from tensorsmith import __version__

    return {
        "format": REPORT_FORMAT,
        "tensorsmith": __version__,
        "recipe": result.recipe,
        "output_dir": result.output_dir,
        "manifest": str(Path(result.output_dir) / "tensorsmith-manifest.json"),
        "dry_run": result.dry_run,
        "started": result.started,
        "finished": result.finished,
        "seconds": round(result.seconds, 4),
        "workers": result.workers,
        "exit_code": result.exit_code,
        "counts": result.counts(),
        "jobs": result.records,
    }


def write_json(result: RunResult, path: str | os.PathLike) -> Path:
    path = _ready(path)
    cache.atomic_write_text(path, cache.dumps(to_json(result)))
    return path


def to_junit(result: RunResult) -> ET.Element:
    c = result.counts()
    suite_name = Path(result.recipe).stem
    root = ET.Element(
        "testsuites",
        name="tensorsmith",
        tests=str(c["total"]),
        failures=str(c["failed"]),
        errors="0",
        skipped=str(c["would-run"]),
        time=f"{result.seconds:.3f}",
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        name=suite_name,
        tests=str(c["total"]),
        failures=str(c["failed"]),
        errors="0",
        skipped=str(c["would-run"]),
        time=f"{result.seconds:.3f}",
        timestamp=result.started,
    )
    props = ET.SubElement(suite, "properties")
    for k, v in (("recipe", result.recipe), ("output_dir", result.output_dir)):
        ET.SubElement(props, "property", name=k, value=str(v))
    for r in result.records:
        n = job_numbers(r)
        seconds = 0.0 if r["status"] == STATUS_CACHED else float(n["seconds"] or 0.0)
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"tensorsmith.{suite_name}.{r.get('model', '')}",
            name=r["name"],
            time=f"{seconds:.3f}",
        )
        cprops = ET.SubElement(case, "properties")
        for k in ("status", "to", "precision", "output", "key"):
            if r.get(k) is not None:
                ET.SubElement(cprops, "property", name=k, value=str(r[k]))
        for k in ("max_abs_diff", "cosine", "speedup"):
            if n[k] is not None:
                ET.SubElement(cprops, "property", name=k, value=f"{n[k]:.6g}")
        if r["status"] == STATUS_FAILED:
            failure = ET.SubElement(
                case,
                "failure",
                message=str(r.get("error") or "failed"),
                type=str(r.get("error_type") or "Error"),
            )
            lines = [
                f"job {r['name']}: {r.get('error')}",
                f"exit code {r.get('exit_code')}",
                f"source: {r.get('source')}",
                f"defined at {r.get('where')}",
            ]
            for out in (r.get("verification") or {}).get("outputs") or []:
                lines.append(
                    f"output {out.get('name')}: max_abs_diff {out.get('max_abs_diff')} "
                    f"passed {out.get('passed')} {out.get('reason') or ''}".rstrip()
                )
            if r.get("traceback"):
                lines.append(r["traceback"])
            failure.text = "\n".join(lines)
        elif r["status"] == "would-run":
            ET.SubElement(case, "skipped", message=f"dry run: would run ({r.get('why', '')})")
        else:
            out = ET.SubElement(case, "system-out")
            out.text = f"{r['status']}: {r.get('output')}" + (
                f" (max abs diff {_fmt_diff(n['max_abs_diff'])})" if n["max_abs_diff"] is not None else ""
            )
    return root


def write_junit(result: RunResult, path: str | os.PathLike) -> Path:
    path = _ready(path)
    root = to_junit(result)
    ET.indent(root)
    text = '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
    cache.atomic_write_text(path, text)
    return path


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(result: RunResult) -> str:
    c = result.counts()
    icon = {STATUS_OK: "✅", STATUS_CACHED: "♻️", STATUS_FAILED: "❌", "would-run": "⏭️"}
    parts = [f"{c[k]} {k}" for k in ("ok", "cached", "failed", "would-run") if c[k]]
    out = [
        f"## tensorsmith run: `{Path(result.recipe).name}`",
        "",
        f"**{c['total']} job(s): {', '.join(parts) or 'none'}** in {result.seconds:.1f} s"
        + (f" on {result.workers} worker(s)" if result.workers else "")
        + f"; outputs in `{result.output_dir}`"
        + (" (dry run)" if result.dry_run else ""),
        "",
        "| | job | to | precision | time | nodes | size | max abs diff | cosine | speed-up | note |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result.records:
        n = job_numbers(r)
        nodes = f"{n['nodes_before']} → {n['nodes_after']}" if n["nodes_after"] is not None else ""
        size = f"{_bytes(n['size_before'])} → {_bytes(n['size_after'])}" if n["size_after"] else ""
        t = "" if r["status"] == STATUS_CACHED else _fmt_seconds(n["seconds"])
        out.append(
            f"| {icon.get(r['status'], '')} | `{_md(r['name'])}` | {_md(r.get('to', ''))} | {_md(r.get('precision', ''))} "
            f"| {t} | {nodes} | {size} | {_fmt_diff(n['max_abs_diff'])} "
            f"| {'' if n['cosine'] is None else format(n['cosine'], '.5f')} "
            f"| {'' if n['speedup'] is None else format(n['speedup'], '.2f') + 'x'} | {_md(_note(r))} |"
        )
    builds = [
        (r["name"], job_numbers(r)["build_command"])
        for r in result.records
        if job_numbers(r)["build_command"]
    ]
    if builds:
        out += ["", "### TensorRT engines to build on a GPU machine", "", "```"]
        out += [cmd for _, cmd in builds]
        out += ["```"]
    failed = [r for r in result.records if r["status"] == STATUS_FAILED]
    if failed:
        out += ["", "### Failures", ""]
        for r in failed:
            out.append(
                f"- **`{_md(r['name'])}`** (exit {r.get('exit_code')}, {r.get('error_type')}): {_md(r.get('error'))}"
            )
    return "\n".join(out) + "\n"


def write_markdown(result: RunResult, path: str | os.PathLike) -> Path:
    path = _ready(path)
    cache.atomic_write_text(path, to_markdown(result))
    return path


def _ready(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        from tensorsmith.errors import UsageError

        raise UsageError(f"{path}: is a directory, expected a report file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    cache.remove_stale_tmp(path)
    return path
