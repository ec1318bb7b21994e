"""``tensorsmith run RECIPE --executor ray``: each job a Ray task on a cluster.

Ray does the scheduling: each job asks for ``--cpus-per-job`` CPUs, a TensorRT
engine build one GPU (``num_gpus=1``), and its recipe's ``runs_on`` labels plus,
for a target with ``gpus:``, ``ray.io/accelerator-type`` as a label selector. A
task lost with its node (or its worker process) is retried by Ray up to
``--max-retries`` times on another node; a job whose tries are spent fails alone,
with the reason. Before and while the jobs run, the cluster's nodes are checked:
a job no alive node can take (no node with its labels, a GPU, enough CPUs) fails
at once with a message naming what is missing, instead of waiting for ever.

Workers run ``runner.execute`` on storage every node sees (the recipe's paths),
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
    """The Ray task: ``runner.execute`` on this node, and where it ran."""
    from tensorsmith.recipes import runner

    node = node_info()
    result = runner.execute(job)
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
        refs: dict[Any, Job] = {}
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
