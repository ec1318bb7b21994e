"""``tensorsmith run RECIPE --executor ray``: each job a Ray task on a cluster.

Ray does the scheduling: each job asks for ``--cpus-per-job`` CPUs, a TensorRT
engine build one GPU (``num_gpus=1``), and its recipe's ``runs_on`` labels plus,
for a target with ``gpus:``, ``ray.io/accelerator-type`` as a label selector. A
task lost with its node (or its worker process) is retried by Ray up to
``--max-retries`` times on another node; a job whose tries are spent fails alone,
with the reason. Before and while the jobs run, the cluster's nodes are checked:
a job no alive node can take (no node with its labels, a GPU, enough CPUs) fails
at once with a message naming what is missing, instead of waiting for ever.

Workers run ``worker.execute`` on storage every node sees (the recipe's paths),
so outputs are staged and renamed into place exactly as in a local run; the
result carries the node the job ran on (id, hostname, labels, GPU type), which
the manifest records. Ray is imported here only: ``tensorsmith --help`` and local
runs never load it.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from tensorsmith.errors import UsageError, short
from tensorsmith.recipes.expand import Job

ACCELERATOR_LABEL = "ray.io/accelerator-type"
_HIDDEN_LABELS = ("ray.io/node-id",)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError(
            "--executor ray needs Ray on this machine and on every node: pip install 'tensorsmith[ray]'"
        ) from None
    return ray


def selector(job: Job) -> dict[str, str]:
    """The Ray label selector of ``job``: its ``runs_on``, plus its GPU type."""
    out = dict(job.runs_on)
    if job.gpu:
        out[ACCELERATOR_LABEL] = job.gpu
    return out


def _value_matches(want: str, have: str | None) -> bool:
    """Ray's label selector values: ``v``, ``!v``, ``in(a,b)``, ``!in(a,b)``."""
    negate = want.startswith("!")
    body = want[1:] if negate else want
    if body.startswith("in(") and body.endswith(")"):
        hit = have is not None and have in {v.strip() for v in body[3:-1].split(",")}
    else:
        hit = have == body
    return not hit if negate else hit


def matches(sel: dict[str, str], labels: dict[str, str]) -> bool:
    return all(_value_matches(want, labels.get(key)) for key, want in sel.items())


def _needs(job: Job, cpus: float) -> dict[str, float]:
    need = {"CPU": cpus}
    if job.needs_gpu:
        need["GPU"] = 1.0
    return need


def unplaceable(job: Job, nodes: list[dict], cpus: float) -> str | None:
    """Why no alive node of ``nodes`` (``ray.nodes()``) can run ``job``; None when one can."""
    sel = selector(job)
    need = _needs(job, cpus)
    labelled = [n for n in nodes if matches(sel, n.get("Labels") or {})]
    if any(all((n.get("Resources") or {}).get(r, 0.0) >= v for r, v in need.items()) for n in labelled):
        return None
    if not labelled:
        seen = sorted(
            {f"{k}={v}" for n in nodes for k, v in (n.get("Labels") or {}).items() if k not in _HIDDEN_LABELS}
        )
        what = ", ".join(f"{k}={v}" for k, v in sel.items())
        return (
            f"no node of the Ray cluster has the labels {what} ({len(nodes)} node(s); their labels: "
            f"{', '.join(seen) or 'none'})"
        )
    what = " and ".join(f"{v:g} {r}" for r, v in need.items())
    where = f" with the labels {sel}" if sel else ""
    return f"no node of the Ray cluster{where} has {what} (engine builds need a GPU; see --cpus-per-job)"


def node_info() -> dict[str, Any]:
    """Where this Ray worker runs: node id, hostname, labels, GPU type."""
    import ray

    ctx = ray.get_runtime_context()
    try:
        labels = dict(ctx.get_node_labels() or {})
    except Exception:  # an older Ray without node labels
        labels = {}
    return {
        "id": ctx.get_node_id(),
        "hostname": socket.gethostname(),
        "labels": {k: v for k, v in sorted(labels.items()) if k not in _HIDDEN_LABELS},
        "gpu_type": labels.get(ACCELERATOR_LABEL),
    }


def run_job(job: Job) -> dict:
    """The Ray task: ``worker.execute`` on this node, and where it ran."""
    from tensorsmith.recipes import worker

    node = node_info()
    result = worker.execute(job)
    result["node"] = node
    return result


# -- GPU types: the ONNX is prepared once, each engine built from it on its GPU type


def prepare_group(job: Job) -> tuple[str, str] | None:
    """Jobs of one model x ``gpus:`` target share one prepare step: (model, target) or None."""
    if not (job.gpu and job.needs_gpu):
        return None
    suffix = f"-{job.gpu}"
    return job.model, job.target[: -len(suffix)] if job.target.endswith(suffix) else job.target


def prepare_task(job: Job) -> dict:
    """The Ray task (any node, no GPU): the ready-to-build ONNX and its lint report,
    in a folder of the shared staging area; ``{"error": ...}`` when it fails."""
    import dataclasses
    import uuid
    from pathlib import Path

    from tensorsmith import jobs as job_calls
    from tensorsmith.errors import TensorsmithError
    from tensorsmith.recipes.expand import TMP_DIR_NAME

    folder = Path(job.output_dir) / TMP_DIR_NAME / f"prepare-{job.model}.{uuid.uuid4().hex[:12]}"
    out: dict[str, Any] = {"folder": str(folder), "node": node_info()}
    try:
        folder.mkdir(parents=True)
        staged = folder / Path(job.output).name
        prepared_job = dataclasses.replace(job, kwargs={**job.kwargs, "prepare_only": True})
        report, main = job_calls.run(prepared_job, staged, lambda *_: None)
        out.update(prepared=str(main), lint_report=str(folder / _lint_name(staged)), report=report)
    except TensorsmithError as exc:
        out.update(
            error=f"prepare step: {exc.one_line()}", error_type=type(exc).__name__, exit_code=exc.exit_code
        )
    except Exception as exc:  # a bug or a library failure: the builds of this group fail with it
        out.update(
            error=f"prepare step: internal error: {type(exc).__name__}: {short(exc, 300)}", exit_code=3
        )
    return out


def _lint_name(plan) -> str:
    from tensorsmith.convert import trt as trt_backend

    return trt_backend.lint_report_path(plan).name


def _copy_model(src, dst) -> None:
    """The prepared ONNX under the build's own name (external data renamed with it)."""
    import shutil

    import onnx

    model = onnx.load(str(src), load_external_data=False)
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    external = any(uses_external_data(t) for t in _get_all_tensors(model))
    if not external:
        shutil.copyfile(src, dst)
        return
    model = onnx.load(str(src))
    onnx.save_model(model, str(dst), save_as_external_data=True, location=f"{dst.name}.data")


def build_task(job: Job, prepared: dict) -> dict:
    """The Ray task (a node of the job's GPU type): ``worker.execute`` building the
    engine from the group's prepared ONNX, so outputs land as in a whole job."""
    from tensorsmith.recipes import worker

    node = node_info()
    if prepared.get("error"):
        return {
            "name": job.name,
            "status": "failed",
            "error": prepared["error"],
            "error_type": prepared.get("error_type", "InternalError"),
            "exit_code": prepared.get("exit_code", 3),
            "node": prepared.get("node"),
        }

    def build(job: Job, staged, step):
        import copy
        import shutil
        from pathlib import Path

        from tensorsmith.convert import trt as trt_backend
        from tensorsmith.convert.targets.trt import name_single_profile

        onnx_path = trt_backend.prepared_onnx_path(staged)
        _copy_model(Path(prepared["prepared"]), onnx_path)
        shutil.copyfile(prepared["lint_report"], trt_backend.lint_report_path(staged))
        opts = copy.deepcopy(job.kwargs["trt"])
        name_single_profile(opts, onnx_path)
        step("build the engine")
        report = trt_backend.build_engine(onnx_path, staged, opts, on_step=step)
        made = prepared.get("report") or {}
        report.lint = made.get("lint")
        report.prepared_onnx = str(onnx_path)
        report.onnx = made.get("onnx")
        data = report.to_dict()
        data.setdefault("onnx", made.get("onnx"))
        data.setdefault("verification", (made.get("onnx") or {}).get("verification"))
        data["prepared_on"] = prepared.get("node")
        return data, staged

    result = worker.execute(job, run=build)
    result["node"] = node
    return result


def _failure(exc: BaseException, retries: int) -> dict:
    import ray

    tries = f"{retries + 1} tr{'y' if retries == 0 else 'ies'}"
    if isinstance(exc, ray.exceptions.WorkerCrashedError):
        kind, text = (
            "WorkerDied",
            f"the worker process running this job died on every try ({tries}): a crash in a native "
            "library, or killed for memory",
        )
    elif isinstance(exc, ray.exceptions.NodeDiedError):
        kind, text = "NodeDied", f"the node running this job left the cluster on every try ({tries})"
    elif isinstance(exc, ray.exceptions.OutOfMemoryError):
        kind, text = "OutOfMemory", f"Ray's memory monitor killed this job ({tries}): {short(exc, 200)}"
    elif isinstance(exc, ray.exceptions.TaskCancelledError):
        kind, text = "Cancelled", "cancelled"
    elif isinstance(exc, ray.exceptions.RayTaskError):
        kind, text = "InternalError", f"internal error: {short(exc, 300)}"
    else:
        kind, text = type(exc).__name__, f"{type(exc).__name__}: {short(exc, 300)}"
    return {"status": "failed", "exit_code": 3, "error_type": kind, "error": text}


class RayExecutor:
    """Jobs as Ray tasks on the cluster at ``address`` (else ``RAY_ADDRESS``, else a local one)."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        cpus_per_job: float = 1.0,
        max_retries: int = 2,
        check_every_s: float = 2.0,
    ):
        if cpus_per_job <= 0:
            raise UsageError(f"--cpus-per-job {cpus_per_job:g}: must be more than 0")
        if max_retries < 0:
            raise UsageError(f"--max-retries {max_retries}: must be 0 or more")
        self.address = address
        self.cpus_per_job = cpus_per_job
        self.max_retries = max_retries
        self.check_every_s = check_every_s
        self._started_ray = False

    # -- the cluster
    def _connect(self):
        ray = _import_ray()
        if ray.is_initialized():
            return ray
        kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": "WARNING"}
        if self.address:
            kwargs["address"] = self.address
        else:
            kwargs["include_dashboard"] = False
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(
                f"--ray-address {self.address or '(none: a local Ray)'}: cannot reach a Ray cluster: {short(exc, 200)}"
            ) from None
        self._started_ray = True
        return ray

    def alive_nodes(self) -> list[dict]:
        ray = self._connect()
        return [n for n in ray.nodes() if n.get("Alive")]

    def workers(self, jobs: int) -> int:
        cpus = sum((n.get("Resources") or {}).get("CPU", 0.0) for n in self.alive_nodes())
        return max(1, min(jobs, int(cpus // self.cpus_per_job) or 1))

    def close(self) -> None:
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False

    # -- the jobs
    def schedule(self, to_run: list[Job], finished, events) -> None:
        ray = self._connect()
        task = ray.remote(run_job)
        prepare, build = ray.remote(prepare_task), ray.remote(build_task)
        refs: dict[Any, Job] = {}
        groups: dict[tuple[str, str], Any] = {}  # model x gpus target -> its prepare task
        waiting: dict[tuple[str, str], int] = {}  # builds of each group not finished yet
        self._groups, self._waiting = groups, waiting
        try:
            nodes = self.alive_nodes()
            for job in to_run:
                why = unplaceable(job, nodes, self.cpus_per_job)
                if why is not None:
                    events.note(f"{job.name}: {why}")
                    finished(
                        job, {"status": "failed", "exit_code": 3, "error_type": "Unplaceable", "error": why}
                    )
                    continue
                group = prepare_group(job)
                if group is not None and group not in groups:
                    groups[group] = prepare.options(
                        num_cpus=self.cpus_per_job,
                        max_retries=self.max_retries,
                        retry_exceptions=False,
                        name=f"tensorsmith:prepare:{group[0]}-{group[1]}",
                        **({"label_selector": dict(job.runs_on)} if job.runs_on else {}),
                    ).remote(job)
                options: dict[str, Any] = {
                    "num_cpus": self.cpus_per_job,
                    "max_retries": self.max_retries,
                    "retry_exceptions": False,
                    "name": f"tensorsmith:{job.name}",
                }
                if job.needs_gpu:
                    options["num_gpus"] = 1
                sel = selector(job)
                if sel:
                    options["label_selector"] = sel
                if group is not None:
                    refs[build.options(**options).remote(job, groups[group])] = job
                    waiting[group] = waiting.get(group, 0) + 1
                else:
                    refs[task.options(**options).remote(job)] = job
                events.job_started(job)
            last_check = time.monotonic()
            while refs:
                done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0.2, fetch_local=True)
                for ref in done:
                    job = refs.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        result = _failure(exc, self.max_retries)
                    finished(job, result)
                    self._group_done(prepare_group(job), groups, waiting)
                if refs and time.monotonic() - last_check >= self.check_every_s:
                    last_check = time.monotonic()
                    self._fail_stranded(refs, finished, events)
        except BaseException:  # Ctrl-C: what is left is cancelled; staged outputs never land
            for ref in refs:
                try:
                    ray.cancel(ref, force=True)
                except Exception:
                    pass
            raise
        finally:
            self.close()

    def _group_done(self, group, groups: dict, waiting: dict) -> None:
        """The last build of a group finished: its prepared ONNX folder goes."""
        if group is None or group not in waiting:
            return
        waiting[group] -= 1
        if waiting[group] > 0:
            return
        import shutil

        import ray

        try:
            info = ray.get(groups[group], timeout=10)
        except Exception:  # the prepare task failed: nothing of it to remove
            return
        shutil.rmtree(info.get("folder") or "", ignore_errors=True)

    def _fail_stranded(self, refs: dict, finished, events) -> None:
        """Jobs no alive node can take any more (their nodes left): fail them, don't wait."""
        import ray

        nodes = self.alive_nodes()
        for ref, job in list(refs.items()):
            why = unplaceable(job, nodes, self.cpus_per_job)
            if why is None:
                continue
            ready, _ = ray.wait([ref], timeout=0)
            if ready:
                continue  # it finished after all: collected on the next turn
            ray.cancel(ref, force=True)
            del refs[ref]
            events.note(f"{job.name}: {why}")
            finished(
                job, {"status": "failed", "exit_code": 3, "error_type": "Unplaceable", "error": f"{why}, now"}
            )
            self._group_done(prepare_group(job), self._groups, self._waiting)
