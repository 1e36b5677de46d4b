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
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.infer.gpus import ENV_PROCESSES
from workflows.jobs import ClusterLog, JobWatch, lifetime_args, recomputed_tiles, recording_job
from workflows.spec import Cluster, JobQueue

__all__ = ["connect", "describe", "job_script", "jobqueue_kwargs", "local_kwargs", "security"]

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


def jobqueue_kwargs(
    kind: str, settings: JobQueue, *, name: str = "gigaseg", write: bool = True
) -> dict[str, Any]:
    """Keyword arguments for ``SLURMCluster``/``PBSCluster`` (and their ``Job`` classes).

    ``write=False`` writes no temporary TLS certificate (a job script shown, not run).

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

            mem = _jobqueue("pbs").pbs_format_bytes_ceil(parse_bytes(settings.memory))
            kwargs["resource_spec"] = (
                f"select=1:ncpus={settings.cores}:mem={mem}:ngpus={settings.gpus}"
            )
    if settings.interface:
        kwargs["interface"] = settings.interface
    if settings.security is not None:
        kwargs["security"] = security(settings, write=write)
    if settings.log_directory:
        kwargs["log_directory"] = settings.log_directory
    if settings.local_directory:
        kwargs["local_directory"] = settings.local_directory
    kwargs["job_extra_directives"] = directives
    kwargs["worker_extra_args"] = worker_args
    return kwargs


def security(settings: JobQueue, *, write: bool = True) -> Any:
    """Return dask's :class:`~distributed.security.Security` for ``settings.security``.

    ``temporary`` makes a self-signed certificate for this run and writes it (mode 0600) as
    ``gigaseg-tls-<id>.{ca,cert,key}.pem`` into ``log_directory`` (else
    ``~/.cache/gigaseg/tls``), a folder the jobs must see; ``write=False`` only names the
    files (for ``--dry-run``). Given files are used as they are by scheduler, workers and
    client alike.
    """
    if settings.security is None:
        return None
    if settings.security == "temporary":
        return _temporary_security(settings, write=write)
    files = settings.security
    for key in ("tls_ca_file", "tls_cert", "tls_key"):
        path = getattr(files, key)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"security.{key} {path} does not exist; give a PEM file")
    return _security(files.tls_ca_file, files.tls_cert, files.tls_key)


def _security(ca: str, cert: str, key: str | None) -> Any:
    from distributed.security import Security

    return Security(  # type: ignore[no-untyped-call]
        tls_ca_file=ca,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
        require_encryption=True,
    )


def _temporary_security(settings: JobQueue, *, write: bool) -> Any:
    import os
    import uuid

    from distributed.security import Security

    folder = (
        Path(settings.log_directory)
        if settings.log_directory
        else Path.home() / ".cache" / "gigaseg" / "tls"
    ).absolute()
    stem = f"gigaseg-tls-{uuid.uuid4().hex[:12]}" if write else "gigaseg-tls-RUN"
    paths = {part: str(folder / f"{stem}.{part}.pem") for part in ("ca", "cert", "key")}
    if write:
        try:
            made = Security.temporary()  # type: ignore[no-untyped-call]
        except ImportError:
            raise ConfigError(
                "security: temporary needs the cryptography package; "
                "pip install 'gigaseg[cluster]' or give certificate files"
            ) from None
        folder.mkdir(parents=True, exist_ok=True)
        texts = {"ca": made.tls_ca_file, "cert": made.tls_worker_cert, "key": made.tls_worker_key}
        for part, text in texts.items():
            descriptor = os.open(paths[part], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(text)
    return _security(paths["ca"], paths["cert"], paths["key"])


def _jobqueue(kind: str) -> Any:
    """Import the dask-jobqueue module for ``kind`` without letting it take over Ctrl-C.

    Importing ``dask_jobqueue`` installs a process-wide SIGINT handler that calls
    ``sys.exit()`` (its ``runner`` module): a Ctrl-C then raised ``SystemExit`` wherever the
    main thread waited and the run ended with status 0, no report and stores left
    ``running``. The handler in place before the import is put back.
    """
    import importlib
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        return importlib.import_module(f"dask_jobqueue.{kind}")
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)


def _job_class(kind: str) -> Any:
    module = _jobqueue(kind)
    return module.SLURMJob if kind == "slurm" else module.PBSJob


def _cluster_class(kind: str) -> Any:
    module = _jobqueue(kind)
    return module.SLURMCluster if kind == "slurm" else module.PBSCluster


def job_script(cluster: Cluster, *, name: str = "gigaseg") -> str:
    """Render the batch job script for a slurm/pbs cluster without starting or submitting.

    The scheduler address is not known before the run starts, so the script shows
    ``tcp://SCHEDULER:8786`` in its place.
    """
    if cluster.type not in ("slurm", "pbs"):
        raise ConfigError(f"cluster.type is {cluster.type}; only slurm and pbs have job scripts")
    settings: JobQueue = getattr(cluster, cluster.type)
    kwargs = jobqueue_kwargs(cluster.type, settings, name=name, write=False)
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

    from pipeline.runner import close_cluster, connect_scheduler, local_cluster

    log = log if log is not None else ClusterLog()

    if cluster.type == "address":
        with connect_scheduler(str(cluster.address)) as client:
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
