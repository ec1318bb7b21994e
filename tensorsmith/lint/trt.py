"""The TensorRT lint: rules over an ONNX graph, read with ``onnx`` (shape-inferred).

Rules (ids are stable; ``RULES`` has one line each):

* ``unsupported-op`` / ``custom-op`` / ``opset``: what the ONNX parser of the chosen
  TensorRT version imports (``trt_ops``); an op in another domain needs a plugin
  unless the model defines it as a local function (TensorRT 10 inlines those, so
  their bodies are checked instead).
* ``op-restriction``: the checkable "Restrictions" of the operator table (Resize
  modes, TopK ``sorted``/K, pooling dilations and rank, LayerNormalization extra
  outputs, Reduce axes given as a tensor, ...).
* ``qdq-zero-point``, ``qdq-uint8``, ``qdq-scale``, ``qdq-axis``: TensorRT's
  quantization is signed and symmetric: zero points must be 0, the quantized type
  int8 (or fp8/int4), scales build-time constants, activations per tensor,
  weights per channel along the output-channel axis.
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

import collections
import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from tensorsmith.convert.trt.profiles import DEFAULT_MAX_BATCH, Profile, parse_profile_specs, resolve_profiles
from tensorsmith.errors import UsageError
from tensorsmith.lint import Finding, LintReport, trt_ops

FP16_MAX = 65504.0

RULES = {
    "unsupported-op": "the TensorRT ONNX parser of this version has no importer for the op",
    "custom-op": "op outside the ONNX domain and not a model-local function: needs a TensorRT plugin",
    "opset": "default-domain opset outside what the parser documents",
    "op-restriction": "a documented restriction of the op's importer is not met",
    "qdq-zero-point": "Q/DQ zero point is not 0 (TensorRT quantization is symmetric)",
    "qdq-uint8": "Q/DQ uses an unsigned or 16-bit type (TensorRT quantizes to signed int8, fp8 or int4)",
    "qdq-scale": "Q/DQ scale is not a positive build-time constant",
    "qdq-axis": "per-channel Q/DQ on an activation, or along an axis TensorRT does not quantize weights on",
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
_TYPE_NAMES = {
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
_SUM_REDUCE = {"ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceProd", "ReduceLogSumExp"}
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
# graph index


@dataclass
class _NodeRef:
    node: onnx.NodeProto
    label: str  # "<graph>/<node>" for display
    in_function: bool = False

    @property
    def op(self) -> str:
        return self.node.op_type


class _Index:
    """Producers, consumers, types, shapes and constants over the main graph, its
    subgraphs and the model-local functions."""

    def __init__(self, proto: onnx.ModelProto, base_dir: str):
        self.proto = proto
        self.base_dir = base_dir
        self.dtype: dict[str, int] = {}
        self.shape: dict[str, list] = {}
        self.producer: dict[str, _NodeRef] = {}
        self.consumers: dict[str, list[tuple[_NodeRef, int]]] = collections.defaultdict(list)
        self.const: dict[str, TensorProto] = {}
        self.nodes: list[_NodeRef] = []
        self.graph_inputs: list[onnx.ValueInfoProto] = []
        self.graph_outputs: set[str] = {o.name for o in proto.graph.output}
        self.functions = {(f.domain, f.name): f for f in proto.functions}
        self._arrays: dict[str, np.ndarray | None] = {}
        inits = {i.name for i in proto.graph.initializer}
        self.graph_inputs = [i for i in proto.graph.input if i.name not in inits]
        self._walk_graph(proto.graph, "")
        for f in proto.functions:
            for i, n in enumerate(f.node):
                self._add_node(n, f"function {f.domain}:{f.name}", i, in_function=True)

    def _vi(self, vi: onnx.ValueInfoProto) -> None:
        if not vi.type.HasField("tensor_type"):
            return
        tt = vi.type.tensor_type
        if tt.elem_type:
            self.dtype.setdefault(vi.name, tt.elem_type)
        if tt.HasField("shape"):
            dims = []
            for d in tt.shape.dim:
                if d.HasField("dim_value"):
                    dims.append(int(d.dim_value))
                elif d.HasField("dim_param"):
                    dims.append(d.dim_param)
                else:
                    dims.append(None)
            self.shape.setdefault(vi.name, dims)

    def _walk_graph(self, g: onnx.GraphProto, prefix: str) -> None:
        for vi in [*g.input, *g.output, *g.value_info]:
            self._vi(vi)
        for t in g.initializer:
            self.const[t.name] = t
            self.dtype.setdefault(t.name, t.data_type)
            self.shape.setdefault(t.name, list(t.dims))
        for i, n in enumerate(g.node):
            self._add_node(n, prefix, i)
            for attr in n.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    self._walk_graph(attr.g, f"{prefix}{_name(n, i)}/{attr.name}/")
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for k, sg in enumerate(attr.graphs):
                        self._walk_graph(sg, f"{prefix}{_name(n, i)}/{attr.name}[{k}]/")

    def _add_node(self, n: onnx.NodeProto, prefix: str, i: int, *, in_function: bool = False) -> None:
        label = f"{prefix}{_name(n, i)}" if not in_function else f"{prefix}/{_name(n, i)}"
        ref = _NodeRef(n, label, in_function)
        self.nodes.append(ref)
        for k, name in enumerate(n.input):
            if name:
                self.consumers[name].append((ref, k))
        for name in n.output:
            if name:
                self.producer.setdefault(name, ref)
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and n.output:
            t = _constant_tensor(n)
            if t is not None:
                self.const[n.output[0]] = t
                self.dtype.setdefault(n.output[0], t.data_type)
                self.shape.setdefault(n.output[0], list(t.dims))

    def array(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor (initializer or Constant node), or None."""
        if name not in self._arrays:
            t = self.const.get(name)
            arr = None
            if t is not None:
                try:
                    arr = numpy_helper.to_array(t, self.base_dir)
                except Exception:
                    arr = None
            self._arrays[name] = arr
        return self._arrays[name]

    def is_const(self, name: str) -> bool:
        return name in self.const

    def used(self, name: str) -> bool:
        return bool(name) and (name in self.graph_outputs or bool(self.consumers.get(name)))


def _name(n: onnx.NodeProto, i: int) -> str:
    return n.name or f"{n.op_type}#{i}"


def _constant_tensor(n: onnx.NodeProto) -> TensorProto | None:
    for a in n.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            return a.t
        if a.name == "value_float":
            return numpy_helper.from_array(np.array(a.f, dtype=np.float32))
        if a.name == "value_floats":
            return numpy_helper.from_array(np.array(list(a.floats), dtype=np.float32))
        if a.name == "value_int":
            return numpy_helper.from_array(np.array(a.i, dtype=np.int64))
        if a.name == "value_ints":
            return numpy_helper.from_array(np.array(list(a.ints), dtype=np.int64))
    return None


def _attr(n: onnx.NodeProto, name: str, default=None):
    for a in n.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _load(path: Path) -> onnx.ModelProto:
    from tensorsmith.model_io import load_proto

    proto = load_proto(path)
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception:
        return proto


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


def graph_precision(idx: _Index) -> GraphPrecision:
    """What the graph itself says about precision: Q/DQ types, FP16/BF16 tensors."""
    qdq: set[str] = set()
    for ref in idx.nodes:
        n = ref.node
        if n.op_type == "QuantizeLinear":
            dt = _qdq_type(idx, n, quantize=True)
            qdq.add(_QUANT_NAMES.get(dt, "int8") if dt else "int8")
        elif n.op_type == "DequantizeLinear":
            dt = _qdq_type(idx, n, quantize=False)
            qdq.add(_QUANT_NAMES.get(dt, "int8") if dt else "int8")
    types = set(idx.dtype.values())
    return GraphPrecision(qdq, _DT.FLOAT16 in types, _DT.BFLOAT16 in types)


def graph_precision_of(proto: onnx.ModelProto, base_dir: str | Path) -> GraphPrecision:
    """``graph_precision`` of a ModelProto whose external data lies in ``base_dir``."""
    return graph_precision(_Index(proto, str(base_dir)))


def _qdq_type(idx: _Index, n: onnx.NodeProto, *, quantize: bool) -> int | None:
    """The quantized element type of a Q (its output) or DQ (its input)."""
    if len(n.input) > 2 and n.input[2] and n.input[2] in idx.dtype:
        return idx.dtype[n.input[2]]
    name = n.output[0] if quantize else n.input[0]
    dt = idx.dtype.get(name)
    if dt is None and quantize:
        dt = _attr(n, "output_dtype") or None
    return dt


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
    proto = _load(path)
    idx = _Index(proto, str(path.parent))
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
    _check_qdq(idx, findings)
    _check_fp16(idx, weak_fp16, findings)
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


def _check_op(idx: _Index, ref: _NodeRef, version, supported, unsupported, findings: list[Finding]) -> None:
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


def _check_restrictions(idx: _Index, ref: _NodeRef, version, findings: list[Finding]) -> None:
    n, op = ref.node, ref.op
    if op == "Resize":
        mode = _text(_attr(n, "mode", b"nearest"))
        if mode not in ("nearest", "linear"):
            _restriction(findings, ref, f"Resize mode {mode!r} is not supported (nearest, linear only)")
        coord = _text(_attr(n, "coordinate_transformation_mode", b"half_pixel"))
        if coord not in _RESIZE_COORD:
            _restriction(findings, ref, f"Resize coordinate_transformation_mode {coord!r} is not supported")
        if _attr(n, "antialias", 0):
            _restriction(findings, ref, "Resize with antialias is not supported")
        if _text(_attr(n, "keep_aspect_ratio_policy", b"stretch")) != "stretch":
            _restriction(findings, ref, "Resize keep_aspect_ratio_policy other than stretch is not supported")
    elif op == "TopK":
        if _attr(n, "sorted", 1) == 0:
            _restriction(findings, ref, "TopK with sorted=0 is not supported")
        if len(n.input) > 1:
            k = idx.array(n.input[1])
            if k is None and not idx.is_const(n.input[1]):
                pass  # dynamic K is imported (TensorRT >= 8.6)
            elif k is not None and k.size and int(np.max(k)) >= 3840:
                _restriction(findings, ref, f"TopK K={int(np.max(k))} must be below 3840")
    elif op in ("MaxPool", "AveragePool", "LpPool"):
        dil = _attr(n, "dilations")
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
        if _text(_attr(n, "reduction", b"none")) != "none":
            _restriction(findings, ref, "ScatterND reduction other than none is not supported")
    elif op == "CumSum":
        if len(n.input) > 1 and not idx.is_const(n.input[1]):
            _restriction(findings, ref, "CumSum axis must be a build-time constant")
    elif op in _REDUCE_OPS:
        if len(n.input) > 1 and n.input[1] and not idx.is_const(n.input[1]):
            _restriction(findings, ref, f"{op} axes must be an initializer, not a computed tensor")
    elif op == "LSTM":
        if _attr(n, "input_forget", 0) or _attr(n, "layout", 0):
            _restriction(findings, ref, "LSTM input_forget and layout must be 0")
    elif op == "OneHot":
        if len(n.input) > 1 and not idx.is_const(n.input[1]):
            _restriction(findings, ref, "OneHot depth must be a build-time constant")
    elif op == "Constant":
        if any(a.name in ("sparse_value", "value_string", "value_strings") for a in n.attribute):
            _restriction(findings, ref, "Constant with a sparse or string value is not supported")
    elif op == "Cast":
        to = _attr(n, "to")
        if to == _DT.STRING:
            _restriction(findings, ref, "Cast to STRING is not supported")
    elif op == "GridSample" and version < (11, 2):
        rank = len(idx.shape.get(n.input[0], []) or [])
        if rank and rank != 4:
            _restriction(findings, ref, f"GridSample on a rank-{rank} input: 4D only before TensorRT 11.2")


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


# -- FP16 ----------------------------------------------------------------------


def _fp16_node(idx: _Index, n: onnx.NodeProto, weak_fp16: bool) -> bool:
    dts = [idx.dtype.get(x) for x in [*n.input, *n.output] if x]
    if _DT.FLOAT16 in dts:
        return True
    return weak_fp16 and _DT.FLOAT in dts


def _check_fp16(idx: _Index, weak_fp16: bool, findings: list[Finding]) -> None:
    any_fp16 = weak_fp16 or any(dt == _DT.FLOAT16 for dt in idx.dtype.values())
    if not any_fp16:
        return
    # constants that become (or are) FP16
    for name, t in idx.const.items():
        if t.data_type not in (_DT.FLOAT, _DT.DOUBLE, _DT.FLOAT16):
            continue
        into_fp16 = weak_fp16 and t.data_type in (_DT.FLOAT, _DT.DOUBLE)
        into_fp16 = into_fp16 or any(
            c.op == "Cast" and _attr(c.node, "to") == _DT.FLOAT16 for c, _ in idx.consumers.get(name, [])
        )
        arr = None
        if into_fp16 or t.data_type == _DT.FLOAT16:
            arr = idx.array(name)
        if arr is None or not arr.size:
            continue
        a = np.asarray(arr, dtype=np.float64)
        if t.data_type == _DT.FLOAT16:
            bad = np.isinf(a)
            if bad.any():
                findings.append(
                    Finding(
                        "fp16-range",
                        "warning",
                        f"FP16 constant holds {int(bad.sum())} inf value(s) (overflowed when it was converted?)",
                        tensor=name,
                        node=_owner(idx, name),
                    )
                )
            continue
        finite = np.isfinite(a)
        over = finite & (np.abs(a) > FP16_MAX)
        if over.any():
            findings.append(
                Finding(
                    "fp16-range",
                    "warning",
                    f"{int(over.sum())} value(s) beyond +-65504 (largest {float(np.abs(a[over]).max()):.4g}) become "
                    "inf in FP16",
                    tensor=name,
                    node=_owner(idx, name),
                )
            )
    layernorm_reduces: set[int] = set()
    for ref in idx.nodes:
        n = ref.node
        if not _fp16_node(idx, n, weak_fp16):
            continue
        if _is_square(idx, n):
            reduces = [
                c for c, _ in idx.consumers.get(n.output[0], []) if c.op in ("ReduceMean", "ReduceSum")
            ]
            if reduces:
                layernorm_reduces.update(id(r.node) for r in reduces)
                findings.append(
                    Finding(
                        "fp16-layernorm",
                        "warning",
                        "squares summed by a reduction (a decomposed LayerNorm/RMSNorm variance): they overflow "
                        "FP16 once |x| > 255; use LayerNormalization (opset >= 17) or keep this subgraph in FP32",
                        node=ref.label,
                        op=n.op_type,
                    )
                )
    for ref in idx.nodes:
        n = ref.node
        if not _fp16_node(idx, n, weak_fp16):
            continue
        if n.op_type in _SUM_REDUCE and id(n) not in layernorm_reduces:
            extent = _reduced_extent(idx, n)
            size = f" over {extent} elements" if extent else ""
            findings.append(
                Finding(
                    "fp16-reduce",
                    "warning",
                    f"{n.op_type}{size} in FP16 can exceed 65504; keep it in FP32 if the values are large",
                    node=ref.label,
                    op=n.op_type,
                )
            )
        elif n.op_type == "Exp" and not _max_subtracted(idx, n.input[0]):
            sums = [c for c, _ in idx.consumers.get(n.output[0], []) if c.op in ("ReduceSum",)]
            if sums:
                findings.append(
                    Finding(
                        "fp16-softmax",
                        "warning",
                        "hand-written softmax without subtracting the max: exp() overflows FP16 for "
                        "inputs above 11.09; use Softmax or subtract ReduceMax first",
                        node=ref.label,
                        op="Exp",
                    )
                )


def _owner(idx: _Index, name: str) -> str | None:
    p = idx.producer.get(name)
    return p.label if p else None


def _is_square(idx: _Index, n: onnx.NodeProto) -> bool:
    if n.op_type == "Pow" and len(n.input) == 2:
        e = idx.array(n.input[1])
        return e is not None and e.size == 1 and float(e.reshape(-1)[0]) == 2.0
    return n.op_type == "Mul" and len(n.input) == 2 and n.input[0] == n.input[1]


_PASS_THROUGH = {"Expand", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Cast", "Flatten", "Transpose"}


def _through(idx: _Index, name: str, depth: int = 6):
    """The producer of ``name``, looking through shape-only ops (Expand, Reshape, ...)."""
    p = idx.producer.get(name)
    while p is not None and p.op in _PASS_THROUGH and depth > 0 and p.node.input:
        p = idx.producer.get(p.node.input[0])
        depth -= 1
    return p


def _max_subtracted(idx: _Index, name: str) -> bool:
    p = idx.producer.get(name)
    if p is None or p.op != "Sub" or len(p.node.input) < 2:
        return False
    q = _through(idx, p.node.input[1])
    return q is not None and q.op in ("ReduceMax", "Max", "GlobalMaxPool")


def _reduced_extent(idx: _Index, n: onnx.NodeProto) -> int | None:
    shape = idx.shape.get(n.input[0])
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    axes = _attr(n, "axes")
    if axes is None and len(n.input) > 1 and n.input[1]:
        arr = idx.array(n.input[1])
        axes = None if arr is None else [int(a) for a in arr.reshape(-1)]
    if axes is None or len(axes) == 0:
        if _attr(n, "noop_with_empty_axes", 0):
            return None
        axes = list(range(len(shape)))
    total = 1
    for a in axes:
        total *= shape[a]
    return total


# -- types -----------------------------------------------------------------------


def _check_types(idx: _Index, supported: dict, findings: list[Finding]) -> None:
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
                    node=_owner(idx, name),
                )
            )
    for ref in idx.nodes:
        n = ref.node
        if n.domain not in ("", "ai.onnx"):
            continue
        if n.op_type == "Cast":
            to = _attr(n, "to")
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
