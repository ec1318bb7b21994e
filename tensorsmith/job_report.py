"""The report of one optimize/convert job: its JSON (``to_dict``) and its Rich tables
(``render``: nodes, sizes, passes, verification, precision)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tensorsmith.passes.manager import PassRecord
from tensorsmith.units import human_bytes
from tensorsmith.verify import VerificationReport


@dataclass
class JobReport:
    """Everything one optimize/convert run measured; rendered as a table or JSON."""

    input: str
    output: str | None
    status: str = "ok"  # ok | failed | verification-failed
    source_format: str = "onnx"
    target: str = "onnx"
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    size_before: int = 0
    size_after: int = 0
    passes: list[PassRecord] = field(default_factory=list)
    iterations: int = 0
    verification: VerificationReport | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    precision: dict | None = None  # the precision step's report (fp16/int8), see tensorsmith.precision
    conversion: dict | None = None  # framework -> FP32 ONNX report, when a lowered model was converted first

    @property
    def nodes_before(self) -> int:
        return sum(self.ops_before.values())

    @property
    def nodes_after(self) -> int:
        return sum(self.ops_after.values())

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "files": self.files,
            "source_format": self.source_format,
            "target": self.target,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "ops_before": dict(sorted(self.ops_before.items())),
            "ops_after": dict(sorted(self.ops_after.items())),
            "size_before": self.size_before,
            "size_after": self.size_after,
            "iterations": self.iterations,
            "passes": [p.to_dict() for p in self.passes],
            "verification": self.verification.to_dict() if self.verification else None,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "notes": self.notes,
            "error": self.error,
            "precision": self.precision,
            **({"conversion": self.conversion} if self.conversion is not None else {}),
        }

    def render(self, console: Console, *, explain: bool = False) -> None:
        render_job(self, console, explain=explain)


def render_job(report: JobReport, console: Console, *, explain: bool = False) -> None:
    title = escape(f"{report.input} -> {report.output or '(not written)'}")
    summary = Table(title=title, title_justify="left", show_header=True, header_style="bold")
    summary.add_column("")
    summary.add_column("before", justify="right")
    summary.add_column("after", justify="right")
    summary.add_column("change", justify="right")
    summary.add_row(
        "nodes",
        str(report.nodes_before),
        str(report.nodes_after),
        _delta(report.nodes_before, report.nodes_after),
    )
    if report.size_before or report.size_after:
        summary.add_row(
            "file size",
            human_bytes(report.size_before),
            human_bytes(report.size_after),
            _delta(report.size_before, report.size_after, pct=True),
        )
    ops = sorted(set(report.ops_before) | set(report.ops_after))
    for op in ops:
        b, a = report.ops_before.get(op, 0), report.ops_after.get(op, 0)
        if a != b:
            summary.add_row(f"  {escape(op)}", str(b), str(a), _delta(b, a))
    console.print(summary)

    if report.passes:
        t = Table(show_header=True, header_style="bold", title="passes", title_justify="left")
        t.add_column("pass")
        t.add_column("changed")
        t.add_column("time", justify="right")
        t.add_column("what")
        for p in report.passes:
            what = ", ".join(f"{k}: {v}" for k, v in p.stats.items())
            t.add_row(p.name, "yes" if p.modified else "no", f"{p.seconds * 1000:.1f} ms", what)
        console.print(t)
        if explain:
            for p in report.passes:
                for note in p.notes:
                    console.print(f"  [dim]{p.name}[/dim] skipped {escape(note)}")

    vr = report.verification
    if vr is not None:
        t = Table(
            show_header=True,
            header_style="bold",
            title=f"verification ({vr.input_source} inputs, {vr.samples} sample(s), rtol {vr.tolerance.rtol:g}, atol {vr.tolerance.atol:g})",
            title_justify="left",
        )
        t.add_column("output")
        t.add_column("shape")
        t.add_column("max abs diff", justify="right")
        t.add_column("max rel diff", justify="right")
        t.add_column("result")
        for o in vr.outputs:
            t.add_row(
                escape(o.name),
                "x".join(map(str, o.shape)),
                f"{o.max_abs_diff:.3g}",
                f"{o.max_rel_diff:.3g}",
                "[green]pass[/green]" if o.passed else f"[red]FAIL[/red] {escape(o.reason)}",
            )
        console.print(t)
        for note in vr.notes:
            console.print(f"  [dim]input {escape(note)}[/dim]")
    elif report.status == "ok" and not getattr(report, "precision", None):
        console.print("[yellow]not verified (--no-verify)[/yellow]")
    if report.precision:  # fp16/int8: the accuracy gate replaces the fp32 check
        from tensorsmith.precision.render import render_precision

        render_precision(report.precision, console)
    for note in report.notes:
        console.print(f"  [dim]{escape(note)}[/dim]")


def _delta(before: int, after: int, pct: bool = False) -> str:
    d = after - before
    if d == 0:
        return ""
    if pct and before:
        return f"{100.0 * d / before:+.1f}%"
    return f"{d:+d}"
