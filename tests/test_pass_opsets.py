"""Every default pass, on models at opsets 9-13: the written model is valid for its opset
(``onnx.checker.check_model(full_check=True)``) whenever the source was, and computes the same."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import apply_to_fixed_point, assert_interface_kept, assert_same_outputs, ops
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

from tensorsmith.passes import DEFAULT_PIPELINE

RNG_SEED = 9
rng = np.random.default_rng(RNG_SEED)  # re-seeded before every test (conftest.py)


def _unsqueeze(inp: str, out: str, opset: int, nodes: list, inits: list) -> None:
    if opset >= 13:
        inits.append(nh.from_array(np.array([0], np.int64), f"{out}_axes"))
        nodes.append(oh.make_node("Unsqueeze", [inp, f"{out}_axes"], [out]))
    else:
        nodes.append(oh.make_node("Unsqueeze", [inp], [out], axes=[0]))


def _model(opset: int) -> onnx.ModelProto:
    """Conv+BN, a constant Mul after them, Relu, a Dropout, an Identity, a weight split by two
    Slices, a foldable Shape, an If whose branches use their own weights, and a Reshape of a
    dynamic-batch tensor whose target copies the batch: something for every default pass."""
    c = 4
    f = nh.from_array
    inits = [
        f(rng.standard_normal((c, 3, 3, 3)).astype(np.float32), "w"),
        f(rng.standard_normal(c).astype(np.float32), "b"),
        f((rng.random(c) + 0.5).astype(np.float32), "bn_s"),
        f(rng.standard_normal(c).astype(np.float32), "bn_b"),
        f(rng.standard_normal(c).astype(np.float32), "bn_m"),
        f((rng.random(c) + 0.5).astype(np.float32), "bn_v"),
        f(np.full((1, c, 1, 1), 0.5, np.float32), "half"),
        f(np.array([-1], np.int64), "minus1"),
        f(np.array(0, np.int64), "i0"),
        f(rng.standard_normal((c * 8 * 8, 32)).astype(np.float32), "fc"),
        f(np.array(True), "always"),
    ]
    nodes = [
        oh.make_node("Identity", ["x"], ["xi"]),
        oh.make_node("Conv", ["xi", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        oh.make_node("BatchNormalization", ["conv", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"]),
        oh.make_node("Mul", ["bn", "half"], ["m"]),
        oh.make_node("Relu", ["m"], ["r"]),
    ]
    if opset >= 12:
        nodes.append(oh.make_node("Dropout", ["r"], ["d"]))
    else:
        nodes.append(oh.make_node("Dropout", ["r"], ["d"], ratio=0.3))
    # Reshape(d, Concat(Unsqueeze(Gather(Shape(d), 0)), [-1])): batch copied, rest flattened
    nodes += [oh.make_node("Shape", ["d"], ["sd"]), oh.make_node("Gather", ["sd", "i0"], ["n"], axis=0)]
    _unsqueeze("n", "n1", opset, nodes, inits)
    nodes += [
        oh.make_node("Concat", ["n1", "minus1"], ["tgt"], axis=0),
        oh.make_node("Reshape", ["d", "tgt"], ["flat"]),
        oh.make_node("MatMul", ["flat", "fc"], ["mm"]),
    ]
    # a weight split in two halves by Slices (attributes before opset 10)
    inits.append(f(rng.standard_normal((32, 64)).astype(np.float32), "wsplit"))
    if opset >= 10:
        inits += [f(np.array([v], np.int64), k) for k, v in (("z", 0), ("h", 32), ("e", 64), ("one", 1))]
        nodes += [
            oh.make_node("Slice", ["wsplit", "z", "h", "one"], ["lo"]),
            oh.make_node("Slice", ["wsplit", "h", "e", "one"], ["hi"]),
        ]
    else:
        nodes += [
            oh.make_node("Slice", ["wsplit"], ["lo"], starts=[0], ends=[32], axes=[1]),
            oh.make_node("Slice", ["wsplit"], ["hi"], starts=[32], ends=[64], axes=[1]),
        ]
    nodes += [
        oh.make_node("MatMul", ["mm", "lo"], ["p"]),
        oh.make_node("MatMul", ["mm", "hi"], ["q"]),
        oh.make_node("Add", ["p", "q"], ["pq"]),
    ]
    # a foldable Shape (static dims) feeding a Reshape: fold-constants writes a Constant
    nodes += [oh.make_node("Shape", ["pq"], ["spq"]), oh.make_node("Reshape", ["z2", "spq"], ["zr"])]
    # an If whose branches use weights nobody else uses
    inits += [
        f(rng.standard_normal(32).astype(np.float32), "then_w"),
        f(rng.standard_normal(32).astype(np.float32), "else_w"),
    ]
    then_g = oh.make_graph(
        [oh.make_node("Add", ["zr", "then_w"], ["t_out"])],
        "then",
        [],
        [oh.make_tensor_value_info("t_out", TensorProto.FLOAT, [2, 32])],
    )
    else_g = oh.make_graph(
        [oh.make_node("Mul", ["zr", "else_w"], ["e_out"])],
        "else",
        [],
        [oh.make_tensor_value_info("e_out", TensorProto.FLOAT, [2, 32])],
    )
    nodes.append(oh.make_node("If", ["c"], ["ifo"], then_branch=then_g, else_branch=else_g))
    nodes.append(oh.make_node("Add", ["ifo", "pq"], ["y"]))
    # a Reshape of a dynamic-batch tensor whose target copies its batch: reshape-copy-dims
    nodes += [oh.make_node("Shape", ["u"], ["su"]), oh.make_node("Gather", ["su", "i0"], ["nu"], axis=0)]
    _unsqueeze("nu", "nu1", opset, nodes, inits)
    inits.append(f(np.array([24], np.int64), "c24"))
    nodes += [
        oh.make_node("Concat", ["nu1", "c24"], ["tu"], axis=0),
        oh.make_node("Reshape", ["u", "tu"], ["v"]),
    ]
    # two Slices of x on different axes (merge-slices, from opset 10: parameters as inputs)
    if opset >= 10:
        inits += [f(np.array([v], np.int64), k) for k, v in (("two", 2), ("six", 6), ("ax2", 2))]
        nodes += [
            oh.make_node("Slice", ["x", "z", "two", "one"], ["xs"]),
            oh.make_node("Slice", ["xs", "two", "six", "ax2"], ["xw"]),
        ]
    else:
        nodes += [
            oh.make_node("Slice", ["x"], ["xs"], starts=[0], ends=[2], axes=[1]),
            oh.make_node("Slice", ["xs"], ["xw"], starts=[2], ends=[6], axes=[2]),
        ]
    graph = oh.make_graph(
        nodes,
        "g",
        [
            oh.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8]),
            oh.make_tensor_value_info("z2", TensorProto.FLOAT, [64]),
            oh.make_tensor_value_info("c", TensorProto.BOOL, []),
            oh.make_tensor_value_info("u", TensorProto.FLOAT, ["N", 4, 6]),
        ],
        [
            oh.make_tensor_value_info("y", TensorProto.FLOAT, [2, 32]),
            oh.make_tensor_value_info("v", TensorProto.FLOAT, ["N", 24]),
            oh.make_tensor_value_info("xw", TensorProto.FLOAT, [2, 2, 4, 8]),
        ],
        inits,
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    model.ir_version = 5 if opset < 11 else 6 if opset < 12 else 7
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("opset", [9, 10, 11, 12, 13])
def test_default_pipeline_writes_a_model_valid_for_its_opset(opset):
    src = _model(opset)
    out, records = apply_to_fixed_point(src, *DEFAULT_PIPELINE)
    changed = {r.name for r in records if r.modified}
    # every default pass had something to do (fuse-hardswish has its own opset tests)
    # (merge-slices: not below opset 10, where Slice's parameters are attributes)
    assert changed >= set(DEFAULT_PIPELINE) - {"fuse-hardswish", "eliminate-cse"} - (
        {"merge-slices"} if opset < 10 else set()
    ), changed
    assert ("merge-slices" in changed) == (opset >= 10)
    assert len(ops(out)) < len(ops(src))
    assert out.opset_import[0].version == opset
    onnx.checker.check_model(out, full_check=True)
    assert_interface_kept(src, out)
    feeds = {
        "x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32),
        "z2": rng.standard_normal(64).astype(np.float32),
        "u": rng.standard_normal((3, 4, 6)).astype(np.float32),
    }
    for c in (True, False):
        assert_same_outputs(src, out, {**feeds, "c": np.array(c)})
