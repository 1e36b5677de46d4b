"""One GPU per worker process: which device a worker binds, from its rank.

A batch job (or a machine) with N GPUs runs N worker processes. Each process sees every GPU,
so ``cuda`` meant device 0 in all of them and N-1 GPUs sat idle while the first ran N models.
Dask gives no rank, but it names the processes it starts: ``dask worker --nworkers P`` calls
them ``<job>-0`` .. ``<job>-<P-1>`` and a ``LocalCluster`` calls them ``0`` .. ``n-1``. This
module is a Dask preload (``--preload pipeline.infer.gpus``): when a worker starts, before a
task can touch CUDA, it narrows ``CUDA_VISIBLE_DEVICES`` to the worker's own share of the
devices the job was given (SLURM's list when set, else ``0..N-1``), so ``cuda`` is that GPU.
The worker count per job comes from :data:`ENV_PROCESSES`, set in the job script; the share
from the worker's ``GPU`` resource.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.errors import ConfigError

__all__ = ["ENV_PROCESSES", "dask_setup", "devices_for", "worker_rank"]

#: Environment variable holding the number of worker processes per job (or machine).
ENV_PROCESSES = "GIGASEG_WORKER_PROCESSES"


def worker_rank(name: Any, processes: int) -> int:
    """Return the rank (0 .. processes-1) of a worker process within its job.

    >>> worker_rank("buildings-3-1", 2), worker_rank("buildings-3", 1), worker_rank(2, 4)
    (1, 0, 2)
    """
    if processes <= 1:
        return 0
    if isinstance(name, int):
        return name % processes
    tail = str(name).rsplit("-", 1)[-1]
    if not tail.isdigit():
        raise ConfigError(
            f"worker {name!r} has no rank suffix although its job runs {processes} worker "
            "processes; start them with `dask worker --nworkers N`"
        )
    return int(tail) % processes


def devices_for(rank: int, per_worker: int, visible: str | None = None) -> str:
    """Return the ``CUDA_VISIBLE_DEVICES`` value for the worker of ``rank``.

    ``visible`` is the list the job was given (SLURM sets it from ``--gres``); without it the
    job owns devices ``0 .. N-1``.

    >>> devices_for(0, 1), devices_for(1, 1), devices_for(1, 1, "4,5"), devices_for(1, 2, "0,1,2,3")
    ('0', '1', '5', '2,3')
    """
    if visible:
        ids = [part.strip() for part in visible.split(",") if part.strip()]
    else:
        ids = [str(i) for i in range((rank + 1) * per_worker)]
    chosen = ids[rank * per_worker : (rank + 1) * per_worker]
    if len(chosen) < per_worker:
        raise ConfigError(
            f"worker rank {rank} needs {per_worker} GPU(s) but the job sees only "
            f"CUDA_VISIBLE_DEVICES={visible}; request gpus = processes x GPUs per worker"
        )
    return ",".join(chosen)


def dask_setup(worker: Any) -> None:
    """Bind this worker process to its GPU(s) (a Dask preload hook; no-op without GPUs)."""
    per_worker = int(worker.state.total_resources.get("GPU", 0))
    if per_worker <= 0:
        return
    processes = int(os.environ.get(ENV_PROCESSES, "1"))
    rank = worker_rank(worker.name, processes)
    os.environ["CUDA_VISIBLE_DEVICES"] = devices_for(
        rank, per_worker, os.environ.get("CUDA_VISIBLE_DEVICES")
    )
