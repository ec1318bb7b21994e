"""Running a plan: cache look-ups, jobs in parallel worker processes, the manifest.

Workers are ``spawn``ed processes (TensorFlow and PyTorch are not fork-safe), each
running ``execute(job)``: the job's function writes into a private staging folder
(``OUTPUT_DIR/.tensorsmith-tmp/JOB/``), the outputs are hashed there and renamed
into place (the main output last). The parent records each finished job in the
manifest, rewritten atomically, so a run killed at any point leaves finished jobs
recorded, no partial output in place, and a staging folder the next run deletes.
A worker watches its parent and exits when it is gone.

A job that fails does not stop the others. A worker that dies (a crash in a
native library, the OOM killer) breaks the process pool; the jobs that were in
flight then run again one at a time, so the culprit fails alone.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tensorsmith import atomic
from tensorsmith.errors import TensorsmithError, UsageError, short
from tensorsmith.recipes import cache, sharing
from tensorsmith.recipes.expand import TMP_DIR_NAME, Job, Plan, cli_command

STATUS_OK, STATUS_CACHED, STATUS_FAILED = "ok", "cached", "failed"

# ---------------------------------------------------------------------------
# the worker side

_QUEUE = None


def _worker_init(queue, parent_pid: int) -> None:
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


# ---------------------------------------------------------------------------
# the parent side


@dataclass
class RunResult:
    """What a run did: one record per selected job, in recipe order."""

    recipe: str
    output_dir: str
    records: list[dict]
    started: str
    finished: str = ""
    seconds: float = 0.0
    dry_run: bool = False
    workers: int = 0
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        c = collections.Counter(r["status"] for r in self.records)
        return {
            "total": len(self.records),
            "ok": c[STATUS_OK],
            "cached": c[STATUS_CACHED],
            "failed": c[STATUS_FAILED],
            "would-run": c["would-run"],
        }

    @property
    def exit_code(self) -> int:
        return 1 if any(r["status"] == STATUS_FAILED for r in self.records) else 0


class Events:
    """What the runner tells its display; the default says nothing."""

    def start(self, total: int, to_run: int, workers: int) -> None: ...
    def job_started(self, job: Job) -> None: ...
    def job_step(self, name: str, message: str) -> None: ...
    def job_worker(self, name: str, pid: int) -> None: ...
    def job_finished(self, record: dict) -> None: ...
    def note(self, text: str) -> None: ...
    def stop(self) -> None: ...


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _base_record(job: Job) -> dict:
    return {
        "name": job.name,
        "model": job.model,
        "target": job.target,
        "source": job.source,
        "source_format": job.source_format,
        "to": job.to,
        "precision": job.precision or "fp32",
        "output": job.output_rel.replace(os.sep, "/"),
        "function": job.function.replace(":", "."),
        "options": job.options,
        "where": job.where,
        "command": cli_command(job),
    }


def _why_rerun(entry: dict | None, material: dict, output_dir: Path) -> str:
    if entry is None:
        return "new job"
    old = entry.get("key_material") or {}
    if entry.get("status") != STATUS_OK:
        return "last run failed"
    if old.get("source") != material["source"]:
        return "source changed"
    for part in ("options", "source_format", "to", "function", "output"):
        if old.get(part) != material.get(part):
            return "options changed"
    if old.get("versions") != material["versions"]:
        return "versions changed"
    if old.get("schema") != material["schema"]:
        return "cache format changed"
    return "outputs missing or modified"


def _prepare(
    plan: Plan, jobs: list[Job], manifest: cache.Manifest, force: bool, events: Events, workers: int
) -> tuple[dict[str, dict], list[Job]]:
    """Keys for every job (hashing in threads); which are cached, which must run."""
    records: dict[str, dict] = {}
    to_run: list[Job] = []

    def digest(item: tuple[str, str | None]):
        try:
            return item, cache.source_digest(*item), None
        except (TensorsmithError, OSError) as exc:
            return item, None, exc.one_line() if isinstance(exc, TensorsmithError) else short(exc, 300)

    def keyed(job: Job):
        source, error = sources[(job.source, job.source_format)]
        if error is not None:
            return job, None, None, None, error
        try:
            key, material = cache.job_key(job, source)
            return job, source, key, material, None
        except (TensorsmithError, OSError) as exc:
            return (
                job,
                None,
                None,
                None,
                exc.one_line() if isinstance(exc, TensorsmithError) else short(exc, 300),
            )

    unique = list(dict.fromkeys((j.source, j.source_format) for j in jobs))
    with ThreadPoolExecutor(max_workers=max(1, min(8, workers, len(jobs)))) as pool:
        sources = {item: (src, err) for item, src, err in pool.map(digest, unique)}
        hashed = list(pool.map(keyed, jobs))
    for job, source, key, material, error in hashed:
        record = _base_record(job)
        if error is not None:
            record.update(
                status=STATUS_FAILED,
                error=error,
                error_type="UsageError",
                exit_code=2,
                seconds={"total": 0.0},
            )
            records[job.name] = record
            continue
        job.key = key
        record.update(
            key=key, key_material=material, inputs={"source": source}, versions=material["versions"]
        )
        entry = manifest.get(job.name)
        if (
            not force
            and entry
            and entry.get("key") == key
            and entry.get("status") == STATUS_OK
            and cache.outputs_intact(entry, plan.output_dir)
        ):
            record.update(
                status=STATUS_CACHED,
                outputs=entry.get("outputs", []),
                report=entry.get("report"),
                verification=entry.get("verification"),
                seconds=entry.get("seconds", {}),
                cached_from=entry.get("finished"),
                exit_code=0,
            )
        else:
            record["why"] = "--force" if force else _why_rerun(entry, material, plan.output_dir)
            to_run.append(job)
        records[job.name] = record
    return records, to_run


def _finish_record(record: dict, result: dict) -> dict:
    report = result.get("report") or None
    seconds = {"total": round(result.get("seconds_total", 0.0), 4)}
    if report and isinstance(report.get("seconds"), dict):
        seconds.update(report["seconds"])
    record.update(
        status=result["status"],
        error=result.get("error"),
        error_type=result.get("error_type"),
        exit_code=result.get("exit_code", 0 if result["status"] == STATUS_OK else 3),
        outputs=result.get("outputs", []),
        report=report,
        verification=(report or {}).get("verification"),
        seconds=seconds,
        started=result.get("started"),
        finished=result.get("finished"),
        worker_pid=result.get("pid"),
    )
    if result.get("node"):  # where a cluster ran it (--executor ray)
        record["node"] = result["node"]
    if result.get("traceback"):
        record["traceback"] = result["traceback"]
    return record


def _manifest_entry(record: dict) -> dict:
    keep = (
        "key",
        "status",
        "model",
        "target",
        "source",
        "source_format",
        "to",
        "precision",
        "output",
        "function",
        "options",
        "inputs",
        "outputs",
        "versions",
        "seconds",
        "verification",
        "report",
        "error",
        "error_type",
        "exit_code",
        "started",
        "finished",
        "worker_pid",
        "node",
        "key_material",
    )
    return {k: record.get(k) for k in keep if k in record}


def _remove_stale(previous: dict | None, record: dict, output_dir: Path, manifest: cache.Manifest) -> None:
    """Files an earlier run of this job wrote that this run did not (a stale .onnx.data),
    unless another job's entry lists them now."""
    if not previous:
        return
    now_written = {o["path"] for o in record.get("outputs", [])}
    for name, entry in manifest.jobs.items():
        if name != record["name"]:
            now_written |= {o.get("path") for o in entry.get("outputs") or []}
    for item in previous.get("outputs") or []:
        path = item.get("path")
        if not path or path in now_written:
            continue
        target = (output_dir / path).resolve()
        if os.path.commonpath([str(output_dir.resolve()), str(target)]) == str(output_dir.resolve()):
            with contextlib.suppress(OSError):
                target.unlink()


def _new_pool(workers: int, queue) -> ProcessPoolExecutor:
    ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(queue, os.getpid())
    )


def _kill_pool(pool: ProcessPoolExecutor) -> None:
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.kill()


def run(
    plan: Plan,
    jobs: list[Job],
    *,
    workers: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    events: Events | None = None,
    executor=None,
) -> RunResult:
    """Run ``jobs`` of ``plan``: cached ones are reported, the rest run in parallel
    (``executor``: where; default the local process pool, see ``executors``)."""
    from tensorsmith.recipes.executors import LocalExecutor

    events = events or Events()
    workers = max(1, workers or default_workers())
    executor = executor or LocalExecutor(workers)
    t0 = time.perf_counter()
    result = RunResult(plan.recipe_path, str(plan.output_dir), [], cache.now(), dry_run=dry_run)
    if dry_run:
        manifest = cache.Manifest.load(plan.manifest_path)
        records, to_run = _prepare(plan, jobs, manifest, force, events, workers)
        for job in to_run:
            records[job.name]["status"] = "would-run"
        result.records = [records[j.name] for j in jobs]
        result.finished, result.seconds = cache.now(), time.perf_counter() - t0
        return result

    plan.output_dir.mkdir(parents=True, exist_ok=True)
    with sharing.run_lock(plan.output_dir) as lock:  # other runs may share the folder
        if lock.alone:
            sharing.clear_leftovers(plan.output_dir, TMP_DIR_NAME, plan.manifest_path)  # a killed run's
            lock.share()
        manifest = cache.Manifest.load(plan.manifest_path)
        # entries of jobs no longer in the recipe go; the others (--only) stay
        names = {j.name for j in plan.jobs}
        dropped = {name for name in manifest.jobs if name not in names}
        for name in dropped:
            del manifest.jobs[name]
        mine: set[str] = set()  # the entries this run writes into the merged manifest
        meta = {
            "recipe": os.path.abspath(plan.recipe_path),
            "tensorsmith": cache.versions(None, "onnx", None)["tensorsmith"],
        }
        records, to_run = _prepare(plan, jobs, manifest, force, events, workers)
        result.workers = executor.workers(len(to_run)) if to_run else 0
        events.start(len(jobs), len(to_run), result.workers)
        running = {j.name for j in to_run}
        for job in jobs:
            if job.name not in running:
                if records[job.name]["status"] == STATUS_FAILED:
                    manifest.jobs[job.name] = _manifest_entry(records[job.name])
                    mine.add(job.name)
                events.job_finished(records[job.name])

        def finished(job: Job, res: dict) -> None:
            record = _finish_record(records[job.name], res)
            previous = manifest.get(job.name)
            if record["status"] == STATUS_OK:
                _remove_stale(previous, record, plan.output_dir, manifest)
            manifest.jobs[job.name] = _manifest_entry(record)
            mine.add(job.name)
            sharing.write_merged(manifest, mine, dropped, **meta)
            events.job_finished(record)

        try:
            if to_run:
                executor.schedule(to_run, finished, events)
        finally:
            sharing.write_merged(manifest, mine, dropped, **meta)
            events.stop()
        if lock.alone_now():
            shutil.rmtree(plan.output_dir / TMP_DIR_NAME, ignore_errors=True)
    result.records = [records[j.name] for j in jobs]
    result.finished, result.seconds = cache.now(), time.perf_counter() - t0
    return result


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
