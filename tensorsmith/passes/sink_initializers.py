"""sink-initializers: move an initializer used only inside one If/Loop/Scan body into that body.

onnxruntime hands every outer-scope value a subgraph reads to it as an implicit input
on each call of the If/Loop; a weight that lives in the body itself is a constant of
the body's session state instead. onnxslim does the same; on Silero-VAD (opset 18,
34 of 42 weights used only inside the `If` branches) it took the model from 1.021x
to 0.955x of the original's latency with onnxruntime's optimizations off.
"""

from __future__ import annotations

import onnx_ir as ir

from tensorsmith.passes.base import Pass


def _target_graph(value: ir.Value, owner: ir.Graph) -> ir.Graph | None:
    """The one subgraph (not ``owner``) where every use of ``value`` lives, else None."""
    target: ir.Graph | None = None
    for use in value.uses():
        graph = use.node.graph
        if graph is None or graph is owner:
            return None
        if target is None:
            target = graph
        elif graph is not target:
            return None
    return target


class SinkInitializers(Pass):
    name = "sink-initializers"
    description = "Move initializers used only inside one If/Loop/Scan body into that body."

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if model.ir_version is not None and model.ir_version < 4:
            # before IR 4 an initializer had to be a graph input too
            return ir.passes.PassResult(model, modified=False)
        modified = False
        # outer graphs first: a weight may sink two levels in one run
        for graph in [model.graph, *model.graph.subgraphs()]:
            for name, value in list(graph.initializers.items()):
                if value.is_graph_input() or value.is_graph_output() or not value.uses():
                    continue
                target = _target_graph(value, graph)
                if target is None or name in target.initializers:
                    continue
                graph.initializers.pop(name)
                target.register_initializer(value)
                self.count("initializers moved into a subgraph")
                modified = True
        return ir.passes.PassResult(model, modified=modified)
