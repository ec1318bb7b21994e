"""fuse-hardswish: decomposed hard-swish / hard-sigmoid fused into HardSwish / HardSigmoid."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import apply, assert_interface_kept, check_idempotent, optimize_thirdparty, run
from onnx import TensorProto, helper, numpy_helper

from tensorsmith import passes as passes_mod

PASS = "fuse-hardswish"
_TP = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16, np.float64: TensorProto.DOUBLE}

# hard-swish forms (x * relu6(x + 3) / 6) and hard-sigmoid forms (relu6(x + 3) / 6)
SWISH = ["div(mul(x,clip),6)", "mul(mul(x,clip),1/6)", "mul(x,div(clip,6))", "mul(x,mul(clip,1/6))"]
SIGMOID = ["div(clip,6)", "mul(clip,1/6)"]


def feeds(dtype=np.float32, shape=(6, 40)):
    """Values spanning [-8, 8], including the kinks at -3 and 3 and the interval inside."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-8, 8, shape)
    x.flat[:7] = [-8, -3, -1.5, 0, 1.5, 3, 8]
    return {"x": x.astype(dtype)}


class _Builder:
    """A tiny graph builder: constants as initializers or Constant nodes, Add/Mul
    operands in either order, Clip bounds as inputs or (opset < 11) attributes."""

    def __init__(self, opset, dtype, const, swap):
        self.opset, self.dtype, self.const, self.swap = opset, dtype, const, swap
        self.nodes, self.inits, self.n = [], [], 0

    def c(self, value, shape=()):
        self.n += 1
        name = f"k{self.n}"
        arr = np.full(shape, value, self.dtype)
        if self.const == "init":
            self.inits.append(numpy_helper.from_array(arr, name))
        else:
            self.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr)))
        return name

    def op(self, op_type, a, b=None, out=None, **attrs):
        self.n += 1
        out = out or f"t{self.n}"
        ins = [a] if b is None else ([b, a] if self.swap and op_type in ("Add", "Mul") else [a, b])
        self.nodes.append(helper.make_node(op_type, ins, [out], **attrs))
        return out

    def relu6_shift(self, x, shape=()):
        a = self.op("Add", x, self.c(3.0, shape))
        if self.opset < 11:
            return self.op("Clip", a, min=0.0, max=6.0)
        self.n += 1
        clip = f"t{self.n}"
        self.nodes.append(helper.make_node("Clip", [a, self.c(0.0), self.c(6.0)], [clip]))
        return clip

    def form(self, form, x="x", out="y", shape=()):
        if form == "mul(x,hardsigmoid)":
            return self.op("Mul", x, self.op("HardSigmoid", x, alpha=1 / 6, beta=0.5), out=out)
        r = self.relu6_shift(x, shape)
        sixth = lambda v, o=None: self.op("Mul", v, self.c(1 / 6, shape), out=o)  # noqa: E731
        div6 = lambda v, o=None: self.op("Div", v, self.c(6.0, shape), out=o)  # noqa: E731
        return {
            "div(mul(x,clip),6)": lambda: div6(self.op("Mul", x, r), out),
            "mul(mul(x,clip),1/6)": lambda: sixth(self.op("Mul", x, r), out),
            "mul(x,div(clip,6))": lambda: self.op("Mul", x, div6(r), out=out),
            "mul(x,mul(clip,1/6))": lambda: self.op("Mul", x, sixth(r), out=out),
            "div(clip,6)": lambda: div6(r, out),
            "mul(clip,1/6)": lambda: sixth(r, out),
        }[form]()

    def model(self, outputs=("y",), x_shape=("N", 40), out_shape=("N", 40)):
        t = _TP[self.dtype]
        graph = helper.make_graph(
            self.nodes,
            "g",
            [helper.make_tensor_value_info("x", t, list(x_shape))],
            [helper.make_tensor_value_info(o, t, out_shape) for o in outputs],
            self.inits,
        )
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        proto.ir_version = 8 if self.opset > 10 else 5
        onnx.checker.check_model(proto)
        return proto


def build(form, opset=17, dtype=np.float32, const="init", swap=False, shape=()):
    b = _Builder(opset, dtype, const, swap)
    b.form(form, shape=shape)
    return b.model(out_shape=(1,) * (len(shape) - 2) + ("N", 40))


def compute_ops(proto):
    return [n.op_type for n in proto.graph.node if n.op_type != "Constant"]


def assert_close(src, out, x=None, atol=1e-5):
    x = feeds() if x is None else x
    for a, b in zip(run(src, x), run(out, x), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(b.astype(np.float64), a.astype(np.float64), rtol=0, atol=atol)


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("form", SWISH)
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("const", ["init", "node"])
def test_hard_swish_fused(form, opset, swap, const):
    src = build(form, opset, const=const, swap=swap)
    out, (p, _), modified = apply(src, PASS, "remove-dead-code")
    assert modified
    if opset >= 14:
        assert compute_ops(out) == ["HardSwish"]
        assert p.stats == {"hard-swish->HardSwish": 1}
    else:
        assert compute_ops(out) == ["HardSigmoid", "Mul"]
        assert p.stats == {"hard-swish->Mul(x, HardSigmoid)": 1}
        hs = out.graph.node[-2] if out.graph.node[-1].op_type == "Mul" else out.graph.node[-1]
        attrs = {a.name: a.f for a in hs.attribute}
        assert attrs["alpha"] == pytest.approx(1 / 6, rel=1e-7) and attrs["beta"] == 0.5
        assert list(out.graph.node[-1].input) == ["x", hs.output[0]]
    onnx.checker.check_model(out, full_check=True)
    assert_interface_kept(src, out)
    assert_close(src, out)
    check_idempotent(src, PASS)


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("form", SIGMOID)
@pytest.mark.parametrize("swap", [False, True])
def test_hard_sigmoid_fused(form, opset, swap):
    src = build(form, opset, const="node", swap=swap)
    out, (p, _), modified = apply(src, PASS, "remove-dead-code")
    assert modified and compute_ops(out) == ["HardSigmoid"]
    assert p.stats == {"hard-sigmoid->HardSigmoid": 1}
    onnx.checker.check_model(out, full_check=True)
    assert_interface_kept(src, out)
    assert_close(src, out)
    check_idempotent(src, PASS)


@pytest.mark.parametrize("form", SWISH + SIGMOID)
def test_clip_attributes_opset10(form):
    src = build(form, opset=10, swap=True)
    assert any(a.name == "min" for n in src.graph.node if n.op_type == "Clip" for a in n.attribute)
    out, (p, _), modified = apply(src, PASS, "remove-dead-code")
    assert modified
    assert compute_ops(out) == (["HardSigmoid"] if form in SIGMOID else ["HardSigmoid", "Mul"])
    assert_close(src, out)
    check_idempotent(src, PASS)


def test_existing_hardsigmoid_becomes_hardswish_at_opset14_only():
    src = build("mul(x,hardsigmoid)", opset=14)
    out, (p,), modified = apply(src, PASS)
    assert modified and compute_ops(out) == ["HardSwish"]
    assert_close(src, out)
    check_idempotent(src, PASS)
    # below opset 14 Mul(x, HardSigmoid(x)) already is the target form
    src = build("mul(x,hardsigmoid)", opset=13, swap=True)
    out, (p,), modified = apply(src, PASS)
    assert not modified and compute_ops(out) == ["HardSigmoid", "Mul"] and not p.notes


def test_other_hardsigmoid_alpha_is_not_hardswish():
    # Paddle's hardsigmoid: alpha=0.2, beta=0.5 is a different function
    b = _Builder(17, np.float32, "init", False)
    b.op("Mul", "x", b.op("HardSigmoid", "x", alpha=0.2, beta=0.5), out="y")
    src = b.model()
    out, (p,), modified = apply(src, PASS)
    assert not modified and compute_ops(out) == ["HardSigmoid", "Mul"]
    assert any("alpha/beta" in n for n in p.notes)


def test_hardsigmoid_of_another_value_is_not_hardswish():
    b = _Builder(17, np.float32, "init", False)
    z = b.op("Relu", "x")
    b.op("Mul", "x", b.op("HardSigmoid", z, alpha=1 / 6, beta=0.5), out="y")
    src = b.model()
    out, _, modified = apply(src, PASS)
    assert not modified and compute_ops(out) == ["Relu", "HardSigmoid", "Mul"]


def test_shared_intermediate_is_not_fused():
    # the Add output feeds the Clip and a second consumer
    b = _Builder(17, np.float32, "init", False)
    b.form("div(mul(x,clip),6)")
    add = next(n for n in b.nodes if n.op_type == "Add")
    b.op("Relu", add.output[0], out="z")
    src = b.model(outputs=("y", "z"))
    out, (p,), modified = apply(src, PASS)
    assert not modified
    assert compute_ops(out) == compute_ops(src)
    assert any("other consumers" in n for n in p.notes)
    assert_close(src, out)


def test_intermediate_graph_output_is_not_fused():
    b = _Builder(13, np.float32, "init", False)
    b.form("mul(x,div(clip,6))")
    clip = next(n for n in b.nodes if n.op_type == "Clip")
    src = b.model(outputs=("y", clip.output[0]))
    out, (p,), modified = apply(src, PASS)
    assert not modified and "Clip" in compute_ops(out)
    assert any("graph output" in n for n in p.notes)


def test_hard_sigmoid_with_shared_output_still_fuses_alone():
    # h(x) feeds the hard-swish Mul and another consumer: the hard-swish cannot be
    # fused, but h(x) itself becomes a HardSigmoid
    b = _Builder(17, np.float32, "init", False)
    b.form("mul(x,div(clip,6))")
    div = next(n for n in b.nodes if n.op_type == "Div")
    b.op("Neg", div.output[0], out="z")
    src = b.model(outputs=("y", "z"))
    out, (p, _), modified = apply(src, PASS, "remove-dead-code")
    assert modified and compute_ops(out) == ["HardSigmoid", "Mul", "Neg"]
    assert p.stats == {"hard-sigmoid->HardSigmoid": 1}
    assert_close(src, out)
    check_idempotent(src, PASS)


@pytest.mark.parametrize(
    "name, three, lo, hi, six",
    [
        ("add 2", 2.0, 0.0, 6.0, 6.0),
        ("clip max 5", 3.0, 0.0, 5.0, 6.0),
        ("clip min -1", 3.0, -1.0, 6.0, 6.0),
        ("div 5", 3.0, 0.0, 6.0, 5.0),
        ("almost 3", 3.0 * (1 + 1e-4), 0.0, 6.0, 6.0),
    ],
)
def test_other_constants_are_left_alone(name, three, lo, hi, six):
    inits = {
        n: numpy_helper.from_array(np.array(v, np.float32), n)
        for n, v in (("a", three), ("lo", lo), ("hi", hi), ("d", six))
    }
    g = helper.make_graph(
        [
            helper.make_node("Add", ["x", "a"], ["t"]),
            helper.make_node("Clip", ["t", "lo", "hi"], ["c"]),
            helper.make_node("Mul", ["x", "c"], ["m"]),
            helper.make_node("Div", ["m", "d"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        list(inits.values()),
    )
    src = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    src.ir_version = 8
    _, _, modified = apply(src, PASS)
    assert not modified, name


@pytest.mark.parametrize("lo, hi", [(-1.0, 6.0), (0.0, 5.0), (None, 6.0)])
def test_other_clip_attributes_are_left_alone(lo, hi):
    b = _Builder(10, np.float32, "init", False)
    bounds = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
    c = b.op("Clip", b.op("Add", "x", b.c(3.0)), **bounds)
    b.op("Div", b.op("Mul", "x", c), b.c(6.0), out="y")
    _, _, modified = apply(b.model(), PASS)
    assert not modified


def test_relu6_of_another_value_is_not_hardswish():
    # z * relu6(x + 3) / 6 with z != x
    b = _Builder(17, np.float32, "init", False)
    z = b.op("Neg", "x")
    b.op("Div", b.op("Mul", z, b.relu6_shift("x")), b.c(6.0), out="y")
    src = b.model()
    out, (p,), modified = apply(src, PASS)
    assert not modified and compute_ops(out) == compute_ops(src)


def test_graph_output_name_kept():
    # the final Div is a graph output that also feeds another node
    b = _Builder(13, np.float32, "init", False)
    b.form("div(mul(x,clip),6)", out="hswish_out")
    b.op("Neg", "hswish_out", out="z")
    src = b.model(outputs=("hswish_out", "z"))
    out, _, modified = apply(src, PASS, "remove-dead-code")
    assert modified and compute_ops(out) == ["HardSigmoid", "Mul", "Neg"]
    assert [o.name for o in out.graph.output] == ["hswish_out", "z"]
    assert out.graph.node[1].output[0] == "hswish_out" and out.graph.node[2].input[0] == "hswish_out"
    assert_interface_kept(src, out)
    assert_close(src, out)


def test_float16():
    src = build("div(mul(x,clip),6)", 17, dtype=np.float16, const="node")
    out, _, modified = apply(src, PASS, "remove-dead-code")
    assert modified and compute_ops(out) == ["HardSwish"]
    assert out.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    # float16 rounds differently in the two forms: 1e-2 at |y| <= 8 is a few ulps
    assert_close(src, out, feeds(np.float16), atol=1e-2)
    src = build("mul(clip,1/6)", 13, dtype=np.float16)
    out, _, modified = apply(src, PASS, "remove-dead-code")
    assert modified and compute_ops(out) == ["HardSigmoid"]
    assert_close(src, out, feeds(np.float16), atol=2e-3)


def test_double_is_left_alone():
    # onnxruntime has no double HardSigmoid/HardSwish kernel: fusing would make the
    # model unloadable there
    src = build("div(mul(x,clip),6)", 17, dtype=np.float64)
    out, (p,), modified = apply(src, PASS)
    assert not modified and any("DOUBLE" in n for n in p.notes)
    run(out, feeds(np.float64))


def test_rank_growing_constant_is_left_alone():
    # a [1, 1, 1] constant broadcasts a rank-2 x to rank 3: the fusion would change the shape
    src = build("div(mul(x,clip),6)", 17, shape=(1, 1, 1))
    out, (p,), modified = apply(src, PASS)
    assert not modified and any("could broadcast" in n for n in p.notes)
    # a [1, 1] constant does not
    src = build("div(mul(x,clip),6)", 17, shape=(1, 1))
    out, _, modified = apply(src, PASS)
    assert modified
    assert_close(src, out)


def _body(form, out):
    b = _Builder(17, np.float32, "node", False)
    b.form(form, out=out)
    return b.nodes


def test_inside_if_branches():
    f32 = TensorProto.FLOAT
    then_g = helper.make_graph(
        _body("div(mul(x,clip),6)", "ya"), "then", [], [helper.make_tensor_value_info("ya", f32, None)]
    )
    else_g = helper.make_graph(
        _body("mul(clip,1/6)", "yb"), "else", [], [helper.make_tensor_value_info("yb", f32, None)]
    )
    g = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["x"], ["mx"], keepdims=0),
            helper.make_node("Greater", ["mx", "zero"], ["cond"]),
            helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
        ],
        "g",
        [helper.make_tensor_value_info("x", f32, ["N", 40])],
        [helper.make_tensor_value_info("y", f32, None)],
        [numpy_helper.from_array(np.array(0, np.float32), "zero")],
    )
    src = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    src.ir_version = 8
    out, (p,), modified = apply(src, PASS)
    assert modified and p.stats == {"hard-swish->HardSwish": 1, "hard-sigmoid->HardSigmoid": 1}
    if_node = out.graph.node[-1]
    branches = {a.name: [n.op_type for n in a.g.node if n.op_type != "Constant"] for a in if_node.attribute}
    assert branches == {"then_branch": ["HardSwish"], "else_branch": ["HardSigmoid"]}
    assert_close(src, out)
    assert_close(src, out, {"x": -np.abs(feeds()["x"])})  # the else branch
    check_idempotent(src, PASS)


def test_inside_function():
    f32 = TensorProto.FLOAT
    fn = helper.make_function(
        "local", "HSwish", ["x"], ["y"], _body("mul(mul(x,clip),1/6)", "y"), [helper.make_opsetid("", 13)]
    )
    g = helper.make_graph(
        [helper.make_node("HSwish", ["x"], ["y"], domain="local")],
        "g",
        [helper.make_tensor_value_info("x", f32, ["N", 40])],
        [helper.make_tensor_value_info("y", f32, None)],
    )
    src = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("local", 1)], functions=[fn]
    )
    src.ir_version = 8
    out, (p,), modified = apply(src, PASS)
    assert modified and p.stats == {"hard-swish->Mul(x, HardSigmoid)": 1}
    assert [n.op_type for n in out.functions[0].node if n.op_type != "Constant"] == ["HardSigmoid", "Mul"]
    assert out.functions[0].output == ["y"]
    assert_close(src, out)
    check_idempotent(src, PASS)


def test_registered_after_fuse_conv_affine():
    order = list(passes_mod.DEFAULT_PIPELINE)
    assert order.index(PASS) == order.index("fuse-conv-affine") + 1
    assert order.index(PASS) < order.index("eliminate-cse")


@pytest.mark.thirdparty
def test_ppocr_cls_v2(tmp_path):
    src, out, report, x = optimize_thirdparty("ppocr_cls_v2", tmp_path)
    before, after = report.ops_before, report.ops_after
    # 18 decomposed hard-swishes (Add, Clip, Mul, Div each) at opset 11 -> Mul(x, HardSigmoid(x))
    rec = next(r for r in report.passes if r.name == PASS)
    assert rec.stats == {"hard-swish->Mul(x, HardSigmoid)": 18}
    assert after.get("Clip", 0) < before["Clip"] and after.get("Div", 0) < before["Div"]
    assert after.get("Clip", 0) == 0 and after.get("Div", 0) == 0
    assert after["HardSigmoid"] == before["HardSigmoid"] + 18
    # the model's own HardSigmoids (alpha 0.2) are left as they are
    hs = [n for n in onnx.load(out).graph.node if n.op_type == "HardSigmoid"]
    assert sorted({round(a.f, 4) for n in hs for a in n.attribute if a.name == "alpha"}) == [0.1667, 0.2]
    assert_close(onnx.load(src), onnx.load(out), x, atol=1e-4)
