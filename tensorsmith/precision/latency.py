"""onnxruntime CPU latency, measured the way a speed-up can be trusted.

All models of one comparison are loaded into one process and timed round-robin
(A, B, A, B, ...), so that frequency scaling, caches and noisy neighbours hit
them alike; each session runs with one intra-op thread, sequential execution and
all of onnxruntime's graph optimizations on (the Q/DQ fusions into QLinearConv
and friends happen there). The figure is the median of the runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class Latency:
    median_ms: float
    p90_ms: float
    runs: int

    def to_dict(self) -> dict:
        return {"median_ms": round(self.median_ms, 4), "p90_ms": round(self.p90_ms, 4), "runs": self.runs}


def cpu_session(path: str | os.PathLike, *, threads: int = 1, optimize: bool = True):
    """A session as latency is measured: ``threads`` intra-op threads, sequential, all optimizations."""
    from tensorsmith.verify import ort_session

    return ort_session(path, optimize=optimize, threads=threads, sequential=True)


def measure(
    paths: list[str | os.PathLike],
    feeds: dict[str, np.ndarray],
    *,
    threads: int = 1,
    budget_s: float = 4.0,
    min_runs: int = 7,
    max_runs: int = 300,
    sessions: list | None = None,
) -> list[Latency]:
    """Median latency of each model on ``feeds``, timed round-robin in this process."""
    sessions = sessions or [cpu_session(p, threads=threads) for p in paths]
    from tensorsmith.verify import session_feeds

    per = [session_feeds(s, feeds) for s in sessions]
    # warm-up, and a first estimate of the cost of one round
    t0 = time.perf_counter()
    for s, f in zip(sessions, per, strict=False):
        s.run(None, f)
        s.run(None, f)
    one_round = max((time.perf_counter() - t0) / 2, 1e-6)
    runs = int(min(max_runs, max(min_runs, budget_s / one_round)))
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(runs):
        for i, (s, f) in enumerate(zip(sessions, per, strict=False)):
            t = time.perf_counter()
            s.run(None, f)
            times[i].append(time.perf_counter() - t)
    return [Latency(float(np.median(t)) * 1e3, float(np.percentile(t, 90)) * 1e3, runs) for t in times]
