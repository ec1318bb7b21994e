"""Where INT8 Q/DQ goes for TensorRT: only at the entries of the groups TensorRT fuses.

TensorRT runs a quantized layer in INT8 only where a DequantizeLinear feeds an op it
can fuse the Q/DQ into; a Q/DQ pair anywhere else becomes a reformat layer (an INT8
<-> float copy) that costs time and buys nothing. The rules below follow NVIDIA's own
placement, each naming its source:

* [GUIDE] TensorRT developer guide, "Explicit Quantization" -> "Q/DQ Layer-Placement
  Recommendations": quantize all inputs of weighted operations (Convolution,
  Deconvolution, GEMM); do not quantize the outputs of weighted ops by default
  (the epilogue fusions handle them); quantize the residual input of an
  element-wise Add so the Add fuses into the preceding convolution; TensorRT
  propagates Q/DQ across commuting ops (Concat, pooling, data movement), so the
  inputs of a Concat must share one scale.
* [MO-int8] Model Optimizer ``modelopt/onnx/quantization/int8.py`` (``quantize``):
  symmetric activations (``ActivationSymmetric``), biases left in float
  (``QuantizeBias=False``), no output quantization
  (``OpTypesToExcludeOutputQuantization`` = every op type), one Q/DQ pair per tensor
  (``DedicatedQDQPair=False``), weights per output channel
  (``QDQOpTypePerChannelSupportToAxis``: Conv 0, ConvTranspose 1; ``ort_utils.py``).
* [MO-graph] ``modelopt/onnx/quantization/graph_utils.py``: ``get_fusible_backbone``
  (Conv[+BN][+bias][+Relu|Sigmoid*Mul][+MaxPool] is one fused layer),
  ``build_non_residual_input_map`` (the input of a residual Add coming from the
  convolution branch is *not* quantized, the other one is),
  ``find_nodes_from_convs_to_exclude`` (convolutions with fewer than 16 input or
  output channels, with the INT8 exceptions for multiples of 8),
  ``find_nodes_from_matmul_to_exclude`` (GEMV: a MatMul/Gemm with M or N of 1 cannot
  use tensor cores; Q/DQ only slows it).
* [MO-part] ``modelopt/onnx/quantization/partitioning.py``: ``find_quantizable_nodes``
  (pooling is quantized only next to a quantized neighbour, pointwise ops with a
  constant input never), ``find_fusible_partitions`` (pointwise ops after a
  convolution are fused into it: no Q/DQ on their inputs).
* [MO-ort] ``ort_utils.configure_ort`` removes data-movement, activation, Softmax,
  Gather/Where and Concat from what is quantized: never Q/DQ on shape, integer or
  constant paths.

The result (``Plan``) is what onnxruntime's QDQ quantizer is asked to quantize
(``nodes_to_quantize``) plus the inputs whose Q/DQ is taken out again afterwards
(``strip``: the convolution-branch input of a residual Add), which is how Model
Optimizer itself drives the same quantizer (``remove_partial_input_qdq``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
import onnx_ir as ir

COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm")
CONVS = ("Conv", "ConvTranspose")
# [MO-part] ``is_pooling_or_window_op`` (the pooling subset)
POOLS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool")
# [MO-part] ``get_copy_ops``: data movement TensorRT commutes Q/DQ across
COPY = (
    "Flatten",
    "Transpose",
    "Concat",
    "Split",
    "Squeeze",
    "Unsqueeze",
    "Expand",
    "Reshape",
    "Tile",
    "Gather",
    "Slice",
    "Identity",
)
# pointwise ops TensorRT fuses into a preceding convolution's epilogue
# ([MO-graph] ``get_fusible_backbone`` path types, [GUIDE] "Conv + activation" fusions)
EPILOGUE = (
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Elu",
    "Selu",
    "Softplus",
    "BatchNormalization",
    "MaxPool",
)
SCALING = ("Add", "Mul", "Sub", "Div")  # fused when the other operand is a constant (BiasAdd, ConstMul)
FLOATS = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16)
MIN_CHANNELS = 16  # [MO-graph] find_nodes_from_convs_to_exclude


@dataclass
class Plan:
    """What to quantize for TensorRT, and why the rest is not."""

    nodes: list[str] = field(default_factory=list)  # nodes_to_quantize, in graph order
    strip: list[tuple[str, int]] = field(default_factory=list)  # (node, input index): Q/DQ taken out
    skipped: dict[str, str] = field(default_factory=dict)  # compute node -> reason it stays float
    residual_adds: int = 0
    pools: int = 0


class _Graph:
    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self.order = {id(n): i for i, n in enumerate(graph)}
        self._static: dict[int, bool] = {}

    def static(self, v: ir.Value | None) -> bool:
        """True for a value that does not depend on the data of a graph input: an initializer,
        a Constant, or computed from those and from shapes only ([MO-ort]: never quantized)."""
        if v is None:
            return True
        key = id(v)
        if key in self._static:
            return self._static[key]
        self._static[key] = False  # cycles cannot happen in a DAG; guards recursion anyway
        node = v.producer()
        if v.is_initializer() or v.const_value is not None:
            out = True
        elif node is None:
            out = False  # a graph input
        elif node.op_type in ("Shape", "Size", "Constant", "ConstantOfShape", "EyeLike"):
            out = True
        else:
            out = all(self.static(i) for i in node.inputs)
        self._static[key] = out
        return out

    def activation(self, v: ir.Value | None) -> bool:
        """A float tensor computed from the inputs: the only kind that gets an activation Q/DQ."""
        return v is not None and not self.static(v) and (v.dtype is None or v.dtype in FLOATS)

    def variable_inputs(self, node: ir.Node) -> list[ir.Value]:
        return [i for i in node.inputs if i is not None and not self.static(i)]

    def backbone(self, v: ir.Value | None, depth: int = 0) -> ir.Node | None:
        """The convolution this value is the fused output of, or None ([MO-graph]
        ``get_fusible_backbone``: Conv followed by BN, bias/scale by a constant, an
        activation (Relu, Sigmoid*Mul swish, ...), MaxPool, through data movement)."""
        if v is None or depth > 12:
            return None
        node = v.producer()
        if node is None:
            return None
        if node.op_type in CONVS:
            return node
        var = self.variable_inputs(node)
        if node.op_type in EPILOGUE or node.op_type in COPY or (node.op_type in SCALING and len(var) == 1):
            return self.backbone(var[0], depth + 1) if len(var) == 1 else None
        if node.op_type == "Mul" and len(var) == 2:  # swish: x * Sigmoid(x) (also HardSigmoid)
            for a, b in (var, var[::-1]):
                p = b.producer()
                if p is not None and p.op_type in ("Sigmoid", "HardSigmoid") and p.inputs[0] is a:
                    return self.backbone(a, depth + 1)
        return None

    def ancestors(self, node: ir.Node, limit: int = 4000) -> set[int]:
        seen: set[int] = set()
        stack = [node]
        while stack and len(seen) < limit:
            n = stack.pop()
            for i in n.inputs:
                p = i.producer() if i is not None else None
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    stack.append(p)
        return seen


def _attr(node: ir.Node, name: str, default: int) -> int:
    a = node.attributes.get(name)
    return default if a is None else int(a.value)


def _dims(v: ir.Value | None) -> list[int | None] | None:
    if v is None or v.shape is None:
        return None
    return [d if isinstance(d, int) else None for d in v.shape]


def _conv_reason(node: ir.Node, g: _Graph) -> str:
    """[MO-graph] ``find_nodes_from_convs_to_exclude`` (int8): TensorRT has no INT8 kernel
    worth the Q/DQ for convolutions with few channels."""
    w = node.inputs[1] if len(node.inputs) > 1 else None
    wd = _dims(w)
    if w is None or not g.static(w) or not wd or any(d is None for d in wd):
        return "convolution with a non-constant weight"
    out_c, in_c = (wd[0], wd[1]) if node.op_type == "Conv" else (wd[1], wd[0])
    assert out_c is not None and in_c is not None
    group = _attr(node, "group", 1)
    if out_c >= MIN_CHANNELS and in_c >= MIN_CHANNELS:
        return ""
    if node.op_type == "ConvTranspose":
        return f"transposed convolution with {in_c} -> {out_c} channels (< {MIN_CHANNELS})"
    kernel = list(wd[2:])
    first = node.inputs[0] is not None and node.inputs[0].is_graph_input()
    if (
        group == 1
        and (out_c % 8 == 0 or in_c % 8 == 0)
        and (first or out_c >= MIN_CHANNELS or in_c >= MIN_CHANNELS)
        and len(set(kernel)) == 1
    ):
        return ""
    if group > 1 and out_c % 8 == 0 and all(k is not None and k >= 3 for k in kernel):
        return ""
    return f"convolution with {in_c} -> {out_c} channels (< {MIN_CHANNELS}): no INT8 kernel worth its Q/DQ"


def _matmul_reason(node: ir.Node, g: _Graph) -> str:
    a, b = node.inputs[0], node.inputs[1] if len(node.inputs) > 1 else None
    if not g.activation(a):
        return "first input is not a float activation"
    if b is None or not g.static(b):
        # [MO-part] find_mha_partitions / MHA patterns stay in float for INT8
        return "product of two activations (attention): TensorRT's MHA fusion keeps it in float"
    ad, bd = _dims(a), _dims(b)
    if node.op_type == "Gemm" and _attr(node, "transA", 0):
        m = ad[-1] if ad else None
    else:
        # a symbolic batch counts as 1: Model Optimizer measures M on its calibration batch
        m = 1
        for d in (ad or [None, None])[:-1]:
            m *= d if d is not None else 1
    if bd:
        n = bd[0] if node.op_type == "Gemm" and _attr(node, "transB", 0) else bd[-1]
    else:
        n = None
    if m == 1 or n == 1:
        # [MO-graph] find_nodes_from_matmul_to_exclude: GEMV cannot use tensor cores
        return f"GEMV-like {node.op_type} (M={m}, N={n}): Q/DQ only slows it"
    return ""


def plan(proto: onnx.ModelProto) -> Plan:
    """The TensorRT placement for ``proto`` (shapes inferred, node names unique)."""
    model = ir.from_proto(proto)
    g = _Graph(model.graph)
    out = Plan()
    heads: set[int] = set()
    for node in model.graph:
        if node.op_type not in COMPUTE:
            continue
        if not g.activation(node.inputs[0]):
            out.skipped[node.name or ""] = "input is not a float activation"
            continue
        why = _conv_reason(node, g) if node.op_type in CONVS else _matmul_reason(node, g)
        if why:
            out.skipped[node.name or ""] = why
        else:
            heads.add(id(node))

    adds: dict[int, int] = {}  # residual Add -> index of its convolution-branch input (not quantized)
    for node in model.graph:
        if node.op_type != "Add" or len(node.inputs) != 2:
            continue
        a, b = node.inputs
        if not (g.activation(a) and g.activation(b)):
            continue  # [MO-part] pointwise with a constant input: never quantized (BiasAdd)
        ba, bb = g.backbone(a), g.backbone(b)
        # [MO-graph] build_non_residual_input_map
        if ba is not None and bb is not None:
            if ba is bb:
                continue
            # the branch with the later convolution is the longer one: it fuses with the Add
            fused = 0 if g.order[id(ba)] > g.order[id(bb)] else 1
        elif ba is not None or bb is not None:
            fused = 0 if ba is not None else 1
            conv = ba if ba is not None else bb
            other = node.inputs[1 - fused]
            p = other.producer() if other is not None else None
            assert conv is not None
            if p is not None and (p is conv or id(conv) in g.ancestors(p)):
                continue  # ConvNext: both inputs come from the same convolution, not a residual
        else:
            continue
        conv = ba if fused == 0 else bb
        if conv is None or id(conv) not in heads:
            continue  # a float convolution cannot take the Add into an INT8 kernel
        adds[id(node)] = fused

    pools: set[int] = set()
    chosen = heads | set(adds)

    def quantized_near(v: ir.Value | None, forward: bool, depth: int = 0) -> bool:
        if v is None or depth > 8:
            return False
        if forward:
            for use in v.uses():
                n = use.node
                if (id(n) in chosen and n.inputs[0] is v) or id(n) in adds:
                    return True
                if n.op_type in COPY and any(quantized_near(o, True, depth + 1) for o in n.outputs):
                    return True
            return False
        p = v.producer()
        if p is None:
            return False
        if id(p) in chosen:
            return True
        return (p.op_type in COPY or p.op_type == "Cast") and any(
            quantized_near(i, False, depth + 1) for i in g.variable_inputs(p)
        )

    for node in model.graph:
        if node.op_type not in POOLS or not g.activation(node.inputs[0]):
            continue
        if node.op_type.startswith("Global"):
            # measured here (bench/trt_int8.py): a Q/DQ on a global pool's input quantizes the
            # whole feature map its squeeze-excite Mul also reads (one pair per tensor), and
            # cost PP-OCR cls 0.976 -> 0.944 cosine; the 1x1 result is quantized at the next
            # convolution's entry anyway
            continue
        # [MO-part] find_fusible_partitions: Conv-Act-MaxPool is one fused layer (no Q/DQ)
        if node.op_type == "MaxPool" and g.backbone(node.inputs[0]) is not None:
            continue
        # [MO-part] find_quantizable_nodes: pooling next to a quantized neighbour
        if any(quantized_near(o, True) for o in node.outputs) or quantized_near(node.inputs[0], False):
            pools.add(id(node))

    for node in model.graph:
        key = id(node)
        if key in heads or key in adds or key in pools:
            out.nodes.append(node.name or "")
        if key in adds:
            out.strip.append((node.name or "", adds[key]))
    out.residual_adds = len(adds)
    out.pools = len(pools)
    return out


def extra_options(proto: onnx.ModelProto) -> dict:
    """onnxruntime QDQ quantizer options for TensorRT ([MO-int8] ``configure_ort``)."""
    ops = sorted({n.op_type for n in proto.graph.node})
    return {
        "ActivationSymmetric": True,  # [GUIDE] TensorRT supports only symmetric quantization
        "WeightSymmetric": True,
        "QuantizeBias": False,  # [MO-int8] biases stay float: the parser takes no INT32 DequantizeLinear
        "OpTypesToExcludeOutputQuantization": ops,  # [MO-int8] no output quantization
        "DedicatedQDQPair": False,  # [MO-int8] one Q/DQ per tensor, shared by its quantized consumers
        "ForceQuantizeNoInputCheck": True,  # [MO-int8] pooling is quantized whatever its input
        "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1},  # [MO-int8] output channels
        "QDQDisableWeightAdjustForInt32Bias": True,  # [MO-int8] no INT32 bias, nothing to adjust for
    }


# ---------------------------------------------------------------------------
# after onnxruntime's quantizer


def finish(proto: onnx.ModelProto, p: Plan) -> dict[str, int]:
    """Take the Q/DQ off the convolution-branch input of each residual Add
    ([MO-graph] ``remove_partial_input_qdq``), give the Q/DQ'd tensors around each Concat
    one scale ([GUIDE] Concat inputs share a scale; [MO-graph]
    ``get_concat_eliminated_tensors``), and drop Q/DQ nodes nothing reads. In place."""
    import numpy as np
    from onnx import numpy_helper

    nodes = {n.name: n for n in proto.graph.node}
    producer = {o: n for n in proto.graph.node for o in n.output}
    stripped = 0
    for name, idx in p.strip:
        node = nodes.get(name)
        if node is None or idx >= len(node.input):
            continue
        dq = producer.get(node.input[idx])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        node.input[idx] = q.input[0]
        stripped += 1

    # Concat: every Q/DQ'd tensor among its inputs and output takes the largest scale
    inits = {t.name: t for t in proto.graph.initializer}
    q_of: dict[str, list[onnx.NodeProto]] = {}
    for n in proto.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            q_of.setdefault(n.input[0], []).append(n)
    shared = 0
    for n in proto.graph.node:
        if n.op_type != "Concat":
            continue
        tensors = [t for t in list(n.input) + list(n.output) if t in q_of]
        if len(tensors) < 2:
            continue
        scale_names = set()
        for t in tensors:
            for q in q_of[t]:
                scale_names.add(q.input[1])
                for c in proto.graph.node:
                    if c.op_type == "DequantizeLinear" and c.input[0] in q.output:
                        scale_names.add(c.input[1])
        values = [float(numpy_helper.to_array(inits[s]).max()) for s in scale_names if s in inits]
        if len(values) < 2:
            continue
        top = max(values)
        for s in scale_names:
            if s in inits:
                arr = numpy_helper.to_array(inits[s])
                if arr.ndim == 0:
                    inits[s].CopyFrom(numpy_helper.from_array(np.asarray(top, dtype=arr.dtype), s))
        shared += 1

    # drop Q/DQ whose output nobody reads any more (iterate: a dead DQ makes its Q dead)
    removed = 0
    while True:
        used = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
        dead = [
            n
            for n in proto.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in used for o in n.output)
        ]
        if not dead:
            break
        for n in dead:
            proto.graph.node.remove(n)
        removed += len(dead)
    used = {i for n in proto.graph.node for i in n.input}
    for t in [t for t in proto.graph.initializer if t.name not in used]:
        if t.name.endswith(("_scale", "_zero_point")):
            proto.graph.initializer.remove(t)
    return {"stripped_inputs": stripped, "concat_groups": shared, "qdq_removed": removed}
