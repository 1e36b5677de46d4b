"""Batch jobs behind a slurm/pbs cluster: refused, dead, lost, pending too long, retired on time.

dask-jobqueue submits a job and trusts it to connect. When ``sbatch`` refuses the job (a bad
partition), when the job dies before its worker connects (a bad ``python``, a failing prologue
line) or when a running job is lost (``scancel``, a node failure, the walltime), it does not
say so and the run waits forever. :class:`JobWatch` closes those gaps from the client side:

- every submission error is recorded (:func:`recording_job`) and fails the run with the
  scheduler's own message;
- every job is followed with ``squeue`` until its workers connect; a job that ends first
  fails the run with its state, exit code, the last line of its log and the log's path;
- a job whose workers do not connect within ``start_timeout`` seconds fails the run with its
  queue state and reason (``PENDING (Resources)``);
- a job lost after its workers connected is replaced, so a fixed-size cluster stays at its
  size and an adaptive one can scale up again (dask keeps the dead job in its plan otherwise);
- workers retire before the walltime (:func:`lifetime_args`), staggered, so their tasks are
  handed over instead of being killed mid-tile.

A failure cancels every future of the client with the message, so a run blocked on results
wakes up; :class:`ClusterLog` keeps what the run report records (job ids, lost workers,
recomputed tiles, the error). Job states are read for SLURM only; a PBS job is covered by the
submission check and the start timeout.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ClusterError
from workflows.interrupt import cancel_all

__all__ = [
    "ClusterLog",
    "JobWatch",
    "lifetime_args",
    "lifetime_seconds",
    "parse_walltime",
    "recording_job",
    "submit_message",
]

#: SLURM states after which a job runs no worker any more.
ENDED = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "TIMEOUT",
    }
)

#: Seconds a submitted job may be missing from ``squeue`` before it counts as gone.
_GRACE = 10.0


# --------------------------------------------------------------------------------------
# Walltime and worker lifetime (pure)


def parse_walltime(text: str) -> int:
    """Return a SLURM/PBS walltime in seconds.

    Accepts the scheduler forms ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM`` and
    ``D-HH:MM:SS``.

    >>> parse_walltime("01:00:00"), parse_walltime("90"), parse_walltime("1-00:30")
    (3600, 5400, 88200)
    """
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if match is None:
        raise ClusterError(f"walltime {text!r} is not [D-]HH:MM:SS; give e.g. 01:00:00")
    days, first, second, third = match.groups()
    parts = [int(p) for p in (first, second, third) if p is not None]
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = [*parts, 0, 0][:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:  # MM or MM:SS
        hours, minutes, seconds = 0, parts[0], parts[1] if len(parts) > 1 else 0
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def lifetime_seconds(walltime: str, lifetime: str | int | None = "auto") -> tuple[int, int] | None:
    """Return ``(lifetime, stagger)`` in seconds for workers of a job, or ``None`` (off).

    ``"auto"`` retires workers well before the walltime kills the job: a margin of 10 % of
    the walltime (at least a quarter of it up to 2 minutes, so short jobs keep room for a
    tile to finish) plus a stagger of 5 %, so that the workers of one job do not all leave at
    once. Worst case, a worker starts retiring at ``lifetime + stagger`` = 85-95 % of the
    walltime. A number (or ``"90s"``/``"5m"``) sets the lifetime; the stagger is then 5 % of
    it.

    >>> lifetime_seconds("01:00:00")
    (3060, 180)
    >>> lifetime_seconds("00:01:00")
    (42, 3)
    >>> lifetime_seconds("01:00:00", "20s"), lifetime_seconds("01:00:00", None)
    ((20, 1), None)
    """
    if lifetime is None:
        return None
    if lifetime == "auto":
        wall = parse_walltime(walltime)
        margin = max(0.10 * wall, min(120.0, 0.25 * wall))
        stagger = 0.05 * wall
        return int(wall - margin - stagger), int(stagger)
    from dask.utils import parse_timedelta

    seconds = int(parse_timedelta(lifetime, default="s"))  # type: ignore[no-untyped-call]
    if seconds <= 0:
        raise ClusterError(f"lifetime {lifetime!r} must be positive (or null to turn it off)")
    return seconds, int(0.05 * seconds)


def lifetime_args(walltime: str, lifetime: str | int | None = "auto") -> list[str]:
    """Worker command-line options for :func:`lifetime_seconds` (empty when off).

    The worker is not restarted in place (no ``--lifetime-restart``): its job ends with it and
    :class:`JobWatch` submits a fresh job with a full walltime.

    >>> lifetime_args("00:10:00")
    ['--lifetime', '450s', '--lifetime-stagger', '30s']
    """
    times = lifetime_seconds(walltime, lifetime)
    if times is None:
        return []
    life, stagger = times
    return ["--lifetime", f"{life}s", "--lifetime-stagger", f"{stagger}s"]


# --------------------------------------------------------------------------------------
# Submission errors


def submit_message(error: str) -> str:
    r"""Reduce dask-jobqueue's multi-line submit error to the scheduler's own words.

    >>> submit_message("Command exited...\nstderr:\nsbatch: error: invalid partition "
    ...                "specified: gpu\nsbatch: error: Batch job submission failed\n")
    'sbatch: error: invalid partition specified: gpu; sbatch: error: Batch job submission failed'
    """
    text = error.split("stderr:", 1)[-1]
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:3])[:400] or " ".join(error.split())[:400]


def recording_job(job_cls: type, failures: list[str]) -> type:
    """Return a subclass of a dask-jobqueue ``Job`` that records refused submissions.

    dask-jobqueue raises the submit error inside a background task, where it is printed as
    "Task exception was never retrieved" and the job is submitted again and again. The
    subclass appends the scheduler's message to ``failures`` instead, for :class:`JobWatch`
    to report once.
    """
    from distributed.core import Status

    async def start(self: Any) -> None:
        try:
            await job_cls.start(self)
        except RuntimeError as exc:
            failures.append(submit_message(str(exc)))
            self.status = Status.running  # nothing to cancel later: job_id stays None

    return type(job_cls.__name__, (job_cls,), {"start": start, "__module__": __name__})


# --------------------------------------------------------------------------------------
# Job states and logs (SLURM)


def slurm_states(job_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Return ``{job id: (state, reason)}`` from ``squeue``.

    Finished jobs stay listed for SLURM's ``MinJobAge``; purged ones are absent.
    """
    ids = [i for i in job_ids if i]
    if not ids:
        return {}
    try:
        result = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T|%r"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states: dict[str, tuple[str, str]] = {}
    for line in result.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    return states


def slurm_job_details(job_id: str) -> dict[str, str]:
    """Return ``scontrol show job`` fields (``ExitCode``, ``StdErr``...) or ``{}``."""
    try:
        result = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    fields: dict[str, str] = {}
    for item in result.stdout.split():
        key, sep, value = item.partition("=")
        if sep:
            fields[key] = value
    return fields


def _expand(pattern: str, job_id: str, name: str) -> str:
    return pattern.replace("%J", job_id).replace("%j", job_id).replace("%x", name)


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 8192))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    tail = [line.strip() for line in lines if line.strip()]
    return tail[-1][:300] if tail else ""


# --------------------------------------------------------------------------------------
# The record and the watch


@dataclass
class ClusterLog:
    """What a batch (or local) cluster did during a run, for the run report."""

    jobs: list[str] = field(default_factory=list)
    replaced_jobs: list[str] = field(default_factory=list)
    lost_workers: list[str] = field(default_factory=list)
    recomputed_tiles: int = 0
    error: ClusterError | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "jobs": list(self.jobs),
            "replaced_jobs": list(self.replaced_jobs),
            "lost_workers": list(self.lost_workers),
            "recomputed_tiles": self.recomputed_tiles,
            "error": None if self.error is None else str(self.error),
        }


@dataclass
class _Job:
    name: str
    job_id: str | None
    seen: float
    connected: bool = False
    listed: bool = False


class JobWatch:
    """Follow the jobs of a dask-jobqueue cluster from a background thread.

    Parameters
    ----------
    cluster
        The ``SLURMCluster``/``PBSCluster`` (built with a :func:`recording_job` class).
    client
        Its client; on failure every future of it is cancelled with the message.
    kind
        ``"slurm"`` or ``"pbs"``.
    failures
        The list the :func:`recording_job` class appends refused submissions to.
    log
        Where job ids, replaced jobs and the error go.
    fixed
        The job count to keep (a fixed-size cluster), or ``None`` when adaptive.
    start_timeout
        Seconds a job may take to connect its workers; ``None`` waits forever.
    log_directory
        Where job logs go (``cluster.<kind>.log_directory``), to name them in errors.
    interval
        Seconds between checks.
    """

    def __init__(
        self,
        cluster: Any,
        client: Any,
        kind: str,
        failures: list[str],
        log: ClusterLog,
        *,
        fixed: int | None,
        start_timeout: float | None,
        log_directory: str | None = None,
        queue: str | None = None,
        interval: float = 2.0,
        states: Callable[[Iterable[str]], dict[str, tuple[str, str]]] | None = None,
    ) -> None:
        self.cluster = cluster
        self.client = client
        self.kind = kind
        self.failures = failures
        self.log = log
        self.fixed = fixed
        self.start_timeout = start_timeout
        self.log_directory = log_directory
        self.queue = queue
        self.interval = interval
        self.states = states or (slurm_states if kind == "slurm" else None)
        self.jobs: dict[str, _Job] = {}
        self.names: dict[str, str] = {}  # worker address -> name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> JobWatch:
        """Check every ``interval`` seconds in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._loop, name="gigaseg-jobwatch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop checking (before the cluster closes, so its own cancellations are not lost)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self._lock:
                    self.check()
            except Exception as exc:  # a check must never kill the run
                if self.log.error is None and not self._stop.is_set():
                    self.log.error = ClusterError(f"watching the {self.kind} jobs failed: {exc}")
            if self.log.error is not None:
                self._cancel_all()

    def wait_for_workers(self, count: int) -> None:
        """Block until ``count`` workers are connected; raise the watch's error first."""
        while True:
            with self._lock:
                self.check()
            if self.log.error is not None:
                raise self.log.error
            if len(self._workers()) >= count:
                return
            time.sleep(min(self.interval, 1.0))

    # -- one check ------------------------------------------------------------------------

    def _workers(self) -> dict[str, str]:
        info = getattr(self.cluster, "scheduler_info", None) or {}
        workers = dict(info.get("workers", {}))
        return {addr: str(w.get("name", addr)) for addr, w in workers.items()}

    def check(self) -> None:
        """Look at submissions, job states and workers once; record or replace."""
        if self.log.error is not None or self._stop.is_set():
            return
        if self.failures:
            self.log.error = ClusterError(self._refused(self.failures[0]))
            return
        now = time.monotonic()
        names = self._follow_workers()
        self._follow_jobs(now, names)
        ids = [j.job_id for j in self.jobs.values() if j.job_id]
        states = self.states(ids) if self.states is not None else {}
        for record in list(self.jobs.values()):
            if record.job_id is not None:
                self._judge(record, states.get(record.job_id, ("", "")), now, names)
            if self.log.error is not None:
                return

    def _follow_workers(self) -> set[str]:
        """Record workers that left since the last check; return the names present."""
        workers = self._workers()
        for address in sorted(set(self.names) - set(workers)):
            self.log.lost_workers.append(self.names.pop(address))
        self.names.update(workers)
        return set(workers.values())

    def _follow_jobs(self, now: float, names: set[str]) -> None:
        """Note new jobs (and their ids) and which jobs have a worker connected."""
        for name, job in list(dict(self.cluster.workers).items()):
            job_id = getattr(job, "job_id", None)
            record = self.jobs.setdefault(str(name), _Job(str(name), job_id, now))
            if job_id and record.job_id is None:
                record.job_id, record.seen = job_id, now
            if job_id and job_id not in self.log.jobs:
                self.log.jobs.append(job_id)
            if _has_worker(record.name, names):
                record.connected = True

    def _judge(self, record: _Job, status: tuple[str, str], now: float, names: set[str]) -> None:
        """Fail on a job that died or waits too long; replace one that was lost."""
        state, reason = status
        record.listed = record.listed or bool(state)
        missing = self.states is not None and not state
        ended = state in ENDED or (missing and (record.listed or now - record.seen > _GRACE))
        if ended and not _has_worker(record.name, names):
            if record.connected:
                self._replace(record)
            else:
                self.log.error = ClusterError(self._died(record, state or "gone"))
        elif (
            not record.connected
            and self.start_timeout is not None
            and now - record.seen > self.start_timeout
        ):
            self.log.error = ClusterError(self._pending(record, state, reason))

    def _replace(self, record: _Job) -> None:
        """Drop a finished job from the cluster's plan and, if fixed-size, submit another."""
        del self.jobs[record.name]
        self.log.replaced_jobs.append(str(record.job_id))
        cluster, name, fixed = self.cluster, record.name, self.fixed

        def replace() -> None:
            for key in (name, _maybe_int(name)):
                cluster.worker_spec.pop(key, None)
                cluster.workers.pop(key, None)
            # SpecCluster names a new job after the lowest free number, which would reuse
            # the lost job's name; its own lost-worker timer, still running for that name,
            # would then cancel the replacement. Move past it.
            cluster._i = max(getattr(cluster, "_i", 0), _number(name)) + 1
            if fixed is not None:
                cluster.scale(jobs=fixed)

        cluster.loop.add_callback(replace)

    # -- messages -------------------------------------------------------------------------

    def _refused(self, message: str) -> str:
        where = (
            f"cluster.{self.kind}.queue ({self.queue})" if self.queue else f"cluster.{self.kind}"
        )
        hint = "`sinfo -s` lists partitions" if self.kind == "slurm" else "`qstat -Q` lists queues"
        return (
            f"{'sbatch' if self.kind == 'slurm' else 'qsub'} refused the worker job: {message}; "
            f"check {where}, account and directives ({hint})"
        )

    def _log_path(self, record: _Job) -> str:
        details = slurm_job_details(str(record.job_id)) if self.kind == "slurm" else {}
        job_name = details.get("JobName", "")
        pattern = details.get("StdErr")
        if pattern:
            return _expand(pattern, str(record.job_id), job_name)
        if self.log_directory:
            return str(Path(self.log_directory) / f"*-{record.job_id}.err")
        return f"slurm-{record.job_id}.out" if self.kind == "slurm" else "(the job's -e file)"

    def _died(self, record: _Job, state: str) -> str:
        details = slurm_job_details(str(record.job_id)) if self.kind == "slurm" else {}
        state = details.get("JobState", state)
        code = details.get("ExitCode")
        path = self._log_path(record)
        last = _last_line(Path(path))
        said = f"; it says: {last}" if last else ""
        return (
            f"{self.kind} job {record.job_id} ended ({state}"
            + (f", exit code {code}" if code else "")
            + f") before its worker connected; log {path}{said}; check cluster.{self.kind}."
            "python and prologue"
        )

    def _pending(self, record: _Job, state: str, reason: str) -> str:
        where = f"{state} ({reason})" if reason and reason != "None" else state or "unknown"
        return (
            f"no worker of {self.kind} job {record.job_id} connected within "
            f"{self.start_timeout:g} s (job state {where}); raise cluster.{self.kind}."
            "start_timeout, or check the queue and the job's log"
        )

    def _cancel_all(self) -> None:
        """Cancel every future of the client so that code waiting on results wakes up."""
        if self.log.error is not None:
            cancel_all(self.client, "cluster-failed", str(self.log.error))


def _has_worker(job: str, names: set[str]) -> bool:
    """Whether a worker of the job named ``job`` (``job`` or ``job-<i>``) is connected."""
    return any(name == job or name.startswith(f"{job}-") for name in names)


def _number(name: str) -> int:
    """Return the trailing number of a SpecCluster job name (``SLURMCluster-3`` -> 3), else -1."""
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _maybe_int(name: str) -> Any:
    try:
        return int(name)
    except ValueError:
        return name


def recomputed_tiles(client: Any, since: float, prefix: str = "run_tile") -> int:
    """Count tile tasks that were running on a worker when it left (so run again).

    Read from the scheduler's ``remove-worker`` events after ``since`` (a ``time.time()``).
    """
    try:
        events = client.get_events("all")
    except Exception:
        return 0
    keys: set[str] = set()
    for stamp, message in events:
        if stamp < since or not isinstance(message, dict):
            continue
        if message.get("action") != "remove-worker":
            continue
        for key in message.get("processing-tasks", ()):
            if str(key).startswith(prefix):
                keys.add(str(key))
    return len(keys)
