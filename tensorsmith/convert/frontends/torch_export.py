"""torch.export ``.pt2`` archives (ExportedPrograms) -> ONNX (the dynamo exporter).

The archive is checked first: pickled payloads (which ``torch.export.load`` would
unpickle with ``weights_only=False``) are refused without ``--trust-remote-code``.
With ``--static`` a program with symbolic dims is re-exported at concrete shapes.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tensorsmith.convert.frontend import FrontendOptions, Imported, dir_bytes, quiet, spec_dict
from tensorsmith.convert.frontends.torch_common import (
    LOGGERS,
    check_format,
    check_options,
    dynamo_export,
    export_error,
    finish,
    flatten_outputs,
    format_shape,
    import_torch,
    inspect_format,
    param_stats,
    to_numpy,
)
from tensorsmith.errors import ConversionError, UsageError, short

FORMATS = ("torch-export",)


def load(path: str | os.PathLike, opts: FrontendOptions) -> Imported:
    """Convert a torch.export archive into ONNX."""
    check_options(opts)
    check_format(opts.format, FORMATS)
    return _load_exported(Path(path), opts)


def inspect(path: str | os.PathLike, fmt: str | None = None) -> dict:
    """What a .pt2 archive holds, with the keys of ``inspection.inspect_onnx`` where they apply."""
    fmt = inspect_format(path, fmt, FORMATS)
    torch = import_torch()
    info: dict[str, Any] = {"path": str(path), "format": fmt, "framework_version": None}
    p = Path(path)
    opts = FrontendOptions(format=fmt, work_dir=p.parent)
    ep = _load_ep(p, opts)
    params, nbytes = param_stats(
        [*ep.state_dict.values(), *[c for c in ep.constants.values() if isinstance(c, torch.Tensor)]]
    )
    ops: dict[str, int] = {}
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
    return info


def check_pt2_safe(path: Path, trust_remote_code: bool) -> None:
    """Refuse a .pt2 whose loading would unpickle arbitrary Python objects.

    ``torch.export.load`` reads tensors raw, but payloads marked ``use_pickle``,
    custom/opaque objects, and sample inputs that ``weights_only`` rejects are
    unpickled with ``weights_only=False``. Those need ``--trust-remote-code``.
    """
    torch = import_torch()
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
                    with quiet(*LOGGERS):
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
    torch = import_torch()
    check_pt2_safe(path, opts.trust_remote_code)
    try:
        with quiet(*LOGGERS):
            return torch.export.load(str(path))
    except Exception as exc:
        raise UsageError(f"{path}: not a loadable torch.export archive ({short(exc, 160)})") from None


def _ep_inputs(ep) -> list[tuple[str, Any]]:
    """(placeholder name, meta value) of the user inputs."""
    user = set(ep.graph_signature.user_inputs)
    return [(n.name, n.meta.get("val")) for n in ep.graph.nodes if n.op == "placeholder" and n.name in user]


def _sym_shape(val) -> list[int | str | None] | None:
    shape = getattr(val, "shape", None)
    if shape is None:
        return None
    out: list[int | str | None] = []
    for d in shape:
        # never int() a SymInt: that guards the symbol to its example value
        out.append(d if isinstance(d, int) else str(d))
    return out


def _load_exported(path: Path, opts: FrontendOptions) -> Imported:
    torch = import_torch()
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
            with quiet(*LOGGERS):
                program = torch.export.export(ep.module(), tuple(args), kwargs)
        except Exception as exc:
            raise export_error(exc, "torch.export (static re-export)") from None
        notes.append(f"static shapes {', '.join(f'{n}={format_shape(concrete[n])}' for n in names)}")
    onnx_path = opts.work_dir / "converted.onnx"
    dynamo_export(program, onnx_path, opts)
    module = ep.module()

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        flat = list(flat_example)
        for i, n in zip(tensor_leaves, names, strict=False):
            flat[i] = torch.from_numpy(np.ascontiguousarray(feeds[n]))
        args, kwargs = pytree.tree_unflatten(flat, in_spec)
        with torch.no_grad():
            return to_numpy(flatten_outputs(module(*args, **kwargs)))

    return finish(
        onnx_path, opts, input_names=names, run=run, converter="torch.onnx dynamo exporter", notes=notes
    )


def _flatten_meta(arg) -> list:
    if isinstance(arg, (list, tuple)):
        return [v for a in arg for v in _flatten_meta(a)]
    val = getattr(arg, "meta", {}).get("val") if hasattr(arg, "meta") else None
    return [val] if val is not None else []


def _np_dtype(val) -> str | None:
    torch = import_torch()
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
