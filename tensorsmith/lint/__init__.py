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

from dataclasses import dataclass, field


@dataclass
class Finding:
    rule: str
    severity: str  # "error" | "warning"
    message: str
    node: str | None = None
    op: str | None = None
    tensor: str | None = None

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "node": self.node,
            "op": self.op,
            "tensor": self.tensor,
        }


@dataclass
class LintReport:
    model: str
    target: str
    target_version: str
    precision: str  # what the checks assumed: fp32 | fp16 | int8 | ...
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profiles: dict[str, dict] = field(default_factory=dict)
    table: str = ""

    @property
    def clean(self) -> bool:
        return not self.findings

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.rule] = out.get(f.rule, 0) + 1
        return dict(sorted(out.items()))

    def to_dict(self) -> dict:
        return {
            "status": "clean" if self.clean else "findings",
            "model": self.model,
            "target": self.target,
            "target_version": self.target_version,
            "precision": self.precision,
            "errors": len(self.errors),
            "warnings": len(self.findings) - len(self.errors),
            "rules": self.counts(),
            "findings": [f.to_dict() for f in self.findings],
            "notes": self.notes,
            "profiles": self.profiles,
            "op_table": self.table,
        }


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
