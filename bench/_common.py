"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def one_line(exc: BaseException | str, limit: int = 160) -> str:
    """An exception (or text) squeezed into one short line for a table cell."""
    if isinstance(exc, BaseException):
        text = f"{type(exc).__name__}: {exc}"
    else:
        text = str(exc)
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def versions() -> dict[str, str]:
    out = {}
    for mod in (
        "tensorsmith",
        "onnx",
        "onnx_ir",
        "onnxscript",
        "onnxruntime",
        "onnxsim",
        "onnxslim",
        "onnxoptimizer",
        "numpy",
    ):
        try:
            m = __import__(mod)
            out[mod] = str(getattr(m, "__version__", "?"))
        except Exception as exc:  # pragma: no cover - reported, not fatal
            out[mod] = f"unavailable ({one_line(exc, 60)})"
    return out


def machine_notes() -> str:
    """Date, CPU, cores, load: what a reader needs to judge the numbers."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    try:
        mem = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        mem = f"{int(mem.split()[1]) / 1024**2:.1f} GiB"
    except Exception:
        mem = "?"
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    v = versions()
    vtxt = ", ".join(f"{k} {val}" for k, val in v.items())
    return (
        f"{now}; {cpu}; {os.cpu_count()} cores; {mem} RAM; load average {load} (1/5/15 min); "
        f"Python {platform.python_version()}; {vtxt}"
    )


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def run_python(args: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ROOT)
    )
