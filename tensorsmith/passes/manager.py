"""Runs passes to a fixed point, timing each one; each pass guards the model's interface itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx_ir as ir

from tensorsmith.errors import ConversionError
from tensorsmith.passes.base import Pass


@dataclass
class PassRecord:
    """What one pass did over all iterations."""

    name: str
    modified: bool = False
    seconds: float = 0.0
    runs: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "modified": self.modified,
            "seconds": round(self.seconds, 6),
            "runs": self.runs,
            "stats": dict(self.stats),
        }


class PassManager:
    """Run ``passes`` in order, repeatedly, until none changes the model.

    ``max_iterations`` caps the loop (a pass pair that undoes each other's work
    cannot spin forever). A pass that raises fails the run with a
    ``ConversionError`` naming it. The interface guard (graph input/output names,
    dtypes and declared shapes unchanged) is every pass's own ``ensures``
    (``passes/base.py``), checked by onnx_ir's pass contract on each call.
    """

    def __init__(
        self,
        passes: list[Pass],
        *,
        max_iterations: int = 8,
        on_step: Callable[[str, int], None] | None = None,
    ):
        self.passes = passes
        self.max_iterations = max_iterations
        self.on_step = on_step
        self.iterations = 0

    def run(self, model: ir.Model) -> list[PassRecord]:
        records = {p.name: PassRecord(p.name) for p in self.passes}
        for iteration in range(self.max_iterations):
            self.iterations = iteration + 1
            changed = False
            for p in self.passes:
                if self.on_step is not None:
                    self.on_step(p.name, iteration)
                rec = records[p.name]
                start = time.perf_counter()
                try:
                    result = p(model)
                except ConversionError:
                    raise
                except Exception as exc:
                    msg = " ".join(str(exc).split())[:300] or type(exc).__name__
                    raise ConversionError(f"pass {p.name!r} failed: {msg}") from exc
                rec.seconds += time.perf_counter() - start
                rec.runs += 1
                if result.modified:
                    rec.modified = True
                    changed = True
            if not changed:
                break
        for p in self.passes:
            records[p.name].stats = dict(p.stats)
            records[p.name].notes = list(p.notes)
        return list(records.values())
