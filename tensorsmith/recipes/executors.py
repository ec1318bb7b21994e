"""Where a recipe's jobs run: the local process pool (default) or a Ray cluster.

The runner (``runner.run``) does everything else the same way for both: the cache
look-ups, the manifest, the reports, the exit codes. An executor only takes the
jobs that must run and calls ``finished(job, result)`` once per job, in the thread
that called ``schedule``, with ``runner.execute``'s result dict (plus ``node``,
where the job ran, when the executor knows).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from tensorsmith.errors import UsageError
from tensorsmith.recipes.expand import Job

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
    """Spawned worker processes on this machine (``runner._schedule``)."""

    name = "local"

    def __init__(self, workers: int):
        self.max_workers = max(1, workers)

    def workers(self, jobs: int) -> int:
        return max(1, min(self.max_workers, jobs))

    def schedule(self, to_run: list[Job], finished: Finished, events) -> None:
        from tensorsmith.recipes import runner

        runner._schedule(to_run, self.workers(len(to_run)), finished, events)


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
        from tensorsmith.recipes.runner import default_workers

        return LocalExecutor(workers or default_workers())
    if name == "ray":
        from tensorsmith.recipes.ray_executor import RayExecutor

        return RayExecutor(
            address=ray_address or os.environ.get("RAY_ADDRESS") or None,
            cpus_per_job=cpus_per_job,
            max_retries=max_retries,
        )
    raise UsageError(f"--executor {name!r}: known executors: {', '.join(EXECUTORS)}")
