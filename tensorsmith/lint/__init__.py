"""Offline checks of an ONNX model against a deployment target; no GPU, no TensorRT.

``tensorsmith lint MODEL.onnx --for trt`` reports what TensorRT's ONNX parser and
builder are known to reject or to get wrong: operators the parser does not import
(per TensorRT version, from the table in ``trt_ops``), Q/DQ it refuses (non-zero
zero points, uint8, per-channel activations), FP16 overflow risks, dynamic inputs
without an optimization profile, and INT64/DOUBLE tensors TensorRT casts down.

Each finding names a rule, a severity (``error``: the parser or builder will fail;
``warning``: it builds but may be wrong or slow), the node and op, and one line of
text. ``LintReport.clean`` is what the exit code reflects (0 clean, 1 findings).
"""

from __future__ import annotations

from tensorsmith.lint.findings import Finding, LintReport

TARGETS = ("trt",)


def lint_file(path, *, target: str = "trt", **options) -> LintReport:
    """Lint an ONNX file for ``target`` (only ``"trt"`` today); see ``trt.lint_trt``."""
    from tensorsmith.errors import UsageError

    if target != "trt":
        raise UsageError(f"--for {target}: unknown lint target; known: {', '.join(TARGETS)}")
    from tensorsmith.lint.trt import lint_trt

    return lint_trt(path, **options)


def render(report: LintReport, console) -> None:
    """Findings as a Rich table (or one line when clean)."""
    from rich.markup import escape
    from rich.table import Table

    head = f"lint {escape(report.model)} for TensorRT {report.target_version} (precision {report.precision})"
    if report.clean:
        console.print(f"{head}: [green]clean[/green]")
    else:
        t = Table(title=head, title_justify="left", header_style="bold")
        t.add_column("severity")
        t.add_column("rule")
        t.add_column("node")
        t.add_column("op")
        t.add_column("message")
        for f in report.findings:
            sev = "[red]error[/red]" if f.severity == "error" else "[yellow]warning[/yellow]"
            t.add_row(sev, f.rule, escape(f.node or f.tensor or ""), escape(f.op or ""), escape(f.message))
        console.print(t)
        console.print(
            f"{len(report.errors)} error(s), {len(report.findings) - len(report.errors)} warning(s)"
        )
    for note in report.notes:
        console.print(f"[dim]note:[/dim] {escape(note)}")


__all__ = ["TARGETS", "Finding", "LintReport", "lint_file", "render"]
