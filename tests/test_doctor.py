"""``tensorsmith doctor``: versions, GPUs, targets and why not."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import fake_tensorrt  # noqa: E402  (the recording stand-in, NOT TensorRT)
import pytest
from typer.testing import CliRunner

from tensorsmith import doctor, machine
from tensorsmith.cli import app

runner = CliRunner()


def _fake_nvidia_smi(tmp_path: Path, lines: str, *, no_compute_cap: bool = False) -> Path:
    """An executable named nvidia-smi that answers --query-gpu like the real one."""
    script = tmp_path / "bin" / "nvidia-smi"
    script.parent.mkdir(exist_ok=True)
    check = (
        'case "$*" in *compute_cap*) echo "Field \\"compute_cap\\" is not a valid field" >&2; exit 2;; esac\n'
        if no_compute_cap
        else ""
    )
    script.write_text(f"#!/bin/sh\n{check}cat <<'EOF'\n{lines}\nEOF\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script.parent


def test_doctor_json_here():
    res = runner.invoke(app, ["doctor", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    import onnx
    import onnxruntime

    assert info["tensorsmith"] and info["packages"]["onnx"] == onnx.__version__
    assert info["onnxruntime"]["version"] == onnxruntime.__version__
    assert "CPUExecutionProvider" in info["onnxruntime"]["providers"]
    assert set(info["targets"]) == {"onnx", "trt", "trt --prepare-only", "tftrt"}
    assert info["targets"]["onnx"]["available"] and "fp32" in info["targets"]["onnx"]["precisions"]
    assert info["targets"]["trt --prepare-only"]["available"]
    if info["tensorrt"]["version"] is None:
        trt = info["targets"]["trt"]
        assert not trt["available"] and "tensorrt" in trt["why_not"]
    if not info["gpus"]["gpus"]:
        assert "no NVIDIA GPU" in info["targets"]["trt"]["why_not"]
        assert "no NVIDIA GPU" in info["targets"]["tftrt"]["why_not"]


def test_tensorflow_build_info_and_tftrt_reason():
    info = machine.tensorflow_info()
    if info["version"] is None:
        pytest.skip("TensorFlow is not installed")
    assert info["tensorrt_build"] in (True, False)
    reason = machine.tftrt_unavailable_reason(info)
    if tuple(int(x) for x in info["version"].split(".")[:2]) > (2, 17):
        assert f"TensorFlow {info['version']} has no TF-TRT" in reason and "<= 2.17" in reason
    # the rules themselves, on made-up installs
    assert "2.18 and later" in machine.tftrt_unavailable_reason(
        {"version": "2.18.0", "tensorrt_build": False}
    )
    assert "built without TensorRT" in machine.tftrt_unavailable_reason(
        {"version": "2.15.1", "tensorrt_build": False}
    )
    assert machine.tftrt_unavailable_reason({"version": "2.15.1", "tensorrt_build": True}) is None
    assert "not installed" in machine.tftrt_unavailable_reason({"version": None})


def test_build_info_parser():
    text = "import collections\nbuild_info = collections.OrderedDict([('is_cuda_build', True), ('is_tensorrt_build', True)])\n"
    assert machine._build_info(text) == {"is_cuda_build": True, "is_tensorrt_build": True}
    assert machine._build_info("not python (") == {}


def test_gpus_from_nvidia_smi(tmp_path, monkeypatch):
    d = _fake_nvidia_smi(
        tmp_path, "0, NVIDIA H100 80GB HBM3, 9.0, 81559, 550.54.15\n1, NVIDIA A10, 8.6, 23028, 550.54.15"
    )
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    g = machine.gpus()
    assert g["source"] == "nvidia-smi"
    assert [(x["index"], x["name"], x["compute_capability"], x["memory_mib"]) for x in g["gpus"]] == [
        (0, "NVIDIA H100 80GB HBM3", "9.0", 81559),
        (1, "NVIDIA A10", "8.6", 23028),
    ]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setattr(machine, "_gpu_cuda_python", lambda: None)
    monkeypatch.setattr(machine, "_gpu_torch", lambda: None)
    assert machine.current_gpu()["name"] == "NVIDIA A10"


def test_old_nvidia_smi_without_compute_cap(tmp_path, monkeypatch):
    d = _fake_nvidia_smi(tmp_path, "0, Tesla T4, 15360, 470.82.01", no_compute_cap=True)
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    g = machine.gpus()
    assert g["gpus"] == [
        {
            "index": 0,
            "name": "Tesla T4",
            "compute_capability": None,
            "memory_mib": 15360,
            "driver": "470.82.01",
        }
    ]


def test_targets_with_tensorrt_and_gpu(tmp_path, monkeypatch):
    """With a (stand-in) tensorrt 10 importable and a GPU listed, trt is available."""
    d = _fake_nvidia_smi(tmp_path, "0, NVIDIA T4, 7.5, 15360, 550.54.15")
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    fake_tensorrt.install(monkeypatch, version="10.13.3.9")
    info = doctor.collect()
    assert info["tensorrt"]["version"] == "10.13.3.9"
    trt = info["targets"]["trt"]
    assert trt["available"], trt
    assert "bf16" in trt["precisions_unavailable"]  # compute capability 7.5 < 8.0
    res = runner.invoke(app, ["doctor"])
    assert res.exit_code == 0 and "NVIDIA T4" in res.output and "10.13.3.9" in res.output


def test_tensorrt_too_old(monkeypatch):
    assert "too old" in machine.tensorrt_unavailable_reason({"version": "8.6.1"})
    assert "does not load" in machine.tensorrt_unavailable_reason(
        {"version": None, "error": "libnvinfer.so.10: cannot open"}
    )


def test_doctor_imports_no_frameworks():
    code = (
        "import sys; from tensorsmith import doctor, machine; machine.tensorflow_info(); machine.tensorrt_info(); doctor.collect(); "
        "print(','.join(m for m in ('tensorflow', 'tensorrt', 'tf2onnx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
