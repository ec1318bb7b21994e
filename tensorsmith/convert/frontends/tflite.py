"""TensorFlow Lite flatbuffers (``.tflite``) -> ONNX (tf2onnx's TFLite reader).

The flatbuffer is verified before the interpreter reads it (a damaged one would
crash the process). ONNX names are the tensor names; the source runner is the
TFLite interpreter.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from tensorsmith.convert.frontend import FrontendOptions, Imported, quiet, quiet_native, spec_dict
from tensorsmith.convert.frontends.tf_common import (
    LOGGERS,
    GraphSource,
    check_format,
    check_options,
    finish,
    import_tf,
    import_tf2onnx,
    inspect_header,
    nchw_inputs,
    plain_name,
    static_onnx_shapes,
)
from tensorsmith.errors import ConversionError, UsageError, short

FORMATS = ("tflite",)


def load(path: str | os.PathLike, opts: FrontendOptions) -> Imported:
    """Convert a TFLite flatbuffer into ONNX."""
    check_options(opts)
    check_format(opts.format, FORMATS)
    return _load_tflite(Path(path), opts)


def inspect(path: str | os.PathLike, fmt: str | None = None) -> dict:
    """What a TFLite model holds, with the keys of ``inspection.inspect_onnx`` where they apply."""
    path = Path(path)
    info = inspect_header(path, fmt, FORMATS)
    info.update(_inspect_tflite(path))
    return info


def _verify_flatbuffer(path: Path) -> None:
    """Refuse a damaged .tflite before the interpreter reads it: it does not verify
    the flatbuffer and crashes the process (SIGSEGV) on a truncated or corrupt file.

    TensorFlow's TFLite->MLIR importer runs the flatbuffers verifier first and
    returns nothing for a buffer that fails it; where that binding is missing the
    interpreter is tried in a child process instead.
    """
    import_tf()
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
    tf = import_tf()
    _verify_flatbuffer(path)
    try:
        with quiet(*LOGGERS), quiet_native():
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
    tf2onnx = import_tf2onnx()
    opts.on_step(f"TFLite: loading {path.name}")
    interp = _interpreter(path)
    in_details = interp.get_input_details()
    out_details = interp.get_output_details()
    inputs = [d["name"] for d in in_details]
    outputs = [d["name"] for d in out_details]
    shapes: dict[str, list[int | None] | None] = {
        d["name"]: [None if s < 0 else int(s) for s in d["shape_signature"]] for d in in_details
    }
    notes = []
    fixed = [d["name"] for d in in_details if len(d["shape_signature"]) and d["shape_signature"][0] > 0]
    if fixed and not opts.static:
        notes.append(
            f"the TFLite model fixes the batch of {', '.join(map(plain_name, fixed))} "
            f"to {in_details[0]['shape_signature'][0]}; kept static"
        )
    src_shapes = GraphSource(
        None,
        inputs,
        outputs,
        {t: plain_name(t) for t in inputs + outputs},
        shapes,
        lambda f: [],
        "TFLite model",
        notes,
    )
    nchw = nchw_inputs(inputs, shapes, opts)
    opts.on_step("tf2onnx: converting the TFLite model")
    try:
        with quiet(*LOGGERS), quiet_native():
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
    quantized = _quantized_tensors(interp)
    float_io = all(np.dtype(d["dtype"]).kind == "f" for d in in_details + out_details)
    hint = None
    if quantized and float_io:
        notes.append(
            f"the TFLite model holds {quantized} quantized (int8/int16) tensors behind float inputs and "
            "outputs (dynamic-range/hybrid quantization): TFLite computes those layers with int8 kernels, "
            "the ONNX in float"
        )
        hint = (
            "the source computes with int8 kernels (a hybrid-quantized TFLite model) and the ONNX in float: "
            "the difference is the source's quantization, not a conversion error; judge the conversion "
            "with the precision gate (convert its float model with --precision int8 --min-cosine 0.99), "
            "or check it with --verify-data on real inputs"
        )
    imported = finish(
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
        static_shapes=static_onnx_shapes(src_shapes, opts),
    )
    imported.verify_hint = hint
    return imported


def _quantized_tensors(interp) -> int:
    """How many int8/uint8/int16 tensors carry quantization scales (0 for a float model)."""
    try:
        details = interp.get_tensor_details()
    except Exception:
        return 0
    count = 0
    for d in details:
        scales = (d.get("quantization_parameters") or {}).get("scales")
        if np.dtype(d["dtype"]) in (np.int8, np.uint8, np.int16) and scales is not None and len(scales):
            count += 1
    return count


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
            spec_dict(plain_name(d["name"]), d["dtype"], [int(s) for s in d["shape_signature"]])
            for d in details
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
