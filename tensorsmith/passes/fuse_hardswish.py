"""fuse-hardswish: fold decomposed hard-swish / hard-sigmoid into HardSwish / HardSigmoid.

Exporters (Paddle -> ONNX, e.g. PP-OCR models) write hard-swish as four elementwise
nodes, ``Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6)``, and hard-sigmoid as
``Div(Clip(Add(x, 3), 0, 6), 6)``. Besides being slow, the decomposition quantizes
badly: an INT8 quantizer gives ``x + 3`` the full range of ``x`` and ``Clip(0, 6)``
then keeps only a few of its steps.

With ``h(x) = Clip(x + 3, 0, 6) / 6`` (also written ``* 1/6``, and an existing
``HardSigmoid(x)`` with ``alpha = 1/6, beta = 0.5``), matched:

* hard-swish: ``Mul(x, h(x))``, ``Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6)`` and
  ``Mul(Mul(x, Clip(Add(x, 3), 0, 6)), 1/6)``: becomes ``HardSwish(x)`` when the
  default-domain opset is >= 14, else ``Mul(x, HardSigmoid(x, 1/6, 0.5))``;
* a hard-sigmoid that is not part of a hard-swish: ``HardSigmoid(x, 1/6, 0.5)``.

Constants are float scalars (initializers or Constant nodes) within a relative
1e-6 (or equal to the target rounded to their own type, for float16); Add/Mul
operands in either order; Clip bounds as inputs (opset >= 11) or attributes.
Refused, with the reason recorded for ``--explain``: an intermediate value with
another consumer or that is a graph output; a HardSigmoid with other
alpha/beta (Paddle's ``alpha = 0.2`` is a different function); a dtype other than
float/float16 (onnxruntime has no double HardSigmoid/HardSwish kernel); a
size-1 constant of rank > 0 when the rank of ``x`` is unknown (it could broadcast).
A :class:`~tensorsmith.passes.base.RewritePass`: ``pattern`` finds the forms
above, ``check`` returns those reasons, ``rewrite`` emits the fused node(s).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from tensorsmith.passes.base import RewritePass, Site, const_array, is_op, replace_value

_SIXTH = 1.0 / 6.0
_RTOL = 1e-6
_DTYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16)


@dataclass
class _Match:
    """A matched pattern: ``nodes[0]`` is the final node; every other node's output
    is an intermediate value that must have exactly one use."""

    x: ir.Value
    nodes: list[ir.Node]
    consts: list[np.ndarray] = field(default_factory=list)
    hard_sigmoid: ir.Node | None = None  # an existing HardSigmoid(x) in the match
    kind: str = "hard-sigmoid"  # or "hard-swish"
    dtype: ir.DataType | None = None  # set by check


def _producer(value: ir.Value | None) -> ir.Node | None:
    return value.producer() if value is not None else None


def _near(value: ir.Value | None, target: float) -> np.ndarray | None:
    """The constant behind ``value`` if it is a float scalar close to ``target``."""
    c = const_array(value)
    if c is None or c.size != 1:
        return None
    try:
        if not ir.DataType.from_numpy(c.dtype).is_floating_point():
            return None
    except TypeError:
        return None
    v = float(c.reshape(-1)[0])
    if abs(v - target) <= _RTOL * abs(target) or v == float(np.asarray(target).astype(c.dtype)):
        return c
    return None


def _attr_float(node: ir.Node, name: str) -> float | None:
    attr = node.attributes.get(name)
    return None if attr is None else attr.as_float()


def _relu6_shift(value: ir.Value | None) -> _Match | None:
    """``Clip(Add(x, 3), 0, 6)`` producing ``value``."""
    clip = _producer(value)
    if not is_op(clip, "Clip") or not clip.inputs or clip.inputs[0] is None:
        return None
    consts: list[np.ndarray] = []
    if "min" in clip.attributes or "max" in clip.attributes:  # Clip-6 (opset < 11)
        lo, hi = _attr_float(clip, "min"), _attr_float(clip, "max")
        if lo != 0.0 or hi is None or abs(hi - 6.0) > _RTOL * 6.0:
            return None
    else:
        if len(clip.inputs) != 3:
            return None
        lo_c, hi_c = _near(clip.inputs[1], 0.0), _near(clip.inputs[2], 6.0)
        if lo_c is None or hi_c is None:
            return None
        consts += [lo_c, hi_c]
    add = _producer(clip.inputs[0])
    if not is_op(add, "Add") or len(add.inputs) != 2:
        return None
    for a, b in ((0, 1), (1, 0)):
        three, x = _near(add.inputs[b], 3.0), add.inputs[a]
        if three is not None and x is not None:
            return _Match(x, [clip, add], [*consts, three])
    return None


def _scaled(node: ir.Node) -> list[tuple[ir.Value, np.ndarray]]:
    """``(v, constant)`` for ``node = Div(v, 6)`` or ``Mul(v, 1/6)`` (either order)."""
    if len(node.inputs) != 2:
        return []
    v0, v1 = node.inputs
    if v0 is None or v1 is None:
        return []
    if is_op(node, "Div"):
        c = _near(v1, 6.0)
        return [] if c is None else [(v0, c)]
    if is_op(node, "Mul"):
        out = []
        for v, k in ((v0, v1), (v1, v0)):
            c = _near(k, _SIXTH)
            if c is not None:
                out.append((v, c))
        return out
    return []


def _hard_sigmoid_at(node: ir.Node) -> _Match | None:
    """``node`` computes h(x) = Clip(x + 3, 0, 6) / 6, decomposed."""
    for v, c in _scaled(node):
        inner = _relu6_shift(v)
        if inner is not None:
            return _Match(inner.x, [node, *inner.nodes], [*inner.consts, c])
    return None


def _hard_sigmoid_of(value: ir.Value | None) -> _Match | None:
    """``value`` is h(x), decomposed or an existing HardSigmoid (any alpha/beta: checked later)."""
    p = _producer(value)
    if is_op(p, "HardSigmoid"):
        if not p.inputs or p.inputs[0] is None:
            return None
        return _Match(p.inputs[0], [p], hard_sigmoid=p)
    return _hard_sigmoid_at(p) if p is not None else None


def _hard_swish_at(node: ir.Node) -> _Match | None:
    # Div(Mul(x, relu6(x + 3)), 6) and Mul(Mul(x, relu6(x + 3)), 1/6)
    for v, c in _scaled(node):
        m = _producer(v)
        if not is_op(m, "Mul") or len(m.inputs) != 2:
            continue
        for a, b in ((0, 1), (1, 0)):
            inner = _relu6_shift(m.inputs[b])
            if inner is not None and inner.x is m.inputs[a]:
                return _Match(inner.x, [node, m, *inner.nodes], [*inner.consts, c])
    # Mul(x, h(x))
    if is_op(node, "Mul") and len(node.inputs) == 2:
        for a, b in ((0, 1), (1, 0)):
            h = _hard_sigmoid_of(node.inputs[b])
            if h is not None and h.x is node.inputs[a]:
                return _Match(h.x, [node, *h.nodes], h.consts, h.hard_sigmoid)
    return None


def _is_standard(hs: ir.Node) -> bool:
    """HardSigmoid with alpha = 1/6 and beta = 0.5, i.e. Clip(x + 3, 0, 6) / 6."""
    alpha, beta = _attr_float(hs, "alpha"), _attr_float(hs, "beta")
    alpha = 0.2 if alpha is None else alpha  # the ONNX defaults
    beta = 0.5 if beta is None else beta
    return abs(alpha - _SIXTH) <= _RTOL * _SIXTH and beta == 0.5


class FuseHardSwish(RewritePass[_Match]):
    name = "fuse-hardswish"
    description = (
        "Fuse decomposed hard-swish / hard-sigmoid (Add, Clip, Mul, Div) into HardSwish or Mul+HardSigmoid."
    )
    anchors = ("Mul", "Div")
    reverse = True  # last node first: a hard-swish is matched whole before its hard-sigmoid part

    def pattern(self, site: Site, node: ir.Node) -> _Match | None:
        m = _hard_swish_at(node)
        if m is not None:
            hs = m.hard_sigmoid
            if hs is not None and _is_standard(hs) and site.opset < 14:
                return None  # already Mul(x, HardSigmoid(x)): the form wanted below opset 14
            m.kind = "hard-swish"
            return m
        return _hard_sigmoid_at(node)

    def check(self, site: Site, m: _Match) -> str | None:
        hs = m.hard_sigmoid
        if hs is not None and not _is_standard(hs):
            return (
                f"HardSigmoid {hs.name!r} has alpha/beta other than 1/6, 0.5 "
                "(a different function, not hard-swish)"
            )
        final = m.nodes[0]
        for n in m.nodes[1:]:
            v = n.outputs[0]
            if n.graph is not site.graph:
                return f"{n.op_type} {n.name!r} is in another graph"
            if v.is_graph_output() or len(v.uses()) != 1:
                return f"intermediate {n.op_type} output {v.name!r} has other consumers or is a graph output"
        dtypes = {ir.DataType.from_numpy(c.dtype) for c in m.consts}
        for v in (m.x, final.outputs[0]):
            if v.dtype is not None:
                dtypes.add(v.dtype)
        if len(dtypes) != 1:
            return (
                "the element type is unknown or inconsistent"
                if not dtypes
                else f"mixed element types {sorted(d.name for d in dtypes)}"
            )
        (dtype,) = dtypes
        if dtype not in _DTYPES:
            return (
                f"element type {dtype.name} (only FLOAT and FLOAT16: onnxruntime has no "
                "kernel for other HardSigmoid/HardSwish types)"
            )
        ndim = max((c.ndim for c in m.consts), default=0)
        if ndim and (m.x.shape is None or len(m.x.shape) < ndim):
            return (
                f"a size-1 constant of rank {ndim} could broadcast x (x's rank is "
                f"{'unknown' if m.x.shape is None else len(m.x.shape)})"
            )
        m.dtype = dtype
        return None

    def rewrite(self, site: Site, m: _Match) -> str:
        graph, dtype, kind = site.graph, m.dtype, m.kind
        assert dtype is not None
        final, x = m.nodes[0], m.x
        out = final.outputs[0]
        if kind == "hard-swish" and site.opset >= 14:
            new = [ir.Node("", "HardSwish", [x], num_outputs=1)]
            key = "hard-swish->HardSwish"
        else:
            hs = ir.Node(
                "",
                "HardSigmoid",
                [x],
                [ir.AttrFloat32("alpha", _SIXTH), ir.AttrFloat32("beta", 0.5)],
                num_outputs=1,
            )
            hs.outputs[0].type = ir.TensorType(dtype)
            hs.outputs[0].shape = x.shape.copy() if x.shape is not None else None
            new = [hs]
            key = "hard-sigmoid->HardSigmoid"
            if kind == "hard-swish":
                new.append(ir.Node("", "Mul", [x, hs.outputs[0]], num_outputs=1))
                key = "hard-swish->Mul(x, HardSigmoid)"
        result = new[-1].outputs[0]
        result.type = out.type or ir.TensorType(dtype)
        result.shape = out.shape
        graph.insert_before(final, new)
        replace_value(out, result)
        graph.remove(m.nodes, safe=True)
        return key
