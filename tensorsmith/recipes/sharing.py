"""Several runs on one output folder (and so one cache) at once.

Two runs may share an output folder: each holds a shared lock on
``.tensorsmith.lock`` for its whole length; only a run that finds itself alone
(the lock can be taken exclusively) clears what a killed run left behind (the
staging folder, a stale manifest temp file). The manifest is written under an
exclusive lock of its own (in the staging folder) and merged: the entries on disk are read again and
only the jobs this run finished (or dropped) are replaced, so one run never
erases another's. Two runs that run the same job both install it atomically;
the manifest then holds whichever finished last, and its outputs are the ones
in place.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tensorsmith.recipes import cache
from tensorsmith.recipes.expand import LOCK_NAME, TMP_DIR_NAME

_THREADS = threading.Lock()  # flock excludes open files, this excludes threads of one process


class RunLock:
    """A run's hold on its output folder: exclusive while clearing leftovers, shared after."""

    def __init__(self, fh):
        self.fh = fh
        self.alone = True

    def share(self) -> None:
        """Let other runs in (exclusive -> shared)."""
        if self.fh is not None and self.alone:
            import fcntl

            fcntl.flock(self.fh.fileno(), fcntl.LOCK_SH)

    def alone_now(self) -> bool:
        """At the end: no other run holds the folder (then this one may clear shared leftovers)."""
        if self.fh is None:
            return True
        import fcntl

        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True


@contextlib.contextmanager
def run_lock(output_dir: Path) -> Iterator[RunLock]:
    """Held for a run's whole length; ``.alone`` says no other run held the folder at the start."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield RunLock(None)
        return
    fh = open(output_dir / LOCK_NAME, "a+")
    try:
        lock = RunLock(fh)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.alone = False
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH)  # waits only while a lone run clears leftovers
        yield lock
    finally:
        fh.close()


@contextlib.contextmanager
def manifest_lock(manifest_path: Path) -> Iterator[None]:
    """An exclusive lock around one read-merge-write of the manifest."""
    with _THREADS:
        try:
            import fcntl
        except ImportError:  # pragma: no cover
            yield
            return
        # inside the staging folder: only a run holding the folder alone deletes it
        lock_path = manifest_path.parent / TMP_DIR_NAME / "manifest.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            yield


def write_merged(manifest: cache.Manifest, mine: set[str], dropped: set[str], **meta: Any) -> None:
    """Write ``manifest``'s entries for ``mine``, drop ``dropped``, keep every other entry on disk.

    ``manifest`` is updated in place with the other runs' entries, so what this run
    reads next (stale outputs, cached entries) is the merged state.
    """
    with manifest_lock(manifest.path):
        disk = cache.Manifest.load(manifest.path)
        jobs = {name: entry for name, entry in disk.jobs.items() if name not in dropped}
        jobs.update({name: manifest.jobs[name] for name in mine if name in manifest.jobs})
        manifest.data["jobs"] = jobs
        manifest.write(**meta)


def clear_leftovers(output_dir: Path, tmp_dir_name: str, manifest_path: Path) -> None:
    """What a killed run left: its staging folder, a manifest temp file (lone runs only)."""
    import shutil

    shutil.rmtree(output_dir / tmp_dir_name, ignore_errors=True)
    cache.remove_stale_tmp(manifest_path)
    with contextlib.suppress(OSError):
        os.rmdir(output_dir / tmp_dir_name)
