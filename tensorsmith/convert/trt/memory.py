"""Device memory for running an engine: torch.cuda when it sees a GPU, else cuda-python
(as TensorRT's samples, ``common_runtime.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tensorsmith.errors import ConversionError


def device_memory():
    """Device buffers through torch.cuda if it sees a GPU, else cuda-python."""
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return _TorchMemory(torch)
    if importlib.util.find_spec("cuda") is not None:
        return _CudaPythonMemory()
    raise ConversionError(
        "verifying a TensorRT engine needs torch with CUDA or cuda-python "
        "(pip install cuda-python) to move tensors to the GPU"
    )


class _TorchMemory:
    def __init__(self, torch):
        self.torch = torch
        self._tensors: dict[int, Any] = {}  # torch tensors by device pointer
        self._stream = torch.cuda.Stream()

    def alloc(self, nbytes: int) -> int:
        t = self.torch.empty(nbytes, dtype=self.torch.uint8, device="cuda")
        self._tensors[t.data_ptr()] = t
        return t.data_ptr()

    def h2d(self, ptr: int, arr: np.ndarray) -> None:
        src = self.torch.from_numpy(arr.reshape(-1).view(np.uint8))
        self._tensors[ptr][: arr.nbytes].copy_(src)

    def d2h(self, arr: np.ndarray, ptr: int) -> None:
        host = self._tensors[ptr][: arr.nbytes].cpu().numpy()
        arr.reshape(-1).view(np.uint8)[:] = host

    def stream(self) -> int:
        self.torch.cuda.synchronize()  # h2d copies ran on the default stream
        return self._stream.cuda_stream

    def sync(self) -> None:
        self._stream.synchronize()

    def free(self, ptr: int) -> None:
        self._tensors.pop(ptr, None)

    def close(self) -> None:
        self._tensors.clear()


class _CudaPythonMemory:
    """cuda-python's runtime API, as TensorRT's samples (``common_runtime.py``) use it."""

    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        self.cudart = cudart
        self._stream = self._check(cudart.cudaStreamCreate())

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.cudart.cudaError_t.cudaSuccess:
            raise ConversionError(f"CUDA error {err}")
        return rest[0] if len(rest) == 1 else rest

    def alloc(self, nbytes: int) -> int:
        return int(self._check(self.cudart.cudaMalloc(nbytes)))

    def h2d(self, ptr: int, arr: np.ndarray) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpy(ptr, arr.ctypes.data, arr.nbytes, kind))

    def d2h(self, arr: np.ndarray, ptr: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpy(arr.ctypes.data, ptr, arr.nbytes, kind))

    def stream(self) -> int:
        return int(self._stream)

    def sync(self) -> None:
        self._check(self.cudart.cudaStreamSynchronize(self._stream))

    def free(self, ptr: int) -> None:
        self._check(self.cudart.cudaFree(ptr))

    def close(self) -> None:
        self._check(self.cudart.cudaStreamDestroy(self._stream))
