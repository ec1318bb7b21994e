"""TensorRT lint rules for quantization: what the ONNX parser rejects in
QuantizeLinear/DequantizeLinear, and where a Q/DQ pair would not fuse.

Sources, cited per rule below:

* [OPS] onnx/onnx-tensorrt ``docs/operators.md`` (TensorRT 10.x): QuantizeLinear and
  DequantizeLinear take FP32/FP16/BF16 on the float side, "`y_zero_point` must be 0";
  the importer (``onnxOpImporters.cpp``, ``QuantDequantLinearHelper``) accepts INT8,
  FP8 (E4M3), INT4 and (10.8+) FP4 as the quantized type, scales only as build-time
  constants, per-tensor or per-axis scales, and blocked (rank > 1) scales only for
  INT4 weights. An INT32 DequantizeLinear (onnxruntime's quantized bias) fails with
  "only activation types allowed as input to this layer" (NVIDIA/TensorRT#3360,
  onnx/onnx-tensorrt#850).
* [GUIDE] TensorRT developer guide, "Explicit Quantization" -> "Q/DQ Layer-Placement
  Recommendations" and "Q/DQ propagation": a Q/DQ pair is fused into the op that
  consumes it when that op is a weighted layer (Convolution, Deconvolution,
  MatrixMultiply), a pooling layer, an element-wise Add it can fuse into a preceding
  convolution, or an op Q/DQ commutes with (Concat, data movement, Resize);
  anywhere else it runs as its own reformat layer.
* [MO] Model Optimizer's INT8 placement (``modelopt/onnx/quantization/ort_utils.py``
  ``configure_ort``, ``partitioning.py``): besides those entries it quantizes
  normalization layers and a few element-wise ops TensorRT's pointwise kernel
  generator fuses Q/DQ into; its outputs lint clean by construction of ``ENTRIES``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from tensorsmith.lint.findings import Finding
from tensorsmith.lint.trt_index import GraphIndex, NodeRef, node_attr

_DT = TensorProto

# [OPS] the quantized types the parser takes
ACCEPTED = {_DT.INT8, _DT.FLOAT8E4M3FN, _DT.INT4, _DT.FLOAT4E2M1}
_UNSIGNED = (_DT.UINT8, _DT.UINT16, _DT.INT16, _DT.UINT4)
# [GUIDE] consumers a Q/DQ pair fuses into (or commutes through): everything else
# turns the pair into a reformat layer
WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")
POOLING = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool")
NORMALIZATION = (
    "BatchNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "LRN",
)
COMMUTING = (
    "Concat",
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Split",
    "Gather",
    "Identity",
    "Expand",
    "Tile",
    "Resize",
    "Upsample",
    "Pad",
)
# [MO] the element-wise ops Model Optimizer quantizes (its QDQ registry and the pointwise
# "KGEN" partitions TensorRT's kernel generator fuses Q/DQ into): Add, Mul, Clip,
# HardSwish and HardSigmoid (the decomposed hard-swish of PP-OCR/MobileNetV3)
POINTWISE = ("Add", "Mul", "Clip", "HardSwish", "HardSigmoid")
ENTRIES = (*WEIGHTED, *POOLING, *NORMALIZATION, *COMMUTING, *POINTWISE)

QUANT_NAMES: dict[int, str] = {
    _DT.INT8: "int8",
    _DT.UINT8: "uint8",
    _DT.INT4: "int4",
    _DT.UINT4: "uint4",
    _DT.INT16: "int16",
    _DT.UINT16: "uint16",
    _DT.FLOAT8E4M3FN: "fp8",
    _DT.FLOAT8E5M2: "fp8-e5m2",
    _DT.INT32: "int32",
    _DT.FLOAT4E2M1: "fp4",
}


def qdq_type(idx: GraphIndex, n: onnx.NodeProto, *, quantize: bool) -> int | None:
    """The quantized element type of a Q (its output) or DQ (its input)."""
    if len(n.input) > 2 and n.input[2] and n.input[2] in idx.dtype:
        return idx.dtype[n.input[2]]
    name = n.output[0] if quantize else n.input[0]
    dt = idx.dtype.get(name)
    if dt is None and quantize:
        dt = node_attr(n, "output_dtype") or None
    return dt


# -- Q/DQ ---------------------------------------------------------------------


def check_qdq(idx: GraphIndex, findings: list[Finding]) -> None:
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
        qtype = qdq_type(idx, n, quantize=quantize)
        if qtype is not None and qtype not in ACCEPTED and qtype not in _UNSIGNED:
            # [OPS] INT32 (a quantized bias), FP8 E5M2, ...: the importer rejects the node
            what = QUANT_NAMES.get(qtype, onnx.TensorProto.DataType.Name(qtype))
            src = n.input[0] if not quantize else n.output[0]
            findings.append(
                Finding(
                    "qdq-type",
                    "error",
                    f"{op} of {what} ({src}): TensorRT's ONNX parser takes only INT8, FP8 (E4M3), INT4 "
                    "and FP4 here"
                    + (
                        "; an INT32 DequantizeLinear is a quantized bias: keep biases in float "
                        "(onnxruntime: QuantizeBias=False)"
                        if qtype == _DT.INT32
                        else ""
                    ),
                    node=label,
                    op=op,
                    tensor=src,
                )
            )
        if qtype in _UNSIGNED:
            what = QUANT_NAMES.get(qtype, str(qtype))
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
        if scale is not None and len(n.input) > 2 and n.input[2]:
            zp = idx.array(n.input[2])
            if zp is not None and zp.size != scale.size:
                # [OPS] / the ONNX spec: scale and zero point have one shape
                findings.append(
                    Finding(
                        "qdq-axis",
                        "error",
                        f"zero point shape {list(zp.shape)} differs from scale shape {list(scale.shape)}",
                        node=label,
                        op=op,
                    )
                )
    _check_placement(idx, findings)


def _dq_source(idx: GraphIndex, dq: onnx.NodeProto) -> tuple[str, bool]:
    """(the float tensor a DQ stands for, whether it is a constant)."""
    src = dq.input[0]
    prod = idx.producer.get(src)
    if prod is not None and prod.op == "QuantizeLinear":
        src = prod.node.input[0]
    return src, idx.is_const(src)


def _check_placement(idx: GraphIndex, findings: list[Finding]) -> None:
    """``qdq-placement``: a Q/DQ pair TensorRT cannot fuse into the entry of a group
    ([GUIDE] placement recommendations) becomes a reformat layer: a warning per pair."""
    dq_of: dict[str, tuple[str, bool]] = {}
    for ref in idx.nodes:
        n = ref.node
        if n.op_type == "DequantizeLinear" and n.output:
            dq_of[n.output[0]] = _dq_source(idx, n)
    for ref in idx.nodes:
        n = ref.node
        if n.op_type != "DequantizeLinear" or not n.output:
            continue
        src, const = dq_of[n.output[0]]
        reasons: list[str] = []
        for consumer, k in idx.consumers.get(n.output[0], []):
            op = consumer.op
            if const:
                # a quantized constant is a weight only in a weighted op's weight slot
                if (op in WEIGHTED and k == 1) or op == "MatMul" or (op in COMMUTING and k == 0):
                    continue
                why = f"a quantized constant ({src}) feeding {op} {consumer.label}: only weights of Conv/MatMul/Gemm are quantized"
            elif op in ENTRIES:
                # a residual Add with both inputs quantized is not flagged: Model Optimizer
                # writes that where the skip input also feeds another quantized layer
                continue
            else:
                why = (
                    f"Q/DQ on {src} feeds {op} {consumer.label}, not the entry of a fusible group "
                    "(Conv/MatMul/Gemm, pooling, residual Add, Concat): TensorRT runs it as a reformat layer"
                )
            reasons.append(why)
        if reasons:
            findings.append(
                Finding(
                    "qdq-placement", "warning", "; ".join(reasons), node=ref.label, op=n.op_type, tensor=src
                )
            )


def _is_weight_qdq(idx: GraphIndex, n: onnx.NodeProto) -> bool:
    """A Q/DQ whose data input is a constant (or a Q of a constant): it quantizes weights."""
    src = n.input[0]
    if idx.is_const(src):
        return True
    prod = idx.producer.get(src)
    return bool(prod and prod.op == "QuantizeLinear" and idx.is_const(prod.node.input[0]))


def _check_qdq_axis(idx: GraphIndex, ref: NodeRef, scale: np.ndarray, qtype, findings: list[Finding]) -> None:
    n = ref.node
    data_shape = idx.shape.get(n.input[0]) or []
    rank = len(data_shape)
    if scale.ndim > 1 or node_attr(n, "block_size", 0):
        # [OPS] blocked quantization: INT4 weights only
        if qtype not in (_DT.INT4,) or not _is_weight_qdq(idx, n):
            findings.append(
                Finding(
                    "qdq-axis",
                    "error",
                    "blocked quantization (rank > 1 scale) is only supported for INT4 weights",
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
    axis = node_attr(n, "axis", 1)
    if rank and axis < 0:
        axis += rank
    dim = data_shape[axis] if 0 <= axis < rank else None
    if rank and (not 0 <= axis < rank or (isinstance(dim, int) and dim != scale.size)):
        # [OPS] per-axis scales: one per element of the quantized axis
        findings.append(
            Finding(
                "qdq-axis",
                "error",
                f"{scale.size} scales along axis {axis} of a tensor of shape {data_shape}",
                node=ref.label,
                op=n.op_type,
            )
        )
        return
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
            expected = 0 if node_attr(consumer.node, "transB", 0) else 1
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
