"""remove-dead-code: nodes, initializers, functions and opset imports nothing uses."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import common

from tensorsmith.passes.base import Pass, release_unused_weights


class RemoveDeadCode(Pass):
    name = "remove-dead-code"
    description = (
        "Remove nodes and initializers whose results nobody uses (also in subgraphs), and unused functions."
    )

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = sum(1 for _ in model.graph.all_nodes())
        inits = len(model.graph.initializers)
        modified = False
        release_unused_weights(model)
        for p in (common.RemoveUnusedNodesPass(), common.RemoveUnusedFunctionsPass()):
            modified |= p(model).modified
        removed = before - sum(1 for _ in model.graph.all_nodes())
        if removed:
            self.count("nodes", removed)
        if inits - len(model.graph.initializers) > 0:
            self.count("initializers", inits - len(model.graph.initializers))
        return ir.passes.PassResult(model, modified=modified)
