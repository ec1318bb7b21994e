"""sink-initializers."""

from __future__ import annotations

import numpy as np
import onnx
from helpers import (
    apply,
    apply_to_fixed_point,
    assert_interface_kept,
    assert_same_outputs,
    check_idempotent,
    parse,
)

RNG_SEED = 13
rng = np.random.default_rng(RNG_SEED)  # re-seeded before every test (conftest.py)

IF_MODEL = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 8] x, bool c) => (float[N, 8] y) {
        y = If (c) <
            then_branch = t () => (float[N, 8] o1) {
                a = MatMul (x, wt)
                o1 = Add (a, shared)
            },
            else_branch = e () => (float[N, 8] o2) {
                b = MatMul (x, we)
                o2 = Add (b, shared)
            }
        >
    }"""


def _inits():
    return {
        "wt": rng.standard_normal((8, 8)).astype(np.float32),
        "we": rng.standard_normal((8, 8)).astype(np.float32),
        "shared": rng.standard_normal(8).astype(np.float32),
    }


def _branch_inits(model: onnx.ModelProto) -> dict[str, list[str]]:
    (node,) = [n for n in model.graph.node if n.op_type == "If"]
    return {a.name: [i.name for i in a.g.initializer] for a in node.attribute}


def test_weights_used_by_one_branch_move_into_it():
    src = parse(IF_MODEL, _inits())
    out, (p,), modified = apply(src, "sink-initializers")
    assert modified and p.stats == {"initializers moved into a subgraph": 2}
    assert _branch_inits(out) == {"then_branch": ["wt"], "else_branch": ["we"]}
    # used by both branches: stays in the main graph
    assert [i.name for i in out.graph.initializer] == ["shared"]
    onnx.checker.check_model(out, full_check=True)
    assert_interface_kept(src, out)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    for c in (True, False):
        assert_same_outputs(src, out, {"x": x, "c": np.array(c)})
    check_idempotent(out, "sink-initializers")


def test_weight_used_in_the_main_graph_too_stays():
    text = IF_MODEL.replace("=> (float[N, 8] y)", "=> (float[N, 8] y, float[N, 8] z)").replace(
        "y = If", "z = MatMul (x, wt)\n        y = If"
    )
    src = parse(text, _inits())
    out, _, _ = apply(src, "sink-initializers")
    assert _branch_inits(out) == {"then_branch": [], "else_branch": ["we"]}
    assert sorted(i.name for i in out.graph.initializer) == ["shared", "wt"]
    onnx.checker.check_model(out, full_check=True)
    assert_same_outputs(src, out, {"x": rng.standard_normal((2, 8)).astype(np.float32), "c": np.array(True)})


def test_weight_of_a_loop_body_moves_into_the_body():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x, int64 n) => (float[4] y) {
            y = Loop (n, cond, x) <
                body = b (int64 i, bool ci, float[4] acc) => (bool co, float[4] nxt) {
                    co = Identity (ci)
                    nxt = Mul (acc, k)
                }
            >
        }""",
        {"cond": np.array(True), "k": rng.standard_normal(4).astype(np.float32)},
    )
    out, _, modified = apply(src, "sink-initializers")
    assert modified
    body = out.graph.node[0].attribute[0].g
    assert [i.name for i in body.initializer] == ["k"]
    assert [i.name for i in out.graph.initializer] == ["cond"]  # the Loop's own input stays
    onnx.checker.check_model(out, full_check=True)
    assert_same_outputs(
        src, out, {"x": rng.standard_normal(4).astype(np.float32), "n": np.array(3, np.int64)}
    )


def test_graph_without_subgraphs_is_unchanged():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x) => (float[N, 8] y) { y = MatMul (x, wt) }""",
        {"wt": rng.standard_normal((8, 8)).astype(np.float32)},
    )
    _, _, modified = apply(src, "sink-initializers")
    assert not modified


def test_in_the_default_pipeline_with_a_nested_if():
    src = parse(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x, bool c, bool d) => (float[N, 8] y) {
            y = If (c) <
                then_branch = t () => (float[N, 8] o1) {
                    o1 = If (d) <
                        then_branch = tt () => (float[N, 8] p1) { p1 = MatMul (x, deep) },
                        else_branch = te () => (float[N, 8] p2) { p2 = Relu (x) }
                    >
                },
                else_branch = e () => (float[N, 8] o2) { o2 = Neg (x) }
            >
        }""",
        {"deep": rng.standard_normal((8, 8)).astype(np.float32)},
    )
    out, _ = apply_to_fixed_point(src, "fold-constants", "sink-initializers", "remove-dead-code")
    inner = out.graph.node[0].attribute[0].g.node[0]
    assert [i.name for i in inner.attribute[0].g.initializer] == ["deep"]
    assert not out.graph.initializer
    onnx.checker.check_model(out, full_check=True)
    x = rng.standard_normal((2, 8)).astype(np.float32)
    for c in (True, False):
        for d in (True, False):
            assert_same_outputs(src, out, {"x": x, "c": np.array(c), "d": np.array(d)})
