"""A lint finding and the report of one lint run (``tensorsmith.lint`` re-exports both)."""

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
