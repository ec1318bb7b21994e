"""What the TensorFlow formats share: lazy imports, the frozen-graph source, tf2onnx, the finish.

SavedModels, Keras models and frozen GraphDefs become a :class:`GraphSource` (a
frozen GraphDef plus how to run the original) that :func:`convert_source` hands to
tf2onnx; TFLite flatbuffers go to tf2onnx's TFLite reader and meet the others in
:func:`finish`, which renames I/O to the names people know (signature keys, Keras
layer names, tensor names with ``:0`` dropped), checks the ops and wraps the
source runner to speak ONNX names and layout. TensorFlow is imported only when a
function here is called.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
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
)
from tensorsmith.errors import ConversionError, UsageError, short

LOGGERS = ("tensorflow", "tf2onnx", "absl", "h5py")


# ----------------------------------------------------------------------------- imports


def import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with quiet_native(), quiet(*LOGGERS):
        import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def import_tf2onnx():
    import_tf()
    with quiet_native(), quiet(*LOGGERS):
        import tf2onnx
        from tf2onnx import logging as t2o_logging

    t2o_logging.set_level(50)  # unsupported ops are reported by check_convertible
    return tf2onnx


def framework_name() -> str:
    return f"TensorFlow {import_tf().__version__}"


# ------------------------------------------------------------------------- sources


@dataclass
class GraphSource:
    """A frozen GraphDef ready for tf2onnx, with how to run the original."""

    graph_def: Any
    inputs: list[str]  # tensor names, "x:0"
    outputs: list[str]
    onnx_names: dict[str, str]  # tensor name -> ONNX name
    input_shapes: dict[str, list[int | None] | None]  # tensor name -> TF shape (None = unknown)
    run: Callable[[dict[str, np.ndarray]], list[np.ndarray]]  # feeds by tensor name -> outputs in order
    what: str
    notes: list[str]
    close: Callable[[], None] = lambda: None


def tensor_name(name: str) -> str:
    name = name.strip()
    return name if ":" in name else f"{name}:0"


def plain_name(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def freeze(tf, concrete) -> Any:
    from tf2onnx import tf_loader

    inputs = [t.name for t in concrete.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in concrete.outputs]
    with quiet(*LOGGERS):
        return tf_loader.from_function(concrete, inputs, outputs), inputs, outputs


def tf_shape(tshape) -> list[int | None] | None:
    try:
        dims = tshape.as_list() if hasattr(tshape, "as_list") else list(tshape)
    except ValueError:  # unknown rank
        return None
    return [None if d is None or d < 0 else int(d) for d in dims]


# ---------------------------------------------------------------------------- convert


def static_onnx_shapes(src: GraphSource, opts: FrontendOptions) -> dict[str, list[int]] | None:
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


def _static_shape_override(src: GraphSource, opts: FrontendOptions) -> dict[str, list[int]] | None:
    """tf2onnx's shape_override for ``--static``: tensor name -> TF-layout shape."""
    shapes = static_onnx_shapes(src, opts)
    if shapes is None:
        return None
    return {t: _to_tf_layout(shapes[src.onnx_names[t]], opts) for t in src.inputs}


def nchw_inputs(
    inputs: list[str], shapes: Mapping[str, Sequence[int | None] | None], opts: FrontendOptions
) -> list[str]:
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


def convert_graph(src: GraphSource, opts: FrontendOptions, name: str):
    tf2onnx = import_tf2onnx()
    nchw = nchw_inputs(src.inputs, src.input_shapes, opts)
    kwargs: dict[str, Any] = dict(
        input_names=src.inputs,
        output_names=src.outputs,
        opset=opts.target_opset,
        shape_override=_static_shape_override(src, opts),
        inputs_as_nchw=nchw or None,
    )
    opts.on_step(f"tf2onnx: converting {src.what}")
    try:
        with quiet(*LOGGERS), quiet_native():
            proto, _ = tf2onnx.convert.from_graph_def(src.graph_def, name=name, **kwargs)
    except Exception as exc:
        raise ConversionError(f"tf2onnx cannot convert {src.what}: {short(exc)}") from None
    return proto, nchw


def finish(
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

    tf2onnx = import_tf2onnx()
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


def check_options(opts: FrontendOptions) -> None:
    """Refuse options that do not apply to TensorFlow sources."""
    if opts.input_values:
        raise UsageError(
            "--input-value binds PyTorch forward arguments; TensorFlow signatures take only tensors"
        )
    if (opts.inputs or opts.outputs) and opts.format != "graphdef":
        raise UsageError("--inputs/--outputs apply to frozen GraphDef (.pb) models")


def check_format(fmt: str, formats: tuple[str, ...]) -> None:
    if fmt not in formats:
        raise UsageError(f"the TensorFlow frontend does not read {fmt!r}")


def convert_source(src: GraphSource, path: Path, opts: FrontendOptions) -> Imported:
    """tf2onnx on a frozen-graph source, then :func:`finish`; the source is closed on failure."""
    try:
        proto, nchw = convert_graph(src, opts, path.stem)
        return finish(
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


def inspect_header(path: Path, fmt: str | None, formats: tuple[str, ...]) -> dict[str, Any]:
    """The keys every TensorFlow ``inspect`` starts with (path, format, size on disk)."""
    from tensorsmith.convert.detect import detect_format

    fmt = fmt or detect_format(path)
    check_format(fmt, formats)
    return {"path": str(path), "format": fmt, "file_bytes": dir_bytes(path)}
