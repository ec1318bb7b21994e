"""The content-addressed cache and the manifest.

A job's key is the sha256 of: the source model's bytes (every file of a SavedModel
folder, an ONNX model's external data files), the content of every file an option
names (``verify_data``, ...), the job's resolved options, its output name, and the
versions of tensorsmith (its version and a digest of its own source) and of the
libraries that shape the result. The manifest (``tensorsmith-manifest.json`` in the
output folder) records, per job, that key, the sha256 of the inputs and outputs,
versions, timings, verification numbers and status. A job is *cached* when its
manifest entry has the same key, passed, and every output file is still there
with the recorded size and sha256: then no conversion work runs.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import json
import math
import os
import threading
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from tensorsmith import atomic
from tensorsmith.errors import UsageError

MANIFEST_FORMAT = "tensorsmith-manifest/1"
KEY_SCHEMA = 1
CHUNK = 1 << 20

# distributions whose version goes into every key, and more by source format (a target's are
# its registry entry's `libraries`)
COMMON_LIBS = ("onnx", "onnxruntime", "onnx-ir", "onnxscript", "numpy", "protobuf")
TF_LIBS = ("tensorflow", "tensorflow-cpu", "tf2onnx", "keras", "tf-keras")
FORMAT_LIBS = {
    "savedmodel": TF_LIBS,
    "keras": TF_LIBS,
    "h5": TF_LIBS,
    "graphdef": TF_LIBS,
    "tflite": TF_LIBS,
    "torchscript": ("torch",),
    "torch-export": ("torch",),
    "torch-factory": ("torch",),
}
PRECISION_LIBS = {"fp16": ("onnxconverter-common",), "int8": ()}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


_MEMO: dict[tuple, str] = {}
_MEMO_LOCK = threading.Lock()


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file; remembered for this process while its size, mtime and inode stay."""
    st = os.stat(path)
    memo_key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    with _MEMO_LOCK:
        if memo_key in _MEMO:
            return _MEMO[memo_key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(CHUNK)
            if not block:
                break
            h.update(block)
    digest = h.hexdigest()
    with _MEMO_LOCK:
        _MEMO[memo_key] = digest
    return digest


def _dir_files(root: Path) -> list[Path]:
    return sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def _onnx_external_files(path: Path) -> list[Path]:
    """External data files an ONNX model names (none when it cannot be parsed)."""
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # corrupt: the job itself will say so
        return []
    from tensorsmith.model_io import all_tensors

    found: dict[str, Path] = {}
    for tensor in all_tensors(proto.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        target = path.parent / location
        if location and target.is_file():
            found.setdefault(location, target)
    return [found[k] for k in sorted(found)]


def source_digest(source: str, source_format: str | None) -> dict[str, Any]:
    """``{"sha256": ..., "files": {relative name: sha256}}`` for a model source."""
    p = Path(source)
    files: dict[str, str] = {}
    try:
        if p.is_dir():
            for f in _dir_files(p):
                files[f.relative_to(p).as_posix()] = sha256_file(f)
        elif p.is_file():
            files[p.name] = sha256_file(p)
            if source_format in (None, "onnx"):
                for f in _onnx_external_files(p):
                    files[os.path.relpath(f, p.parent).replace(os.sep, "/")] = sha256_file(f)
        else:
            # module:factory: the module's source file stands for the model's code
            import importlib.util

            module = source.partition(":")[0]
            spec = None
            with contextlib.suppress(Exception):
                spec = importlib.util.find_spec(module)
            origin = getattr(spec, "origin", None)
            files[source] = sha256_file(origin) if origin and os.path.isfile(origin) else ""
    except OSError as exc:
        raise UsageError(f"{source}: cannot read ({exc.strerror or exc})") from None
    return {"sha256": _digest(files), "files": files}


def path_digest(path: str) -> str:
    p = Path(path)
    if p.is_dir():
        return _digest({f.relative_to(p).as_posix(): sha256_file(f) for f in _dir_files(p)})
    return sha256_file(p)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def tensorsmith_digest() -> str:
    """sha256 over tensorsmith's own ``.py`` files: a code change is a new version."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def versions(source_format: str | None, to: str, precision: str | None) -> dict[str, str | None]:
    from tensorsmith import __version__
    from tensorsmith.convert.targets import TARGETS, get_target

    target_libs = get_target(to).libraries if to in TARGETS else ()
    names = list(COMMON_LIBS) + list(FORMAT_LIBS.get(source_format or "", ())) + list(target_libs)
    names += list(PRECISION_LIBS.get(precision or "", ()))
    out: dict[str, str | None] = {"tensorsmith": __version__, "tensorsmith-source": tensorsmith_digest()[:16]}
    for name in dict.fromkeys(names):
        out[name] = _dist_version(name)
    return out


def job_key(job, source: dict) -> tuple[str, dict]:
    """The cache key of ``job`` and the material it hashes (kept in the manifest)."""
    from tensorsmith.jobs import CODE_OPTIONS, LOOSE_PATH_OPTIONS, PATH_OPTIONS, hashable_code

    options: dict[str, Any] = {}
    for key, value in sorted(job.options.items()):
        if key in LOOSE_PATH_OPTIONS:
            continue  # a cache file the build reads and writes: not an input
        if key in PATH_OPTIONS and not (key == "calib" and value == "random"):
            options[key] = {"sha256": path_digest(value)}
        elif key in CODE_OPTIONS:
            origin = hashable_code(str(value))
            options[key] = {"spec": value, "sha256": sha256_file(origin) if origin else None}
        else:
            options[key] = value
    material = {
        "schema": KEY_SCHEMA,
        "source": source["sha256"],
        "source_format": job.source_format,
        "to": job.to,
        "function": job.function,
        "options": options,
        "output": job.output_rel.replace(os.sep, "/"),
        "versions": versions(job.source_format, job.to, job.precision),
    }
    return _digest(material), material


# ---------------------------------------------------------------------------
# files and the manifest


def describe_files(paths: Iterable[str | os.PathLike], root: Path) -> list[dict]:
    """``[{"path": relative to root, "sha256", "bytes"}]``; folders are listed file by file."""
    out = []
    for path in paths:
        p = Path(path)
        members = _dir_files(p) if p.is_dir() else [p]
        for f in members:
            st = f.stat()
            out.append(
                {
                    "path": os.path.relpath(f, root).replace(os.sep, "/"),
                    "sha256": sha256_file(f),
                    "bytes": st.st_size,
                }
            )
    return out


def outputs_intact(entry: dict, root: Path) -> bool:
    files = entry.get("outputs") or []
    if not files:
        return False
    for item in files:
        p = root / item["path"]
        try:
            if not p.is_file() or p.stat().st_size != item["bytes"]:
                return False
        except OSError:
            return False
        if sha256_file(p) != item["sha256"]:
            return False
    return True


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``tensorsmith.atomic.write_text``, synced to disk)."""
    atomic.write_text(path, text, fsync=True)


def remove_stale_tmp(path: str | os.PathLike) -> None:
    """Delete ``.NAME.*.tmp`` files that a killed ``atomic_write_text(path)`` left beside ``path``."""
    atomic.remove_stale_tmp(path)


def clean_json(obj: Any) -> Any:
    """JSON-safe copy: NaN -> null, inf -> "inf", tuples -> lists, paths -> str."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):  # numpy scalars
        with contextlib.suppress(Exception):
            return clean_json(obj.item())
    return str(obj)


def dumps(obj: Any) -> str:
    return json.dumps(clean_json(obj), indent=2, sort_keys=False) + "\n"


class Manifest:
    """``tensorsmith-manifest.json``: one entry per job, rewritten atomically after each job."""

    def __init__(self, path: Path, data: dict | None = None):
        self.path = path
        self.data = data or {"format": MANIFEST_FORMAT, "jobs": {}}
        self.data.setdefault("jobs", {})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Manifest:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError):
            return cls(path)  # unreadable: start afresh (nothing will count as cached)
        if (
            not isinstance(data, dict)
            or data.get("format") != MANIFEST_FORMAT
            or not isinstance(data.get("jobs"), dict)
        ):
            return cls(path)
        return cls(path, data)

    @property
    def jobs(self) -> dict[str, dict]:
        return self.data["jobs"]

    def get(self, name: str) -> dict | None:
        entry = self.jobs.get(name)
        return entry if isinstance(entry, dict) else None

    def write(self, **meta: Any) -> None:
        self.data.update(meta)
        self.data["format"] = MANIFEST_FORMAT
        self.data["updated"] = now()
        self.data["jobs"] = dict(sorted(self.jobs.items()))
        atomic_write_text(self.path, dumps(self.data))
