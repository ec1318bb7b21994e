"""eliminate-cse: merge nodes that compute the same thing from the same inputs."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import common

from tensorsmith.passes.base import Pass


class EliminateCommonSubexpressions(Pass):
    name = "eliminate-cse"
    description = (
        "Merge duplicate nodes (same op, attributes and inputs) and duplicate constant initializers."
    )

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = sum(1 for _ in model.graph.all_nodes())
        modified = common.CommonSubexpressionEliminationPass()(model).modified
        modified |= common.DeduplicateInitializersPass(size_limit=1 << 20)(model).modified
        merged = before - sum(1 for _ in model.graph.all_nodes())
        if merged:
            self.count("nodes", merged)
        return ir.passes.PassResult(model, modified=modified)
