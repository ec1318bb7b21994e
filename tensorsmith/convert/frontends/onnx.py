"""ONNX models: the file is already ONNX; its source runner is onnxruntime on the original.

``load`` hands back the file itself (no copy: external data stays beside it) and
a runner that opens an onnxruntime session on it at the first call, so a caller
can treat ONNX like every other source format. ``tensorsmith optimize`` and
``convert`` of an ``.onnx`` file go straight to the passes today; this module is
what the registry holds for them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tensorsmith import model_io
from tensorsmith.convert.frontend import FrontendOptions, Imported
from tensorsmith.errors import UsageError

FORMATS = ("onnx",)


def load(path: str | os.PathLike, opts: FrontendOptions) -> Imported:
    """The ONNX file as an :class:`Imported` whose source runner is onnxruntime."""
    import onnxruntime as ort

    path = Path(path)
    if opts.format not in FORMATS:
        raise UsageError(f"the ONNX frontend does not read {opts.format!r}")
    model_io.load_proto(path)  # one clear line for a file that is not ONNX
    session: list[Any] = []

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from tensorsmith.verify import ort_session, session_feeds

        if not session:
            session.append(ort_session(path))
        sess = session[0]
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, session_feeds(sess, feeds)), strict=True))

    return Imported(path, run, f"onnxruntime {ort.__version__}", "none (already ONNX)", [], session.clear)


def inspect(path: str | os.PathLike, fmt: str | None = None) -> dict:
    """What an ONNX model holds (``inspection.inspect_onnx``)."""
    from tensorsmith.inspection import inspect_onnx

    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"the ONNX frontend does not read {fmt!r}")
    return inspect_onnx(path)
