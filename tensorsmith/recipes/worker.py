"""The worker side of a recipe run: one job in this process (``execute``), its progress sent
to the parent through the queue ``worker_init`` installs (a local pool's workers, Ray tasks).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tensorsmith import atomic
from tensorsmith.errors import TensorsmithError, UsageError, short
from tensorsmith.recipes import cache
from tensorsmith.recipes.expand import TMP_DIR_NAME, Job

STATUS_OK, STATUS_CACHED, STATUS_FAILED = "ok", "cached", "failed"

# ---------------------------------------------------------------------------
# the worker side

_QUEUE = None


def worker_init(queue, parent_pid: int) -> None:
    global _QUEUE
    _QUEUE = queue
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="watch-parent").start()


def _watch_parent(parent_pid: int) -> None:
    # an orphaned worker must not go on writing into the output folder
    while True:
        time.sleep(0.2)
        if os.getppid() != parent_pid:
            os._exit(70)


def _send(job_name: str, message: str | int, kind: str = "step") -> None:
    if _QUEUE is not None:
        with contextlib.suppress(Exception):
            _QUEUE.put_nowait((job_name, kind, message))


def _report_dict(obj: Any) -> dict | None:
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, dict):
        return dict(obj)
    return None


def _relocate(obj: Any, old: str, new: str) -> Any:
    """Staging paths in a report -> the paths the files were installed at."""
    if isinstance(obj, str):
        return obj.replace(old, new)
    if isinstance(obj, dict):
        return {k: _relocate(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relocate(v, old, new) for v in obj]
    return obj


def execute(job: Job, run: Callable | None = None) -> dict:
    """Run one job in this (worker) process; never raises for a job's own failure.

    ``run(job, staged_output, step) -> (report, main_output)`` does the work (default
    ``tensorsmith.jobs.run``; the Ray executor builds an engine from a shared prepared ONNX)."""
    from tensorsmith import jobs as job_calls

    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "name": job.name,
        "status": STATUS_FAILED,
        "started": cache.now(),
        "pid": os.getpid(),
    }
    output_dir = Path(job.output_dir)
    final = Path(job.output)
    stage_dir = output_dir / TMP_DIR_NAME / f"{job.name}.{uuid.uuid4().hex[:12]}"  # per attempt and run
    shutil.rmtree(stage_dir, ignore_errors=True)
    try:
        stage_dir.mkdir(parents=True)
        staged = stage_dir / final.name
        _send(job.name, os.getpid(), "worker")
        _send(job.name, "start")
        if job.detect_error:
            raise UsageError(job.detect_error)
        report, main = (run or job_calls.run)(job, staged, lambda msg, *_: _send(job.name, str(msg)))
        if not main.exists():
            from tensorsmith.errors import ConversionError

            raise ConversionError(f"the job wrote no {main.name}")
        produced = [p for p in stage_dir.iterdir() if not p.name.startswith(".")]
        _send(job.name, "hash outputs")
        described = cache.describe_files(produced, stage_dir)
        final.parent.mkdir(parents=True, exist_ok=True)
        _send(job.name, "install")
        for p in sorted(produced, key=lambda p: p.name == main.name):  # the main output last
            dst = final.parent / p.name
            atomic.install(p, dst, aside=stage_dir / f".old-{dst.name}")
        rel_parent = os.path.dirname(job.output_rel)
        result["outputs"] = [
            {**f, "path": (f"{rel_parent}/{f['path']}" if rel_parent else f["path"]).replace(os.sep, "/")}
            for f in sorted(described, key=lambda f: (f["path"] != main.name, f["path"]))
        ]
        result.update(
            status=STATUS_OK, report=_relocate(report, str(stage_dir), str(final.parent)), exit_code=0
        )
    except TensorsmithError as exc:
        result.update(error=exc.one_line(), error_type=type(exc).__name__, exit_code=exc.exit_code)
        detail = getattr(exc, "job", None)
        if detail is not None:
            result["report"] = _relocate(_report_dict(detail), str(stage_dir), str(final.parent))
        elif getattr(exc, "report", None) is not None:
            result["report"] = {"verification": _report_dict(getattr(exc, "report", None))}
    except Exception as exc:  # a bug or an unexpected library failure: this job only
        result.update(
            error=f"internal error: {type(exc).__name__}: {short(exc, 300)}",
            error_type="InternalError",
            exit_code=3,
            traceback=traceback.format_exc(),
        )
    finally:
        shutil.rmtree(stage_dir, ignore_errors=True)
    result["finished"] = cache.now()
    result["seconds_total"] = time.perf_counter() - t0
    return result
