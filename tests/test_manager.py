"""The pass manager: fixed point, iteration cap, interface guard, error naming."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from helpers import parse, to_ir

from tensorsmith import passes as passes_mod
from tensorsmith.errors import ConversionError, UsageError
from tensorsmith.passes.base import Pass
from tensorsmith.passes.manager import PassManager

MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 4] y) {
    a = Identity (x)
    b = Relu (a)
    d = Dropout (b, ratio)
    y = Identity (d)
}"""


def model():
    return to_ir(parse(MODEL, {"ratio": np.array(0.5, np.float32)}))


def test_runs_to_fixed_point_and_records_time():
    m = model()
    mgr = PassManager(passes_mod.create(list(passes_mod.DEFAULT_PIPELINE)))
    records = mgr.run(m)
    assert [n.op_type for n in m.graph] == ["Relu"]
    assert mgr.iterations == 2  # one round of changes, one round that confirms none
    by_name = {r.name: r for r in records}
    assert by_name["remove-dropout"].modified and by_name["remove-identity"].modified
    assert not by_name["fuse-conv-bn"].modified
    assert all(r.seconds >= 0 and r.runs == 2 for r in records)


class _Flipper(Pass):
    """Always claims a change: the cap must stop it."""

    name = "flipper"

    def call(self, model):
        return ir.passes.PassResult(model, modified=True)


def test_iteration_cap():
    mgr = PassManager([_Flipper()], max_iterations=3)
    mgr.run(model())
    assert mgr.iterations == 3


class _Renamer(Pass):
    name = "renamer"

    def call(self, model):
        model.graph.outputs[0].name = "renamed"
        return ir.passes.PassResult(model, modified=True)


class _Boom(Pass):
    name = "boom"

    def call(self, model):
        raise RuntimeError("kaput")


class _Retyper(Pass):
    name = "retyper"

    def call(self, model):
        model.graph.outputs[0].dtype = ir.DataType.FLOAT16
        return ir.passes.PassResult(model, modified=True)


class _Reshaper(Pass):
    name = "reshaper"

    def call(self, model):
        model.graph.outputs[0].shape = ir.Shape([1, 4])
        return ir.passes.PassResult(model, modified=False)


@pytest.mark.parametrize(
    "bad, words", [(_Renamer, "renamed graph output"), (_Boom, "kaput"), (_Retyper, "changed the dtype")]
)
def test_bad_pass_fails_naming_itself(bad, words):
    with pytest.raises(ConversionError, match=f"pass '{bad.name}'.*{words}"):
        PassManager([bad()]).run(model())


def test_declared_output_shape_is_restored():
    m = model()
    before = m.graph.outputs[0].shape
    PassManager([_Reshaper()]).run(m)
    assert m.graph.outputs[0].shape == before
    assert str(m.graph.outputs[0].shape[0]) == "N"


def test_resolve_rejects_unknown_names():
    with pytest.raises(UsageError, match="unknown pass 'nope'"):
        passes_mod.resolve(["nope"])
    with pytest.raises(UsageError, match="unknown pass 'nah'"):
        passes_mod.resolve(None, ["nah"])
    assert passes_mod.resolve(None, ["fold-constants"]) == [
        n for n in passes_mod.DEFAULT_PIPELINE if n != "fold-constants"
    ]


def test_typed_options_reject_unknown_keys():
    with pytest.raises(UsageError, match="bad options"):
        passes_mod.create(["fold-constants"], {"fold-constants": {"no_such_option": 1}})
    (p,) = passes_mod.create(["fold-constants"], {"fold-constants": {"max_growth_elements": 10}})
    assert p.options.max_growth_elements == 10


def test_every_pass_has_name_and_description():
    for name, cls in passes_mod.PASSES.items():
        assert cls.name == name and cls.description and not cls.description.endswith("\n")
