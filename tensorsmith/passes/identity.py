"""remove-identity: drop Identity nodes (and Casts to the type they already have)."""

from __future__ import annotations

import onnx_ir as ir

from tensorsmith.passes.base import Pass, graphs_of, replace_value


def bypass(node: ir.Node, source: ir.Value, pass_: Pass) -> bool:
    """Replace ``node``'s single output by ``source`` and remove ``node``.

    Graph outputs keep their name, dtype and declared shape: when the output of
    ``node`` is a graph output, ``source`` takes over its name and declared type.
    That is refused (False) when ``source`` is a graph input, an initializer, an
    outer-scope value or itself a graph output, since its name must stay too.
    """
    out = node.outputs[0]
    graph = node.graph
    if graph is None:
        return False
    if out.is_graph_output():
        producer = source.producer()
        if (
            source.is_graph_input()
            or source.is_initializer()
            or source.is_graph_output()
            or (producer is not None and producer.graph is not graph)
        ):
            pass_.explain(node, "output is a graph output fed directly by an input/initializer/output")
            return False
    replace_value(out, source)
    graph.remove(node, safe=True)
    return True


class RemoveIdentity(Pass):
    name = "remove-identity"
    description = "Remove Identity nodes and Casts to the type their input already has."

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for graph in list(graphs_of(model)):
            for node in list(graph):
                if node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
                    continue
                if node.op_type == "Identity":
                    pass
                elif node.op_type == "Cast":
                    src = node.inputs[0] if node.inputs else None
                    to = node.attributes.get("to")
                    if src is None or to is None or src.dtype is None:
                        continue
                    if int(src.dtype) != to.as_int():
                        continue
                else:
                    continue
                if not node.inputs or node.inputs[0] is None:
                    continue
                if bypass(node, node.inputs[0], self):
                    self.count(node.op_type)
                    modified = True
        return ir.passes.PassResult(model, modified=modified)
