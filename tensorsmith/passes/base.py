"""What every graph pass is: a name, typed options, and an in-place ``call``.

Passes follow onnx_ir's pass contract (``requires`` -> ``call`` -> ``ensures``,
returning ``PassResult(model, modified)``). On top of it, tensorsmith passes:

* never change graph input/output names, dtypes or declared shapes: that is every
  pass's ``ensures`` (:meth:`Pass.ensures`, against what :meth:`Pass.requires`
  recorded), so it holds however the pass is run, with or without the manager;
* are idempotent: a second run reports ``modified=False``;
* do no file I/O;
* can say why they did not rewrite something (``self.explain(...)``), which
  ``tensorsmith optimize --explain`` prints.

Rewrite passes (fuse-conv-bn, fuse-conv-affine, fuse-hardswish) are
:class:`RewritePass`: ``pattern`` (what a candidate looks like, anchored on one
node) -> ``check`` (the reason a candidate is left alone, or ``None``) ->
``rewrite``, the shape of onnxscript's rewrite rules
(``onnxscript/rewriter/rules/common/_fuse_batchnorm.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Generic, TypeGuard, TypeVar

import numpy as np
import onnx_ir as ir
from pydantic import BaseModel, ConfigDict

from tensorsmith.errors import ConversionError


def low_precision_reason(weight: np.ndarray, opts: PassOptions, what: str) -> str | None:
    """Why a fold into ``weight`` is refused: its dtype is narrower than float32, so the
    folded weights take one more rounding per layer, which the unfused graph (computing
    the scale separately) does not have. ``fold_low_precision`` allows it."""
    if weight.dtype.itemsize >= 4 or getattr(opts, "fold_low_precision", False):
        return None
    return (
        f"{what} weight is {weight.dtype}: folding into it adds a {weight.dtype} rounding per layer "
        "that the unfused graph does not have (option fold_low_precision=true folds anyway)"
    )


class PassOptions(BaseModel):
    """Options of a pass; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LowPrecisionOptions(PassOptions):
    """For passes that fold constants into existing weights."""

    fold_low_precision: bool = False
    """Fold into float16/bfloat16 weights too (one more rounding per layer)."""


class InterfaceChanged(ConversionError, ir.passes.PostconditionError):
    """A pass changed the number, a name or a dtype of the graph's inputs or outputs.

    A ``ConversionError`` (exit 3) and onnx_ir's ``PostconditionError``, so the pass
    infrastructure passes it through unwrapped.
    """


# (name, dtype, declared shape) of each graph input, then of each graph output
Interface = tuple[list[tuple[str | None, object, object]], list[tuple[str | None, object, object]]]


def interface_of(model: ir.Model) -> Interface:
    return (
        [(v.name, v.dtype, v.shape) for v in model.graph.inputs],
        [(v.name, v.dtype, v.shape) for v in model.graph.outputs],
    )


def check_interface(model: ir.Model, name: str, before: Interface) -> None:
    """Raise :class:`InterfaceChanged` naming pass ``name`` if the interface changed.

    Declared shapes are put back rather than refused: a pass that refines one
    (shape inference turning ``batch`` into ``1``) must not narrow what callers may feed.
    """
    for kind, values, old in (
        ("input", model.graph.inputs, before[0]),
        ("output", model.graph.outputs, before[1]),
    ):
        if len(values) != len(old):
            raise InterfaceChanged(
                f"pass {name!r} changed the number of graph {kind}s ({len(old)} -> {len(values)})"
            )
        for value, (old_name, old_dtype, old_shape) in zip(values, old, strict=True):
            if value.name != old_name:
                raise InterfaceChanged(f"pass {name!r} renamed graph {kind} {old_name!r} to {value.name!r}")
            if old_dtype is not None and value.dtype != old_dtype:
                raise InterfaceChanged(
                    f"pass {name!r} changed the dtype of graph {kind} {old_name!r} ({old_dtype} -> {value.dtype})"
                )
            if value.shape != old_shape:
                value.shape = old_shape  # type: ignore[assignment]


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
        self._interface: Interface | None = None

    def requires(self, model: ir.Model) -> None:
        """Record the graph interface that :meth:`ensures` holds the pass to."""
        self._interface = interface_of(model)

    def ensures(self, model: ir.Model) -> None:
        """Graph input/output names, dtypes and declared shapes are what they were."""
        if self._interface is not None:
            before, self._interface = self._interface, None
            check_interface(model, self.name, before)

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


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The constant behind ``value`` (initializer or Constant node) as numpy, else ``None``."""
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def drop_weight(graph: ir.Graph, value: ir.Value) -> None:
    """Remove a weight nothing uses any more and let go of its data.

    Unmapped now rather than by dead-code removal at the end: a weight may be a
    view into memory-mapped external data (a folded Transpose of it), and gigabytes
    of old weights must not stay resident beside the new ones.
    """
    if value.is_graph_input() or value.is_graph_output() or not value.is_initializer():
        return
    if value.name is not None and graph.initializers.get(value.name) is value:
        del graph.initializers[value.name]
    release_tensor(value)
    value.const_value = None


def is_op(node: ir.Node | None, op_type: str) -> TypeGuard[ir.Node]:
    """``node`` is ``op_type`` of the default ONNX domain."""
    return node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx")


def default_opset(model: ir.Model, graph: ir.Graph | ir.Function) -> int:
    """The default-domain opset ``graph`` (or function) is written against."""
    for imports in (graph.opset_imports, model.opset_imports):
        for domain in ("", "ai.onnx"):
            if domain in imports:
                return imports[domain]
    return 1


@dataclass
class Site:
    """Where a rewrite pass looks: the model, one graph (a function's body for a
    function) and the default-domain opset that graph is written against."""

    model: ir.Model
    graph: ir.Graph
    opset: int


MatchT = TypeVar("MatchT")


class RewritePass(Pass, Generic[MatchT]):
    """A rewrite rule as a pass: ``pattern`` -> ``check`` -> ``rewrite``.

    For every node whose op (default domain) is in ``anchors``, in graph order
    (``reverse``: last first, so a larger pattern is matched whole before a part
    of it), ``pattern`` returns a match or ``None`` (not a candidate); ``check``
    returns why the candidate is left alone (recorded for ``--explain``) or
    ``None``; ``rewrite`` changes the graph and returns what it did (the stats key).
    Nodes removed by an earlier rewrite in the same run are skipped.
    """

    anchors: ClassVar[tuple[str, ...]] = ()
    reverse: ClassVar[bool] = False
    # functions hold no initializers: a rewrite that makes new weights stays out of them
    in_functions: ClassVar[bool] = True

    def pattern(self, site: Site, node: ir.Node) -> MatchT | None:
        raise NotImplementedError

    def check(self, site: Site, match: MatchT) -> str | None:
        return None

    def rewrite(self, site: Site, match: MatchT) -> str:
        raise NotImplementedError

    def finish(self, model: ir.Model) -> None:
        """Called once after a run that rewrote something."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for scope in list(graphs_of(model)):
            if isinstance(scope, ir.Function):
                if not self.in_functions:
                    continue
                body = scope.graph
            else:
                body = scope
            site = Site(model, body, default_opset(model, scope))
            nodes = list(body)
            for node in reversed(nodes) if self.reverse else nodes:
                if node.graph is not body or node.op_type not in self.anchors:
                    continue
                if node.domain not in ("", "ai.onnx"):
                    continue
                match = self.pattern(site, node)
                if match is None:
                    continue
                reason = self.check(site, match)
                if reason is not None:
                    self.explain(node, reason)
                    continue
                self.count(self.rewrite(site, match))
                modified = True
        if modified:
            self.finish(model)
        return ir.passes.PassResult(model, modified=modified)
