"""tensorsmith: turn trained models into deployable, optimized, verified ones.

The public API is what the CLI itself calls::

    import tensorsmith
    model = tensorsmith.load("model.onnx")
    result = tensorsmith.optimize(model)                 # passes, in place
    tensorsmith.save(result.model, "model.opt.onnx")
    report = tensorsmith.optimize_file("in.onnx", "out.onnx")   # + verification
    tensorsmith.PASSES                                    # the pass registry
"""

from __future__ import annotations

__version__ = "0.1.0"

from tensorsmith.errors import ConversionError, TensorsmithError, UsageError, VerificationError
from tensorsmith.job_report import JobReport
from tensorsmith.model_io import load, save
from tensorsmith.optimizer import OptimizeResult, optimize, optimize_file
from tensorsmith.passes import DEFAULT_PIPELINE, PASSES
from tensorsmith.verify import Tolerance, VerificationReport, verify_models

__all__ = [
    "DEFAULT_PIPELINE",
    "PASSES",
    "ConversionError",
    "JobReport",
    "OptimizeResult",
    "TensorsmithError",
    "Tolerance",
    "UsageError",
    "VerificationError",
    "VerificationReport",
    "__version__",
    "load",
    "optimize",
    "optimize_file",
    "save",
    "verify_models",
]
