"""Keras models (Keras 3 ``.keras`` archives, legacy HDF5 ``.h5``) -> ONNX (tf2onnx).

The model is loaded with ``safe_mode=True`` (a Lambda layer is refused), its call
traced as a concrete function over its inputs and frozen; ONNX names are the
Keras input and output layer names. The source runner calls the model itself.
"""

from __future__ import annotations

import json
import os
import zipfile
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
    plain_name,
    tf_shape,
)
from tensorsmith.errors import ConversionError, UsageError, short

FORMATS = ("keras", "h5")


def load(path: str | os.PathLike, opts: FrontendOptions) -> Imported:
    """Convert a Keras model into ONNX."""
    path = Path(path)
    check_options(opts)
    check_format(opts.format, FORMATS)
    opts.on_step(f"TensorFlow: loading {path.name}")
    return convert_source(_keras_source(path, opts), path, opts)


def inspect(path: str | os.PathLike, fmt: str | None = None) -> dict:
    """What a Keras model holds, with the keys of ``inspection.inspect_onnx`` where they apply."""
    path = Path(path)
    info = inspect_header(path, fmt, FORMATS)
    info.update(_inspect_keras(path, info["format"]))
    return info


def _load_keras(path: Path):
    import_tf()
    import keras

    try:
        with quiet(*LOGGERS), quiet_native():
            return keras.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:
        text = short(exc)
        if "safe_mode" in text or "Lambda" in text:
            raise UsageError(
                f"{path}: the Keras model holds Python code (a Lambda layer) that Keras' safe_mode refuses to load",
                hint="tensorsmith keeps safe_mode on; export the model as a SavedModel (model.export) instead",
            ) from None
        raise UsageError(f"{path}: Keras cannot load this model: {text}") from None


def _keras_source(path: Path, opts: FrontendOptions) -> GraphSource:
    tf = import_tf()
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
        with quiet(*LOGGERS):
            concrete = infer.get_concrete_function()
    except Exception as exc:
        raise ConversionError(f"{path}: cannot trace the Keras model: {short(exc)}") from None
    graph_def, inputs, outputs = freeze(tf, concrete)
    in_names = [s.name for s in sig]
    out_names = list(getattr(model, "output_names", None) or [])
    if len(out_names) != len(outputs) or len(set(out_names)) != len(out_names):
        out_names = [f"output_{i}" for i in range(len(outputs))]
    shapes = {t: tf_shape(s.shape) for t, s in zip(inputs, sig, strict=False)}

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = [tf.constant(feeds[t]) for t in inputs]
        result = model(args[0] if single else args, training=False)
        return [np.asarray(r) for r in tf.nest.flatten(result)]

    import keras

    return GraphSource(
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
    return plain_name(name.split("/")[0])


def _keras_version(path: Path, fmt: str) -> str | None:
    try:
        if fmt == "keras":
            with zipfile.ZipFile(path) as zf:
                return json.loads(zf.read("metadata.json")).get("keras_version")
        import h5py  # type: ignore[import-untyped]

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
