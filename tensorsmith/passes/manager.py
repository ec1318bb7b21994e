"""Runs passes to a fixed point, timing each one and guarding the model's interface."""

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


def _signature(values) -> list[tuple[str | None, object, object]]:
    return [(v.name, v.dtype, v.shape) for v in values]


def _shape_text(shape) -> str:
    return "?" if shape is None else "x".join(str(d) for d in shape)


class PassManager:
    """Run ``passes`` in order, repeatedly, until none changes the model.

    ``max_iterations`` caps the loop (a pass pair that undoes each other's work
    cannot spin forever). A pass that raises, or that changes a graph input's or
    output's name or dtype, fails the run with a ``ConversionError`` naming it.
    Declared shapes of graph inputs/outputs are part of the contract: a pass that
    refines one (shape inference turning ``batch`` into ``1``) has it put back.
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
        inputs_before = _signature(model.graph.inputs)
        outputs_before = _signature(model.graph.outputs)
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
                self._guard(model, p.name, inputs_before, outputs_before)
                if result.modified:
                    rec.modified = True
                    changed = True
            if not changed:
                break
        for p in self.passes:
            records[p.name].stats = dict(p.stats)
            records[p.name].notes = list(p.notes)
        return list(records.values())

    @staticmethod
    def _guard(model: ir.Model, name: str, inputs_before, outputs_before) -> None:
        for kind, values, before in (
            ("input", model.graph.inputs, inputs_before),
            ("output", model.graph.outputs, outputs_before),
        ):
            if len(values) != len(before):
                raise ConversionError(
                    f"pass {name!r} changed the number of graph {kind}s ({len(before)} -> {len(values)})"
                )
            for value, (old_name, old_dtype, old_shape) in zip(values, before, strict=False):
                if value.name != old_name:
                    raise ConversionError(
                        f"pass {name!r} renamed graph {kind} {old_name!r} to {value.name!r}"
                    )
                if old_dtype is not None and value.dtype != old_dtype:
                    raise ConversionError(
                        f"pass {name!r} changed the dtype of graph {kind} {old_name!r} "
                        f"({old_dtype} -> {value.dtype})"
                    )
                if value.shape != old_shape:
                    value.shape = old_shape
