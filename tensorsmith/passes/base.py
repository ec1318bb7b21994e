"""What every graph pass is: a name, typed options, and an in-place ``call``.

Passes follow onnx_ir's pass contract (``requires`` -> ``call`` -> ``ensures``,
returning ``PassResult(model, modified)``). On top of it, tensorsmith passes:

* never change graph input/output names, dtypes or declared shapes (the manager checks);
* are idempotent: a second run reports ``modified=False``;
* do no file I/O;
* can say why they did not rewrite something (``self.explain(...)``), which
  ``tensorsmith optimize --explain`` prints.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_ir as ir
from pydantic import BaseModel, ConfigDict


class PassOptions(BaseModel):
    """Options of a pass; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Pass(ir.passes.InPlacePass):
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[PassOptions]] = PassOptions

    def __init__(self, options: PassOptions | dict | None = None):
        super().__init__()
        if options is None:
            options = self.Options()
        elif isinstance(options, dict):
            options = self.Options(**options)
        self.options = options
        self.notes: list[str] = []
        self.stats: dict[str, int] = {}

    def explain(self, node: ir.Node | None, reason: str) -> None:
        """Record why a candidate was left alone (bounded, for --explain)."""
        if len(self.notes) < 200:
            where = f"{node.op_type} {node.name!r}: " if node is not None else ""
            self.notes.append(where + reason)

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"


def release_unused_weights(model: ir.Model) -> None:
    """Unmap external weights nothing uses any more (folded or fused away).

    onnx_ir memory-maps external data lazily; a tensor a pass has read stays mapped
    (and counted in the process's resident memory) until released. Releasing the
    ones that became dead keeps a model with gigabytes of weights from holding its
    old and new weights at once.
    """
    for graph in [model.graph, *model.graph.subgraphs()]:
        for value in graph.initializers.values():
            if not value.uses() and not value.is_graph_output():
                release_tensor(value)


def release_tensor(value: ir.Value) -> None:
    """Unmap ``value``'s external data if it is memory-mapped (a no-op otherwise)."""
    release = getattr(value.const_value, "release", None)
    if release is not None:
        try:
            release()
        except BufferError:  # a numpy view is still alive; the GC will do it
            pass


def replace_value(old: ir.Value, new: ir.Value) -> None:
    """Rewire every use of ``old`` to ``new``, keeping the model's interface.

    When ``old`` is a graph output, ``new`` takes its place there with ``old``'s
    name, type and declared shape (the caller checks that ``new`` may be renamed:
    not a graph input, initializer or other output).
    """
    if old.is_graph_output():
        name, type_, shape = old.name, old.type, old.shape
        ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
        old.name = None
        new.name = name
        if type_ is not None:
            new.type = type_
        new.shape = shape
    else:
        ir.convenience.replace_all_uses_with(old, new)


def new_initializer(graph: ir.Graph, base: str, array: np.ndarray) -> ir.Value:
    """Register ``array`` as a new initializer named ``base`` (or ``base_N`` if taken)."""
    name, i = base, 0
    while name in graph.initializers:
        i += 1
        name = f"{base}_{i}"
    value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
    value.type = ir.TensorType(ir.DataType.from_numpy(array.dtype))
    value.shape = ir.Shape(array.shape)
    graph.register_initializer(value)
    return value


def graphs_of(model: ir.Model):
    """The main graph, every subgraph (If/Loop/Scan bodies) and every function."""
    yield model.graph
    yield from model.graph.subgraphs()
    for function in model.functions.values():
        yield function
        yield from function.subgraphs()
