"""Frozen TensorFlow GraphDefs (``.pb``) -> ONNX (tf2onnx).

Inputs are the Placeholders and outputs the nodes nothing consumes, unless
``--inputs``/``--outputs`` name them; ONNX names are the tensor names with a
trailing ``:0`` dropped. The source runner runs the graph in a
``tf.compat.v1.Session``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from tensorsmith.convert.frontend import FrontendOptions, Imported, quiet, spec_dict
from tensorsmith.convert.frontends.tf_common import (
    LOGGERS,
    GraphSource,
    check_format,
    check_options,
    convert_source,
    import_tf,
    inspect_header,
    plain_name,
    tensor_name,
    tf_shape,
)
from tensorsmith.errors import UsageError, short

FORMATS = ("graphdef",)

# Ops a GraphDef may end on that produce nothing worth converting.
_NOT_OUTPUTS = {
    "NoOp",
    "Const",
    "Placeholder",
    "PlaceholderWithDefault",
    "Assert",
    "SaveV2",
    "RestoreV2",
    "VarHandleOp",
    "VariableV2",
    "Variable",
    "AssignVariableOp",
    "Assign",
    "Print",
    "PrintV2",
}
_VARIABLE_OPS = {"VarHandleOp", "VariableV2", "Variable", "ReadVariableOp"}


def _parse_graphdef(path: Path):
    tf = import_tf()
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"{path}: not a TensorFlow GraphDef ({short(exc, 120)})") from None
    if not graph_def.node or any(not n.op or not n.name for n in graph_def.node):
        raise UsageError(f"{path}: not a TensorFlow GraphDef (no nodes)")
    from tensorflow.python.framework import op_def_registry

    unknown = sorted({n.op for n in graph_def.node if op_def_registry.get(n.op) is None})
    if unknown:
        funcs = {f.signature.name for f in graph_def.library.function}
        unknown = [op for op in unknown if op not in funcs]
    if unknown:
        raise UsageError(
            f"{path}: not a TensorFlow GraphDef TensorFlow can read (unknown op(s) {', '.join(unknown[:5])})"
        )
    return graph_def


def graphdef_io(graph_def) -> tuple[list[str], list[str]]:
    """Inputs = Placeholders; outputs = nodes nothing consumes (ignoring ops that produce nothing)."""
    from tensorflow.python.framework import op_def_registry

    consumed = set()
    for node in graph_def.node:
        for name in node.input:
            consumed.add(name.lstrip("^").split(":")[0])
    inputs = [n.name for n in graph_def.node if n.op == "Placeholder"]
    outputs = []
    for n in graph_def.node:
        if n.name in consumed or n.op in _NOT_OUTPUTS:
            continue
        op_def = op_def_registry.get(n.op)
        if op_def is not None and not op_def.output_arg:
            continue
        outputs.append(n.name)
    return inputs, outputs


def _graphdef_source(path: Path, opts: FrontendOptions) -> GraphSource:
    tf = import_tf()
    graph_def = _parse_graphdef(path)
    if any(n.op in _VARIABLE_OPS for n in graph_def.node):
        raise UsageError(
            f"{path}: the GraphDef is not frozen (it has variables)",
            hint="freeze it (convert_variables_to_constants_v2) or convert the SavedModel",
        )
    found_in, found_out = graphdef_io(graph_def)
    nodes = {n.name: n for n in graph_def.node}
    inputs = [tensor_name(n) for n in (opts.inputs or found_in)]
    outputs = [tensor_name(n) for n in (opts.outputs or found_out)]
    for what, names in (("--inputs", inputs), ("--outputs", outputs)):
        missing = [n for n in names if n.split(":")[0] not in nodes]
        if missing:
            raise UsageError(f"{path}: {what} names no node {', '.join(plain_name(m) for m in missing)}")
    if not inputs:
        raise UsageError(f"{path}: the GraphDef has no Placeholder inputs; name them with --inputs")
    if not outputs:
        raise UsageError(f"{path}: cannot tell the GraphDef's outputs; name them with --outputs")
    graph = tf.Graph()
    try:
        with graph.as_default(), quiet(*LOGGERS):
            tf.graph_util.import_graph_def(graph_def, name="")
    except Exception as exc:
        raise UsageError(f"{path}: TensorFlow cannot import this GraphDef: {short(exc)}") from None
    shapes: dict[str, list[int | None] | None] = {}
    for t in inputs:
        try:
            shapes[t] = tf_shape(graph.get_tensor_by_name(t).shape)
        except (KeyError, ValueError) as exc:
            raise UsageError(f"{path}: no tensor {t!r} ({short(exc, 120)})") from None
    sess = tf.compat.v1.Session(graph=graph)

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(sess.run(outputs, {t: feeds[t] for t in inputs}))

    onnx_names = {t: plain_name(t) for t in inputs + outputs}
    if len(set(onnx_names.values())) != len(onnx_names):
        onnx_names = {t: t for t in onnx_names}
    notes = []
    if not opts.inputs:
        notes.append(f"inputs: Placeholders {', '.join(map(plain_name, inputs))}")
    if not opts.outputs:
        notes.append(f"outputs: unconsumed nodes {', '.join(map(plain_name, outputs))}")
    return GraphSource(
        graph_def, inputs, outputs, onnx_names, shapes, run, "frozen GraphDef", notes, close=sess.close
    )


def _inspect_graphdef(path: Path) -> dict:
    tf = import_tf()
    graph_def = _parse_graphdef(path)
    inputs, outputs = graphdef_io(graph_def)
    nodes = {n.name: n for n in graph_def.node}
    ops: dict[str, int] = {}
    params = nbytes = 0
    for n in graph_def.node:
        ops[n.op] = ops.get(n.op, 0) + 1
        if n.op == "Const" and "value" in n.attr:
            t = n.attr["value"].tensor
            count = int(np.prod([d.size for d in t.tensor_shape.dim])) if t.tensor_shape.dim else 1
            params += count
            with contextlib.suppress(Exception):
                nbytes += count * tf.dtypes.as_dtype(t.dtype).size

    def ph(name):
        n = nodes[name]
        dtype = tf.dtypes.as_dtype(n.attr["dtype"].type).as_numpy_dtype if "dtype" in n.attr else None
        shape = None
        if "shape" in n.attr and not n.attr["shape"].shape.unknown_rank:
            shape = [d.size for d in n.attr["shape"].shape.dim]
        return spec_dict(name, dtype, shape)

    def out(name):
        n = nodes[name]
        dtype = None
        for key in ("T", "dtype", "out_type"):
            if key in n.attr and n.attr[key].type:
                dtype = tf.dtypes.as_dtype(n.attr[key].type).as_numpy_dtype
                break
        return spec_dict(name, dtype, None)

    return {
        "producer": f"TensorFlow GraphDef (producer version {graph_def.versions.producer})",
        "framework_version": None,
        "inputs": [ph(n) for n in inputs],
        "outputs": [out(n) for n in outputs],
        "nodes": len(graph_def.node),
        "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "parameters": params,
        "parameter_bytes": nbytes,
    }


def load(path: str | os.PathLike, opts: FrontendOptions) -> Imported:
    """Convert a frozen GraphDef into ONNX."""
    path = Path(path)
    check_options(opts)
    check_format(opts.format, FORMATS)
    opts.on_step(f"TensorFlow: loading {path.name}")
    return convert_source(_graphdef_source(path, opts), path, opts)


def inspect(path: str | os.PathLike, fmt: str | None = None) -> dict:
    """What a GraphDef holds, with the keys of ``inspection.inspect_onnx`` where they apply."""
    path = Path(path)
    info = inspect_header(path, fmt, FORMATS)
    info.update(_inspect_graphdef(path))
    return info
