"""The report of a TensorRT build: ``BuildReport`` (``--json``) and its rendering."""

from __future__ import annotations

from dataclasses import dataclass, field

from tensorsmith.convert.trt.api import NetworkMode
from tensorsmith.convert.trt.profiles import Profile
from tensorsmith.verify import VerificationReport


@dataclass
class ParserError:
    node: int | None
    name: str
    op: str
    code: str
    message: str

    def to_dict(self) -> dict:
        return {
            "node": self.node,
            "name": self.name,
            "op": self.op,
            "code": self.code,
            "message": self.message,
        }


@dataclass
class BuildReport:
    input: str
    output: str | None
    status: str = "ok"
    files: list[str] = field(default_factory=list)
    tensorrt_version: str | None = None
    gpu: dict | None = None
    profiles: dict[str, dict] = field(default_factory=dict)
    mode: NetworkMode | None = None
    source_sha256: str | None = None
    timing_cache: dict | None = None
    parser_errors: list[ParserError] = field(default_factory=list)
    lint: dict | None = None
    verification: VerificationReport | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    plan_bytes: int = 0
    error: str | None = None
    prepared_onnx: str | None = None
    build_command: str | None = None
    onnx: dict | None = None  # the report of the job that wrote the ready-to-build ONNX

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "files": self.files,
            "target": "trt",
            "tensorrt_version": self.tensorrt_version,
            "gpu": self.gpu,
            "profiles": self.profiles,
            "typing": None if self.mode is None else ("strong" if self.mode.strongly_typed else "weak"),
            "builder_flags": None if self.mode is None else self.mode.builder_flags,
            "precision": None if self.mode is None else self.mode.precision,
            "graph_precision": None if self.mode is None else self.mode.graph,
            "source_sha256": self.source_sha256,
            "plan_bytes": self.plan_bytes,
            "timing_cache": self.timing_cache,
            "parser_errors": [e.to_dict() for e in self.parser_errors],
            "lint": self.lint,
            "verification": self.verification.to_dict() if self.verification else None,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "notes": self.notes,
            "prepared_onnx": self.prepared_onnx,
            "onnx": self.onnx,
            "build_command": self.build_command,
            "error": self.error,
        }


def render(report: BuildReport, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(
        title=escape(f"{report.input} -> {report.output or '(not written)'}"),
        title_justify="left",
        show_header=False,
    )
    t.add_column(style="bold")
    t.add_column()
    mode = report.mode
    rows = [
        ("TensorRT", report.tensorrt_version),
        (
            "GPU",
            None
            if not report.gpu
            else f"{report.gpu.get('name')} (compute {report.gpu.get('compute_capability')})",
        ),
        (
            "precision",
            None
            if not mode
            else f"{mode.precision} (graph {mode.graph}; "
            f"{'strongly' if mode.strongly_typed else 'weakly'} typed"
            f"{'; flags ' + ', '.join(mode.builder_flags) if mode.builder_flags else ''})",
        ),
        (
            "profiles",
            "; ".join(
                f"{k} {Profile(v['min'], v['opt'], v['max']).text()}" for k, v in report.profiles.items()
            )
            or "static shapes",
        ),
        ("plan", f"{report.plan_bytes:,} B" if report.plan_bytes else None),
        (
            "timing cache",
            None
            if not report.timing_cache
            else f"{report.timing_cache['path']} ({report.timing_cache.get('loaded_bytes', 0):,} B in, "
            f"{report.timing_cache.get('written_bytes', 0):,} B out)",
        ),
        ("time", ", ".join(f"{k} {v:.2f} s" for k, v in report.seconds.items())),
    ]
    for k, v in rows:
        if v:
            t.add_row(k, escape(str(v)))
    console.print(t)
    vr = report.verification
    if vr is not None:
        vt = Table(
            title=f"verification vs onnxruntime ({vr.input_source}, {vr.samples} sample(s), "
            f"rtol {vr.tolerance.rtol:g}, atol {vr.tolerance.atol:g})",
            title_justify="left",
            header_style="bold",
        )
        vt.add_column("output")
        vt.add_column("max abs diff", justify="right")
        vt.add_column("max rel diff", justify="right")
        vt.add_column("ok")
        for o in vr.outputs:
            vt.add_row(
                escape(o.name),
                f"{o.max_abs_diff:.3g}",
                f"{o.max_rel_diff:.3g}",
                "[green]yes[/green]" if o.passed else f"[red]no[/red] {escape(o.reason)}",
            )
        console.print(vt)
    for n in report.notes:
        console.print(f"[dim]note:[/dim] {escape(n)}")
