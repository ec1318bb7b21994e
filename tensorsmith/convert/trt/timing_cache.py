"""The TensorRT timing cache file: loaded into the builder config, merged with what
the file holds after the build (under a lock file, as Polygraphy's
``EngineBytesFromNetwork`` does) and written back atomically."""

from __future__ import annotations

import contextlib
from pathlib import Path

from tensorsmith import atomic
from tensorsmith.errors import UsageError


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on ``path.lock`` (POSIX; no lock elsewhere)."""
    lock = path.with_name(path.name + ".lock")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def load_timing_cache(config, path: Path | None) -> dict | None:
    if path is None:
        return None
    path = Path(path)
    if path.exists() and path.is_dir():
        raise UsageError(f"--timing-cache {path}: is a directory")
    if not (path.parent if str(path.parent) else Path(".")).is_dir():
        raise UsageError(f"--timing-cache {path}: folder does not exist")
    state = {"path": str(path), "loaded_bytes": 0, "used": False, "note": None}
    blob = b""
    with locked(path):
        if path.is_file():
            blob = path.read_bytes()
    cache = None
    try:
        cache = config.create_timing_cache(blob)
    except Exception as exc:
        state["note"] = f"could not read {path} ({' '.join(str(exc).split())[:120]}); building without it"
    if cache is not None and not config.set_timing_cache(cache, ignore_mismatch=False):
        state["note"] = f"{path} was written for another GPU or TensorRT version; building without it"
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    elif cache is None:
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    else:
        state["used"] = bool(blob)
        state["loaded_bytes"] = len(blob)
    return state


def save_timing_cache(config, path: Path | None, state: dict | None) -> dict | None:
    if path is None or state is None:
        return state
    path = Path(path)
    cache = config.get_timing_cache()
    with locked(path):
        # another build may have written the file meanwhile: merge, as Polygraphy does
        if path.is_file():
            try:
                prev = config.create_timing_cache(path.read_bytes())
                if prev is not None and not cache.combine(prev, ignore_mismatch=True):
                    state["note"] = (state.get("note") or "") + " (could not merge the file's entries)"
            except Exception:
                pass
        data = bytes(memoryview(cache.serialize()))
        atomic.write_bytes(path, data)
    state["written_bytes"] = len(data)
    return state
