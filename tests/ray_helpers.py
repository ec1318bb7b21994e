"""Test-only code that Ray workers import (tests/ is on their PYTHONPATH).

- ``slow_cnn``: a ``module:factory`` source (the sample CNN) whose factory first
  records the node it runs on (a marker file) and waits, so a test can remove
  that node while the job is in flight;
- ``crashing``: a factory that kills its own worker process (a native crash);
- ``fake_gpu_setup``: Ray's ``worker_process_setup_hook`` that puts the recording
  TensorRT stand-in (fake_tensorrt.py, NOT TensorRT) in each worker, with a "GPU"
  named after the node's ``ray.io/accelerator-type`` label.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

MARKERS = "TENSORSMITH_TEST_MARKERS"


def slow_cnn():
    import ray

    from sample_models.torch_cnn import build_cnn

    folder = os.environ.get(MARKERS)
    if folder:
        node = ray.get_runtime_context().get_node_id()
        Path(folder, f"{node}.{os.getpid()}").write_text(node)
    time.sleep(float(os.environ.get("TENSORSMITH_TEST_SLOW_S", "6")))
    return build_cnn()


def crashing():
    os.kill(os.getpid(), signal.SIGSEGV)


def fake_gpu_setup() -> None:
    import ray

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fake_tensorrt

    from tensorsmith import machine
    from tensorsmith.convert import trt as trt_backend

    labels = ray.get_runtime_context().get_node_labels() or {}
    gpu = {
        "name": f"Fake {labels.get('ray.io/accelerator-type', 'GPU')} (test)",
        "compute_capability": "8.6",
        "source": "test",
    }
    fake_tensorrt.configure()
    sys.modules["tensorrt"] = fake_tensorrt
    machine.current_gpu = lambda: dict(gpu)  # type: ignore[assignment]
    trt_backend.missing_for_build = lambda: []  # type: ignore[assignment]
    trt_backend.memory.device_memory = lambda: fake_tensorrt.HostMemory()  # type: ignore[assignment]
