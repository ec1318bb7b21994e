"""``module:factory`` sources (``mypkg.models:build_net`` plus ``--weights``) -> ONNX.

The module is imported and the factory called (that is running your own code,
which you named); ``--weights`` is loaded with ``torch.load(...,
weights_only=True)``. The module is exported with ``torch.export`` and the dynamo
exporter; non-tensor arguments are bound as constants.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect as pyinspect
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tensorsmith.convert.frontend import BATCH_DIM, FrontendOptions, Imported, quiet
from tensorsmith.convert.frontends.torch_common import (
    LOGGERS,
    check_format,
    check_options,
    dynamo_export,
    example_shape,
    export_error,
    finish,
    flatten_outputs,
    format_shape,
    import_torch,
    inspect_format,
    param_stats,
    shape_for,
    to_numpy,
)
from tensorsmith.errors import UsageError, short

FORMATS = ("torch-factory",)


def load(path: str | os.PathLike, opts: FrontendOptions) -> Imported:
    """Build the module the factory names and convert it into ONNX."""
    check_options(opts)
    check_format(opts.format, FORMATS)
    return _load_factory(str(path), opts)


def inspect(path: str | os.PathLike, fmt: str | None = None) -> dict:
    """What the factory's module holds (parameters, forward arguments)."""
    fmt = inspect_format(path, fmt, FORMATS)
    info: dict[str, Any] = {"path": str(path), "format": fmt, "framework_version": None}
    opts = FrontendOptions(format=fmt, work_dir=Path("."))
    model, _ = _build_factory(str(path), opts)
    params, nbytes = param_stats([*model.parameters(), *model.buffers()])
    info.update(
        producer=f"{type(model).__module__}.{type(model).__name__}",
        inputs=[{"name": p.name, "dtype": None, "shape": None} for p in _forward_params(model)],
        outputs=[],
        parameters=params,
        parameter_bytes=nbytes,
    )
    return info


_FACTORY = re.compile(r"^([A-Za-z_][\w.]*):([A-Za-z_]\w*)$")


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


# where training scripts put the state dict inside a checkpoint dict, tried in this order
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "weights")


def _is_state_dict(obj, torch) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _keys(obj: dict, limit: int = 8) -> str:
    keys = [str(k) for k in obj]
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} keys)" if len(keys) > limit else "")


def load_weights(path: Path, trust_remote_code: bool, key: str | None = None) -> tuple[dict, str | None]:
    """A state dict from ``--weights``: ``weights_only=True`` unless --trust-remote-code.

    ``key`` (``--weights-key``, dotted for nesting: ``ema.model``) says where the state
    dict sits in a checkpoint dict; without it the usual keys are tried, then any single
    top-level entry that is a state dict.
    """
    torch = import_torch()
    if not path.is_file():
        raise UsageError(f"--weights {path}: no such file")
    note = None
    try:
        with quiet(*LOGGERS):
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
    if key is not None:
        inner = obj
        for part in key.split("."):
            if not isinstance(inner, dict) or part not in inner:
                found = _keys(inner) if isinstance(inner, dict) else f"a {type(inner).__name__}"
                raise UsageError(f"--weights {path}: no key {key!r} in the checkpoint (found: {found})")
            inner = inner[part]
        if not _is_state_dict(inner, torch):
            raise UsageError(
                f"--weights {path}: {key!r} is not a state dict (a {type(inner).__name__}); expected name -> tensor"
            )
        return inner, note
    if _is_state_dict(obj, torch):
        return obj, note
    if isinstance(obj, dict):
        for k in STATE_DICT_KEYS:
            if _is_state_dict(obj.get(k), torch):
                return obj[k], note
        nested = [k for k, v in obj.items() if _is_state_dict(v, torch)]
        if len(nested) == 1:
            return obj[nested[0]], note
        found = f"keys {_keys(obj)}"
        tried = ", ".join(STATE_DICT_KEYS)
        which = f"; state dicts under: {', '.join(map(str, nested))}" if nested else ""
        raise UsageError(
            f"--weights {path}: a checkpoint dict with {found}, none a state dict (tried {tried}){which}",
            hint="name the key holding it: --weights-key KEY (dotted for nesting)",
        )
    raise UsageError(f"--weights {path}: not a state dict (a {type(obj).__name__}); expected name -> tensor")


def _build_factory(spec: str, opts: FrontendOptions):
    torch = import_torch()
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
        state, note = load_weights(Path(opts.weights), opts.trust_remote_code, opts.weights_key)
        if note:
            notes.append(note)
        try:
            fit = model.load_state_dict(state, strict=not opts.weights_non_strict)
        except RuntimeError as exc:
            text = " ".join(str(exc).split())
            raise UsageError(
                f"--weights {opts.weights} does not fit {spec}: {short(Exception(text), 240)}",
                hint=None
                if opts.weights_non_strict
                else "--weights-non-strict loads what fits and lists the rest",
            ) from None
        if opts.weights_non_strict:
            missing, unexpected = list(fit.missing_keys), list(fit.unexpected_keys)
            notes.append(
                "--weights-non-strict: "
                + (
                    f"missing keys (factory's own values kept): {', '.join(missing)}"
                    if missing
                    else "no missing keys"
                )
                + "; "
                + (
                    f"unexpected keys (ignored): {', '.join(unexpected)}"
                    if unexpected
                    else "no unexpected keys"
                )
            )
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
    torch = import_torch()
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
            shapes[p.name] = shape_for(p.name, opts, len(tensors), f"{spec} forward({', '.join(names)})")
            kwargs[p.name] = torch.zeros(example_shape(shapes[p.name], opts))
    input_names = list(kwargs)
    dynamic = None
    if not opts.static:
        batch = torch.export.Dim(BATCH_DIM, min=1)
        dynamic = {
            n: ({0: batch} if n in kwargs and shapes[n] else None) for n in names if n in kwargs or n in bound
        }
    opts.on_step("torch.export: tracing the module")
    try:
        with quiet(*LOGGERS), torch.no_grad():
            program = torch.export.export(
                model, (), {**kwargs, **bound}, dynamic_shapes=dynamic, strict=False
            )
    except Exception as exc:
        err = export_error(exc, "torch.export")
        if dynamic and ("specializ" in str(exc) or "Constraints violated" in str(exc)):
            err.hint = "the batch dimension cannot be dynamic for this model; pass --static"
        raise err from None
    onnx_path = opts.work_dir / "converted.onnx"
    dynamo_export(program, onnx_path, opts)
    if opts.static:
        notes.append(f"static shapes {', '.join(f'{n}={format_shape(shapes[n])}' for n in input_names)}")

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        call = {n: torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in input_names}
        with torch.no_grad():
            return to_numpy(flatten_outputs(model(**call, **bound)))

    return finish(
        onnx_path, opts, input_names=input_names, run=run, converter="torch.onnx dynamo exporter", notes=notes
    )
