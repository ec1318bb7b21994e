"""Reading and writing ONNX files.

Reading is lazy: weights in external data stay on disk (memory-mapped by onnx_ir)
until a pass touches them. Writing is atomic (``tensorsmith.atomic``): everything goes
to a temporary folder beside the target and is renamed into place at the end, so an
interrupted run never leaves a half-written model (or a model whose ``.onnx.data`` is
from another run); missing parent folders of the target are created.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from tensorsmith import atomic
from tensorsmith.errors import UsageError, short

# The protobuf limit is 2 GiB; leave room for the graph itself.
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3 - 64 * 1024**2


def data_file_name(path: str | os.PathLike) -> str:
    """The external-data file name used beside ``path`` (``model.onnx.data``)."""
    return Path(path).name + ".data"


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, expected an .onnx file")
    if path.stat().st_size == 0:
        raise UsageError(f"{path}: file is empty")


def _check_external_data(proto: onnx.ModelProto, base_dir: Path, path: Path) -> None:
    """Every external tensor must point at a file that is long enough."""
    sizes: dict[Path, int] = {}
    for tensor in all_tensors(proto.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = (base_dir / location).resolve()
        if not str(target).startswith(str(base_dir.resolve())) and not os.path.isabs(location):
            raise UsageError(f"{path}: external data location {location!r} escapes the model folder")
        if target not in sizes:
            if not target.is_file():
                raise UsageError(
                    f"{path}: external data file {location!r} of tensor {tensor.name!r} is missing"
                )
            sizes[target] = target.stat().st_size
        end = int(info.get("offset", 0) or 0) + int(info.get("length", 0) or 0)
        if end > sizes[target]:
            raise UsageError(
                f"{path}: external data file {location!r} is truncated "
                f"(tensor {tensor.name!r} needs {end} bytes, file has {sizes[target]})"
            )


def all_tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from all_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from all_tensors(g)


def load_proto(path: str | os.PathLike) -> onnx.ModelProto:
    """Read the ModelProto of ``path`` without its external data, with clear errors."""
    path = Path(path)
    _check_readable(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a readable ONNX model ({short(exc, 200)})") from exc
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not proto.HasField("graph") or proto.ir_version <= 0:
        raise UsageError(f"{path}: not an ONNX model (no graph or IR version)")
    if len(proto.graph.output) == 0:
        raise UsageError(f"{path}: not a usable ONNX model (the graph has no outputs)")
    _check_external_data(proto, path.parent, path)
    return proto


def load(path: str | os.PathLike) -> ir.Model:
    """Load an ONNX file into an ``onnx_ir`` model; external data stays lazily mapped."""
    path = Path(path)
    proto = load_proto(path)
    try:
        model = ir.serde.deserialize_model(proto)
    except Exception as exc:  # a malformed graph the IR refuses
        raise UsageError(f"{path}: malformed ONNX graph ({short(exc, 200)})") from exc
    ir.external_data.set_base_dir(model.graph, str(path.parent))
    model.meta[ANNOTATED_KEY] = _annotated_names(proto.graph)
    model.meta[EXTERNAL_KEY] = any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in all_tensors(proto.graph)
    )
    return model


EXTERNAL_KEY = "tensorsmith.external_data"


ANNOTATED_KEY = "tensorsmith.annotated_values"


def _annotated_names(graph: onnx.GraphProto) -> set[str]:
    """Names of intermediate values the file itself annotated (value_info), all graphs."""
    names = {vi.name for vi in graph.value_info}
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                names |= _annotated_names(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    names |= _annotated_names(g)
    return names


def drop_inferred_annotations(model: ir.Model) -> None:
    """Forget the types/shapes that passes inferred for intermediate values.

    Shape inference during folding annotates every intermediate value; saved, that
    is one value_info entry each (14% of a small tf2onnx model). A model loaded by
    ``load`` keeps exactly the annotations its file had; runtimes infer the rest.
    """
    keep = model.meta.get(ANNOTATED_KEY)
    if keep is None:
        return
    for graph in [model.graph, *model.graph.subgraphs()]:
        values = [v for node in graph for v in node.outputs]
        values += [v for v in graph.initializers.values() if not v.is_graph_input()]
        for value in values:
            if value.name not in keep and not value.is_graph_output():
                value.type = None
                value.shape = None


def tensor_bytes(model: ir.Model) -> int:
    """Bytes of all initializers (main graph and subgraphs) without reading their data."""
    total = 0
    for graph in [model.graph, *model.graph.subgraphs()]:
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is not None:
                total += tensor.nbytes
    return total


class Staged:
    """A model written to a temporary folder beside its target, not yet in place.

    ``commit()`` renames it (and its ``.data`` file) to the target; ``discard()``
    (or leaving the ``with`` block on an error) removes it, and the parent folders
    the write created. Verification runs on ``model_path`` between the two, so a
    failed check never leaves a file at -o.
    """

    def __init__(self, target: Path, staging: atomic.Staging, data_name: str, external: bool):
        self.target = target
        self.staging = staging
        self.tmp_dir = staging.dir
        self.data_name = data_name
        self.external = external
        self.model_path = staging.path()
        self.files: list[Path] = []

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.tmp_dir.iterdir() if p.is_file())

    def commit(self) -> list[Path]:
        parent = self.target.parent
        tmp_data = self.tmp_dir / self.data_name
        final_data = parent / self.data_name
        written = [self.target]
        if tmp_data.exists():
            self.staging.install(tmp_data, final_data)
            written.append(final_data)
        elif final_data.exists():
            # a stale data file of an earlier run next to a self-contained model misleads
            with contextlib.suppress(OSError):
                final_data.unlink()
        self.staging.install(self.model_path, self.target)
        self.staging.close()
        self.files = written
        return written

    def discard(self) -> None:
        self.staging.discard()

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` when a model can be written there (missing parent folders are created
    when it is written); ``UsageError`` otherwise."""
    return atomic.check_target(path)


def stage(model: ir.Model, path: str | os.PathLike, *, external_data: bool | None = None) -> Staged:
    """Write ``model`` for ``path`` into a temporary folder beside it (see ``Staged``).

    ``external_data``: ``True`` writes weights to ``<name>.data`` beside the model,
    ``False`` embeds them, ``None`` (default): external when over ~2 GB or when the
    source model (from ``load``) had external data.
    """
    path = check_output_path(path)
    if external_data is None:
        # over 2 GB, or the source kept its weights beside it: keep that layout (it
        # also streams the weights instead of building a protobuf of all of them)
        external_data = tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD or bool(model.meta.get(EXTERNAL_KEY))
    data_name = data_file_name(path)
    staged = Staged(path, atomic.Staging(path), data_name, bool(external_data))
    drop_inferred_annotations(model)
    try:
        if external_data:
            # unmap each memory-mapped weight once written: saving gigabytes of external
            # weights then holds about one tensor of them at a time
            written: list = []

            def release_written(tensor, _info) -> None:
                while written:
                    release = getattr(written.pop(), "release", None)
                    if release is not None:
                        with contextlib.suppress(BufferError):
                            release()
                written.append(tensor)

            ir.save(
                model,
                staged.model_path,
                external_data=data_name,
                size_threshold_bytes=1024,
                callback=release_written,
            )
            release_written(None, None)
        else:
            ir.save(model, staged.model_path)
    except BaseException as exc:
        staged.discard()
        if isinstance(exc, Exception):
            from tensorsmith.errors import ConversionError

            hint = None
            if "2GB" in str(exc) or "2 GB" in str(exc) or "protobuf" in str(exc).lower():
                hint = "use --external-data"
            raise ConversionError(f"cannot write {path}: {short(exc, 200)}", hint=hint) from exc
        raise
    return staged


def save(model: ir.Model, path: str | os.PathLike, *, external_data: bool | None = None) -> list[Path]:
    """Write ``model`` to ``path`` atomically; returns the files written."""
    return stage(model, path, external_data=external_data).commit()


def save_proto(proto: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Atomically write a self-contained ModelProto (used by frontends and tests)."""
    return atomic.write_bytes(path, proto.SerializeToString())
