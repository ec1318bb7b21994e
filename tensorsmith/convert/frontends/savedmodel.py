"""TensorFlow SavedModel directories -> ONNX (tf2onnx), and what a SavedModel holds.

A signature (``serving_default``, the only one, or ``--signature``) is traced as a
concrete function and frozen; ONNX names are the signature's keys. SavedModels
that ``tf.saved_model.load`` refuses (Keras-2 models saved by TF <= 2.5) are read
with the TF1 loader in a Session. The source runner calls the signature.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import numpy as np

from tensorsmith.convert.frontend import FrontendOptions, Imported, quiet, quiet_native, spec_dict
from tensorsmith.convert.frontends.tf_common import (
    LOGGERS,
    GraphSource,
    check_format,
    check_options,
    convert_source,
    freeze,
    import_tf,
    inspect_header,
    tf_shape,
)
from tensorsmith.errors import ConversionError, UsageError, short

FORMATS = ("savedmodel",)


def load(path: str | os.PathLike, opts: FrontendOptions) -> Imported:
    """Convert a SavedModel signature into ONNX."""
    path = Path(path)
    check_options(opts)
    check_format(opts.format, FORMATS)
    opts.on_step(f"TensorFlow: loading {path.name}")
    return convert_source(_savedmodel_source(path, opts), path, opts)


def inspect(path: str | os.PathLike, fmt: str | None = None) -> dict:
    """What a SavedModel holds, with the keys of ``inspection.inspect_onnx`` where they apply."""
    path = Path(path)
    info = inspect_header(path, fmt, FORMATS)
    info.update(_inspect_savedmodel(path))
    return info


def _savedmodel_source(path: Path, opts: FrontendOptions) -> GraphSource:
    tf = import_tf()
    try:
        with quiet(*LOGGERS), quiet_native():
            loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        v2_error = f"tf.saved_model.load: {short(exc, 160)}"
        return _savedmodel_v1_source(path, opts, v2_error)
    signatures = dict(loaded.signatures)
    if not signatures:
        raise UsageError(
            f"{path}: the SavedModel has no signatures to convert",
            hint="save it with signatures=..., or export the Keras model with model.export()",
        )
    key = _pick_signature(path, list(signatures), opts.signature)
    sig = signatures[key]
    try:
        with quiet(*LOGGERS), quiet_native():
            graph_def, inputs, outputs = freeze(tf, sig)
    except Exception as exc:
        # grappler cannot import some TF1-era graphs as functions (an Estimator's lookup
        # tables, whose init ops are not in the function's graph: "Failed to import
        # metagraph"); the TF1 loader runs their init ops in a Session and freezes that
        return _savedmodel_v1_source(path, opts, f"freezing signature {key!r}: {short(exc, 120)}")
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
    shapes = {t: tf_shape(specs[k].shape) for t, k in zip(inputs, in_keys, strict=False)}

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = sig(**{k: tf.constant(feeds[t]) for t, k in zip(inputs, in_keys, strict=False)})
        if isinstance(result, dict):
            return [result[k].numpy() for k in sorted(result)]
        return [np.asarray(r) for r in tf.nest.flatten(result)]

    return GraphSource(
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


def _savedmodel_v1_source(path: Path, opts: FrontendOptions, v2_error: str) -> GraphSource:
    """Load with the TF1 loader in a Session: SavedModels that tf.saved_model.load refuses.

    Keras-2 SavedModels saved by TF <= 2.5 carry optimizer slot variables that TF
    2.16+ cannot restore as objects ("'_UserObject' object has no attribute
    'add_slot'"); their graph and signature_def are still fine.
    """
    tf = import_tf()
    from tf2onnx import tf_loader

    graph = tf.Graph()
    sess = tf.compat.v1.Session(graph=graph)
    try:
        with graph.as_default(), quiet(*LOGGERS), quiet_native():
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
        with graph.as_default(), quiet(*LOGGERS):
            graph_def = tf_loader.freeze_session(sess, input_names=inputs, output_names=outputs)
    except Exception as exc:
        sess.close()
        raise ConversionError(f"{path}: cannot freeze signature {key!r}: {short(exc)}") from None
    optimize_note = ""
    try:
        with graph.as_default(), quiet(*LOGGERS), quiet_native():
            graph_def = tf_loader.tf_optimize(inputs, outputs, graph_def)
    except Exception as exc:
        # grappler refuses graphs whose table init ops are not among the frozen nodes (an
        # Estimator's string lookup tables): convert the frozen graph as it is
        optimize_note = f"; TensorFlow's graph optimizer skipped ({short(exc, 80)})"
    shapes = {}
    for k, t in zip(in_keys, inputs, strict=False):
        shape = sig.inputs[k].tensor_shape
        shapes[t] = None if shape.unknown_rank else [None if d.size < 0 else int(d.size) for d in shape.dim]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(sess.run(outputs, {t: feeds[t] for t in inputs}))

    note = f"loaded with the TF1 SavedModel loader ({v2_error}); signature {key!r}{optimize_note}"
    return GraphSource(
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


def _inspect_savedmodel(path: Path) -> dict:
    tf = import_tf()
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
