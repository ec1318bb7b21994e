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
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tensorsmith.errors import TensorsmithError, short
from tensorsmith.recipes import cache, sharing
from tensorsmith.recipes.executors import LocalExecutor, default_workers
from tensorsmith.recipes.expand import TMP_DIR_NAME, Job, Plan, cli_command
from tensorsmith.recipes.worker import STATUS_CACHED, STATUS_FAILED, STATUS_OK, execute

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


__all__ = [
    "STATUS_CACHED",
    "STATUS_FAILED",
    "STATUS_OK",
    "Events",
    "RunResult",
    "default_workers",
    "execute",
    "run",
]
