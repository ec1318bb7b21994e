"""The pass contract of passes/base.py: the interface guard as ``ensures``, and RewritePass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import pytest
from helpers import assert_same_outputs, parse, to_ir, to_proto

from tensorsmith.errors import ConversionError
from tensorsmith.passes.base import InterfaceChanged, Pass, RewritePass, Site, replace_value

MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 4] y) {
    a = Relu (x)
    b = Relu (a)
    c = Neg (b)
    y = Neg (c)
}"""


class _Renamer(Pass):
    name = "renamer"

    def call(self, model):
        model.graph.outputs[0].name = "renamed"
        return ir.passes.PassResult(model, modified=True)


class _Dropper(Pass):
    name = "dropper"

    def call(self, model):
        model.graph.outputs.pop()
        return ir.passes.PassResult(model, modified=True)


class _Reshaper(Pass):
    name = "reshaper"

    def call(self, model):
        model.graph.outputs[0].shape = ir.Shape([1, 4])
        return ir.passes.PassResult(model, modified=True)


@pytest.mark.parametrize(
    "bad, words",
    [
        (_Renamer, "renamed graph output 'y' to 'renamed'"),
        (_Dropper, "changed the number of graph outputs \\(1 -> 0\\)"),
    ],
)
def test_interface_guard_is_the_pass_ensures_without_a_manager(bad, words):
    with pytest.raises(InterfaceChanged, match=f"pass '{bad.name}' {words}") as info:
        bad()(to_ir(parse(MODEL)))
    # one of tensorsmith's conversion errors (exit 3) and onnx_ir's postcondition error
    assert isinstance(info.value, ConversionError) and info.value.exit_code == 3
    assert isinstance(info.value, ir.passes.PostconditionError)


def test_ensures_puts_a_declared_shape_back_without_a_manager():
    m = to_ir(parse(MODEL))
    _Reshaper()(m)
    assert str(m.graph.outputs[0].shape[0]) == "N"


@dataclass
class _Pair:
    first: ir.Node
    second: ir.Node


class _DoubleToOne(RewritePass[_Pair]):
    """Op(Op(x)) -> Op(x) for Relu (idempotent); Neg pairs are refused with a reason."""

    name = "double-to-one"
    anchors = ("Relu", "Neg")

    def pattern(self, site: Site, node: ir.Node) -> _Pair | None:
        inner = node.inputs[0].producer() if node.inputs[0] is not None else None
        if inner is None or inner.op_type != node.op_type:
            return None
        return _Pair(inner, node)

    def check(self, site: Site, m: _Pair) -> str | None:
        if m.second.op_type == "Neg":
            return "Neg(Neg(x)) is x, but this rule only folds Relu"
        return None

    def rewrite(self, site: Site, m: _Pair) -> str:
        replace_value(m.second.outputs[0], m.first.outputs[0])
        site.graph.remove(m.second, safe=True)
        return "Relu(Relu)->Relu"


def test_rewrite_pass_pattern_check_rewrite():
    proto = parse(MODEL)
    m = to_ir(proto)
    p = _DoubleToOne()
    assert p(m).modified
    assert [n.op_type for n in m.graph] == ["Relu", "Neg", "Neg"]
    assert p.stats == {"Relu(Relu)->Relu": 1}
    # the check's reason is recorded against the anchor node, for --explain
    assert len(p.notes) == 1 and p.notes[0].startswith("Neg ") and "only folds Relu" in p.notes[0]
    assert_same_outputs(proto, to_proto(m), {"x": np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)})
    assert not _DoubleToOne()(m).modified  # idempotent
