"""Targets: what a job makes from its source (ONNX, a TensorRT engine, a TF-TRT SavedModel).

One module per target, each exposing ``TARGET``, an object implementing ``Target``;
``TARGETS`` lists them (name -> module, description), imported only when used.
Adding a target is one module and one line here (plus its options model in
``tensorsmith.config`` when it has options of its own): no ``if to == ...``
anywhere else.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel
from rich.console import Console

from tensorsmith.errors import UsageError

# name -> (module, what it writes)
TARGETS: dict[str, tuple[str, str]] = {
    "onnx": ("tensorsmith.convert.targets.onnx", "optimized, verified ONNX"),
    "trt": (
        "tensorsmith.convert.targets.trt",
        "TensorRT engine (.plan + .plan.json), verified vs onnxruntime",
    ),
    "tftrt": ("tensorsmith.convert.targets.tftrt", "TF-TRT SavedModel, verified vs TensorFlow"),
}
DEFAULT_TARGET = "onnx"

Step = Callable[[str], None]


@dataclass
class Job:
    """What a target's ``run`` needs: the source, its format, the target and its plan's kwargs."""

    source: str
    source_format: str | None
    to: str
    kwargs: dict


@runtime_checkable
class Report(Protocol):
    """What every job returns: one JSON object and a Rich rendering."""

    def to_dict(self) -> dict: ...

    def render(self, console: Console, *, explain: bool = False) -> None: ...


class Target(Protocol):
    """One target. ``Options``: its own options (a stage of ``tensorsmith.config.JobConfig``)."""

    name: str
    description: str
    extension: str  # what `{ext}` stands for in a recipe's output template
    writes_onnx: bool  # the output is an ONNX model (`tensorsmith optimize` makes it from ONNX)
    needs: tuple[str, ...]  # what it needs from the machine beyond the base install, for people
    Options: type[BaseModel] | None
    lowers_in_graph: bool  # --precision is lowered in the ONNX graph (with its progress bars)
    # writes an engine built ahead for one GPU type: a recipe target's `gpus` applies, and the
    # build (unless `prepare_only`) needs a GPU of its own
    builds_engine: bool
    libraries: tuple[str, ...]  # distributions whose versions go into a recipe job's cache key

    def applies(self, key: str, framework: bool) -> bool:
        """Whether option ``key`` means something for this target (from a framework source or not)."""
        ...

    def refusal(self, key: str) -> str | None:
        """Why an option that does not apply is refused, for the error (``None``: the generic words)."""
        ...

    def check_source(self, source_format: str | None) -> None:
        """``UsageError`` (an ``OptionError`` on ``to``) for a source this target cannot take."""
        ...

    def plan(self, opts: dict[str, Any], source_format: str | None) -> tuple[str, dict[str, Any]]:
        """(the library calls, for reports; their keyword arguments) from the job's options."""
        ...

    def check_output(self, source: str, out: Path) -> None:
        """Refuse an output that cannot be right, before any work (``UsageError``)."""
        ...

    def missing(self) -> list[str]:
        """What this machine lacks to run the target (empty: nothing)."""
        ...

    def capabilities(self, info: dict) -> dict[str, dict]:
        """``tensorsmith doctor``'s entries (``capability``) for this target, from ``doctor.collect``'s
        machine facts (``info``): whether this machine can produce it, at which precisions, why not."""
        ...

    def run(self, job: Job, out: Path, step: Step, progress=None, on_lint=None) -> Report:
        """Make ``job``'s output at ``out``; returns its report."""
        ...

    def main_output(self, report: Report, out: Path) -> Path:
        """The file a recipe installs last (its presence marks the job done)."""
        ...


def get_target(name: str) -> Target:
    """The target called ``name``; ``UsageError`` for an unknown one."""
    if name not in TARGETS:
        raise UsageError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    module = importlib.import_module(TARGETS[name][0])
    target: Target = module.TARGET
    return target


PRECISIONS = ("fp32", "fp16", "int8")  # what every target lowers to (``--precision``)


def capability(*whys: str | None, unavailable: dict[str, str] | None = None, note: str | None = None) -> dict:
    """One ``tensorsmith doctor`` target entry: available unless one of ``whys`` (reasons, ``None``
    for a check that passed) says why not; the precisions it can make (``PRECISIONS`` less
    ``unavailable``, precision -> why not; an extra name adds one)."""
    why = "; ".join(w for w in whys if w) or None
    unavailable = unavailable or {}
    names = sorted(set(PRECISIONS) | set(unavailable))
    out = {
        "available": why is None,
        "why_not": why,
        "precisions": [p for p in names if p not in unavailable] if why is None else [],
        "precisions_unavailable": dict(unavailable),
    }
    if note:
        out["note"] = note
    return out


class Rendered:
    """A report object from a backend, with the backend's renderer attached: ``to_dict()`` and ``render()``."""

    def __init__(self, report: Any, renderer: Callable[[Any, Console], None]):
        self.report = report
        self._renderer = renderer

    def to_dict(self) -> dict:
        data: dict = self.report.to_dict()
        return data

    def render(self, console: Console, *, explain: bool = False) -> None:
        self._renderer(self.report, console)


__all__ = [
    "DEFAULT_TARGET",
    "PRECISIONS",
    "TARGETS",
    "Job",
    "Rendered",
    "Report",
    "Target",
    "capability",
    "get_target",
]
