"""Start or connect to the cluster a workflow runs on.

``local`` is a :class:`distributed.LocalCluster` sized to the machine with its dashboard on
loopback; ``slurm`` and ``pbs`` go through dask-jobqueue, one batch job holding one or more
workers, with GPUs requested from the scheduler (``--gres=gpu:N`` or ``ngpus=N``) and declared
to Dask as a ``GPU`` resource on each worker so GPU tasks land one per device; ``address``
connects to a scheduler someone else started. :func:`job_script` renders the batch script
without starting anything, for ``--dry-run``.

Job scripts start with ``set -e`` so a failing prologue line fails the job instead of starting
a worker in a broken environment; with GPUs they bind one GPU per worker process
(:mod:`pipeline.infer.gpus`); workers retire before the walltime (``lifetime``) and
:class:`~workflows.jobs.JobWatch` replaces their job, fails the run on refused, dead or
never-starting jobs, and records job ids and lost workers in a
:class:`~workflows.jobs.ClusterLog`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.errors import ConfigError
from pipeline.infer.gpus import ENV_PROCESSES
from workflows.jobs import ClusterLog, JobWatch, lifetime_args, recomputed_tiles, recording_job
from workflows.spec import Cluster, JobQueue

__all__ = ["connect", "describe", "job_script", "jobqueue_kwargs", "local_kwargs"]

#: Scheduler address placeholder in rendered job scripts (the real one is known at start).
SCHEDULER_PLACEHOLDER = "tcp://SCHEDULER:8786"


def local_kwargs(cluster: Cluster) -> dict[str, Any]:
    """Keyword arguments for :func:`pipeline.runner.local_cluster`.

    Unset sizes are left to the runner's one sizing rule (:func:`pipeline.runner.machine_size`:
    one worker per GPU or per 8 cores). The scheduler and dashboard listen on loopback.
    """
    settings = cluster.local
    return {
        "n_workers": settings.n_workers,
        "threads_per_worker": settings.threads_per_worker,
        "memory_limit": settings.memory_limit,
        "dashboard_address": settings.dashboard_address,
    }


def jobqueue_kwargs(kind: str, settings: JobQueue, *, name: str = "gigaseg") -> dict[str, Any]:
    """Keyword arguments for ``SLURMCluster``/``PBSCluster`` (and their ``Job`` classes).

    Parameters
    ----------
    kind
        ``"slurm"`` or ``"pbs"``.
    settings
        The workflow's ``cluster.slurm`` or ``cluster.pbs`` section.
    name
        Job name shown by ``squeue``/``qstat``.
    """
    if settings.cores is None or settings.memory is None:
        raise ConfigError(
            f"cluster.{kind}: cores and memory are required for a {kind} cluster "
            "(e.g. cores: 8, memory: 32GB)"
        )
    processes = settings.worker_processes
    worker_args = lifetime_args(settings.walltime, settings.lifetime)
    directives = list(settings.directives)
    # A failing prologue line (module load, source) must fail the job, not start a worker
    # in a half-set-up environment.
    prologue = ["set -e", *settings.prologue]
    kwargs: dict[str, Any] = {
        "cores": settings.cores,
        "memory": settings.memory,
        "processes": processes,
        "walltime": settings.walltime,
        "queue": settings.queue,
        "account": settings.account,
        "python": settings.python or sys.executable,
        "job_script_prologue": prologue,
        "job_name": name,
        "death_timeout": settings.death_timeout,
    }
    if settings.gpus:
        worker_args += ["--resources", f"GPU={settings.gpus // processes}"]
        # One GPU per worker process: the preload narrows CUDA_VISIBLE_DEVICES by rank.
        worker_args += ["--preload", "pipeline.infer.gpus"]
        prologue.append(f"export {ENV_PROCESSES}={processes}")
        if kind == "slurm":
            directives.append(f"--gres=gpu:{settings.gpus}")
        else:
            from dask.utils import parse_bytes
            from dask_jobqueue.pbs import pbs_format_bytes_ceil

            mem = pbs_format_bytes_ceil(parse_bytes(settings.memory))  # type: ignore[no-untyped-call]
            kwargs["resource_spec"] = (
                f"select=1:ncpus={settings.cores}:mem={mem}:ngpus={settings.gpus}"
            )
    if settings.interface:
        kwargs["interface"] = settings.interface
    if settings.log_directory:
        kwargs["log_directory"] = settings.log_directory
    if settings.local_directory:
        kwargs["local_directory"] = settings.local_directory
    kwargs["job_extra_directives"] = directives
    kwargs["worker_extra_args"] = worker_args
    return kwargs


def _job_class(kind: str) -> Any:
    if kind == "slurm":
        from dask_jobqueue.slurm import SLURMJob

        return SLURMJob
    from dask_jobqueue.pbs import PBSJob

    return PBSJob


def _cluster_class(kind: str) -> Any:
    if kind == "slurm":
        from dask_jobqueue.slurm import SLURMCluster

        return SLURMCluster
    from dask_jobqueue.pbs import PBSCluster

    return PBSCluster


def job_script(cluster: Cluster, *, name: str = "gigaseg") -> str:
    """Render the batch job script for a slurm/pbs cluster without starting or submitting.

    The scheduler address is not known before the run starts, so the script shows
    ``tcp://SCHEDULER:8786`` in its place.
    """
    if cluster.type not in ("slurm", "pbs"):
        raise ConfigError(f"cluster.type is {cluster.type}; only slurm and pbs have job scripts")
    settings: JobQueue = getattr(cluster, cluster.type)
    kwargs = jobqueue_kwargs(cluster.type, settings, name=name)
    job = _job_class(cluster.type)(scheduler=SCHEDULER_PLACEHOLDER, name=f"{name}-worker", **kwargs)
    return str(job.job_script())


def describe(cluster: Cluster) -> str:
    """One line saying where the run will execute."""
    if cluster.type == "address":
        return f"scheduler at {cluster.address}"
    if cluster.type == "local":
        s = cluster.local
        workers = s.n_workers if s.n_workers is not None else "auto"
        threads = s.threads_per_worker if s.threads_per_worker is not None else "auto"
        return (
            f"local: LocalCluster, {workers} workers x {threads} threads, "
            f"memory {s.memory_limit}, dashboard {s.dashboard_address or 'off'}"
        )
    q: JobQueue = getattr(cluster, cluster.type)
    size = (
        f"{q.min_jobs} jobs"
        if q.min_jobs == q.max_jobs
        else f"adaptive {q.min_jobs}..{q.max_jobs} jobs"
    )
    gpus = f", {q.gpus} GPUs" if q.gpus else ""
    where = ", ".join(
        part
        for part in (
            f"queue {q.queue}" if q.queue else "",
            f"account {q.account}" if q.account else "",
        )
        if part
    )
    where = f", {where}" if where else ""
    return (
        f"{cluster.type}: {size} of {q.cores} cores, {q.memory}, {q.worker_processes} "
        f"worker(s){gpus}, walltime {q.walltime}{where}"
    )


@contextmanager
def connect(
    cluster: Cluster, *, name: str = "gigaseg", log: ClusterLog | None = None
) -> Iterator[Any]:
    """Start (or connect to) the cluster and yield a :class:`distributed.Client`.

    Everything started here is stopped on exit: jobs are cancelled, local workers closed.
    For slurm/pbs a :class:`~workflows.jobs.JobWatch` follows the jobs; its findings (job ids,
    replaced jobs, lost workers, recomputed tiles, the error that stopped the run) go into
    ``log``. A cluster that cannot start raises :class:`~pipeline.errors.ClusterError`.
    """
    from distributed import Client

    from pipeline.runner import close_cluster, local_cluster

    log = log if log is not None else ClusterLog()

    if cluster.type == "address":
        with Client(cluster.address, timeout="30s") as client:  # type: ignore[no-untyped-call]
            yield client
        return
    if cluster.type == "local":
        local = local_cluster(**local_kwargs(cluster))
        client = Client(local)  # type: ignore[no-untyped-call]
        try:
            yield client
        finally:
            close_cluster(client, local)
        return
    settings: JobQueue = getattr(cluster, cluster.type)
    kwargs = jobqueue_kwargs(cluster.type, settings, name=name)
    # Workers reach the scheduler on `interface`; only its dashboard stays on loopback.
    scheduler_options: dict[str, Any] = {"dashboard_address": "127.0.0.1:0"}
    failures: list[str] = []
    job_cls = recording_job(_job_class(cluster.type), failures)
    cluster_cls = _cluster_class(cluster.type)
    fixed = settings.max_jobs if settings.max_jobs == settings.min_jobs else None
    with cluster_cls(scheduler_options=scheduler_options, job_cls=job_cls, **kwargs) as jobs:
        since = time.time()
        with Client(jobs) as client:  # type: ignore[no-untyped-call]
            watch = JobWatch(
                jobs,
                client,
                cluster.type,
                failures,
                log,
                fixed=fixed,
                start_timeout=settings.start_timeout,
                log_directory=settings.log_directory,
                queue=settings.queue,
            )
            if fixed is None:
                jobs.adapt(minimum_jobs=settings.min_jobs, maximum_jobs=settings.max_jobs)
            else:
                jobs.scale(jobs=fixed)
            try:
                if settings.min_jobs:
                    # Tasks are planned against the workers present (GPU resources, slots),
                    # so start once the minimum is up; on a busy queue this waits for the
                    # jobs, failing on a refused, dead or never-starting one.
                    watch.wait_for_workers(settings.min_jobs * settings.worker_processes)
                watch.start()
                yield client
            finally:
                watch.stop()
                log.recomputed_tiles = recomputed_tiles(client, since)
