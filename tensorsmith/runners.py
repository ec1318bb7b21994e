"""Runners: one protocol for everything tensorsmith runs to compare outputs.

As Polygraphy's runners (``polygraphy/backend/<framework>/runner.py``): a runner is
``activate()`` (load what it runs), ``infer(feeds) -> {output: array}`` and
``deactivate()`` (free it), or a context manager doing both. ``infer`` on a runner
that is not active activates it. The runners here: onnxruntime
(``OnnxRuntimeRunner``), a Python function (``FunctionRunner``: what the frontends
hand over to run the source framework, TensorFlow or PyTorch), a TensorFlow
SavedModel signature (``TfSignatureRunner``: the source of TF-TRT, and the TF-TRT
model itself). The TensorRT engine runner is ``tensorsmith.convert.trt.EngineRunner``.
``tensorsmith.compare.run_and_compare`` runs two of them on the same samples.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

Feeds = dict[str, np.ndarray]


class Runner:
    """Base of every runner: ``activate``/``infer``/``deactivate`` and ``with runner:``."""

    name = "runner"

    def __init__(self) -> None:
        self.active = False

    def activate(self) -> None:
        if not self.active:
            self._activate()
            self.active = True

    def deactivate(self) -> None:
        if self.active:
            self.active = False
            self._deactivate()

    def infer(self, feeds: Feeds) -> Feeds:
        self.activate()
        return self._infer(feeds)

    def _activate(self) -> None:  # load what the runner runs
        pass

    def _deactivate(self) -> None:  # free it
        pass

    def _infer(self, feeds: Feeds) -> Feeds:
        raise NotImplementedError

    def __enter__(self):
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()


_ORT_FLOATS = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64}


def session_feeds(sess, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feeds`` for the inputs ``sess`` has, float arrays cast to its input types (--fp16-io)."""
    out = {}
    for i in sess.get_inputs():
        if i.name in feeds:
            v = feeds[i.name]
            want = _ORT_FLOATS.get(i.type)
            out[i.name] = (
                v.astype(want) if want is not None and v.dtype.kind == "f" and v.dtype != want else v
            )
    return out


def ort_session(
    model: str | os.PathLike | bytes,
    *,
    optimize: bool = False,
    threads: int = 0,
    sequential: bool = False,
    profile_prefix: str | None = None,
):
    """An onnxruntime CPU session: the one place tensorsmith makes them.

    ``threads`` 0 lets onnxruntime choose; ``sequential`` also pins inter-op work to
    one thread (latency measurements). onnxruntime's own logger is set to FATAL: a
    model that fails comes back as an exception, which the caller turns into its
    one-line error, instead of also printing onnxruntime's multi-line log to stderr.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    so.log_severity_level = 4
    if threads:
        so.intra_op_num_threads = threads
    if sequential:
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(
        model if isinstance(model, bytes) else str(model), so, providers=["CPUExecutionProvider"]
    )


def ort_outputs(session, feeds: Feeds) -> Feeds:
    """Run an onnxruntime ``session`` on the ``feeds`` it takes; every output by name."""
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}
    values = session.run(names, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, values, strict=False))


class OnnxRuntimeRunner(Runner):
    """An ONNX model in an onnxruntime CPU session (``ort_session``: optimizations off)."""

    name = "onnxruntime"

    def __init__(self, model: str | os.PathLike | bytes, *, optimize: bool = False):
        super().__init__()
        self.model = model
        self.optimize = optimize
        self.session: Any = None

    def _activate(self) -> None:
        self.session = ort_session(self.model, optimize=self.optimize)

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, feeds: Feeds) -> Feeds:
        return ort_outputs(self.session, feeds)


class FunctionRunner(Runner):
    """A function ``feeds -> outputs`` (a source framework's own runtime, from a frontend)."""

    def __init__(self, fn: Callable[[Feeds], Feeds], name: str = "function"):
        super().__init__()
        self.fn = fn
        self.name = name

    def _infer(self, feeds: Feeds) -> Feeds:
        return self.fn(feeds)


class TfSignatureRunner(Runner):
    """A TensorFlow SavedModel signature: a loaded function, or a folder + signature key
    (loaded on ``activate``). Inputs go in as keyword tensors, outputs come back as numpy."""

    name = "tensorflow"

    def __init__(self, fn: Callable[..., Any] | None = None, *, saved_model=None, signature: str = ""):
        super().__init__()
        self.fn = fn
        self.saved_model = saved_model
        self.signature = signature

    def _activate(self) -> None:
        if self.fn is None:
            import tensorflow as tf

            self.fn = tf.saved_model.load(str(self.saved_model)).signatures[self.signature]

    def _infer(self, feeds: Feeds) -> Feeds:
        import tensorflow as tf

        assert self.fn is not None
        tf_feeds = {k: tf.constant(v) for k, v in feeds.items()}
        return {k: np.asarray(v) for k, v in self.fn(**tf_feeds).items()}


__all__ = [
    "Feeds",
    "FunctionRunner",
    "OnnxRuntimeRunner",
    "Runner",
    "TfSignatureRunner",
    "ort_outputs",
    "ort_session",
    "session_feeds",
]
