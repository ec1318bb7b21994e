"""TensorFlow frontend: SavedModel, Keras (.keras, .h5), frozen GraphDef (.pb), TFLite -> ONNX.

Every format is converted by tf2onnx. SavedModels and Keras models become a frozen
GraphDef first (a signature or the model's call traced as a concrete function);
TFLite flatbuffers go to tf2onnx's TFLite reader directly. The source runner
executes the original: the SavedModel signature, the Keras model itself, the
GraphDef in a ``tf.compat.v1.Session``, the TFLite interpreter.

ONNX input and output names are the names people know: signature keys
(``input``, ``output_0``), Keras layer names, GraphDef/TFLite tensor names with a
trailing ``:0`` dropped. TensorFlow is imported only when this module is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tensorsmith.convert.frontend import (
    FrontendOptions,
    Imported,
    check_convertible,
    dir_bytes,
    fix_input_shapes,
    map_outputs,
    name_batch_dims,
    onnx_io,
    quiet,
    quiet_native,
    rename_io,
    short,
    spec_dict,
)
from tensorsmith.errors import ConversionError, UsageError

_LOGGERS = ("tensorflow", "tf2onnx", "absl", "h5py")
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


# ----------------------------------------------------------------------------- imports


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with quiet_native(), quiet(*_LOGGERS):
        import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def _tf2onnx():
    _tf()
    with quiet_native(), quiet(*_LOGGERS):
        import tf2onnx
        from tf2onnx import logging as t2o_logging

    t2o_logging.set_level(50)  # unsupported ops are reported by check_convertible
    return tf2onnx


def framework_name() -> str:
    return f"TensorFlow {_tf().__version__}"


# ------------------------------------------------------------------------- sources


@dataclass
class _GraphSource:
    """A frozen GraphDef ready for tf2onnx, with how to run the original."""

    graph_def: Any
    inputs: list[str]  # tensor names, "x:0"
    outputs: list[str]
    onnx_names: dict[str, str]  # tensor name -> ONNX name
    input_shapes: dict[str, list[int | None]]  # tensor name -> TF shape (None = unknown)
    run: Callable[[dict[str, np.ndarray]], list[np.ndarray]]  # feeds by tensor name -> outputs in order
    what: str
    notes: list[str]
    close: Callable[[], None] = lambda: None


def _tensor_name(name: str) -> str:
    name = name.strip()
    return name if ":" in name else f"{name}:0"


def _plain(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def _freeze(tf, concrete) -> Any:
    from tf2onnx import tf_loader

    inputs = [t.name for t in concrete.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in concrete.outputs]
    with quiet(*_LOGGERS):
        return tf_loader.from_function(concrete, inputs, outputs), inputs, outputs


def _shape(tshape) -> list[int | None] | None:
    try:
        dims = tshape.as_list() if hasattr(tshape, "as_list") else list(tshape)
    except ValueError:  # unknown rank
        return None
    return [None if d is None or d < 0 else int(d) for d in dims]


def _savedmodel_source(path: Path, opts: FrontendOptions) -> _GraphSource:
    tf = _tf()
    try:
        with quiet(*_LOGGERS), quiet_native():
            loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        v2_error = short(exc, 160)
        return _savedmodel_v1_source(path, opts, v2_error)
    signatures = dict(loaded.signatures)
    if not signatures:
        raise UsageError(
            f"{path}: the SavedModel has no signatures to convert",
            hint="save it with signatures=..., or export the Keras model with model.export()",
        )
    key = _pick_signature(path, list(signatures), opts.signature)
    sig = signatures[key]
    graph_def, inputs, outputs = _freeze(tf, sig)
    specs = sig.structured_input_signature[1]
    if tf.nest.flatten(sig.structured_input_signature[0]) or len(specs) != len(inputs):
        # the object API shows positional/nested inputs (a Keras-2 SavedModel restored
        # through tf_keras, say); its signature_def still names every input: use that
        return _savedmodel_v1_source(path, opts, f"signature {key!r} has positional or nested inputs")
    by_name = {f"{s.name}:0": k for k, s in specs.items() if getattr(s, "name", None)}
    if set(by_name) == set(inputs):
        in_keys = [by_name[t] for t in inputs]
    else:  # the signature's inputs are its flattened kwargs: sorted keys
        in_keys = sorted(specs)
    out_keys = sorted(sig.structured_outputs) if isinstance(sig.structured_outputs, dict) else None
    if out_keys is None or len(out_keys) != len(outputs):
        out_keys = [f"output_{i}" for i in range(len(outputs))]
    names = dict(zip(inputs, in_keys, strict=False)) | dict(zip(outputs, out_keys, strict=False))
    shapes = {t: _shape(specs[k].shape) for t, k in zip(inputs, in_keys, strict=False)}

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = sig(**{k: tf.constant(feeds[t]) for t, k in zip(inputs, in_keys, strict=False)})
        if isinstance(result, dict):
            return [result[k].numpy() for k in sorted(result)]
        return [np.asarray(r) for r in tf.nest.flatten(result)]

    return _GraphSource(
        graph_def,
        inputs,
        outputs,
        names,
        shapes,
        run,
        f"SavedModel signature {key!r}",
        [f"signature {key!r} of {', '.join(sorted(signatures))}"],
    )


def _pick_signature(path: Path, keys: list[str], wanted: str | None) -> str:
    if wanted:
        if wanted not in keys:
            raise UsageError(f"{path}: no signature {wanted!r}; it has {', '.join(sorted(keys))}")
        return wanted
    if "serving_default" in keys:
        return "serving_default"
    if len(keys) == 1:
        return keys[0]
    raise UsageError(f"{path}: several signatures ({', '.join(sorted(keys))}); choose one with --signature")


def _savedmodel_v1_source(path: Path, opts: FrontendOptions, v2_error: str) -> _GraphSource:
    """Load with the TF1 loader in a Session: SavedModels that tf.saved_model.load refuses.

    Keras-2 SavedModels saved by TF <= 2.5 carry optimizer slot variables that TF
    2.16+ cannot restore as objects ("'_UserObject' object has no attribute
    'add_slot'"); their graph and signature_def are still fine.
    """
    tf = _tf()
    from tf2onnx import tf_loader

    graph = tf.Graph()
    sess = tf.compat.v1.Session(graph=graph)
    try:
        with graph.as_default(), quiet(*_LOGGERS), quiet_native():
            meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(path))
    except Exception as exc:
        sess.close()
        raise UsageError(
            f"{path}: TensorFlow cannot load this SavedModel ({v2_error}; TF1 loader: {short(exc, 120)})"
        ) from None
    sigs = {k: v for k, v in meta.signature_def.items() if not k.startswith("_")}
    if not sigs:
        sess.close()
        raise UsageError(f"{path}: the SavedModel has no signatures to convert")
    key = _pick_signature(path, list(sigs), opts.signature)
    sig = sigs[key]
    in_keys = sorted(sig.inputs)
    out_keys = sorted(sig.outputs)
    inputs = [sig.inputs[k].name for k in in_keys]
    outputs = [sig.outputs[k].name for k in out_keys]
    try:
        with graph.as_default(), quiet(*_LOGGERS):
            graph_def = tf_loader.freeze_session(sess, input_names=inputs, output_names=outputs)
            graph_def = tf_loader.tf_optimize(inputs, outputs, graph_def)
    except Exception as exc:
        sess.close()
        raise ConversionError(f"{path}: cannot freeze signature {key!r}: {short(exc)}") from None
    shapes = {}
    for k, t in zip(in_keys, inputs, strict=False):
        shape = sig.inputs[k].tensor_shape
        shapes[t] = None if shape.unknown_rank else [None if d.size < 0 else int(d.size) for d in shape.dim]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(sess.run(outputs, {t: feeds[t] for t in inputs}))

    note = f"loaded with the TF1 SavedModel loader (tf.saved_model.load: {v2_error}); signature {key!r}"
    return _GraphSource(
        graph_def,
        inputs,
        outputs,
        dict(zip(inputs, in_keys, strict=False)) | dict(zip(outputs, out_keys, strict=False)),
        shapes,
        run,
        f"SavedModel signature {key!r}",
        [note],
        close=sess.close,
    )


def _load_keras(path: Path):
    _tf()
    import keras

    try:
        with quiet(*_LOGGERS), quiet_native():
            return keras.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:
        text = short(exc)
        if "safe_mode" in text or "Lambda" in text:
            raise UsageError(
                f"{path}: the Keras model holds Python code (a Lambda layer) that Keras' safe_mode refuses to load",
                hint="tensorsmith keeps safe_mode on; export the model as a SavedModel (model.export) instead",
            ) from None
        raise UsageError(f"{path}: Keras cannot load this model: {text}") from None


def _keras_source(path: Path, opts: FrontendOptions) -> _GraphSource:
    tf = _tf()
    model = _load_keras(path)
    model_inputs = list(getattr(model, "inputs", None) or [])
    if not model_inputs:
        raise UsageError(
            f"{path}: the Keras model has no defined inputs (a subclassed model that was never built)"
        )
    sig = [tf.TensorSpec(i.shape, i.dtype, name=_keras_name(i, n)) for n, i in enumerate(model_inputs)]
    single = len(sig) == 1

    @tf.function(input_signature=sig)
    def infer(*args):
        return model(args[0] if single else list(args), training=False)

    try:
        with quiet(*_LOGGERS):
            concrete = infer.get_concrete_function()
    except Exception as exc:
        raise ConversionError(f"{path}: cannot trace the Keras model: {short(exc)}") from None
    graph_def, inputs, outputs = _freeze(tf, concrete)
    in_names = [s.name for s in sig]
    out_names = list(getattr(model, "output_names", None) or [])
    if len(out_names) != len(outputs) or len(set(out_names)) != len(out_names):
        out_names = [f"output_{i}" for i in range(len(outputs))]
    shapes = {t: _shape(s.shape) for t, s in zip(inputs, sig, strict=False)}

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = [tf.constant(feeds[t]) for t in inputs]
        result = model(args[0] if single else args, training=False)
        return [np.asarray(r) for r in tf.nest.flatten(result)]

    import keras

    return _GraphSource(
        graph_def,
        inputs,
        outputs,
        dict(zip(inputs, in_names, strict=False)) | dict(zip(outputs, out_names, strict=False)),
        shapes,
        run,
        f"Keras {keras.__version__} model",
        [],
    )


def _keras_name(tensor, index: int) -> str:
    name = getattr(tensor, "name", None) or f"input_{index}"
    return _plain(name.split("/")[0])


def _parse_graphdef(path: Path):
    tf = _tf()
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


def _graphdef_source(path: Path, opts: FrontendOptions) -> _GraphSource:
    tf = _tf()
    graph_def = _parse_graphdef(path)
    if any(n.op in _VARIABLE_OPS for n in graph_def.node):
        raise UsageError(
            f"{path}: the GraphDef is not frozen (it has variables)",
            hint="freeze it (convert_variables_to_constants_v2) or convert the SavedModel",
        )
    found_in, found_out = graphdef_io(graph_def)
    nodes = {n.name: n for n in graph_def.node}
    inputs = [_tensor_name(n) for n in (opts.inputs or found_in)]
    outputs = [_tensor_name(n) for n in (opts.outputs or found_out)]
    for what, names in (("--inputs", inputs), ("--outputs", outputs)):
        missing = [n for n in names if n.split(":")[0] not in nodes]
        if missing:
            raise UsageError(f"{path}: {what} names no node {', '.join(_plain(m) for m in missing)}")
    if not inputs:
        raise UsageError(f"{path}: the GraphDef has no Placeholder inputs; name them with --inputs")
    if not outputs:
        raise UsageError(f"{path}: cannot tell the GraphDef's outputs; name them with --outputs")
    graph = tf.Graph()
    try:
        with graph.as_default(), quiet(*_LOGGERS):
            tf.graph_util.import_graph_def(graph_def, name="")
    except Exception as exc:
        raise UsageError(f"{path}: TensorFlow cannot import this GraphDef: {short(exc)}") from None
    shapes = {}
    for t in inputs:
        try:
            shapes[t] = _shape(graph.get_tensor_by_name(t).shape)
        except (KeyError, ValueError) as exc:
            raise UsageError(f"{path}: no tensor {t!r} ({short(exc, 120)})") from None
    sess = tf.compat.v1.Session(graph=graph)

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(sess.run(outputs, {t: feeds[t] for t in inputs}))

    names = {t: _plain(t) for t in inputs + outputs}
    if len(set(names.values())) != len(names):
        names = {t: t for t in names}
    notes = []
    if not opts.inputs:
        notes.append(f"inputs: Placeholders {', '.join(map(_plain, inputs))}")
    if not opts.outputs:
        notes.append(f"outputs: unconsumed nodes {', '.join(map(_plain, outputs))}")
    return _GraphSource(
        graph_def, inputs, outputs, names, shapes, run, "frozen GraphDef", notes, close=sess.close
    )


# ---------------------------------------------------------------------------- convert


def _static_onnx_shapes(src: _GraphSource, opts: FrontendOptions) -> dict[str, list[int]] | None:
    """``--static``: a concrete shape (ONNX name and layout) for every input, from --input-shape or the defaults."""
    if not opts.static:
        return None
    from tensorsmith.shapes import InputSpec, resolve_shapes

    specs = []
    for t in src.inputs:
        shape = src.input_shapes.get(t)
        if shape is None:
            raise UsageError(f"--static: input {src.onnx_names[t]!r} has unknown rank; give --input-shape")
        onnx_shape = _to_onnx_layout(shape, opts)
        specs.append(
            InputSpec(
                src.onnx_names[t],
                np.dtype("float32"),
                [
                    d if d is not None else ("batch" if i == 0 else f"{t}_{i}")
                    for i, d in enumerate(onnx_shape)
                ],
            )
        )
    resolved, _ = resolve_shapes(specs, opts.input_shapes)
    return resolved


def _static_shape_override(src: _GraphSource, opts: FrontendOptions) -> dict[str, list[int]] | None:
    """tf2onnx's shape_override for ``--static``: tensor name -> TF-layout shape."""
    shapes = _static_onnx_shapes(src, opts)
    if shapes is None:
        return None
    return {t: _to_tf_layout(shapes[src.onnx_names[t]], opts) for t in src.inputs}


def _nchw_inputs(inputs: list[str], shapes: dict[str, list | None], opts: FrontendOptions) -> list[str]:
    """The inputs tf2onnx's inputs_as_nchw will transpose: the 4-D ones."""
    if not opts.nchw_inputs:
        return []
    chosen = [t for t in inputs if len(shapes.get(t) or []) == 4]
    if not chosen:
        raise UsageError("--nchw-inputs: the model has no 4-D (NHWC) input")
    return chosen


def _nchw_perm(rank: int) -> list[int]:
    return [0, rank - 1, *range(1, rank - 1)]


def _to_onnx_layout(shape: list, opts: FrontendOptions) -> list:
    if opts.nchw_inputs and len(shape) == 4:
        return [shape[i] for i in _nchw_perm(len(shape))]
    return list(shape)


def _to_tf_layout(shape: list, opts: FrontendOptions) -> list:
    if opts.nchw_inputs and len(shape) == 4:
        return [shape[0], *shape[2:], shape[1]]
    return list(shape)


def _convert_graph(src: _GraphSource, opts: FrontendOptions, name: str):
    tf2onnx = _tf2onnx()
    nchw = _nchw_inputs(src.inputs, src.input_shapes, opts)
    kwargs: dict[str, Any] = dict(
        input_names=src.inputs,
        output_names=src.outputs,
        opset=opts.target_opset,
        shape_override=_static_shape_override(src, opts),
        inputs_as_nchw=nchw or None,
    )
    opts.on_step(f"tf2onnx: converting {src.what}")
    try:
        with quiet(*_LOGGERS), quiet_native():
            proto, _ = tf2onnx.convert.from_graph_def(src.graph_def, name=name, **kwargs)
    except Exception as exc:
        raise ConversionError(f"tf2onnx cannot convert {src.what}: {short(exc)}") from None
    return proto, nchw


def _finish(
    proto,
    path: Path,
    opts: FrontendOptions,
    *,
    renames: dict[str, str],
    in_order: list[str],
    out_order: list[str],
    run_tf: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
    nchw_onnx: set[str],
    notes: list[str],
    close: Callable[[], None],
    what: str,
    static_shapes: dict[str, list[int]] | None = None,
) -> Imported:
    """Rename I/O, check ops, save; wrap the TF runner to speak ONNX names and layout."""
    import onnx

    tf2onnx = _tf2onnx()
    rename_io(proto, renames)
    if static_shapes:
        fix_input_shapes(proto, static_shapes)
    if not opts.static:
        name_batch_dims(proto)
    out_path = opts.work_dir / "converted.onnx"
    onnx.save(proto, str(out_path))
    check_convertible(proto, out_path, converter=f"tf2onnx {tf2onnx.__version__}")
    onnx_inputs, onnx_outputs = onnx_io(proto)
    in_names = [renames.get(t, t) for t in in_order]
    out_names = [renames.get(t, t) for t in out_order]
    if set(in_names) != set(onnx_inputs) or set(out_names) != set(onnx_outputs):
        raise ConversionError(
            f"the ONNX model's inputs/outputs ({', '.join(onnx_inputs)} -> {', '.join(onnx_outputs)}) do not "
            f"match {what}'s ({', '.join(in_names)} -> {', '.join(out_names)})"
        )

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf_feeds = {}
        for t, n in zip(in_order, in_names, strict=False):
            if n not in feeds:
                raise UsageError(f"no value for input {n!r}")
            x = feeds[n]
            if n in nchw_onnx:
                x = np.ascontiguousarray(np.transpose(x, [0, *range(2, x.ndim), 1]))
            tf_feeds[t] = x
        return map_outputs(out_names, run_tf(tf_feeds), what=what)

    if nchw_onnx:
        notes.append(f"inputs {', '.join(sorted(nchw_onnx))} take NCHW (--nchw-inputs); the source runs NHWC")
    return Imported(out_path, run, framework_name(), f"tf2onnx {tf2onnx.__version__}", notes, close)


def load(path: str | os.PathLike, opts: FrontendOptions) -> Imported:
    """Convert a TensorFlow model (``opts.format`` says which kind) into ONNX."""
    path = Path(path)
    if opts.input_values:
        raise UsageError(
            "--input-value binds PyTorch forward arguments; TensorFlow signatures take only tensors"
        )
    if (opts.inputs or opts.outputs) and opts.format != "graphdef":
        raise UsageError("--inputs/--outputs apply to frozen GraphDef (.pb) models")
    if opts.format == "tflite":
        return _load_tflite(path, opts)
    opts.on_step(f"TensorFlow: loading {path.name}")
    builders = {
        "savedmodel": _savedmodel_source,
        "keras": _keras_source,
        "h5": _keras_source,
        "graphdef": _graphdef_source,
    }
    if opts.format not in builders:
        raise UsageError(f"the TensorFlow frontend does not read {opts.format!r}")
    src = builders[opts.format](path, opts)
    try:
        proto, nchw = _convert_graph(src, opts, path.stem)
        return _finish(
            proto,
            path,
            opts,
            renames=src.onnx_names,
            in_order=src.inputs,
            out_order=src.outputs,
            run_tf=src.run,
            nchw_onnx={src.onnx_names[t] for t in nchw},
            notes=src.notes,
            close=src.close,
            what=src.what,
        )
    except BaseException:
        src.close()
        raise


# ----------------------------------------------------------------------------- tflite


def _verify_flatbuffer(path: Path) -> None:
    """Refuse a damaged .tflite before the interpreter reads it: it does not verify
    the flatbuffer and crashes the process (SIGSEGV) on a truncated or corrupt file.

    TensorFlow's TFLite->MLIR importer runs the flatbuffers verifier first and
    returns nothing for a buffer that fails it; where that binding is missing the
    interpreter is tried in a child process instead.
    """
    _tf()
    data = path.read_bytes()
    try:
        from tensorflow.compiler.mlir.lite.python import _pywrap_converter_api as api
    except ImportError:
        api = None
    if api is not None:
        with quiet_native():
            ok = bool(api.FlatBufferToMlir(data, False))
    else:  # pragma: no cover - other TensorFlow versions
        import subprocess
        import sys

        code = "import sys; from tensorflow.lite.python.interpreter import Interpreter; Interpreter(model_path=sys.argv[1])"
        ok = (
            subprocess.run(
                [sys.executable, "-c", code, str(path)], capture_output=True, timeout=300
            ).returncode
            == 0
        )
    if not ok:
        raise UsageError(
            f"{path}: not a readable TensorFlow Lite model (the flatbuffer is damaged or truncated)"
        )


def _interpreter(path: Path):
    tf = _tf()
    _verify_flatbuffer(path)
    try:
        with quiet(*_LOGGERS), quiet_native():
            interp = tf.lite.Interpreter(model_path=str(path))
    except Exception as exc:
        raise UsageError(f"{path}: not a readable TensorFlow Lite model ({short(exc, 160)})") from None
    return interp


# TFLite ops tf2onnx 1.17 has no conversion for (its reader fails on them, often
# with an unrelated-looking numpy error while decoding the sparse weights).
_TFLITE_UNSUPPORTED = {"DENSIFY", "CUSTOM", "CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"}


def _tflite_suspects(interp) -> str:
    """' (op DENSIFY, node X and N more)' for ops tf2onnx is known not to read, else ''."""
    try:
        details = interp._get_ops_details()
        tensors = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    except Exception:
        return ""
    hits = [
        (d["op_name"], tensors.get(d["outputs"][0], "?") if len(d["outputs"]) else "?")
        for d in details
        if d["op_name"] in _TFLITE_UNSUPPORTED
    ]
    if not hits:
        return ""
    op, node = hits[0]
    more = f" and {len(hits) - 1} more" if len(hits) > 1 else ""
    return f" (unsupported TFLite op {op}, node {node!r}{more})"


def _load_tflite(path: Path, opts: FrontendOptions) -> Imported:
    tf2onnx = _tf2onnx()
    opts.on_step(f"TFLite: loading {path.name}")
    interp = _interpreter(path)
    in_details = interp.get_input_details()
    out_details = interp.get_output_details()
    inputs = [d["name"] for d in in_details]
    outputs = [d["name"] for d in out_details]
    shapes = {d["name"]: [None if s < 0 else int(s) for s in d["shape_signature"]] for d in in_details}
    notes = []
    fixed = [d["name"] for d in in_details if len(d["shape_signature"]) and d["shape_signature"][0] > 0]
    if fixed and not opts.static:
        notes.append(
            f"the TFLite model fixes the batch of {', '.join(map(_plain, fixed))} "
            f"to {in_details[0]['shape_signature'][0]}; kept static"
        )
    src_shapes = _GraphSource(
        None,
        inputs,
        outputs,
        {t: _plain(t) for t in inputs + outputs},
        shapes,
        lambda f: [],
        "TFLite model",
        notes,
    )
    nchw = _nchw_inputs(inputs, shapes, opts)
    opts.on_step("tf2onnx: converting the TFLite model")
    try:
        with quiet(*_LOGGERS), quiet_native():
            proto, _ = tf2onnx.convert.from_tflite(
                str(path), opset=opts.target_opset, inputs_as_nchw=nchw or None
            )
    except Exception as exc:
        raise ConversionError(
            f"tf2onnx cannot convert the TFLite model {path.name}: {short(exc)}" + _tflite_suspects(interp)
        ) from None

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        for d in in_details:
            x = feeds[d["name"]]
            if list(d["shape"]) != list(x.shape):
                interp.resize_tensor_input(d["index"], list(x.shape), strict=False)
        interp.allocate_tensors()
        for d in in_details:
            interp.set_tensor(d["index"], np.ascontiguousarray(feeds[d["name"]], dtype=d["dtype"]))
        interp.invoke()
        return [np.array(interp.get_tensor(d["index"])) for d in out_details]

    names = src_shapes.onnx_names
    if len(set(names.values())) != len(names):
        names = {t: t for t in names}
    src_shapes.onnx_names = names
    return _finish(
        proto,
        path,
        opts,
        renames=names,
        in_order=inputs,
        out_order=outputs,
        run_tf=run,
        nchw_onnx={names[t] for t in nchw},
        notes=notes,
        close=lambda: None,
        what="TFLite model",
        static_shapes=_static_onnx_shapes(src_shapes, opts),
    )


# ---------------------------------------------------------------------------- inspect


def _dtype_name(dt) -> str | None:
    try:
        return np.dtype(dt.as_numpy_dtype).name if hasattr(dt, "as_numpy_dtype") else np.dtype(dt).name
    except TypeError:
        return str(dt)


def inspect(path: str | os.PathLike, fmt: str | None = None) -> dict:
    """What a TensorFlow model holds, with the keys of ``inspection.inspect_onnx`` where they apply."""
    from tensorsmith.convert.detect import detect_format

    path = Path(path)
    fmt = fmt or detect_format(path)
    info: dict[str, Any] = {"path": str(path), "format": fmt, "file_bytes": dir_bytes(path)}
    if fmt == "savedmodel":
        info.update(_inspect_savedmodel(path))
    elif fmt in ("keras", "h5"):
        info.update(_inspect_keras(path, fmt))
    elif fmt == "graphdef":
        info.update(_inspect_graphdef(path))
    elif fmt == "tflite":
        info.update(_inspect_tflite(path))
    else:
        raise UsageError(f"the TensorFlow frontend does not read {fmt!r}")
    return info


def _inspect_savedmodel(path: Path) -> dict:
    tf = _tf()
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    pb = path / "saved_model.pb"
    try:
        sm.ParseFromString(pb.read_bytes())
    except Exception as exc:
        raise UsageError(f"{pb}: not a readable SavedModel ({short(exc, 120)})") from None
    if not sm.meta_graphs:
        raise UsageError(f"{pb}: the SavedModel holds no meta graph")
    meta = sm.meta_graphs[0]
    sigs = {k: v for k, v in meta.signature_def.items() if not k.startswith("_")}
    key = "serving_default" if "serving_default" in sigs else (sorted(sigs)[0] if sigs else None)

    def io(infos):
        out = []
        for k in sorted(infos):
            t = infos[k]
            shape = None if t.tensor_shape.unknown_rank else [d.size for d in t.tensor_shape.dim]
            out.append(spec_dict(k, tf.dtypes.as_dtype(t.dtype).as_numpy_dtype, shape))
        return out

    ops: dict[str, int] = {}
    for node in meta.graph_def.node:
        ops[node.op] = ops.get(node.op, 0) + 1
    params, nbytes = _savedmodel_params(tf, meta, path)
    version = meta.meta_info_def.tensorflow_version
    return {
        "producer": f"TensorFlow {version}".strip() if version else "TensorFlow",
        "framework_version": version or None,
        "signatures": sorted(sigs),
        "signature": key,
        "tags": list(meta.meta_info_def.tags),
        "inputs": io(sigs[key].inputs) if key else [],
        "outputs": io(sigs[key].outputs) if key else [],
        "nodes": sum(ops.values()),
        "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "parameters": params,
        "parameter_bytes": nbytes,
    }


_OPTIMIZER_STATE = re.compile(
    r"(^|/)(Adam|AdamW|SGD|RMSprop|Adagrad|Nadam|optimizer)(/|$)|^(iter|iterations|"
    r"learning_rate|decay|beta_1|beta_2|seed_generator.*)$|/(m|v|momentum|velocity)$",
    re.IGNORECASE,
)


def _savedmodel_params(tf, meta, path: Path) -> tuple[int, int]:
    """Model variables (optimizer state left out) from the object graph, else the checkpoint."""
    params = nbytes = 0
    variables = [n.variable for n in meta.object_graph_def.nodes if n.WhichOneof("kind") == "variable"]
    if variables:
        seen = set()
        for v in variables:
            key = (v.name, tuple(d.size for d in v.shape.dim))
            if _OPTIMIZER_STATE.search(v.name or "") or (v.name and key in seen):
                continue  # Keras 3 exports track each variable twice
            seen.add(key)
            count = int(np.prod([d.size for d in v.shape.dim])) if v.shape.dim else 1
            params += count
            with contextlib.suppress(Exception):
                nbytes += count * tf.dtypes.as_dtype(v.dtype).size
        return params, nbytes
    with contextlib.suppress(Exception):  # a TF1 SavedModel: read the checkpoint's shapes
        reader = tf.train.load_checkpoint(str(path / "variables" / "variables"))
        dtypes = reader.get_variable_to_dtype_map()
        for name, shape in reader.get_variable_to_shape_map().items():
            if name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH") or _OPTIMIZER_STATE.search(name):
                continue
            count = int(np.prod(shape)) if shape else 1
            params += count
            nbytes += count * dtypes[name].size
    return params, nbytes


def _keras_version(path: Path, fmt: str) -> str | None:
    try:
        if fmt == "keras":
            with zipfile.ZipFile(path) as zf:
                return json.loads(zf.read("metadata.json")).get("keras_version")
        import h5py

        with h5py.File(path, "r") as f:
            v = f.attrs.get("keras_version")
            return v.decode() if isinstance(v, bytes) else (str(v) if v is not None else None)
    except Exception:
        return None


def _inspect_keras(path: Path, fmt: str) -> dict:
    model = _load_keras(path)
    layers: dict[str, int] = {}
    for layer in model.layers:
        layers[type(layer).__name__] = layers.get(type(layer).__name__, 0) + 1
    params = int(model.count_params())
    nbytes = int(sum(np.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.weights))
    version = _keras_version(path, fmt)
    outputs = list(getattr(model, "outputs", None) or [])
    out_names = list(getattr(model, "output_names", None) or [])
    if len(out_names) != len(outputs):
        out_names = [f"output_{i}" for i in range(len(outputs))]
    return {
        "producer": f"Keras {version}" if version else "Keras",
        "framework_version": version,
        "inputs": [
            spec_dict(_keras_name(t, i), t.dtype, list(t.shape)) for i, t in enumerate(model.inputs or [])
        ],
        "outputs": [spec_dict(n, t.dtype, list(t.shape)) for n, t in zip(out_names, outputs, strict=False)],
        "nodes": len(model.layers),
        "ops": dict(sorted(layers.items(), key=lambda kv: -kv[1])),
        "parameters": params,
        "parameter_bytes": nbytes,
    }


def _inspect_graphdef(path: Path) -> dict:
    tf = _tf()
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


def _inspect_tflite(path: Path) -> dict:
    interp = _interpreter(path)
    ops: dict[str, int] = {}
    try:
        for op in interp._get_ops_details():
            ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
    except Exception:
        ops = {}
    io_names = {d["index"] for d in interp.get_input_details() + interp.get_output_details()}
    params = nbytes = 0
    with contextlib.suppress(Exception):
        for d in interp.get_tensor_details():
            if d["index"] in io_names:
                continue
            try:
                interp.get_tensor(d["index"])  # constant tensors (weights) are readable before allocate
            except ValueError:
                continue
            count = int(np.prod(d["shape"])) if len(d["shape"]) else 1
            params += count
            nbytes += count * np.dtype(d["dtype"]).itemsize

    def io(details):
        return [
            spec_dict(_plain(d["name"]), d["dtype"], [int(s) for s in d["shape_signature"]]) for d in details
        ]

    return {
        "producer": "TensorFlow Lite",
        "framework_version": None,
        "signatures": sorted(interp.get_signature_list()),
        "inputs": io(interp.get_input_details()),
        "outputs": io(interp.get_output_details()),
        "nodes": sum(ops.values()) or None,
        "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "parameters": params,
        "parameter_bytes": nbytes,
    }
