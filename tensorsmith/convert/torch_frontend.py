"""PyTorch frontend: TorchScript archives, torch.export ``.pt2`` archives, ``module:factory`` -> ONNX.

* TorchScript (``torch.jit.load``) goes through the TorchScript exporter
  (``torch.onnx.export(..., dynamo=False)``): the dynamo exporter refuses
  ScriptModules. Arguments that are not tensors (``sr: int``) are bound to the
  value given with ``--input-value`` (or their default) and become constants.
* ``.pt2`` ExportedPrograms (``torch.export.load``) go through the dynamo exporter.
  The archive is checked first: pickled payloads (which ``torch.export.load``
  would unpickle with ``weights_only=False``) are refused without
  ``--trust-remote-code``.
* ``mypkg.models:build_net`` is imported and called (that is running your own
  code, which you named); ``--weights`` is loaded with ``torch.load(...,
  weights_only=True)``. The module is exported with ``torch.export`` (dynamo
  exporter); non-tensor arguments are bound as constants.

Tensor inputs are float32 with the shapes given by ``--input-shape`` (TorchScript
and Python forwards do not record them); dim 0 is exported dynamic (``batch``)
unless ``--static``. The source runner runs the original module under
``torch.no_grad()``, a fresh copy per call for TorchScript (stateful modules keep
state across calls). PyTorch is imported only when this module is used.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect as pyinspect
import io
import json
import os
import re
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tensorsmith.convert.frontend import (
    BATCH_DIM,
    FrontendOptions,
    Imported,
    check_convertible,
    dir_bytes,
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

_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "torch._export", "onnxscript")
_FACTORY = re.compile(r"^([A-Za-z_][\w.]*):([A-Za-z_]\w*)$")
EXAMPLE_BATCH = 2  # dynamic-batch exports trace at batch 2: batch 1 gets specialized


def _torch():
    import torch

    return torch


def framework_name() -> str:
    return f"PyTorch {_torch().__version__}"


# --------------------------------------------------------------------------- helpers


def _flatten(out) -> list:
    """Tensors of a forward's result, in the order the ONNX exporters write them."""
    torch = _torch()
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten(o)]
    return []


def _numpy(values: list) -> list[np.ndarray]:
    return [v.detach().cpu().numpy() for v in values]


def _shape_for(name: str, opts: FrontendOptions, n_tensors: int, what: str) -> list[int]:
    if name in opts.input_shapes:
        return list(opts.input_shapes[name])
    if "" in opts.input_shapes and n_tensors == 1:
        return list(opts.input_shapes[""])
    raise UsageError(
        f"{what} does not record input shapes: give --input-shape {name}=DIMS (e.g. {name}=1x3x224x224)"
    )


def _example_shape(shape: list[int], opts: FrontendOptions) -> list[int]:
    if not opts.static and shape and shape[0] == 1:
        return [EXAMPLE_BATCH, *shape[1:]]
    return list(shape)


def _export_error(exc: BaseException, exporter: str) -> ConversionError:
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


def _is_tensor_type(type_text: str) -> bool:
    return type_text in ("Tensor", "Optional[Tensor]", "torch.Tensor")


def _finish(
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


# ----------------------------------------------------------------------- TorchScript


def _load_script(path: Path):
    torch = _torch()
    try:
        with quiet(*_LOGGERS):
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
    torch = _torch()
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
        if _is_tensor_type(a[1])
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
        elif _is_tensor_type(type_text) and (not has_default or name in opts.input_shapes):
            shapes[name] = _shape_for(
                name, opts, len(tensor_args), f"TorchScript forward({', '.join(names)})"
            )
            example.append(torch.zeros(_example_shape(shapes[name], opts)))
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
        with quiet(*_LOGGERS), quiet_native(), torch.no_grad():
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
        raise _export_error(exc, "the TorchScript exporter") from None
    if opts.static:
        notes.append(f"static shapes {', '.join(f'{n}={_fmt(shapes[n])}' for n in input_names)}")

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
            return _numpy(_flatten(fresh(*call)))

    return _finish(
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

    torch = _torch()
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
    wrapper_mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = wrapper_mod
    try:
        spec.loader.exec_module(wrapper_mod)
        with quiet(*_LOGGERS):
            return torch.jit.script(wrapper_mod.Bound(copy.deepcopy(module)))
    except Exception as exc:
        raise UsageError(
            f"cannot bind the non-tensor arguments ({', '.join(f'{k}={v!r}' for k, v in bound.items())}): "
            f"{short(exc, 200)}"
        ) from None
    finally:
        sys.modules.pop(mod_name, None)


def _fmt(shape) -> str:
    return "x".join(str(d) for d in shape)


# ---------------------------------------------------------------------- torch.export


def check_pt2_safe(path: Path, trust_remote_code: bool) -> None:
    """Refuse a .pt2 whose loading would unpickle arbitrary Python objects.

    ``torch.export.load`` reads tensors raw, but payloads marked ``use_pickle``,
    custom/opaque objects, and sample inputs that ``weights_only`` rejects are
    unpickled with ``weights_only=False``. Those need ``--trust-remote-code``.
    """
    torch = _torch()
    if trust_remote_code:
        return
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UsageError(f"{path}: not a torch.export archive ({exc})") from None
    risky = []
    with zf:
        names = zf.namelist()
        if not any(n.endswith("models/model.json") or re.search(r"models/[^/]+\.json$", n) for n in names):
            raise UsageError(f"{path}: not a torch.export archive (no models/*.json)")
        for n in names:
            if n.endswith(("_weights_config.json", "_constants_config.json")):
                try:
                    config = json.loads(zf.read(n)).get("config", {})
                except (ValueError, AttributeError):
                    raise UsageError(f"{path}: damaged torch.export archive ({n})") from None
                for fqn, meta in config.items():
                    pname = str(meta.get("path_name", ""))
                    if meta.get("use_pickle") or pname.startswith(("custom_obj_", "opaque_obj_")):
                        risky.append(fqn)
            elif (
                "/data/sample_inputs/" in n
                or ("/data/weights/" in n and n.endswith(".pt"))
                or ("/data/constants/" in n and n.endswith(".pt"))
            ):
                try:
                    with quiet(*_LOGGERS):
                        torch.load(io.BytesIO(zf.read(n)), weights_only=True, map_location="cpu")
                except Exception:
                    risky.append(n.split("/", 1)[-1])
    if risky:
        raise UsageError(
            f"{path}: the archive holds pickled Python objects ({', '.join(risky[:3])}) that only a full "
            "unpickle (arbitrary code) can load",
            hint="if you trust the file, pass --trust-remote-code",
        )


def _load_ep(path: Path, opts: FrontendOptions):
    torch = _torch()
    check_pt2_safe(path, opts.trust_remote_code)
    try:
        with quiet(*_LOGGERS):
            return torch.export.load(str(path))
    except Exception as exc:
        raise UsageError(f"{path}: not a loadable torch.export archive ({short(exc, 160)})") from None


def _ep_inputs(ep) -> list[tuple[str, Any]]:
    """(placeholder name, meta value) of the user inputs."""
    user = set(ep.graph_signature.user_inputs)
    return [(n.name, n.meta.get("val")) for n in ep.graph.nodes if n.op == "placeholder" and n.name in user]


def _sym_shape(val) -> list[int | str] | None:
    shape = getattr(val, "shape", None)
    if shape is None:
        return None
    out: list[int | str] = []
    for d in shape:
        # never int() a SymInt: that guards the symbol to its example value
        out.append(d if isinstance(d, int) else str(d))
    return out


def _load_exported(path: Path, opts: FrontendOptions) -> Imported:
    torch = _torch()
    from torch.utils import _pytree as pytree

    if opts.input_values:
        raise UsageError(
            "--input-value does not apply to .pt2 archives: torch.export already made "
            "non-tensor arguments constants"
        )
    opts.on_step(f"PyTorch: loading {path.name}")
    ep = _load_ep(path, opts)
    placeholders = _ep_inputs(ep)
    names = [n for n, _ in placeholders]
    notes = []
    if ep.example_inputs:
        flat_example, in_spec = pytree.tree_flatten(ep.example_inputs)
    else:  # an archive without sample inputs: the user inputs, positionally
        flat_example, in_spec = pytree.tree_flatten((tuple(torch.zeros(()) for _ in names), {}))
    tensor_leaves = [i for i, v in enumerate(flat_example) if isinstance(v, torch.Tensor)]
    if len(tensor_leaves) != len(names):
        raise ConversionError(f"{path}: cannot line up the program's inputs {names} with its sample inputs")
    dtypes = {n: getattr(v, "dtype", torch.float32) for n, v in placeholders}
    sym = {n: _sym_shape(v) for n, v in placeholders}
    unknown = sorted(set(opts.input_shapes) - set(names) - {""})
    if unknown:
        raise UsageError(
            f"--input-shape names unknown input(s) {', '.join(unknown)}; inputs are {', '.join(names)}"
        )
    program = ep
    if opts.static and any(isinstance(d, str) for s in sym.values() for d in (s or [])):
        from tensorsmith.shapes import InputSpec, resolve_shapes

        specs = [InputSpec(n, np.dtype("float32"), sym[n] or []) for n in names]
        concrete, _ = resolve_shapes(specs, opts.input_shapes)
        flat = list(flat_example)
        for i, n in zip(tensor_leaves, names, strict=False):
            flat[i] = torch.zeros(concrete[n], dtype=dtypes[n])
        args, kwargs = pytree.tree_unflatten(flat, in_spec)
        opts.on_step("torch.export: re-exporting with static shapes")
        try:
            with quiet(*_LOGGERS):
                program = torch.export.export(ep.module(), tuple(args), kwargs)
        except Exception as exc:
            raise _export_error(exc, "torch.export (static re-export)") from None
        notes.append(f"static shapes {', '.join(f'{n}={_fmt(concrete[n])}' for n in names)}")
    onnx_path = opts.work_dir / "converted.onnx"
    _dynamo_export(program, onnx_path, opts)
    module = ep.module()

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        flat = list(flat_example)
        for i, n in zip(tensor_leaves, names, strict=False):
            flat[i] = torch.from_numpy(np.ascontiguousarray(feeds[n]))
        args, kwargs = pytree.tree_unflatten(flat, in_spec)
        with torch.no_grad():
            return _numpy(_flatten(module(*args, **kwargs)))

    return _finish(
        onnx_path, opts, input_names=names, run=run, converter="torch.onnx dynamo exporter", notes=notes
    )


def _dynamo_export(program, onnx_path: Path, opts: FrontendOptions, **kwargs) -> None:
    torch = _torch()
    opts.on_step("torch.onnx: dynamo exporter")
    try:
        with quiet(*_LOGGERS), quiet_native():
            onnx_program = torch.onnx.export(
                program, dynamo=True, opset_version=opts.target_opset, optimize=False, verbose=False, **kwargs
            )
            onnx_program.save(str(onnx_path))
    except Exception as exc:
        raise _export_error(exc, "the dynamo exporter") from None


# ----------------------------------------------------------------------- module:factory


def _import_factory(spec: str):
    m = _FACTORY.match(spec)
    if not m:
        raise UsageError(f"{spec}: expected module:factory (e.g. mypkg.models:build_net)")
    module_name, attr = m.groups()
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise UsageError(
            f"{spec}: cannot import module {module_name!r}: {type(exc).__name__}: {short(exc, 160)}"
        ) from None
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise UsageError(f"{spec}: module {module_name!r} has no callable {attr!r}")
    return factory


def load_weights(path: Path, trust_remote_code: bool) -> tuple[dict, str | None]:
    """A state dict from ``--weights``: ``weights_only=True`` unless --trust-remote-code."""
    torch = _torch()
    if not path.is_file():
        raise UsageError(f"--weights {path}: no such file")
    note = None
    try:
        with quiet(*_LOGGERS):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        text = " ".join(str(exc).split())
        refused = (
            "weights_only" in text or "Unsupported global" in text or "UnpicklingError" in type(exc).__name__
        )
        if not refused:
            raise UsageError(f"--weights {path}: not a readable PyTorch file ({short(exc, 160)})") from None
        if not trust_remote_code:
            what = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            raise UsageError(
                f"--weights {path}: torch.load(weights_only=True) refuses it: it holds pickled Python objects"
                + (f" ({what.group(1)})" if what else ""),
                hint="if you trust the file, --trust-remote-code loads it with full unpickling (runs arbitrary code)",
            ) from None
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
        note = f"--weights {path.name} loaded with full unpickling (--trust-remote-code)"
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner, note
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj, note
    raise UsageError(f"--weights {path}: not a state dict (a {type(obj).__name__}); expected name -> tensor")


def _build_factory(spec: str, opts: FrontendOptions):
    torch = _torch()
    factory = _import_factory(spec)
    try:
        model = factory()
    except Exception as exc:
        raise UsageError(
            f"{spec}: calling the factory failed: {type(exc).__name__}: {short(exc, 160)}"
        ) from None
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"{spec}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    notes = []
    if opts.weights is not None:
        state, note = load_weights(Path(opts.weights), opts.trust_remote_code)
        if note:
            notes.append(note)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            text = " ".join(str(exc).split())
            raise UsageError(
                f"--weights {opts.weights} does not fit {spec}: {short(Exception(text), 240)}"
            ) from None
        notes.append(
            f"weights from {Path(opts.weights).name} ({len(state)} tensors, weights_only=True"
            f"{'' if not note else ' refused; full unpickle'})"
        )
    else:
        notes.append("no --weights: the factory's own initial weights")
    return model.eval(), notes


def _forward_params(model) -> list[pyinspect.Parameter]:
    sig = pyinspect.signature(model.forward)
    return [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _load_factory(spec: str, opts: FrontendOptions) -> Imported:
    torch = _torch()
    opts.on_step(f"PyTorch: building {spec}")
    model, notes = _build_factory(spec, opts)
    params = _forward_params(model)
    names = [p.name for p in params]
    unknown = sorted(set(opts.input_values) - set(names))
    if unknown:
        raise UsageError(
            f"--input-value names unknown argument(s) {', '.join(unknown)}; forward takes {', '.join(names)}"
        )
    unknown = sorted(set(opts.input_shapes) - set(names) - {""})
    if unknown:
        raise UsageError(
            f"--input-shape names unknown argument(s) {', '.join(unknown)}; forward takes {', '.join(names)}"
        )
    tensors = [
        p
        for p in params
        if p.name not in opts.input_values and (p.default is p.empty or p.name in opts.input_shapes)
    ]
    kwargs: dict[str, Any] = {}
    shapes: dict[str, list[int]] = {}
    bound: dict[str, Any] = {}
    for p in params:
        if p.name in opts.input_values:
            bound[p.name] = opts.input_values[p.name]
            notes.append(f"forward argument {p.name} bound to the constant {bound[p.name]!r} (--input-value)")
        elif p in tensors:
            ann = p.annotation
            if ann in (int, float, bool, str) or ann in ("int", "float", "bool", "str"):
                raise UsageError(
                    f"forward argument {p.name!r} is a {getattr(ann, '__name__', ann)}, not a tensor: "
                    f"bind it with --input-value {p.name}=VALUE"
                )
            shapes[p.name] = _shape_for(p.name, opts, len(tensors), f"{spec} forward({', '.join(names)})")
            kwargs[p.name] = torch.zeros(_example_shape(shapes[p.name], opts))
    input_names = list(kwargs)
    dynamic = None
    if not opts.static:
        batch = torch.export.Dim(BATCH_DIM, min=1)
        dynamic = {
            n: ({0: batch} if n in kwargs and shapes[n] else None) for n in names if n in kwargs or n in bound
        }
    opts.on_step("torch.export: tracing the module")
    try:
        with quiet(*_LOGGERS), torch.no_grad():
            program = torch.export.export(
                model, (), {**kwargs, **bound}, dynamic_shapes=dynamic, strict=False
            )
    except Exception as exc:
        err = _export_error(exc, "torch.export")
        if dynamic and ("specializ" in str(exc) or "Constraints violated" in str(exc)):
            err.hint = "the batch dimension cannot be dynamic for this model; pass --static"
        raise err from None
    onnx_path = opts.work_dir / "converted.onnx"
    _dynamo_export(program, onnx_path, opts)
    if opts.static:
        notes.append(f"static shapes {', '.join(f'{n}={_fmt(shapes[n])}' for n in input_names)}")

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        call = {n: torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in input_names}
        with torch.no_grad():
            return _numpy(_flatten(model(**call, **bound)))

    return _finish(
        onnx_path, opts, input_names=input_names, run=run, converter="torch.onnx dynamo exporter", notes=notes
    )


# ---------------------------------------------------------------------------- entry


def load(path: str | os.PathLike, opts: FrontendOptions) -> Imported:
    """Convert a PyTorch model (``opts.format`` says which kind) into ONNX."""
    if opts.inputs or opts.outputs:
        raise UsageError("--inputs/--outputs apply to frozen GraphDef (.pb) models")
    if opts.nchw_inputs:
        raise UsageError("--nchw-inputs applies to TensorFlow models (PyTorch models are NCHW already)")
    if opts.weights is not None and opts.format != "torch-factory":
        raise UsageError("--weights goes with a module:factory source")
    if opts.format == "torchscript":
        return _load_torchscript(Path(path), opts)
    if opts.format == "torch-export":
        return _load_exported(Path(path), opts)
    if opts.format == "torch-factory":
        return _load_factory(str(path), opts)
    raise UsageError(f"the PyTorch frontend does not read {opts.format!r}")


# ---------------------------------------------------------------------------- inspect


def _param_stats(named_tensors) -> tuple[int, int]:
    count = nbytes = 0
    for t in named_tensors:
        count += t.numel()
        nbytes += t.numel() * t.element_size()
    return count, nbytes


def inspect(path: str | os.PathLike, fmt: str | None = None) -> dict:
    """What a PyTorch model holds, with the keys of ``inspection.inspect_onnx`` where they apply."""
    from tensorsmith.convert.detect import detect_format

    torch = _torch()
    fmt = fmt or detect_format(path)
    info: dict[str, Any] = {"path": str(path), "format": fmt, "framework_version": None}
    if fmt == "torchscript":
        p = Path(path)
        module = _load_script(p)
        params, nbytes = _param_stats([*module.parameters(), *module.buffers()])
        ops: dict[str, int] = {}
        with contextlib.suppress(Exception):
            for node in module.inlined_graph.nodes():
                ops[node.kind()] = ops.get(node.kind(), 0) + 1
        args = _script_args(module)
        info.update(
            file_bytes=dir_bytes(p),
            producer="TorchScript",
            inputs=[
                spec_dict(n, "float32" if _is_tensor_type(t) else None, None) | {"type": t}
                for n, t, *_ in args
            ],
            outputs=[
                {
                    "name": "output",
                    "dtype": None,
                    "shape": None,
                    "type": str(module.forward.schema.returns[0].type)
                    if module.forward.schema.returns
                    else None,
                }
            ],
            nodes=sum(ops.values()) or None,
            ops=dict(sorted(ops.items(), key=lambda kv: -kv[1])),
            parameters=params,
            parameter_bytes=nbytes,
        )
    elif fmt == "torch-export":
        p = Path(path)
        opts = FrontendOptions(format=fmt, work_dir=p.parent)
        ep = _load_ep(p, opts)
        params, nbytes = _param_stats(
            [*ep.state_dict.values(), *[c for c in ep.constants.values() if isinstance(c, torch.Tensor)]]
        )
        ops = {}
        for node in ep.graph.nodes:
            if node.op == "call_function":
                name = str(getattr(node.target, "__name__", node.target))
                ops[name] = ops.get(name, 0) + 1
        out_node = next(n for n in ep.graph.nodes if n.op == "output")
        outs = _flatten_meta(out_node.args[0])
        info.update(
            file_bytes=dir_bytes(p),
            producer="torch.export",
            framework_version=_pt2_version(p),
            inputs=[spec_dict(n, _np_dtype(v), _sym_shape(v)) for n, v in _ep_inputs(ep)],
            outputs=[
                spec_dict("output" if len(outs) == 1 else f"output_{i}", _np_dtype(v), _sym_shape(v))
                for i, v in enumerate(outs)
            ],
            nodes=sum(ops.values()),
            ops=dict(sorted(ops.items(), key=lambda kv: -kv[1])),
            parameters=params,
            parameter_bytes=nbytes,
        )
    elif fmt == "torch-factory":
        opts = FrontendOptions(format=fmt, work_dir=Path("."))
        model, _ = _build_factory(str(path), opts)
        params, nbytes = _param_stats([*model.parameters(), *model.buffers()])
        info.update(
            producer=f"{type(model).__module__}.{type(model).__name__}",
            inputs=[{"name": p.name, "dtype": None, "shape": None} for p in _forward_params(model)],
            outputs=[],
            parameters=params,
            parameter_bytes=nbytes,
        )
    else:
        raise UsageError(f"the PyTorch frontend does not read {fmt!r}")
    return info


def _flatten_meta(arg) -> list:
    if isinstance(arg, (list, tuple)):
        return [v for a in arg for v in _flatten_meta(a)]
    val = getattr(arg, "meta", {}).get("val") if hasattr(arg, "meta") else None
    return [val] if val is not None else []


def _np_dtype(val) -> str | None:
    torch = _torch()
    dt = getattr(val, "dtype", None)
    if dt is None:
        return None
    try:
        return np.dtype(torch.empty((), dtype=dt).numpy().dtype).name
    except Exception:
        return str(dt).replace("torch.", "")


def _pt2_version(path: Path) -> str | None:
    """The torch version that wrote a .pt2, when the archive records it."""
    try:
        with zipfile.ZipFile(path) as zf:
            for n in zf.namelist():
                if re.search(r"models/[^/]+\.json$", n):
                    data = json.loads(zf.read(n))
                    ver = data.get("torch_version") or data.get("schema_version")
                    if isinstance(ver, dict):
                        return f"schema {ver.get('major')}.{ver.get('minor')}"
                    return str(ver) if ver else None
    except Exception:
        return None
    return None
