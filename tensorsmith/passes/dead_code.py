"""remove-dead-code: nodes, initializers, functions and opset imports nothing uses."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import common

from tensorsmith.passes.base import Pass, graphs_of, release_unused_weights


def detach_stale_uses(model: ir.Model) -> None:
    """Forget uses by nodes no longer in the model (linear in its size).

    When onnxscript's folder inlines an ``If`` with a constant condition, the nodes of
    the branch it dropped still list themselves as users of the outer values they read,
    so a value only they use looked alive and stayed until the model was saved and
    loaded again (a second optimize then removed it).
    """
    scopes = list(graphs_of(model))
    live = {node for scope in scopes for node in scope}
    for scope in scopes:
        values = [*scope.inputs, *(scope.initializers.values() if isinstance(scope, ir.Graph) else ())]
        values += [v for node in scope for v in node.outputs]
        for value in values:
            for use in list(value.uses()):
                if use.node not in live:
                    use.node.replace_input_with(use.idx, None)


class RemoveDeadCode(Pass):
    name = "remove-dead-code"
    description = (
        "Remove nodes and initializers whose results nobody uses (also in subgraphs), and unused functions."
    )

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = sum(1 for _ in model.graph.all_nodes())
        inits = len(model.graph.initializers)
        modified = False
        detach_stale_uses(model)
        release_unused_weights(model)
        for p in (common.RemoveUnusedNodesPass(), common.RemoveUnusedFunctionsPass()):
            modified |= p(model).modified
        # onnx_ir's pass drops unused initializers of the main graph only
        for graph in model.graph.subgraphs():
            for name, value in list(graph.initializers.items()):
                if not value.uses() and not value.is_graph_output() and not value.is_graph_input():
                    del graph.initializers[name]
                    self.count("subgraph initializers")
                    modified = True
        removed = before - sum(1 for _ in model.graph.all_nodes())
        if removed:
            self.count("nodes", removed)
        if inits - len(model.graph.initializers) > 0:
            self.count("initializers", inits - len(model.graph.initializers))
        return ir.passes.PassResult(model, modified=modified)
