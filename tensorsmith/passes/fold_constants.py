"""fold-constants: evaluate nodes whose inputs are all constant.

Built on onnxscript's constant folder (the one the PyTorch exporter uses): it
recurses into If/Loop/Scan bodies, inlines an If whose condition is constant,
and folds shape computations whose dimensions are known. tensorsmith adds a
size cap that keeps the file from growing: a folded tensor larger than
``max_growth_elements`` is kept only when it replaces inputs at least as big
(a Transpose of a weight folds; an Expand of a scalar to a big tensor does not).
"""

from __future__ import annotations

import logging

import onnx_ir as ir

from tensorsmith.passes.base import Pass, PassOptions


class FoldConstantsOptions(PassOptions):
    max_input_elements: int = 1 << 26
    """Skip nodes with a constant input larger than this (evaluation cost)."""
    max_growth_elements: int = 4096
    """A folded output this large must not make the model bigger than its inputs did."""
    shape_inference: bool = True
    """Use ONNX node-level shape inference to fold Shape/Size of known dims."""


class FoldConstants(Pass):
    name = "fold-constants"
    description = "Evaluate nodes whose inputs are all constant (also inside If/Loop bodies), never growing the file."
    Options = FoldConstantsOptions

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnxscript.optimizer import _constant_folding as cf

        opts = self.options
        folder = cf.FoldConstantsPass(
            shape_inference=opts.shape_inference,
            input_size_limit=opts.max_input_elements,
            output_size_limit=opts.max_growth_elements,
        )
        # onnxscript logs every skipped node at WARNING/INFO; keep our output clean.
        log = logging.getLogger("onnxscript.optimizer._constant_folding")
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            result = folder(model)
        finally:
            log.setLevel(level)
        # The folder may leave Constant nodes; lift them to initializers so that
        # later passes (and Conv+BN fusion) see them as constants, and drop what
        # became unused.
        lifted = ir.passes.common.LiftConstantsToInitializersPass(
            lift_all_constants=False, size_limit=16
        )(model)
        if result.modified:
            self.count("folded")
        if lifted.modified:
            self.count("constants-lifted")
        return ir.passes.PassResult(model, modified=bool(result.modified or lifted.modified))
