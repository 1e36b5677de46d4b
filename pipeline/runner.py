"""The one task runner of predict, vectorize and workflows: in this process or on Dask.

A stage hands :meth:`Runner.map` a task function and an iterable of argument tuples, and gets
the results back in completion order, with a bounded number of tasks in flight (so the caller's
memory and the scheduler's queue stay bounded), retries on a cluster, a progress bar and an
``on_result`` callback (the stage's ledger and report). Where the tasks run is decided once,
here, by one rule (:func:`choose_mode`):

- ``client``: a given :class:`distributed.Client` or a scheduler address — the distributed path
  for real scale (SLURM/PBS workers, several GPUs); futures consumed with ``as_completed``.
- ``cluster``: a :class:`distributed.LocalCluster` built by :func:`local_cluster` (the only
  place one is built), sized by :func:`machine_size`, dashboard on 127.0.0.1 only.
- ``process``: a small thread pool in this process. A process cluster costs seconds to start
  (each worker imports torch/GDAL and loads the model again) and cannot help where it would
  hold a single worker (a CPU-only machine with fewer than 16 cores, or a single GPU), or
  where the job is a single task; threads in process give the same overlap of reads and writes
  with the model call (torch, GDAL and zarr codecs release the GIL) without that cost.

Shutdown is clean: the client's workers are retired before the cluster closes, so no
"Worker process still alive ... killing" warnings appear at exit.

Examples
--------
>>> with Runner(RunnerSettings(workers=0)) as runner:
...     sorted(runner.map(pow, [(2, 3), (3, 2)], progress=False))
[8, 9]
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Literal

from pipeline.settings import RunnerSettings

__all__ = [
    "Mode",
    "Runner",
    "choose_mode",
    "close_cluster",
    "connect_scheduler",
    "dask_setup",
    "environ_kept",
    "local_cluster",
    "machine_size",
]

Mode = Literal["process", "cluster", "client"]

#: CPU cores one model worker uses well; more cores get more worker processes.
CORES_PER_MODEL_WORKER = 8


def _gpu_count() -> int:
    if "torch" not in sys.modules:
        # Counting GPUs needs torch; a stage that never imported it (vectorize) runs no model.
        return 0
    import torch

    return int(torch.cuda.device_count())


def machine_size(kind: str = "model") -> tuple[int, int]:
    """Worker processes and threads per worker for this machine (the one sizing rule).

    Model work gets one worker per GPU, else one per :data:`CORES_PER_MODEL_WORKER` cores
    (intra-op threads scale to about that many), each with the cores divided among them.
    GIL-bound Python work (``kind="python"``: vectorize) gets one single-threaded worker per
    core.

    >>> workers, threads = machine_size("python")
    >>> threads
    1
    """
    cores = os.cpu_count() or 1
    if kind == "python":
        return cores, 1
    gpus = _gpu_count()
    if gpus:
        return gpus, max(1, cores // gpus)
    workers = max(1, cores // CORES_PER_MODEL_WORKER)
    return workers, max(1, cores // workers)


def choose_mode(
    settings: RunnerSettings, *, client: Any = None, tasks: int | None = None, kind: str = "model"
) -> Mode:
    """Where tasks run: a given client or scheduler, a new LocalCluster, or this process.

    ``workers=None`` (auto) runs in process when a cluster would hold one worker or the job
    is at most one task; an explicit ``workers=N >= 1`` always starts a LocalCluster.

    >>> choose_mode(RunnerSettings(workers=0)), choose_mode(RunnerSettings(), tasks=1)
    ('process', 'process')
    """
    if client is not None or settings.scheduler:
        return "client"
    if settings.workers == 0:
        return "process"
    if settings.workers is None and (
        (tasks is not None and tasks <= 1) or machine_size(kind)[0] <= 1
    ):
        return "process"
    return "cluster"


@contextmanager
def environ_kept() -> Iterator[None]:
    """Undo what starting Dask worker processes writes into this process's environment.

    A nanny sets its workers' ``pre-spawn-environ`` (``OMP_NUM_THREADS=1``,
    ``DASK_LOGGING__DISTRIBUTED``...) in its own process's ``os.environ`` before it spawns
    them, so whatever this process starts later inherited them: batch jobs submitted after a
    local run ran torch on one thread and logged only errors (their ``Reason:
    worker-lifetime-reached`` line was missing). (A worker the nanny restarts after a crash
    sets them again.)
    """
    before = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(before):
            del os.environ[key]
        for key, value in before.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


def local_cluster(
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    *,
    kind: str = "model",
    memory_limit: str | int | None = "auto",
    dashboard_address: str | None = "127.0.0.1:0",
    resources: dict[str, float] | None = None,
) -> Any:
    """Start a :class:`distributed.LocalCluster` on loopback (the only place one is built).

    Parameters
    ----------
    n_workers, threads_per_worker
        Default: :func:`machine_size` for ``kind``.
    kind
        ``"model"`` or ``"python"`` (see :func:`machine_size`).
    memory_limit
        Per worker (``"auto"`` splits the machine's memory).
    dashboard_address
        Loopback with a free port by default; ``None`` disables the dashboard. A bare port
        (``":8787"``) is bound to 127.0.0.1, never to every interface.
    resources
        Abstract resources each worker declares (e.g. ``{"GPU": 1}``).
    """
    import dask
    from distributed import LocalCluster

    workers, threads = machine_size(kind)
    if n_workers is not None:
        threads = max(1, (os.cpu_count() or 1) // max(1, n_workers))
    if dashboard_address is not None and dashboard_address.startswith(":"):
        dashboard_address = "127.0.0.1" + dashboard_address
    # Worker processes configure their logging when they import distributed, before any
    # setting reaches them, so their level travels in the environment they are spawned with:
    # without it each worker prints "Connection ... has been closed" when the run ends.
    quiet_workers = {"distributed.nanny.pre-spawn-environ.DASK_LOGGING__DISTRIBUTED": "error"}
    with dask.config.set(quiet_workers), _children_ignore_sigint(), environ_kept():
        return LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers if n_workers is None else n_workers,
            threads_per_worker=threads if threads_per_worker is None else threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=dashboard_address,
            memory_limit=memory_limit,
            resources=resources,
            silence_logs=logging.ERROR,
            preload=["pipeline.runner"],  # dask_setup below: no per-task failure records
        )


def dask_setup(worker: Any) -> None:
    """Worker preload of :func:`local_cluster`: silence the per-task "Compute Failed" record.

    A failed task reaches the client, which reports it once; the worker's own ERROR record
    with the traceback, per task and per retry, made 50 lines of a full disk.
    """
    logging.getLogger("distributed.worker").setLevel(logging.CRITICAL)


@contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Start worker processes with SIGINT ignored (they inherit it across exec).

    Ctrl-C in a terminal reaches the whole process group: workers then died mid-tile, each
    printing a traceback before this process could stop the run in order. Stopping is this
    process's job; workers are retired by :func:`close_cluster`.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def connect_scheduler(address: str, *, timeout: str = "30s", security: Any = None) -> Any:
    """Return a :class:`distributed.Client` of the scheduler at ``address``.

    A scheduler that cannot be reached is one line (:class:`~pipeline.errors.ClusterError`),
    raised before anything is written.
    """
    from distributed import Client

    from pipeline.errors import ClusterError

    try:
        return Client(address, timeout=timeout, security=security)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} ({reason}); check the address and "
            "that the scheduler is running"
        ) from None


def close_cluster(client: Any, cluster: Any = None, *, timeout: float = 60.0) -> None:
    """Close a client (and the cluster it owns) without "still alive ... killing" warnings.

    A LocalCluster gives each worker process 4 s to exit before its nanny kills it and
    warns; a worker that has torch and GDAL loaded on a busy machine can need longer. The
    nannies are closed first with ``timeout`` seconds of grace, then the client and cluster.
    """
    try:
        if cluster is not None and getattr(cluster, "workers", None):
            nannies = list(cluster.workers.values())

            async def stop() -> None:
                import asyncio

                await asyncio.gather(*(nanny.close(timeout=timeout) for nanny in nannies))

            cluster.sync(stop)
    except Exception:  # best effort: close() below still stops everything
        pass
    finally:
        # Nannies whose worker was retired may log a cancelled close as an ERROR traceback.
        with _quiet("distributed"), _quiet("distributed.nanny", logging.CRITICAL):
            client.close()
            if cluster is not None:
                cluster.close()


@contextmanager
def _quiet(name: str, level: int = logging.ERROR) -> Iterator[None]:
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


class Runner:
    """Runs task functions in this process or on Dask; see the module docstring.

    Parameters
    ----------
    settings
        ``workers`` / ``scheduler`` / ``retries``.
    client
        An existing :class:`distributed.Client` (not closed by the runner).
    tasks
        How many tasks the job has, when known (a single task always runs in process).
    kind
        ``"model"`` (predict) or ``"python"`` (vectorize): sizes the cluster and the thread
        pool (model tasks overlap reads/writes with the model call: 2 threads; GIL-bound
        tasks run one at a time in process).
    """

    def __init__(
        self,
        settings: RunnerSettings | None = None,
        *,
        client: Any = None,
        tasks: int | None = None,
        kind: str = "model",
    ) -> None:
        self.settings = settings or RunnerSettings()
        self.kind = kind
        self.mode: Mode = choose_mode(self.settings, client=client, tasks=tasks, kind=kind)
        self.client = client
        self._cluster: Any = None
        self._owns_client = False
        #: Intra-op threads a model task should use (``None``: leave the process default).
        self.threads: int | None = None
        if self.mode == "client" and client is None:
            self.client = connect_scheduler(str(self.settings.scheduler))
            self._owns_client = True
        elif self.mode == "cluster":
            from distributed import Client

            n_workers = self.settings.workers
            self._cluster = local_cluster(
                n_workers,
                # model workers run one task in the model and the next one reading; a GPU
                # worker keeps all its cores as readers (machine_size), since its model is fast
                (None if _gpu_count() else 2) if kind == "model" else 1,
                kind=kind,
            )
            self.client = Client(self._cluster)  # type: ignore[no-untyped-call]
            self._owns_client = True
            workers = n_workers or machine_size(kind)[0]
            self.threads = max(1, (os.cpu_count() or 1) // workers)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def workers(self) -> int:
        """Number of workers (0 in process)."""
        if self.client is None:
            return 0
        return len(self.client.scheduler_info(n_workers=-1).get("workers", {})) or 1

    def slots(self) -> int:
        """Tasks that can run at once (worker threads, or this process's pool)."""
        if self.client is None:
            return 2 if self.kind == "model" else 1
        info = self.client.scheduler_info(n_workers=-1)
        return max(1, sum(int(w.get("nthreads", 1)) for w in info["workers"].values()))

    def gpu_resources(self) -> dict[str, int] | None:
        """``{"GPU": 1}`` when every worker declares GPUs (one model task per device)."""
        if self.client is None:
            return None
        info = self.client.scheduler_info(n_workers=-1)
        gpus = [w.get("resources", {}).get("GPU", 0) for w in info["workers"].values()]
        return {"GPU": 1} if gpus and all(gpus) else None

    def share(self, obj: Any) -> Any:
        """Ship ``obj`` to every worker once (a future); in process it is returned as is."""
        if self.client is None:
            return obj
        return self.client.scatter(obj, broadcast=True, hash=False)

    def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run one task where the tasks run (e.g. a measurement on a worker) and return it."""
        return next(self.map(func, [args], progress=False))

    def map(
        self,
        func: Callable[..., Any],
        calls: Iterable[tuple[Any, ...]],
        *,
        total: int | None = None,
        progress: bool = True,
        desc: str = "tasks",
        unit: str = "task",
        on_result: Callable[[Any], None] | None = None,
        resources: dict[str, Any] | None = None,
        width: Callable[[], int] | None = None,
    ) -> Iterator[Any]:
        """Run ``func(*args)`` for each args tuple, yielding results in completion order.

        At most ``2 x slots`` tasks are in flight; pending tasks are cancelled if the caller
        stops early or a task fails (after its retries on a cluster).
        """
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr)
        stream: Iterator[Any] | None = None
        try:
            if self.client is None:
                stream = self._map_local(func, calls, width)
            else:
                stream = self._map_client(func, calls, resources)
            for result in stream:
                if on_result is not None:
                    on_result(result)
                if bar is not None:
                    bar.update(1)
                yield result
        finally:
            # Cancel what is still in flight now, while the client is open (not at garbage
            # collection after it closed: "Exception ignored ... IOLoop is closed" on Ctrl-C).
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            if bar is not None:
                bar.close()

    def _map_local(
        self,
        func: Callable[..., Any],
        calls: Iterable[tuple[Any, ...]],
        width: Callable[[], int] | None = None,
    ) -> Iterator[Any]:
        """Run in this process's thread pool.

        ``width`` (asked after every result) says how many tasks should run at once: predict
        sizes it from the measured model and read/write seconds
        (:func:`pipeline.infer.feed.recommend_readers`), up to one thread per core.
        """
        pending = iter(calls)
        if self.slots() == 1 and width is None:
            with _gdal_env():
                for args in pending:
                    yield func(*args)
            return
        most = max(self.slots(), os.cpu_count() or 1) if width is not None else self.slots()

        def in_flight() -> int:
            if width is None:  # the pool's threads, each with the next task queued
                return 2 * most
            return max(1, min(most, width()))  # exactly the tasks that should run at once

        with ThreadPoolExecutor(most, thread_name_prefix="gigaseg-task") as pool:
            active: set[Future[Any]] = {pool.submit(func, *a) for a in _take(pending, in_flight())}
            try:
                while active:
                    done, active = wait(active, return_when=FIRST_COMPLETED)
                    for future in done:
                        result = future.result()
                        room = max(0, in_flight() - len(active))
                        active.update(pool.submit(func, *a) for a in _take(pending, room))
                        yield result
            finally:
                for future in active:
                    future.cancel()

    def _map_client(
        self,
        func: Callable[..., Any],
        calls: Iterable[tuple[Any, ...]],
        resources: dict[str, Any] | None,
    ) -> Iterator[Any]:
        from distributed import as_completed

        client = self.client
        retries = self.settings.retries
        pending = iter(calls)
        active: set[Any] = set()

        def submit(args: tuple[Any, ...]) -> Any:
            future = client.submit(func, *args, retries=retries, resources=resources, pure=False)
            active.add(future)
            return future

        stream = as_completed([submit(a) for a in _take(pending, 2 * self.slots())])  # type: ignore[no-untyped-call]
        try:
            for future in stream:
                active.discard(future)
                result = future.result()
                future.release()
                for args in _take(pending, 1):
                    stream.add(submit(args))  # type: ignore[no-untyped-call]
                yield result
        finally:
            if active:
                with contextlib.suppress(RuntimeError, OSError):  # the client is closing
                    client.cancel(list(active))

    def close(self) -> None:
        """Stop what this runner started (a given client is left running)."""
        if self._owns_client and self.client is not None:
            close_cluster(self.client, self._cluster)
        self.client = None if self._owns_client else self.client
        self._cluster = None
        self._owns_client = False


@contextmanager
def _gdal_env() -> Iterator[None]:
    """One GDAL environment for a sequential in-process loop, not one per rasterio call."""
    try:
        import rasterio
    except ImportError:  # pragma: no cover - rasterio is a core dependency
        yield
        return
    with rasterio.Env():
        yield


def _take(iterator: Iterator[Any], count: int) -> list[Any]:
    out = []
    for _ in range(count):
        try:
            out.append(next(iterator))
        except StopIteration:
            break
    return out
