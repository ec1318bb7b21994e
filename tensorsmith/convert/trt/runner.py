"""Running an engine: ``EngineRunner`` (a runner of ``tensorsmith.runners``) and
``verify_engine``, the engine against onnxruntime on the same ONNX through the one
comparator (``tensorsmith.compare``) and the one tolerance table."""

from __future__ import annotations

import numpy as np

from tensorsmith.compare import GATED_PRECISIONS, judge_precision, run_and_compare
from tensorsmith.convert.trt import memory as cuda_memory
from tensorsmith.convert.trt.api import enum_name, make_logger
from tensorsmith.convert.trt.profiles import Profile
from tensorsmith.errors import ConversionError, UsageError
from tensorsmith.runners import OnnxRuntimeRunner, Runner
from tensorsmith.tolerances import Tolerance, tolerance_for
from tensorsmith.verify import VerificationReport, load_verify_data, random_inputs


def verify_engine(
    trt,
    plan: bytes,
    onnx_path,
    specs,
    profiles: dict[str, Profile],
    tol: Tolerance | None,
    *,
    precision: str = "fp32",
    verify_data=None,
    version_compat: bool = False,
    logger=None,
    memory=None,
) -> VerificationReport:
    """Run the engine and onnxruntime on the same inputs; compare every output.

    The gate: ``tol`` when given (``--rtol/--atol``); else, for an FP16/BF16/INT8
    engine, the precision gate of ``tensorsmith.precision.gate`` (cosine similarity,
    top-1 agreement on class-score outputs); for FP32, the engine's row of the
    tolerance table (``tolerance_for("fp32", engine=True)``: TF32).
    """
    notes = []
    if verify_data is not None:
        samples = load_verify_data(verify_data, specs)
        for k, s in enumerate(samples):
            for name, arr in s.items():
                p = profiles.get(name)
                if p and not all(lo <= d <= hi for lo, d, hi in zip(p.min, arr.shape, p.max, strict=False)):
                    raise UsageError(
                        f"--verify-data sample {k}: {name} shape {list(arr.shape)} is outside "
                        f"its profile {p.text()}"
                    )
        source = str(verify_data)
    else:
        opt = {
            s.name: (profiles[s.name].opt if s.name in profiles else [int(d) for d in s.shape]) for s in specs
        }
        samples = [random_inputs(specs, opt)]
        mx = {s.name: (profiles[s.name].max if s.name in profiles else opt[s.name]) for s in specs}
        if mx != opt:
            samples.append(random_inputs(specs, mx, seed=1))
            notes.append("checked at the profiles' OPT and MAX shapes")
        source = "random"
    reference = OnnxRuntimeRunner(onnx_path)
    try:
        reference.activate()
    except Exception as exc:
        raise UsageError(
            f"onnxruntime cannot load {onnx_path} for verification: {' '.join(str(exc).split())[:200]}",
            hint="skip the check with --no-verify",
        ) from None
    use_gate = tol is None and precision in GATED_PRECISIONS
    if tol is None:
        tol = tolerance_for(precision, engine=True)
    engine = EngineRunner(trt, plan, version_compat=version_compat, logger=logger, memory=memory)
    comparison = run_and_compare(reference, engine, samples, tol, align_int_dtypes=True)
    passed = comparison.passed
    if use_gate:
        from tensorsmith.model_io import load_proto
        from tensorsmith.precision.gate import class_score_outputs

        classes = class_score_outputs(load_proto(onnx_path))
        passed = judge_precision(comparison, precision, classes, notes)
    shapes_used = {k: list(v.shape) for k, v in samples[0].items()}
    return VerificationReport(
        passed=passed,
        outputs=comparison.outputs,
        samples=len(samples),
        input_source=source,
        input_shapes=shapes_used,
        notes=notes,
        tolerance=tol,
    )


class EngineRunner(Runner):
    """A serialized engine (plan) run on numpy inputs (TensorRT 10/11 I/O tensor API):
    ``activate`` deserializes it, ``infer`` runs it, ``deactivate`` frees the device memory."""

    name = "tensorrt"

    def __init__(self, trt, plan: bytes, *, version_compat: bool = False, logger=None, memory=None):
        super().__init__()
        self.trt = trt
        self.plan = plan
        self.version_compat = version_compat
        self.logger = logger or make_logger(trt)
        self.memory = memory
        self.inputs: list[str] = []
        self.outputs: list[str] = []

    def _activate(self) -> None:
        trt, plan = self.trt, self.plan
        self.runtime = trt.Runtime(self.logger)
        if self.version_compat:
            # a version-compatible plan embeds its lean runtime, which must be allowed to load
            self.runtime.engine_host_code_allowed = True
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            why = "; ".join(self.logger.errors[-2:]) or "no message"
            raise ConversionError(f"TensorRT could not deserialize the engine it built: {why}")
        self.context = self.engine.create_execution_context()
        self.memory = self.memory or cuda_memory.device_memory()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def _np_dtype(self, name: str) -> np.dtype:
        dtype = self.engine.get_tensor_dtype(name)
        try:
            return np.dtype(self.trt.nptype(dtype))
        except (TypeError, KeyError, ValueError):  # BF16, FP8, INT4 I/O: no numpy type
            raise ConversionError(
                f"I/O tensor {name!r} is {enum_name(dtype)}, which numpy cannot hold; the verifier cannot "
                "run this engine (use --no-verify)"
            ) from None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mem = self.memory
        assert mem is not None
        buffers = []
        try:
            for name in self.inputs:
                arr = np.ascontiguousarray(feeds[name].astype(self._np_dtype(name), copy=False))
                self.context.set_input_shape(name, tuple(arr.shape))
                ptr = mem.alloc(max(arr.nbytes, 1))
                buffers.append(ptr)
                mem.h2d(ptr, arr)
                self.context.set_tensor_address(name, ptr)
            results = {}
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise ConversionError(
                        f"output {name!r} has a data-dependent shape {list(shape)}; the verifier cannot "
                        "allocate it (use --no-verify)"
                    )
                out = np.empty(shape, dtype=self._np_dtype(name))
                ptr = mem.alloc(max(out.nbytes, 1))
                buffers.append(ptr)
                self.context.set_tensor_address(name, ptr)
                results[name] = (out, ptr)
            if not self.context.execute_async_v3(mem.stream()):
                raise ConversionError("TensorRT execute_async_v3 failed on the verification inputs")
            mem.sync()
            got = {}
            for name, (out, ptr) in results.items():
                mem.d2h(out, ptr)
                got[name] = out
            return got
        finally:
            for ptr in buffers:
                mem.free(ptr)

    def _deactivate(self) -> None:
        if self.memory is not None:
            self.memory.close()
