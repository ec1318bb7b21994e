"""The TensorRT lint: rules over an ONNX graph, read with ``onnx`` (shape-inferred).

Rules (ids are stable; ``RULES`` has one line each):

* ``unsupported-op`` / ``custom-op`` / ``opset``: what the ONNX parser of the chosen
  TensorRT version imports (``trt_ops``); an op in another domain needs a plugin
  unless the model defines it as a local function (TensorRT 10 inlines those, so
  their bodies are checked instead).
* ``op-restriction``: the checkable "Restrictions" of the operator table (Resize
  modes, TopK ``sorted``/K, pooling dilations and rank, LayerNormalization extra
  outputs, Reduce axes given as a tensor, ...).
* ``qdq-zero-point``, ``qdq-uint8``, ``qdq-type``, ``qdq-scale``, ``qdq-axis``:
  what the parser rejects (``trt_qdq``): zero points must be 0, the quantized type
  INT8/FP8/INT4/FP4 (an INT32 bias DequantizeLinear is an error), scales positive
  build-time constants, activations per tensor, weights per channel along the
  output-channel axis, blocked scales only for INT4 weights.
* ``qdq-placement`` (warning): a Q/DQ pair not at a fusible group's entry.
* ``fp16-range``, ``fp16-layernorm``, ``fp16-reduce``, ``fp16-softmax``: where a
  graph computing in FP16 overflows (65504 is the largest FP16 value). TensorRT
  itself warns "Detected layernorm nodes in FP16 ... may cause overflow".
* ``dynamic-no-profile``: an input with dynamic axes other than the batch axis
  and no ``--shapes`` profile; building fails without one.
* ``int64-cast``, ``double-cast``, ``uint8-internal``: types TensorRT casts down or
  only allows at the network boundary.
* ``precision-not-in-graph``: FP16/INT8 asked for, but the graph does not carry it
  (TensorRT 11 builds strongly typed networks only; INT8 needs Q/DQ).
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from tensorsmith.convert.trt.profiles import DEFAULT_MAX_BATCH, Profile, parse_profile_specs, resolve_profiles
from tensorsmith.errors import UsageError
from tensorsmith.lint import trt_ops
from tensorsmith.lint.findings import Finding, LintReport
from tensorsmith.lint.trt_fp16 import check_fp16
from tensorsmith.lint.trt_index import GraphIndex, NodeRef, load_model, node_attr, owner_of, text_of
from tensorsmith.lint.trt_qdq import QUANT_NAMES, check_qdq, qdq_type

RULES = {
    "unsupported-op": "the TensorRT ONNX parser of this version has no importer for the op",
    "custom-op": "op outside the ONNX domain and not a model-local function: needs a TensorRT plugin",
    "opset": "default-domain opset outside what the parser documents",
    "op-restriction": "a documented restriction of the op's importer is not met",
    "qdq-zero-point": "Q/DQ zero point is not 0 (TensorRT quantization is symmetric)",
    "qdq-uint8": "Q/DQ uses an unsigned or 16-bit type (TensorRT quantizes to signed int8, fp8 or int4)",
    "qdq-scale": "Q/DQ scale is not a positive build-time constant",
    "qdq-axis": "per-channel Q/DQ on an activation, along an axis TensorRT does not quantize weights on, "
    "scales that do not match the axis, or blocked quantization outside INT4 weights",
    "qdq-type": "Q/DQ of a type the parser rejects (INT32 bias, FP8 E5M2, ...): only INT8, FP8 E4M3, INT4, FP4",
    "qdq-placement": "Q/DQ pair not at the entry of a group TensorRT fuses: it becomes a reformat layer",
    "fp16-range": "float constant beyond +-65504 that becomes inf in FP16",
    "fp16-layernorm": "squares summed by ReduceMean/ReduceSum (decomposed LayerNorm/RMSNorm) in FP16",
    "fp16-reduce": "sum or product reduction computed in FP16",
    "fp16-softmax": "Exp feeding a sum without max subtraction (hand-written softmax) in FP16",
    "dynamic-no-profile": "dynamic input axes without an optimization profile (--shapes)",
    "int64-cast": "INT64 tensor into an op TensorRT runs without INT64 (cast to INT32 or rejected)",
    "double-cast": "DOUBLE tensor; TensorRT casts it to FLOAT, clamping to +-FLT_MAX",
    "uint8-internal": "UINT8 tensor inside the network; TensorRT allows UINT8 only as network input/output",
    "precision-not-in-graph": "the requested precision is not in the graph and this TensorRT cannot add it",
}

_DT = TensorProto
_FLOATS = {_DT.FLOAT, _DT.FLOAT16, _DT.BFLOAT16, _DT.DOUBLE}
_TYPE_NAMES: dict[int, str] = {
    _DT.FLOAT: "FP32",
    _DT.FLOAT16: "FP16",
    _DT.BFLOAT16: "BF16",
    _DT.DOUBLE: "DOUBLE",
    _DT.INT32: "INT32",
    _DT.INT64: "INT64",
    _DT.INT8: "INT8",
    _DT.UINT8: "UINT8",
    _DT.BOOL: "BOOL",
}
_REDUCE_OPS = {
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
}
_ALL_INPUT_OPS = {"Concat", "Sum", "Max", "Min", "Mean", "Where", "Add", "Sub", "Mul", "Div"}
_RESIZE_COORD = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}


# ---------------------------------------------------------------------------
# version handling


def parse_trt_version(text: str | None) -> tuple[int, int]:
    """``"10"``, ``"10.x"``, ``"10.8"``, ``"10.13.3.9"``, ``"11.x"`` -> (major, minor).

    ``x``/no minor means the newest release the table describes.
    """
    if text is None:
        return trt_ops.LATEST[10]
    m = re.fullmatch(r"\s*(\d+)(?:\.(\d+|x))?(?:\.[\dx]+)*\s*", str(text))
    if not m:
        raise UsageError(f"--trt-version: {text!r} is not a version like 10.x, 10.8 or 11.x")
    major = int(m.group(1))
    if major not in trt_ops.LATEST:
        raise UsageError(
            f"--trt-version {text}: tensorsmith knows TensorRT 10 and 11 only "
            "(TensorRT 9 and older are not supported)"
        )
    minor = m.group(2)
    if minor in (None, "x"):
        return trt_ops.LATEST[major]
    return major, int(minor)


def installed_trt_version() -> str | None:
    """The installed ``tensorrt`` distribution's version, read without importing it."""
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12", "tensorrt_cu13"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


# ---------------------------------------------------------------------------
# precision


@dataclass
class GraphPrecision:
    qdq_types: set[str]
    fp16: bool
    bf16: bool

    @property
    def has_qdq(self) -> bool:
        return bool(self.qdq_types)

    def text(self) -> str:
        parts = []
        if self.qdq_types:
            parts.append("+".join(sorted(self.qdq_types)))
        if self.fp16:
            parts.append("fp16")
        if self.bf16:
            parts.append("bf16")
        return "+".join(parts) or "fp32"


def graph_precision(idx: GraphIndex) -> GraphPrecision:
    """What the graph itself says about precision: Q/DQ types, FP16/BF16 tensors."""
    qdq: set[str] = set()
    for ref in idx.nodes:
        n = ref.node
        if n.op_type == "QuantizeLinear":
            dt = qdq_type(idx, n, quantize=True)
            qdq.add(QUANT_NAMES.get(dt, "int8") if dt else "int8")
        elif n.op_type == "DequantizeLinear":
            dt = qdq_type(idx, n, quantize=False)
            qdq.add(QUANT_NAMES.get(dt, "int8") if dt else "int8")
    types = set(idx.dtype.values())
    return GraphPrecision(qdq, _DT.FLOAT16 in types, _DT.BFLOAT16 in types)


def graph_precision_of(proto: onnx.ModelProto, base_dir: str | Path) -> GraphPrecision:
    """``graph_precision`` of a ModelProto whose external data lies in ``base_dir``."""
    return graph_precision(GraphIndex(proto, str(base_dir)))


# ---------------------------------------------------------------------------
# the lint


def lint_trt(
    path,
    *,
    trt_version: str | None = None,
    shapes: list[str] | dict[str, Profile] | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    precision: str | None = None,
) -> LintReport:
    """Lint an ONNX file for TensorRT. ``trt_version``: ``10.x``, ``10.8``, ``11.x``...
    (default: the installed tensorrt's, else 10.x). ``precision``: ``fp32``/``fp16``/
    ``int8`` the engine is meant to run at (default: what the graph carries)."""
    path = Path(path)
    if trt_version is None:
        trt_version = installed_trt_version()
    version = parse_trt_version(trt_version)
    proto = load_model(path)
    idx = GraphIndex(proto, str(path.parent))
    gp = graph_precision(idx)
    if precision not in (None, "auto", "fp32", "fp16", "int8"):
        raise UsageError(f"--precision {precision}: expected auto, fp32, fp16 or int8")
    requested = None if precision in (None, "auto") else precision

    report = LintReport(
        model=str(path),
        target="trt",
        target_version=f"{version[0]}.{version[1]}",
        precision=gp.text(),
        table=trt_ops.SOURCE,
    )
    if version[0] >= 11:
        report.notes.append("TensorRT 11 table = 10.15 table + Swish + DFT (from the 11.x release notes)")
    findings = report.findings

    # FP16 checks apply where TensorRT will compute in FP16: FP16 tensors in the
    # graph, or (TensorRT 10, weak typing) an FP32 graph built with the FP16 flag.
    weak_fp16 = False
    if requested == "fp16" and not (gp.fp16 or gp.bf16):
        if version[0] >= 11:
            findings.append(
                Finding(
                    "precision-not-in-graph",
                    "error",
                    "FP16 asked for, but the graph is FP32 and TensorRT 11 builds strongly typed networks "
                    "only: convert the graph to FP16 first (convert --precision fp16)",
                )
            )
        else:
            weak_fp16 = True
            report.precision = f"{gp.text()} (built with the FP16 flag)"
    if requested == "int8" and not gp.has_qdq:
        findings.append(
            Finding(
                "precision-not-in-graph",
                "error",
                "INT8 asked for, but the graph has no QuantizeLinear/DequantizeLinear: TensorRT needs "
                "explicit Q/DQ (convert --precision int8 first)",
            )
        )

    _check_opset(proto, version, findings)
    supported, unsupported = trt_ops.table_for(version)
    for ref in idx.nodes:
        _check_op(idx, ref, version, supported, unsupported, findings)
    check_qdq(idx, findings)
    check_fp16(idx, weak_fp16, findings)
    _check_types(idx, supported, findings)

    # dynamic inputs and profiles
    from tensorsmith.verify import input_specs_from_proto

    given = parse_profile_specs(shapes) if isinstance(shapes, list) or shapes is None else shapes
    specs = input_specs_from_proto(proto)
    res = resolve_profiles(specs, given, max_batch=max_batch)
    report.profiles = {k: v.to_dict() for k, v in res.profiles.items()}
    report.notes.extend(res.notes)
    by_name = {s.name: s for s in specs}
    for name, axes in res.missing.items():
        shape = by_name[name].shape
        dims = ", ".join(f"{a} ({shape[a] or '?'})" for a in axes)
        findings.append(
            Finding(
                "dynamic-no-profile",
                "error",
                f"input {name} has dynamic axes {dims} and no profile (only a lone dynamic batch axis "
                f"gets the default); give --shapes {name}=MIN:OPT:MAX",
                tensor=name,
            )
        )
    return report


def _check_opset(proto: onnx.ModelProto, version, findings: list[Finding]) -> None:
    imports = {o.domain: o.version for o in proto.opset_import}
    opset = imports.get("", imports.get("ai.onnx"))
    if opset is None:
        return
    lo, sure, maybe = trt_ops.opset_range(version)
    ver = f"{version[0]}.{version[1]}"
    if opset < lo:
        findings.append(
            Finding(
                "opset",
                "error",
                f"opset {opset} is older than TensorRT {ver} imports ({lo}-{maybe}); "
                "upgrade with onnx.version_converter",
            )
        )
    elif opset > maybe:
        findings.append(
            Finding("opset", "error", f"opset {opset} is newer than TensorRT {ver} documents ({lo}-{maybe})")
        )
    elif opset > sure:
        findings.append(
            Finding(
                "opset",
                "warning",
                f"opset {opset} may be newer than TensorRT {ver} imports (10.0 documents opsets "
                f"{lo}-{sure}, 10.15 {lo}-{maybe})",
            )
        )


def _check_op(
    idx: GraphIndex, ref: NodeRef, version, supported, unsupported, findings: list[Finding]
) -> None:
    n = ref.node
    op = n.op_type
    domain = n.domain or ""
    ver = f"{version[0]}.{version[1]}"
    if domain not in ("", "ai.onnx"):
        if (n.domain, op) in idx.functions:
            return  # a model-local function: TensorRT 10+ imports its body (checked as nodes)
        findings.append(
            Finding(
                "custom-op",
                "error",
                f"{domain}::{op} is not an ONNX operator TensorRT imports; it needs a TensorRT plugin "
                f"registered as {op!r}",
                node=ref.label,
                op=f"{domain}::{op}",
            )
        )
        return
    if op not in supported:
        since = trt_ops.ADDED_IN.get(op)
        why = f" (imported from TensorRT {since[0]}.{since[1]})" if since and version < since else ""
        findings.append(
            Finding(
                "unsupported-op",
                "error",
                f"{op} is not supported by the TensorRT {ver} ONNX parser{why}",
                node=ref.label,
                op=op,
            )
        )
        return
    _check_restrictions(idx, ref, version, findings)


def _restriction(findings, ref, message):
    findings.append(Finding("op-restriction", "error", message, node=ref.label, op=ref.op))


def _check_restrictions(idx: GraphIndex, ref: NodeRef, version, findings: list[Finding]) -> None:
    n, op = ref.node, ref.op
    if op == "Resize":
        mode = text_of(node_attr(n, "mode", b"nearest"))
        if mode not in ("nearest", "linear"):
            _restriction(findings, ref, f"Resize mode {mode!r} is not supported (nearest, linear only)")
        coord = text_of(node_attr(n, "coordinate_transformation_mode", b"half_pixel"))
        if coord not in _RESIZE_COORD:
            _restriction(findings, ref, f"Resize coordinate_transformation_mode {coord!r} is not supported")
        if node_attr(n, "antialias", 0):
            _restriction(findings, ref, "Resize with antialias is not supported")
        if text_of(node_attr(n, "keep_aspect_ratio_policy", b"stretch")) != "stretch":
            _restriction(findings, ref, "Resize keep_aspect_ratio_policy other than stretch is not supported")
    elif op == "TopK":
        if node_attr(n, "sorted", 1) == 0:
            _restriction(findings, ref, "TopK with sorted=0 is not supported")
        if len(n.input) > 1:
            k = idx.array(n.input[1])
            if k is None and not idx.is_const(n.input[1]):
                pass  # dynamic K is imported (TensorRT >= 8.6)
            elif k is not None and k.size and int(np.max(k)) >= 3840:
                _restriction(findings, ref, f"TopK K={int(np.max(k))} must be below 3840")
    elif op in ("MaxPool", "AveragePool", "LpPool"):
        dil = node_attr(n, "dilations")
        if dil and any(d != 1 for d in dil):
            _restriction(findings, ref, f"{op} dilations {list(dil)} are not supported (all ones only)")
        rank = len(idx.shape.get(n.input[0], []) or [])
        if op != "LpPool" and rank and rank not in (4, 5):
            _restriction(findings, ref, f"{op} on a rank-{rank} input: 2D or 3D pooling only")
        if op == "MaxPool" and len(n.output) > 1 and idx.used(n.output[1]):
            _restriction(findings, ref, "MaxPool Indices output is not supported")
    elif op == "LayerNormalization":
        if any(idx.used(o) for o in n.output[1:]):
            _restriction(findings, ref, "LayerNormalization: only the first output (Y) is supported")
    elif op == "Dropout":
        if len(n.input) > 2 and n.input[2]:
            v = idx.array(n.input[2])
            if v is None or bool(np.any(v)):
                _restriction(findings, ref, "Dropout training_mode must be a constant False")
    elif op == "ScatterND":
        if text_of(node_attr(n, "reduction", b"none")) != "none":
            _restriction(findings, ref, "ScatterND reduction other than none is not supported")
    elif op == "CumSum":
        if len(n.input) > 1 and not idx.is_const(n.input[1]):
            _restriction(findings, ref, "CumSum axis must be a build-time constant")
    elif op in _REDUCE_OPS:
        if len(n.input) > 1 and n.input[1] and not idx.is_const(n.input[1]):
            _restriction(findings, ref, f"{op} axes must be an initializer, not a computed tensor")
    elif op == "LSTM":
        if node_attr(n, "input_forget", 0) or node_attr(n, "layout", 0):
            _restriction(findings, ref, "LSTM input_forget and layout must be 0")
    elif op == "OneHot":
        if len(n.input) > 1 and not idx.is_const(n.input[1]):
            _restriction(findings, ref, "OneHot depth must be a build-time constant")
    elif op == "Constant":
        if any(a.name in ("sparse_value", "value_string", "value_strings") for a in n.attribute):
            _restriction(findings, ref, "Constant with a sparse or string value is not supported")
    elif op == "Cast":
        to = node_attr(n, "to")
        if to == _DT.STRING:
            _restriction(findings, ref, "Cast to STRING is not supported")
    elif op == "GridSample" and version < (11, 2):
        rank = len(idx.shape.get(n.input[0], []) or [])
        if rank and rank != 4:
            _restriction(findings, ref, f"GridSample on a rank-{rank} input: 4D only before TensorRT 11.2")


# -- types -----------------------------------------------------------------------


def _check_types(idx: GraphIndex, supported: dict, findings: list[Finding]) -> None:
    for vi in idx.graph_inputs:
        if idx.dtype.get(vi.name) == _DT.DOUBLE:
            findings.append(
                Finding(
                    "double-cast",
                    "warning",
                    "DOUBLE input: TensorRT casts it to FLOAT (values clamped to +-FLT_MAX)",
                    tensor=vi.name,
                )
            )
    for name, t in idx.const.items():
        if t.data_type == _DT.DOUBLE:
            findings.append(
                Finding(
                    "double-cast",
                    "warning",
                    "DOUBLE constant: TensorRT casts it to FLOAT (values clamped to +-FLT_MAX)",
                    tensor=name,
                    node=owner_of(idx, name),
                )
            )
    for ref in idx.nodes:
        n = ref.node
        if n.domain not in ("", "ai.onnx"):
            continue
        if n.op_type == "Cast":
            to = node_attr(n, "to")
            if to == _DT.DOUBLE:
                findings.append(
                    Finding(
                        "double-cast",
                        "warning",
                        "Cast to DOUBLE: TensorRT computes it as FLOAT",
                        node=ref.label,
                        op="Cast",
                    )
                )
            elif to == _DT.UINT8 and n.output[0] not in idx.graph_outputs:
                findings.append(
                    Finding(
                        "uint8-internal",
                        "warning",
                        "Cast to UINT8 inside the network: TensorRT allows UINT8 only as "
                        "network input or output",
                        node=ref.label,
                        op="Cast",
                    )
                )
            continue
        types = supported.get(n.op_type)
        if not types or "INT64" in types:
            continue
        idxs = range(len(n.input)) if n.op_type in _ALL_INPUT_OPS else [0]
        for k in idxs:
            if k < len(n.input) and n.input[k] and idx.dtype.get(n.input[k]) == _DT.INT64:
                findings.append(
                    Finding(
                        "int64-cast",
                        "warning",
                        f"INT64 input to {n.op_type}, which TensorRT runs in {', '.join(types)}: it is cast to "
                        "INT32 (values beyond +-2^31 clamp) or the import fails",
                        node=ref.label,
                        op=n.op_type,
                        tensor=n.input[k],
                    )
                )
                break


def rules_table() -> list[dict]:
    return [{"rule": k, "description": v} for k, v in RULES.items()]


__all__ = [
    "RULES",
    "graph_precision",
    "installed_trt_version",
    "lint_trt",
    "parse_trt_version",
    "rules_table",
]
