"""remove-dropout: inference Dropout is the identity on its data output."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from tensorsmith.passes.base import Pass, graphs_of
from tensorsmith.passes.identity import bypass


def _training_mode(node: ir.Node) -> bool | None:
    """False when the node is known to be in inference mode, None when unknown."""
    if node.attributes.get("is_test") is not None and node.attributes["is_test"].as_int() == 0:
        return None  # opset < 7 with is_test=0: training semantics
    if len(node.inputs) < 3 or node.inputs[2] is None:
        return False
    mode = ir.convenience.get_const_tensor(node.inputs[2])
    if mode is None:
        return None
    return bool(np.asarray(mode.numpy()).reshape(-1)[0])


class RemoveDropout(Pass):
    name = "remove-dropout"
    description = (
        "Remove inference Dropout (any ratio); a used mask becomes an all-true constant of the input's shape."
    )

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for graph in list(graphs_of(model)):
            for node in list(graph):
                if node.op_type != "Dropout" or node.domain not in ("", "ai.onnx"):
                    continue
                mode = _training_mode(node)
                if mode is None:
                    self.explain(node, "training_mode is not a constant false")
                    continue
                if mode:
                    self.explain(node, "training_mode is true")
                    continue
                data = node.inputs[0]
                mask = node.outputs[1] if len(node.outputs) > 1 else None
                if mask is not None and (mask.uses() or mask.is_graph_output()):
                    if mask.is_graph_output():
                        self.explain(node, "its mask is a graph output")
                        continue
                    # mask = all ones of data's shape: ConstantOfShape(Shape(data), 1)
                    # (bool since opset 10, the data type before that)
                    fill_dtype = mask.dtype if mask.dtype is not None else ir.DataType.BOOL
                    shape = ir.Node("", "Shape", [data], num_outputs=1)
                    fill = ir.Node(
                        "",
                        "ConstantOfShape",
                        [shape.outputs[0]],
                        attributes=[
                            ir.AttrTensor("value", ir.tensor(np.array([1], dtype=fill_dtype.numpy())))
                        ],
                        num_outputs=1,
                    )
                    graph.insert_before(node, [shape, fill])
                    fill.outputs[0].type = mask.type
                    fill.outputs[0].shape = mask.shape
                    ir.convenience.replace_all_uses_with(mask, fill.outputs[0])
                    self.count("mask-rewritten")
                if bypass(node, data, self):
                    self.count("Dropout")
                    modified = True
        return ir.passes.PassResult(model, modified=modified)
