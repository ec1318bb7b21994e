"""TensorRT lint rules for quantization: what the ONNX parser rejects in
QuantizeLinear/DequantizeLinear, and where a Q/DQ pair would not fuse."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from tensorsmith.lint import Finding
from tensorsmith.lint.trt_index import _attr, _Index, _NodeRef

_DT = TensorProto

_QUANT_NAMES = {
    _DT.INT8: "int8",
    _DT.UINT8: "uint8",
    _DT.INT4: "int4",
    _DT.UINT4: "uint4",
    _DT.INT16: "int16",
    _DT.UINT16: "uint16",
    _DT.FLOAT8E4M3FN: "fp8",
    _DT.FLOAT8E5M2: "fp8",
}


def _qdq_type(idx: _Index, n: onnx.NodeProto, *, quantize: bool) -> int | None:
    """The quantized element type of a Q (its output) or DQ (its input)."""
    if len(n.input) > 2 and n.input[2] and n.input[2] in idx.dtype:
        return idx.dtype[n.input[2]]
    name = n.output[0] if quantize else n.input[0]
    dt = idx.dtype.get(name)
    if dt is None and quantize:
        dt = _attr(n, "output_dtype") or None
    return dt


# -- Q/DQ ---------------------------------------------------------------------


def _check_qdq(idx: _Index, findings: list[Finding]) -> None:
    for ref in idx.nodes:
        n = ref.node
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") or n.domain not in ("", "ai.onnx"):
            continue
        quantize = n.op_type == "QuantizeLinear"
        label, op = ref.label, n.op_type
        # scale
        scale_name = n.input[1] if len(n.input) > 1 else ""
        scale = idx.array(scale_name) if scale_name else None
        if not scale_name or not idx.is_const(scale_name):
            findings.append(
                Finding(
                    "qdq-scale",
                    "error",
                    "scale must be a build-time constant (initializer)",
                    node=label,
                    op=op,
                    tensor=scale_name or None,
                )
            )
        elif scale is not None and scale.size and not bool(np.all(scale > 0)):
            findings.append(
                Finding(
                    "qdq-scale", "error", "scale values must all be > 0", node=label, op=op, tensor=scale_name
                )
            )
        # quantized type
        qtype = _qdq_type(idx, n, quantize=quantize)
        if qtype in (_DT.UINT8, _DT.UINT16, _DT.INT16, _DT.UINT4):
            what = _QUANT_NAMES.get(qtype, str(qtype))
            side = "activations" if not _is_weight_qdq(idx, n) else "weights"
            findings.append(
                Finding(
                    "qdq-uint8",
                    "error",
                    f"{what} quantization of {side} (asymmetric/unsigned) is not supported: TensorRT "
                    "quantizes to signed int8 with zero point 0 (UINT8 only at network inputs/outputs)",
                    node=label,
                    op=op,
                )
            )
        # zero point
        if len(n.input) > 2 and n.input[2]:
            zp_name = n.input[2]
            if not idx.is_const(zp_name):
                findings.append(
                    Finding(
                        "qdq-zero-point",
                        "error",
                        "zero point must be a constant 0",
                        node=label,
                        op=op,
                        tensor=zp_name,
                    )
                )
            else:
                zp = idx.array(zp_name)
                if zp is not None and zp.size and bool(np.any(zp.astype(np.float64) != 0)):
                    vals = np.unique(zp.astype(np.float64))
                    shown = ", ".join(f"{v:g}" for v in vals[:4]) + (", ..." if vals.size > 4 else "")
                    findings.append(
                        Finding(
                            "qdq-zero-point",
                            "error",
                            f"zero point must be 0 (TensorRT quantization is symmetric); found {shown}",
                            node=label,
                            op=op,
                            tensor=zp_name,
                        )
                    )
        # axis / granularity
        if scale is not None and scale.ndim >= 1 and scale.size > 1:
            _check_qdq_axis(idx, ref, scale, qtype, findings)


def _is_weight_qdq(idx: _Index, n: onnx.NodeProto) -> bool:
    """A Q/DQ whose data input is a constant (or a Q of a constant): it quantizes weights."""
    src = n.input[0]
    if idx.is_const(src):
        return True
    prod = idx.producer.get(src)
    return bool(prod and prod.op == "QuantizeLinear" and idx.is_const(prod.node.input[0]))


def _check_qdq_axis(idx: _Index, ref: _NodeRef, scale: np.ndarray, qtype, findings: list[Finding]) -> None:
    n = ref.node
    data_shape = idx.shape.get(n.input[0]) or []
    rank = len(data_shape)
    if scale.ndim > 1 or _attr(n, "block_size", 0):
        if qtype not in (_DT.INT4,):
            findings.append(
                Finding(
                    "qdq-axis",
                    "error",
                    "block quantization is only supported for INT4 weights",
                    node=ref.label,
                    op=n.op_type,
                )
            )
        return
    if not _is_weight_qdq(idx, n):
        findings.append(
            Finding(
                "qdq-axis",
                "error",
                f"per-channel quantization ({scale.size} scales) of an activation: TensorRT quantizes "
                "activations per tensor (one scale)",
                node=ref.label,
                op=n.op_type,
            )
        )
        return
    axis = _attr(n, "axis", 1)
    if rank and axis < 0:
        axis += rank
    # the op that uses the (dequantized) weight decides which axis is its output channel
    out = n.output[0]
    if n.op_type == "QuantizeLinear":
        dq = [c for c, _ in idx.consumers.get(out, []) if c.op == "DequantizeLinear"]
        if not dq:
            return
        out = dq[0].node.output[0]
    for consumer, k in idx.consumers.get(out, []):
        expected = None
        if consumer.op == "Conv" and k == 1:
            expected = 0
        elif consumer.op == "ConvTranspose" and k == 1:
            expected = 1
        elif consumer.op == "Gemm" and k == 1:
            expected = 0 if _attr(consumer.node, "transB", 0) else 1
        elif consumer.op == "MatMul" and k == 1 and rank:
            expected = rank - 1
        if expected is not None and axis != expected:
            findings.append(
                Finding(
                    "qdq-axis",
                    "error" if consumer.op in ("Conv", "ConvTranspose") else "warning",
                    f"weights of {consumer.op} quantized per channel along axis {axis}; TensorRT expects the "
                    f"output-channel axis {expected}",
                    node=ref.label,
                    op=n.op_type,
                )
            )
            return
