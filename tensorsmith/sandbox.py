"""Load a generated model in a child process first, where a native crash cannot take us down.

onnxruntime can crash the whole process (a segfault in a graph optimizer: onnxruntime
1.32 creating an all-optimizations session for a float16 bidirectional-GRU tagger), and
a crash gives no error line, no JSON, no report, and ends a recipe's other jobs with
it. Before tensorsmith creates a session in its own process for a model it generated,
``probe`` creates the same session in a fresh ``python`` that imports nothing but
onnxruntime; a crash there comes back as a message, which callers turn into exit 3 or,
in the precision search, into "keep these nodes FP32" (``find_culprit``).

A probe costs one interpreter start and one session (about 0.3-1 s); results are
cached per file content and optimization level for the life of the process.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from tensorsmith.errors import ConversionError

# The child: create the session as tensorsmith would (CPU, logger at FATAL), then exit 0.
# A Python exception exits 1 (not a crash: the caller's own session raises it as usual).
_CHILD = """
import sys
import onnxruntime as ort
so = ort.SessionOptions()
so.log_severity_level = 4
so.graph_optimization_level = (
    ort.GraphOptimizationLevel.ORT_ENABLE_ALL if sys.argv[2] == "1" else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
)
try:
    ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
except Exception:
    sys.exit(1)
"""

PROBE_TIMEOUT_S = 600.0
_cache: dict[tuple[str, bool], str | None] = {}


class NativeCrash(ConversionError):
    """onnxruntime crashed (a signal, not an exception) loading a model tensorsmith generated."""


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    data = Path(str(path) + ".data")
    if data.exists():  # external weights beside the model: part of what is loaded
        st = data.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def probe(model: str | os.PathLike | bytes, *, optimize: bool = True) -> str | None:
    """None when onnxruntime creates a session for ``model`` without crashing; else what happened.

    ``optimize``: all graph optimizations (as deployment and latency runs use them) or none.
    """
    if isinstance(model, bytes):
        with tempfile.TemporaryDirectory(prefix="tensorsmith-probe-") as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(model)
            return probe(path, optimize=optimize)
    path = Path(model)
    key = (_digest(path), optimize)
    if key in _cache:
        return _cache[key]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), "1" if optimize else "0"],
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        result: str | None = (
            f"onnxruntime did not finish creating a session within {PROBE_TIMEOUT_S:.0f} s (a hang)"
        )
    else:
        if proc.returncode < 0:
            level = "an all-optimizations" if optimize else "a"
            result = f"onnxruntime crashed ({_signal_name(proc.returncode)}) creating {level} session"
        else:
            result = None
    _cache[key] = result
    return result


def check(model: str | os.PathLike | bytes, what: str, *, optimize: bool = True) -> None:
    """Raise ``NativeCrash`` (exit 3) naming ``what`` when loading ``model`` crashes onnxruntime."""
    crash = probe(model, optimize=optimize)
    if crash:
        raise NativeCrash(
            f"{what}: {crash} for it; nothing written",
            hint="an onnxruntime bug on this graph: try another --precision, or --keep-fp32 OP for the ops involved",
        )


def find_culprits(
    candidates: Sequence[str], crashes: Callable[[set[str]], bool], limit: int = 8
) -> list[str] | None:
    """The few candidates whose removal stops a crash, or None.

    ``crashes(removed)`` tells whether the model still crashes with the ``removed``
    candidates taken out (kept in FP32, say); ``crashes(set())`` is known to be True.
    A binary search for the shortest prefix of ``candidates`` whose removal stops the
    crash names its last element as necessary; the search repeats inside that prefix
    until nothing more is needed: about log2(N) probes per culprit. None when removing
    every candidate does not help, or more than ``limit`` would be needed.
    """
    pool = list(candidates)
    if not pool or crashes(set(pool)):
        return None  # removing every candidate does not help: not theirs
    found: list[str] = []
    while crashes(set(found)):
        if len(found) >= limit or not pool:
            return None
        lo, hi = 1, len(pool)
        while lo < hi:
            mid = (lo + hi) // 2
            if crashes(set(found) | set(pool[:mid])):
                lo = mid + 1
            else:
                hi = mid
        found.append(pool[lo - 1])
        pool = pool[: lo - 1]
    return found
