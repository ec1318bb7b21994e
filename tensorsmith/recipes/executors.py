"""Where a recipe's jobs run: the local process pool (default) or a Ray cluster.

The runner (``runner.run``) does everything else the same way for both: the cache
look-ups, the manifest, the reports, the exit codes. An executor only takes the
jobs that must run and calls ``finished(job, result)`` once per job, in the thread
that called ``schedule``, with ``worker.execute``'s result dict (plus ``node``,
where the job ran, when the executor knows).
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Protocol

from tensorsmith.errors import UsageError, short
from tensorsmith.recipes.expand import Job
from tensorsmith.recipes.worker import STATUS_FAILED, execute, worker_init

if TYPE_CHECKING:
    from tensorsmith.recipes.runner import Events

EXECUTORS = ("local", "ray")

Finished = Callable[[Job, dict], None]


class Executor(Protocol):
    name: str

    def workers(self, jobs: int) -> int:
        """How many jobs run at once (for the display and the report)."""
        ...

    def schedule(self, to_run: list[Job], finished: Finished, events) -> None:
        """Run ``to_run``; ``finished`` once per job; raises only for Ctrl-C and the like."""
        ...


class LocalExecutor:
    """Spawned worker processes on this machine (``_schedule``)."""

    name = "local"

    def __init__(self, workers: int):
        self.max_workers = max(1, workers)

    def workers(self, jobs: int) -> int:
        return max(1, min(self.max_workers, jobs))

    def schedule(self, to_run: list[Job], finished: Finished, events) -> None:
        _schedule(to_run, self.workers(len(to_run)), finished, events)


def make_executor(
    name: str,
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    cpus_per_job: float = 1.0,
    max_retries: int = 2,
) -> Executor:
    """The executor ``tensorsmith run --executor NAME`` asks for (``UsageError`` for a bad one)."""
    if name == "local":
        if ray_address:
            raise UsageError("--ray-address needs --executor ray")
        return LocalExecutor(workers or default_workers())
    if name == "ray":
        from tensorsmith.recipes.ray_executor import RayExecutor

        return RayExecutor(
            address=ray_address or os.environ.get("RAY_ADDRESS") or None,
            cpus_per_job=cpus_per_job,
            max_retries=max_retries,
        )
    raise UsageError(f"--executor {name!r}: known executors: {', '.join(EXECUTORS)}")


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# the local process pool


def _new_pool(workers: int, queue) -> ProcessPoolExecutor:
    ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=worker_init, initargs=(queue, os.getpid())
    )


def _kill_pool(pool: ProcessPoolExecutor) -> None:
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.kill()


def _schedule(to_run: list[Job], workers: int, finished: Callable[[Job, dict], None], events: Events) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    pending = collections.deque(to_run)
    inflight: dict[Future, Job] = {}
    crashes: collections.Counter = collections.Counter()
    pool = _new_pool(workers, queue)

    def drain() -> None:
        while True:
            try:
                name, kind, message = queue.get_nowait()
            except Exception:
                return
            if kind == "worker":
                events.job_worker(name, message)
            else:
                events.job_step(name, message)

    try:
        while pending or inflight:
            pool_broken = False
            while pending and len(inflight) < workers:
                job = pending[0]
                # after a worker died, its suspects run alone so the culprit fails alone
                if any(crashes[j.name] for j in inflight.values()) or (crashes[job.name] and inflight):
                    break
                try:
                    future = pool.submit(execute, job)
                except BrokenProcessPool:  # a worker died since the last look: handled below
                    pool_broken = True
                    break
                pending.popleft()
                inflight[future] = job
                events.job_started(job)
            broken: list[Job] = []
            if inflight:
                done, _ = wait(list(inflight), timeout=0.1, return_when=FIRST_COMPLETED)
            else:
                done = set()
            drain()
            for fut in done:
                job = inflight.pop(fut)
                try:
                    res = fut.result()
                except BrokenProcessPool:
                    broken.append(job)
                    continue
                except Exception as exc:  # pickling trouble and the like: this job only
                    res = {
                        "name": job.name,
                        "status": STATUS_FAILED,
                        "exit_code": 3,
                        "error_type": "InternalError",
                        "error": f"internal error: {type(exc).__name__}: {short(exc, 300)}",
                    }
                finished(job, res)
            if broken or pool_broken:
                broken.extend(inflight.values())  # in flight when the pool broke: suspects too
                inflight.clear()
                _kill_pool(pool)
                pool = _new_pool(workers, queue)
                for job in reversed(broken):
                    crashes[job.name] += 1
                    if len(broken) == 1 or crashes[job.name] >= 2:  # alone in flight: the culprit
                        finished(
                            job,
                            {
                                "name": job.name,
                                "status": STATUS_FAILED,
                                "exit_code": 3,
                                "error_type": "WorkerDied",
                                "error": "the worker process running this job died (a crash in a native library, "
                                "or killed for memory)",
                            },
                        )
                    else:
                        events.note(f"a worker process died; {job.name} runs again, alone")
                        pending.appendleft(job)
        drain()
    except BaseException:
        _kill_pool(pool)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        with contextlib.suppress(Exception):
            queue.close()
            queue.join_thread()
