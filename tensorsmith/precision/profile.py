"""Per-node onnxruntime CPU time, mapped back to the nodes of the graph it came from.

onnxruntime's profiler names the kernels it ran, not the nodes we wrote:
graph optimizations fuse and rename them. The names it uses are traceable,
though (measured on onnxruntime 1.2x-1.31):

* QDQ fusion and the NHWC layout pass keep the target node's name and append
  ``_token_N`` (``Conv@3`` -> ``Conv@3_token_13``, a QLinearConv);
* the NCHWc layout pass names a convolution after its output tensor plus
  ``_nchwc``, the output of the *last* node it fused (``relu_0.tmp_0_nchwc`` for
  Conv -> Relu): the convolution is found by walking back over the fused
  activations;
* the quantizer names Q/DQ nodes ``<tensor>_QuantizeLinear`` /
  ``<tensor>_DequantizeLinear`` (``/duplicated`` when a DQ was copied per consumer).

Kernels that cannot be traced (inserted Transposes, reorders) are left out: they
are part of whole-model latency, which is what decides in the end.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx

FUSABLE_ACTIVATIONS = {
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Add",
    "Sum",
}
_TOKEN = re.compile(r"(_token_\d+)+$")


def kernel_times(
    path: str | os.PathLike, feeds: dict[str, np.ndarray], *, runs: int = 20
) -> dict[str, tuple[str, float]]:
    """``{kernel name: (op type, microseconds per run)}``, onnxruntime CPU, 1 thread, all optimizations."""
    from tensorsmith.verify import ort_session, session_feeds

    with tempfile.TemporaryDirectory(prefix="tensorsmith-profile-") as tmp:
        sess = ort_session(
            path, optimize=True, threads=1, sequential=True, profile_prefix=str(Path(tmp) / "profile")
        )
        f = session_feeds(sess, feeds)
        for _ in range(runs + 1):
            sess.run(None, f)
        events = json.loads(Path(sess.end_profiling()).read_text())
    # the first run is a warm-up: skip every kernel that ran before it ended
    run_ends = sorted(
        e["ts"] + e.get("dur", 0)
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    warm_end = run_ends[0] if len(run_ends) > 1 else -1
    counted = len(run_ends) - 1 if len(run_ends) > 1 else 1
    total: dict[str, float] = defaultdict(float)
    ops: dict[str, str] = {}
    for e in events:
        if (
            e.get("cat") == "Node"
            and str(e.get("name", "")).endswith("_kernel_time")
            and e.get("ts", 0) > warm_end
        ):
            name = e["name"][: -len("_kernel_time")]
            total[name] += float(e.get("dur", 0))
            ops[name] = e.get("args", {}).get("op_name", "?")
    return {k: (ops[k], v / counted) for k, v in total.items()}


class Attribution:
    """Kernel times of one profile, per source node and per quantized tensor."""

    def __init__(self, graph: onnx.GraphProto, times: dict[str, tuple[str, float]]):
        self.node_us: dict[str, float] = defaultdict(float)
        self.q_us: dict[str, float] = defaultdict(float)  # tensor -> QuantizeLinear time
        self.dq_us: dict[str, float] = defaultdict(float)  # tensor -> DequantizeLinear time
        names = {n.name: n for n in graph.node}
        producer = {o: n for n in graph.node for o in n.output}
        for kernel, (op, us) in times.items():
            base = _TOKEN.sub("", kernel).removesuffix("/duplicated")
            if op == "QuantizeLinear" and base.endswith("_QuantizeLinear"):
                self.q_us[base[: -len("_QuantizeLinear")]] += us
                continue
            if op == "DequantizeLinear" and base.endswith("_DequantizeLinear"):
                self.dq_us[base[: -len("_DequantizeLinear")]] += us
                continue
            base = base.removesuffix("_nchwc").removesuffix("_quant")
            node = names.get(base)
            if node is None and base in producer:
                node = _fusion_head(producer[base], producer)
            if node is not None:
                self.node_us[node.name] += us


def _fusion_head(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto]) -> onnx.NodeProto:
    """The convolution an NCHWc kernel named after ``node``'s output fused ``node`` into."""
    seen = 0
    while node.op_type in FUSABLE_ACTIVATIONS and seen < 4:
        prev = [producer[i] for i in node.input if i in producer]
        convs = [p for p in prev if p.op_type in ("Conv", "FusedConv")]
        nxt = convs[0] if convs else (prev[0] if len(prev) == 1 else None)
        if nxt is None:
            break
        node, seen = nxt, seen + 1
    return node


# Float ops that onnxruntime fuses into a preceding FP32 convolution (NCHWc activations,
# HardSigmoid * x -> HardSwish, ...) but runs on their own after a QLinearConv.
FUSED_AFTER_CONV = {
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Mul",
    "PRelu",
    "Add",
}


def slower_in_int8(
    prepared: onnx.ModelProto,
    fp32: Attribution,
    int8: Attribution,
    quantized: set[str],
    *,
    ops: tuple[str, ...] = ("Conv", "MatMul", "Gemm", "ConvTranspose"),
) -> dict[str, str]:
    """Quantized nodes whose int8 kernel, the Q/DQ around it and the fusions it breaks took
    longer than the FP32 kernel.

    A broken fusion: a consumer (an activation, hard-swish's Mul) that the FP32 profile
    shows no time for, or less, because onnxruntime fused it into the convolution, and
    that runs as its own kernel (float, or QLinear) after the QLinearConv: the difference
    is charged to the convolution.
    """
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in prepared.graph.node:
        for i in node.input:
            consumers[i].append(node)
    out: dict[str, str] = {}
    for node in prepared.graph.node:
        if node.name not in quantized or node.op_type not in ops:
            continue
        t32 = fp32.node_us.get(node.name)
        t8 = int8.node_us.get(node.name)
        if not t32 or not t8:
            continue
        boundary = int8.q_us.get(node.input[0], 0.0) + sum(int8.dq_us.get(o, 0.0) for o in node.output)
        broken = sum(
            max(0.0, int8.node_us.get(c.name, 0.0) - fp32.node_us.get(c.name, 0.0))
            for o in node.output
            for c in consumers.get(o, [])
            if c.op_type in FUSED_AFTER_CONV
        )
        if t8 + boundary + broken >= t32:
            extra = f" + broken fusions {broken:.0f} us" if broken >= 0.5 else ""
            out[node.name] = (
                f"measured: int8 {t8:.0f} us + Q/DQ {boundary:.0f} us{extra} >= fp32 {t32:.0f} us per run"
            )
    return out
