"""Atomic writes: the one way tensorsmith puts files and folders in place.

Everything is written into a temporary folder (or file) beside its target, checked
there, and renamed into place at the end, so an interrupted or failed run never
leaves a half-written output (or a model whose ``.onnx.data`` is from another run).
Missing parent folders of the target are created first and removed again when the
write is abandoned, so a failed ``-o new/dir/model.onnx`` leaves nothing behind.

* ``Staging(target)``: a temporary folder beside ``target``; write there, then
  ``install(src, dst)`` each file or folder and ``close()`` (or use it as a context
  manager: leaving the block on an error discards everything it created).
* ``write_bytes(path, data)`` / ``write_text(path, text)``: one file, through a
  temporary file beside it and ``os.replace``.
* ``install(src, dst)``: rename a file or folder onto ``dst`` (an existing folder is
  swapped aside first and removed after).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import shutil
import tempfile
from pathlib import Path

from tensorsmith.errors import UsageError

__all__ = [
    "Staging",
    "check_target",
    "install",
    "make_parents",
    "remove_created",
    "remove_stale_tmp",
    "write_bytes",
    "write_text",
]


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_target(path: str | os.PathLike, *, what: str = "output") -> Path:
    """``path`` as a Path, or ``UsageError`` when it cannot be written: it is a folder,
    or its nearest existing ancestor is a file or not writable (missing folders are
    fine: writing creates them)."""
    path = Path(path)
    if path.exists() and path.is_dir():
        raise UsageError(f"{path}: {what} is a directory")
    parent = _parent(path)
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{existing}: is a file, cannot create the {what} folder {parent} in it")
    if not os.access(existing, os.W_OK):
        what_folder = f"{what} folder" if existing == parent else f"folder {existing} (for {parent})"
        raise UsageError(f"{existing if existing == parent else parent}: {what_folder} is not writable")
    return path


def make_parents(folder: str | os.PathLike) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the folders created, outermost first."""
    folder = Path(folder)
    missing: list[Path] = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:  # another job made it meanwhile
            continue
        except OSError as exc:
            remove_created(created)
            raise UsageError(f"{d}: cannot create the output folder ({exc.strerror or exc})") from None
        created.append(d)
    return created


def remove_created(created: list[Path]) -> None:
    """Remove folders that ``make_parents`` created, innermost first, where still empty."""
    for d in reversed(created):
        with contextlib.suppress(OSError):
            d.rmdir()


def install(src: str | os.PathLike, dst: str | os.PathLike, aside: Path | None = None) -> None:
    """Rename ``src`` onto ``dst``. A folder replaces an existing folder through a side
    step (``dst`` renamed aside, ``src`` renamed in, the old one removed; restored if the
    rename fails); a file replaces a file, or a folder that was there."""
    src, dst = Path(src), Path(dst)
    if src.is_dir() and dst.exists():
        old = aside or dst.with_name(f".{dst.name}.old.{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        try:
            os.replace(src, dst)
        except BaseException:
            os.replace(old, dst)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    if dst.is_dir():
        shutil.rmtree(dst)
    os.replace(src, dst)


class Staging:
    """A temporary folder beside ``target`` (missing parents created) for one atomic write.

    Write the outputs into ``dir`` (``path()`` is ``dir / target.name``), check them
    there, then ``install`` each onto its final path and ``close()``. ``discard()`` (or
    leaving the ``with`` block on an error) removes the folder and any parent folders
    this write created.
    """

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target)
        parent = _parent(self.target)
        self.created = make_parents(parent)
        try:
            self.dir = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", suffix=".tmp", dir=parent))
        except BaseException:
            remove_created(self.created)
            raise
        self.installed = False

    def path(self, name: str | None = None) -> Path:
        return self.dir / (name or self.target.name)

    def install(self, src: str | os.PathLike, dst: str | os.PathLike) -> Path:
        install(src, dst, aside=self.dir / f".old-{Path(dst).name}")
        self.installed = True
        return Path(dst)

    def close(self) -> None:
        """Remove the temporary folder (what was installed stays)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def discard(self) -> None:
        """Remove the temporary folder and, unless something was installed, the parents created."""
        self.close()
        if not self.installed:
            remove_created(self.created)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it and ``os.replace``
    (missing parent folders are created; the file gets the umask's normal mode)."""
    path = Path(path)
    parent = _parent(path)
    created = make_parents(parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except BaseException:
        remove_created(created)
        raise
    try:
        with open(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are normal files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        remove_created(created)
        raise
    return path


def write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """``write_bytes`` of ``text`` in UTF-8."""
    return write_bytes(path, text.encode("utf-8"), fsync=fsync)


def remove_stale_tmp(path: str | os.PathLike) -> None:
    """Delete ``.NAME.*.tmp`` files that a killed ``write_bytes(path)`` left beside ``path``."""
    path = Path(path)
    with contextlib.suppress(OSError):
        for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()
