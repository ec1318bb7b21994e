"""``tensorsmith inspect``: what a model file holds, read without loading weights."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np
import onnx

from tensorsmith import model_io


def _dims(tt) -> list[int | str | None]:
    if not tt.HasField("shape"):
        return []
    out: list[int | str | None] = []
    for d in tt.shape.dim:
        out.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None))
    return out


def _value_info(vi) -> dict:
    t = vi.type
    if t.HasField("tensor_type"):
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.tensor_type.elem_type).name
        except Exception:
            dtype = onnx.TensorProto.DataType.Name(t.tensor_type.elem_type).lower()
        return {"name": vi.name, "dtype": dtype, "shape": _dims(t.tensor_type)}
    return {"name": vi.name, "dtype": t.WhichOneof("value"), "shape": None}


def _graphs(graph):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g)


def _tensor_size(t: onnx.TensorProto) -> tuple[int, int]:
    count = int(np.prod(t.dims)) if len(t.dims) else 1
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:
        itemsize = 0
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return count, (count + 1) // 2
    return count, count * itemsize


def inspect_onnx(path: str | os.PathLike) -> dict:
    path = Path(path)
    proto = model_io.load_proto(path)
    ops: collections.Counter = collections.Counter()
    params = 0
    param_bytes = 0
    external = set()
    for g in _graphs(proto.graph):
        for node in g.node:
            ops[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"] += 1
            for attr in node.attribute:
                if node.op_type == "Constant" and attr.type == onnx.AttributeProto.TENSOR:
                    c, b = _tensor_size(attr.t)
                    params += c
                    param_bytes += b
        for t in g.initializer:
            c, b = _tensor_size(t)
            params += c
            param_bytes += b
            if t.data_location == onnx.TensorProto.EXTERNAL:
                for e in t.external_data:
                    if e.key == "location":
                        external.add(e.value)
    inits = {i.name for i in proto.graph.initializer}
    opsets = {(o.domain or "ai.onnx"): o.version for o in proto.opset_import}
    return {
        "path": str(path),
        "format": "onnx",
        "file_bytes": path.stat().st_size
        + sum((path.parent / e).stat().st_size for e in external if (path.parent / e).exists()),
        "external_data": sorted(external),
        "ir_version": proto.ir_version,
        "opset": opsets.get("ai.onnx"),
        "opset_imports": opsets,
        "producer": (proto.producer_name + " " + proto.producer_version).strip(),
        "inputs": [_value_info(v) for v in proto.graph.input if v.name not in inits],
        "outputs": [_value_info(v) for v in proto.graph.output],
        "nodes": sum(ops.values()),
        "ops": dict(ops.most_common()),
        "parameters": params,
        "parameter_bytes": param_bytes,
        "initializers": len(proto.graph.initializer),
        "functions": len(proto.functions),
    }


def inspect_model(path: str | os.PathLike, fmt: str | None = None) -> dict:
    """Inspect any supported model; ONNX here, other formats through their frontends."""
    from tensorsmith.convert import detect_format, get_frontend

    fmt = fmt or detect_format(path)
    if fmt == "onnx":
        return inspect_onnx(path)
    frontend = get_frontend(fmt)
    return frontend.inspect(path, fmt)  # one module reads several formats
