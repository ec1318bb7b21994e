"""What the PyTorch formats share: the lazy import, input shapes, exporter errors, the finish.

Tensor inputs are float32 with the shapes given by ``--input-shape`` (TorchScript
and Python forwards do not record them); dim 0 is exported dynamic (``batch``)
unless ``--static``. :func:`finish` names the outputs (``output``,
``output_0``...) and the batch dim, checks the ops and wraps the source runner.
PyTorch is imported only when a function here is called.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tensorsmith.convert.frontend import (
    FrontendOptions,
    Imported,
    check_convertible,
    map_outputs,
    name_batch_dims,
    onnx_io,
    quiet,
    quiet_native,
    rename_io,
)
from tensorsmith.errors import ConversionError, UsageError, short

LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "torch._export", "onnxscript")
EXAMPLE_BATCH = 2  # dynamic-batch exports trace at batch 2: batch 1 gets specialized


def import_torch():
    import torch

    return torch


def framework_name() -> str:
    return f"PyTorch {import_torch().__version__}"


# --------------------------------------------------------------------------- helpers


def flatten_outputs(out) -> list:
    """Tensors of a forward's result, in the order the ONNX exporters write them."""
    torch = import_torch()
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_outputs(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in flatten_outputs(o)]
    return []


def to_numpy(values: list) -> list[np.ndarray]:
    return [v.detach().cpu().numpy() for v in values]


def shape_for(name: str, opts: FrontendOptions, n_tensors: int, what: str) -> list[int]:
    if name in opts.input_shapes:
        return list(opts.input_shapes[name])
    if "" in opts.input_shapes and n_tensors == 1:
        return list(opts.input_shapes[""])
    raise UsageError(
        f"{what} does not record input shapes: give --input-shape {name}=DIMS (e.g. {name}=1x3x224x224)"
    )


def example_shape(shape: list[int], opts: FrontendOptions) -> list[int]:
    if not opts.static and shape and shape[0] == 1:
        return [EXAMPLE_BATCH, *shape[1:]]
    return list(shape)


def export_error(exc: BaseException, exporter: str) -> ConversionError:
    """One line out of an exporter's multi-line error: the message and the source line."""
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    first = first.split("[Caused by")[0].strip()
    ops = re.findall(r"aten::[\w.]+", text)
    where = re.search(r"# ([^\s#]+\.py:\d+)", text)
    extra = []
    if ops and ops[0] not in first:
        extra.append(f"op {ops[0]}")
    if where:
        extra.append(f"at {where.group(1)}")
    detail = f" ({', '.join(extra)})" if extra else ""
    return ConversionError(f"{exporter} cannot convert the model: {short(Exception(first), 200)}{detail}")


def is_tensor_type(type_text: str) -> bool:
    return type_text in ("Tensor", "Optional[Tensor]", "torch.Tensor")


def finish(
    onnx_path: Path, opts: FrontendOptions, *, input_names: list[str], run, converter: str, notes: list[str]
) -> Imported:
    """Name the outputs and the batch dim, check the ops."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    onnx_inputs, onnx_outputs = onnx_io(proto)
    out_names = ["output"] if len(onnx_outputs) == 1 else [f"output_{i}" for i in range(len(onnx_outputs))]
    if set(out_names) & set(onnx_inputs):
        out_names = list(onnx_outputs)
    rename_io(proto, dict(zip(onnx_outputs, out_names, strict=False)))
    if not opts.static:
        name_batch_dims(proto)
    onnx.save(proto, str(onnx_path))
    check_convertible(proto, onnx_path, converter=converter)
    onnx_inputs, _ = onnx_io(proto)
    unused = [n for n in input_names if n not in onnx_inputs]
    extra = [n for n in onnx_inputs if n not in input_names]
    if extra:
        raise ConversionError(
            f"the ONNX model has inputs {', '.join(extra)} the source does not "
            f"(source: {', '.join(input_names)})"
        )
    if unused:
        notes.append(f"input(s) {', '.join(unused)} do not affect the outputs: the exporter dropped them")

    def runner(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return map_outputs(out_names, run(feeds), what="the PyTorch model")

    return Imported(onnx_path, runner, framework_name(), converter, notes)


def format_shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def dynamo_export(program, onnx_path: Path, opts: FrontendOptions, **kwargs) -> None:
    torch = import_torch()
    opts.on_step("torch.onnx: dynamo exporter")
    try:
        with quiet(*LOGGERS), quiet_native():
            onnx_program = torch.onnx.export(
                program, dynamo=True, opset_version=opts.target_opset, optimize=False, verbose=False, **kwargs
            )
            onnx_program.save(str(onnx_path))
    except Exception as exc:
        raise export_error(exc, "the dynamo exporter") from None


def param_stats(named_tensors) -> tuple[int, int]:
    count = nbytes = 0
    for t in named_tensors:
        count += t.numel()
        nbytes += t.numel() * t.element_size()
    return count, nbytes


def check_options(opts: FrontendOptions) -> None:
    """Refuse options that do not apply to PyTorch sources."""
    if opts.inputs or opts.outputs:
        raise UsageError("--inputs/--outputs apply to frozen GraphDef (.pb) models")
    if opts.nchw_inputs:
        raise UsageError("--nchw-inputs applies to TensorFlow models (PyTorch models are NCHW already)")
    if opts.weights is not None and opts.format != "torch-factory":
        raise UsageError("--weights goes with a module:factory source")
    if (opts.weights_key is not None or opts.weights_non_strict) and opts.weights is None:
        raise UsageError("--weights-key and --weights-non-strict go with --weights")


def check_format(fmt: str, formats: tuple[str, ...]) -> None:
    if fmt not in formats:
        raise UsageError(f"the PyTorch frontend does not read {fmt!r}")


def inspect_format(path, fmt: str | None, formats: tuple[str, ...]) -> str:
    """The format ``inspect`` reads: ``fmt``, else detected from the content."""
    from tensorsmith.convert.detect import detect_format

    fmt = fmt or detect_format(path)
    check_format(fmt, formats)
    return fmt
