"""TorchScript archives (``torch.jit.save``) -> ONNX (the TorchScript exporter).

``torch.onnx.export(..., dynamo=False)``: the dynamo exporter refuses
ScriptModules. Arguments that are not tensors (``sr: int``) are bound to the value
given with ``--input-value`` (or their default) and become constants. The source
runner runs a fresh copy of the module per call under ``torch.no_grad()``
(stateful modules keep state across calls).
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from tensorsmith.convert.frontend import (
    BATCH_DIM,
    FrontendOptions,
    Imported,
    dir_bytes,
    quiet,
    quiet_native,
    spec_dict,
)
from tensorsmith.convert.frontends.torch_common import (
    LOGGERS,
    check_format,
    check_options,
    example_shape,
    export_error,
    finish,
    flatten_outputs,
    format_shape,
    import_torch,
    inspect_format,
    is_tensor_type,
    param_stats,
    shape_for,
    to_numpy,
)
from tensorsmith.errors import ConversionError, UsageError, short

FORMATS = ("torchscript",)


def load(path: str | os.PathLike, opts: FrontendOptions) -> Imported:
    """Convert a TorchScript archive into ONNX."""
    check_options(opts)
    check_format(opts.format, FORMATS)
    return _load_torchscript(Path(path), opts)


def inspect(path: str | os.PathLike, fmt: str | None = None) -> dict:
    """What a TorchScript archive holds, with the keys of ``inspection.inspect_onnx`` where they apply."""
    fmt = inspect_format(path, fmt, FORMATS)
    info: dict[str, Any] = {"path": str(path), "format": fmt, "framework_version": None}
    p = Path(path)
    module = _load_script(p)
    params, nbytes = param_stats([*module.parameters(), *module.buffers()])
    ops: dict[str, int] = {}
    with contextlib.suppress(Exception):
        for node in module.inlined_graph.nodes():
            ops[node.kind()] = ops.get(node.kind(), 0) + 1
    args = _script_args(module)
    info.update(
        file_bytes=dir_bytes(p),
        producer="TorchScript",
        inputs=[
            spec_dict(n, "float32" if is_tensor_type(t) else None, None) | {"type": t} for n, t, *_ in args
        ],
        outputs=[
            {
                "name": "output",
                "dtype": None,
                "shape": None,
                "type": str(module.forward.schema.returns[0].type) if module.forward.schema.returns else None,
            }
        ],
        nodes=sum(ops.values()) or None,
        ops=dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        parameters=params,
        parameter_bytes=nbytes,
    )
    return info


def _load_script(path: Path):
    torch = import_torch()
    try:
        with quiet(*LOGGERS):
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise UsageError(f"{path}: not a loadable TorchScript archive ({short(exc, 160)})") from None
    return module


def _script_args(module) -> list[tuple[str, str, bool, Any]]:
    """(name, type, has_default, default) of forward's arguments after self."""
    try:
        schema = module.forward.schema
    except Exception as exc:
        raise UsageError(f"the TorchScript module has no usable forward ({short(exc, 120)})") from None
    out = []
    for arg in schema.arguments[1:]:
        has_default = arg.has_default_value()
        out.append((arg.name, str(arg.type), has_default, arg.default_value if has_default else None))
    return out


def _load_torchscript(path: Path, opts: FrontendOptions) -> Imported:
    torch = import_torch()
    opts.on_step(f"PyTorch: loading {path.name}")
    module = _load_script(path)
    was_training = bool(getattr(module, "training", False))
    module.eval()
    args = _script_args(module)
    names = [a[0] for a in args]
    unknown = sorted(set(opts.input_values) - set(names))
    if unknown:
        raise UsageError(
            f"--input-value names unknown argument(s) {', '.join(unknown)}; forward takes {', '.join(names)}"
        )
    tensor_args = [
        a
        for a in args
        if is_tensor_type(a[1])
        and a[0] not in opts.input_values
        and not (a[2] and a[0] not in opts.input_shapes)
    ]
    notes = []
    if was_training:
        notes.append("the archive was saved in training mode; converted and verified in eval mode")
    example: list[Any] = []
    bound: dict[str, Any] = {}
    input_names: list[str] = []
    shapes: dict[str, list[int]] = {}
    for name, type_text, has_default, default in args:
        if name in opts.input_values:
            value = _coerce(name, type_text, opts.input_values[name])
            bound[name] = value
            example.append(value)
            notes.append(
                f"forward argument {name} ({type_text}) bound to the constant {value!r} (--input-value)"
            )
        elif is_tensor_type(type_text) and (not has_default or name in opts.input_shapes):
            shapes[name] = shape_for(name, opts, len(tensor_args), f"TorchScript forward({', '.join(names)})")
            example.append(torch.zeros(example_shape(shapes[name], opts)))
            input_names.append(name)
        elif has_default:
            bound[name] = default
            example.append(default)
            if default is not None:
                notes.append(f"forward argument {name} ({type_text}) left at its default {default!r}")
        else:
            raise UsageError(
                f"forward argument {name!r} is a {type_text}, not a tensor: "
                f"bind it with --input-value {name}=VALUE"
            )
    onnx_path = opts.work_dir / "converted.onnx"
    dynamic = None if opts.static else {n: {0: BATCH_DIM} for n in input_names if len(shapes[n]) >= 1}
    # The exporter takes no None and turns every argument into a graph input, so a
    # module with bound arguments is exported through a scripted wrapper that takes
    # only the tensors and passes the bound values as literals (then folded).
    target = (
        _bound_wrapper(module, args, input_names, bound, opts.work_dir) if bound else copy.deepcopy(module)
    )
    tensors = tuple(x for x in example if isinstance(x, torch.Tensor))
    opts.on_step("torch.onnx: TorchScript exporter")
    try:
        with quiet(*LOGGERS), quiet_native(), torch.no_grad():
            torch.onnx.export(
                target,
                tensors,
                str(onnx_path),
                dynamo=False,
                opset_version=opts.target_opset,
                input_names=input_names,
                dynamic_axes=dynamic,
            )
    except Exception as exc:
        raise export_error(exc, "the TorchScript exporter") from None
    if opts.static:
        notes.append(f"static shapes {', '.join(f'{n}={format_shape(shapes[n])}' for n in input_names)}")

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        call = []
        for name, *_ in args:
            call.append(
                torch.from_numpy(np.ascontiguousarray(feeds[name]))
                if name in input_names
                else bound.get(name)
            )
        fresh = copy.deepcopy(module)  # a stateful module starts from the saved state every time
        with torch.no_grad():
            return to_numpy(flatten_outputs(fresh(*call)))

    return finish(
        onnx_path,
        opts,
        input_names=input_names,
        run=run,
        converter="torch.onnx TorchScript exporter",
        notes=notes,
    )


_LITERALS = (bool, int, float, str, type(None))


def _coerce(name: str, type_text: str, value: Any) -> Any:
    """--input-value as the argument's TorchScript type (an int given for a float)."""
    if type_text in ("float", "Optional[float]") and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type_text in ("int", "float", "bool", "str") and not isinstance(value, _LITERALS):
        raise UsageError(f"--input-value {name}={value!r}: forward expects a {type_text}")
    return value


def _is_literal(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_literal(v) for v in value)
    return isinstance(value, _LITERALS) and not (isinstance(value, float) and not np.isfinite(value))


def _bound_wrapper(module, args, tensor_names: list[str], bound: dict[str, Any], work_dir: Path):
    """A ScriptModule calling ``module`` with the tensors and the bound values as literals.

    TorchScript compiles from source, so the wrapper is written to a file in the work
    folder and imported from there. Values are checked to be plain literals first.
    """
    import importlib.util
    import uuid

    torch = import_torch()
    call = []
    for name, type_text, *_ in args:
        if name in tensor_names:
            call.append(name)
            continue
        value = bound[name]
        if not _is_literal(value):
            raise UsageError(
                f"forward argument {name!r} ({type_text}) defaults to {value!r}, which cannot be "
                f"written as a constant; bind it with --input-value {name}=VALUE"
            )
        call.append(repr(value))
    params = ", ".join(f"{n}: torch.Tensor" for n in tensor_names)
    source = textwrap.dedent(f"""\
        import torch


        class Bound(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, {params}):
                return self.inner({", ".join(call)})
    """)
    mod_name = f"_tensorsmith_bound_{uuid.uuid4().hex}"
    path = work_dir / f"{mod_name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ConversionError(f"cannot import the argument-binding wrapper written to {path}")
    wrapper_mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = wrapper_mod
    try:
        spec.loader.exec_module(wrapper_mod)
        with quiet(*LOGGERS):
            return torch.jit.script(wrapper_mod.Bound(copy.deepcopy(module)))
    except Exception as exc:
        raise UsageError(
            f"cannot bind the non-tensor arguments ({', '.join(f'{k}={v!r}' for k, v in bound.items())}): "
            f"{short(exc, 200)}"
        ) from None
    finally:
        sys.modules.pop(mod_name, None)
