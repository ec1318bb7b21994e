"""What this machine has: package versions (from metadata, without importing the
frameworks), TensorFlow's build flags, whether TensorRT loads, and its GPUs.

Versions are read from package metadata, not by importing the frameworks (importing
TensorFlow costs seconds); TensorFlow's "built with TensorRT" flag is read from its
generated ``tensorflow/python/platform/build_info.py``. ``tensorrt`` is imported
(only here and in the TensorRT backend) to prove it loads. GPUs come from
``nvidia-smi``; with none on the PATH the list is empty. ``tensorsmith doctor``
(``doctor.py``) reports all of it; the targets ask it what they lack.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tensorsmith.errors import short

TFTRT_MAX_TF = (2, 17)  # TensorFlow 2.18 disabled TensorRT in its builds


def package_version(*dists: str) -> str | None:
    for d in dists:
        try:
            return importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def vtuple(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


# ---------------------------------------------------------------------------
# frameworks


def onnxruntime_info() -> dict:
    version = package_version("onnxruntime", "onnxruntime-gpu")
    info: dict[str, Any] = {"version": version, "providers": []}
    if version:
        try:
            import onnxruntime as ort

            info["providers"] = list(ort.get_available_providers())
        except Exception as exc:  # a broken install
            info["error"] = short(exc, 200)
    return info


def tensorflow_info() -> dict:
    """TensorFlow's version and build flags without importing it."""
    version = package_version("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly")
    info: dict = {"version": version, "tensorrt_build": None, "cuda_build": None}
    if not version:
        return info
    spec = importlib.util.find_spec("tensorflow")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        f = Path(loc) / "python" / "platform" / "build_info.py"
        if f.is_file():
            flags = _build_info(f.read_text(errors="replace"))
            info["tensorrt_build"] = flags.get("is_tensorrt_build")
            info["cuda_build"] = flags.get("is_cuda_build")
            break
    return info


def _build_info(text: str) -> dict:
    """``build_info = collections.OrderedDict([('is_cuda_build', False), ...])`` -> dict."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "build_info" for t in node.targets):
            call = node.value
            if isinstance(call, ast.Call) and call.args:
                try:
                    return dict(ast.literal_eval(call.args[0]))
                except (ValueError, TypeError):
                    return {}
    return {}


def tftrt_unavailable_reason(tf: dict | None = None) -> str | None:
    """Why TF-TRT cannot run with this TensorFlow, or None when it can (GPU aside)."""
    tf = tf if tf is not None else tensorflow_info()
    if not tf.get("version"):
        return "TensorFlow is not installed (pip install 'tensorsmith[tf]')"
    v = vtuple(tf["version"])
    if v[:2] > TFTRT_MAX_TF:
        return (
            f"TensorFlow {tf['version']} has no TF-TRT: TensorFlow 2.18 and later are built without "
            "TensorRT; TF-TRT needs TensorFlow <= 2.17 built with TensorRT (e.g. NVIDIA's NGC TensorFlow container)"
        )
    if tf.get("tensorrt_build") is False:
        return (
            f"TensorFlow {tf['version']} here was built without TensorRT; TF-TRT needs a TensorFlow "
            "<= 2.17 built with TensorRT (e.g. NVIDIA's NGC TensorFlow container)"
        )
    return None


def torch_info() -> dict:
    version = package_version("torch")
    info: dict = {"version": version, "cuda": None}
    if version:
        try:
            import torch

            info["cuda"] = torch.version.cuda
            info["cuda_available"] = bool(torch.cuda.is_available())
        except Exception as exc:
            info["error"] = short(exc, 200)
    return info


def tensorrt_info() -> dict:
    """The installed TensorRT: version from importing it (that is the check that matters)."""
    dist = package_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12", "tensorrt_cu13")
    info: dict = {"version": None, "package": dist}
    if importlib.util.find_spec("tensorrt") is None:
        return info
    try:
        import tensorrt as trt

        info["version"] = str(trt.__version__)
    except Exception as exc:  # installed but its libraries do not load (no driver, wrong CUDA)
        info["error"] = short(exc, 200)
    return info


def tensorrt_unavailable_reason(trt: dict | None = None) -> str | None:
    trt = trt if trt is not None else tensorrt_info()
    if trt.get("error"):
        return f"the tensorrt package does not load: {trt['error']}"
    if not trt.get("version"):
        return (
            "the tensorrt Python package is not installed (pip install tensorrt; its wheels fetch the "
            "TensorRT libraries from NVIDIA's index, pypi.nvidia.com)"
        )
    if vtuple(trt["version"])[:1] < (10,):
        return f"TensorRT {trt['version']} is too old: tensorsmith builds with TensorRT 10 or 11"
    return None


# ---------------------------------------------------------------------------
# GPUs


def gpus(timeout: float = 10.0) -> dict:
    """``{"source": "nvidia-smi"|"none", "gpus": [{index, name, compute_capability, memory_mib, driver}]}``."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {"source": "none", "gpus": [], "note": "nvidia-smi not found on PATH"}
    fields = ["index", "name", "compute_cap", "memory.total", "driver_version"]
    for attempt in (fields, [f for f in fields if f != "compute_cap"]):
        try:
            proc = subprocess.run(
                [exe, f"--query-gpu={','.join(attempt)}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"source": "nvidia-smi", "gpus": [], "note": f"nvidia-smi failed: {short(exc, 200)}"}
        if proc.returncode == 0:
            out = []
            for line in proc.stdout.strip().splitlines():
                vals = [v.strip() for v in line.split(",")]
                if len(vals) != len(attempt):
                    continue
                row = dict(zip(attempt, vals, strict=False))
                out.append(
                    {
                        "index": int(row["index"]) if row["index"].isdigit() else row["index"],
                        "name": row["name"],
                        "compute_capability": row.get("compute_cap"),
                        "memory_mib": int(float(row["memory.total"])) if _num(row["memory.total"]) else None,
                        "driver": row["driver_version"],
                    }
                )
            return {"source": "nvidia-smi", "gpus": out}
    return {
        "source": "nvidia-smi",
        "gpus": [],
        "note": f"nvidia-smi failed: {short(proc.stderr or proc.stdout, 200)}",
    }


def current_gpu() -> dict | None:
    """The GPU CUDA device 0 of this process is (CUDA_VISIBLE_DEVICES respected):
    cuda-python, then torch.cuda, then nvidia-smi."""
    for probe in (_gpu_cuda_python, _gpu_torch):
        try:
            g = probe()
        except Exception:
            g = None
        if g:
            return g
    listed = gpus().get("gpus", [])
    if not listed:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if visible.isdigit():
        for g in listed:
            if g["index"] == int(visible):
                return {
                    "name": g["name"],
                    "compute_capability": g["compute_capability"],
                    "source": "nvidia-smi",
                }
    g = listed[0]
    return {"name": g["name"], "compute_capability": g["compute_capability"], "source": "nvidia-smi"}


def _gpu_cuda_python() -> dict | None:
    if importlib.util.find_spec("cuda") is None:
        return None
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    err, props = cudart.cudaGetDeviceProperties(0)
    if err != cudart.cudaError_t.cudaSuccess:
        return None
    name = (
        props.name.decode(errors="replace").strip("\x00")
        if isinstance(props.name, bytes)
        else str(props.name)
    )
    return {"name": name, "compute_capability": f"{props.major}.{props.minor}", "source": "cuda-python"}


def _gpu_torch() -> dict | None:
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return {
        "name": torch.cuda.get_device_name(0),
        "compute_capability": f"{major}.{minor}",
        "source": "torch",
    }


def gpu_unavailable_reason(g: dict | None = None) -> str | None:
    g = g if g is not None else gpus()
    if g.get("gpus"):
        return None
    return f"no NVIDIA GPU found ({g.get('note') or 'nvidia-smi lists none'})"


def _num(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


__all__ = [
    "current_gpu",
    "gpu_unavailable_reason",
    "gpus",
    "onnxruntime_info",
    "package_version",
    "tensorflow_info",
    "tensorrt_info",
    "tensorrt_unavailable_reason",
    "tftrt_unavailable_reason",
    "torch_info",
    "vtuple",
]
