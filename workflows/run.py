"""Run a workflow: every scene through predict, vectorize and export on one Dask cluster.

``run(path_or_spec)`` validates the file (schema, then globs, outputs and the model header)
before any work, starts or connects to the cluster once, and submits every scene to that one
client: scenes run concurrently from a small thread pool (``scenes_in_flight``), each calling
``pipeline.predict(..., client=client, on_tile=...)`` and then ``pipeline.vectorize`` for its
exports, so the cluster stays busy across scene boundaries and one bar counts all tiles.

Resume (``resume=True``) skips scenes whose store says ``status: complete``, skips exports
that exist and are newer than their store (or recorded as written in the previous report),
and lets ``pipeline.predict(resume=True)`` recompute only tiles not marked done. A worker
lost mid-run is handled by Dask (its tasks are recomputed elsewhere; tile writes are
idempotent), so the result does not change.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pipeline.errors import ClusterError
from pipeline.read.location import redact
from workflows.cluster import connect, describe, job_script
from workflows.exports import (
    export_settings,
    file_stamp,
    read_record,
    run_export,
    stale_reason,
    store_identity,
    write_record,
)
from workflows.interrupt import Interrupt
from workflows.jobs import ClusterLog
from workflows.plan import Plan, Scene, make_plan
from workflows.report import (
    ExportRecord,
    RunReport,
    SceneReport,
    stage_seconds,
    tile_counts,
    vectorize_seconds,
)
from workflows.spec import Workflow, load_workflow, merge

__all__ = [
    "cluster_override",
    "inference_settings",
    "plan",
    "run",
    "store_attributes",
    "store_status",
    "tiling_settings",
]


def cluster_override(cluster: str | None) -> dict[str, Any]:
    """Return the settings layer for ``--cluster``: a type name or a scheduler address."""
    if cluster is None:
        return {}
    if cluster in ("local", "slurm", "pbs"):
        return {"cluster": {"type": cluster}}
    return {"cluster": {"type": "address", "address": cluster}}


def plan(
    path_or_spec: str | os.PathLike[str] | Mapping[str, Any] | Workflow,
    *,
    cluster: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Plan:
    """Validate a workflow completely and resolve it into a :class:`~workflows.plan.Plan`.

    Nothing is computed or submitted. Raises :class:`~pipeline.errors.ConfigError` naming
    every bad key.
    """
    layer = merge(dict(overrides or {}), cluster_override(cluster))
    workflow, source = load_workflow(path_or_spec, overrides=layer, environ=environ)
    return make_plan(workflow, source=source, resume=resume, overwrite=overwrite)


def store_attributes(store: Path) -> dict[str, Any]:
    """Return a store's attributes (empty when it is absent or unreadable)."""
    from pipeline.errors import StoreError
    from pipeline.store import read_attrs

    try:
        return read_attrs(store)
    except StoreError:
        return {}


def store_status(store: Path) -> str | None:
    """Return a Zarr store's ``status`` attribute (``complete`` when finished), or ``None``."""
    status = store_attributes(store).get("status")
    return str(status) if status is not None else None


def _finished(store: Path, plan: Plan, scene: Scene | None = None) -> dict[str, Any] | None:
    """Return the attributes of a store this plan already finished, else ``None``.

    A complete store made with another model, tile size, halo, bands, precision, test-time
    augmentation, stain normalisation, threshold or probability encoding is not finished for
    this plan; predict's own resume checks then refuse it, naming the difference
    (``pipeline.store.check_resume``), rather than the run keeping its stale pixels.
    """
    attrs = store_attributes(store)
    if attrs.get("status") != "complete":
        return None
    w = plan.workflow
    inference = w.inference
    model = attrs.get("model") or {}
    expected: dict[str, tuple[Any, Any]] = {
        "threshold": (attrs.get("threshold"), float(inference.threshold)),
        "probabilities_dtype": (attrs.get("probabilities_dtype"), inference.probabilities),
        "sha256": (model.get("sha256"), plan.model.sha256 or None),
        "tile": (attrs.get("tile"), w.tiling.tile),
        "tta": (attrs.get("tta"), inference.tta),
        # ``auto``: the model's own halo, which the store records beside the halo it used
        "halo": (
            attrs.get("halo"),
            model.get("halo") if w.tiling.halo == "auto" else w.tiling.halo,
        ),
        # ``auto`` resolves per device; a named precision must be the one the store used
        "precision": (
            attrs.get("precision_requested"),
            None if inference.precision == "auto" else inference.precision,
        ),
    }
    bands = (scene.bands if scene is not None else None) or w.read.bands or plan.model.bands
    if bands is not None:
        expected["bands"] = (attrs.get("bands"), [int(b) for b in bands])
    if "stain" in attrs:
        stain = attrs.get("stain")
        method = stain.get("method") if isinstance(stain, Mapping) else None
        expected["stain"] = (method or "none", w.read.stain)
    for recorded, wanted in expected.values():
        if recorded is not None and wanted is not None and recorded != wanted:
            return None
    return attrs


def _previous_exports(report: Path) -> dict[str, dict[str, Any]]:
    """Return the exports a previous run report recorded as written, by path."""
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return {}
    found: dict[str, dict[str, Any]] = {}
    for scene in data.get("scenes", []):
        for export in scene.get("outputs", {}).get("exports", []):
            if export.get("status") in ("written", "skipped (up to date)"):
                found[str(export.get("path"))] = export
    return found


def _export_up_to_date(
    plan: Plan, path: Path, fmt: str, export: Any, store: Path, previous: Mapping[str, Any]
) -> bool:
    settings = export_settings(fmt, export, plan.workflow.vectorize)
    known = read_record(path) or previous.get(str(path))
    return stale_reason(path, store_identity(store), settings, known) is None


def _print_plan(plan: Plan, stream: IO[str], *, resume: bool, overwrite: bool) -> None:
    w = plan.workflow
    tiling = w.tiling
    model = plan.model
    lines = [
        f"workflow {plan.name}" + (f" ({plan.source})" if plan.source else ""),
        f"  model    {model.path} ({model.kind}"
        + (f", alignment {model.alignment}, halo {model.halo}" if model.alignment else "")
        + ")",
        f"  tiling   tile {tiling.tile}, patch {tiling.patch}, "
        f"halo {tiling.halo}, batch {tiling.batch}",
        f"  cluster  {describe(w.cluster)}",
        f"  mode     {'resume' if resume else 'overwrite' if overwrite else 'fresh'}",
        f"  report   {plan.report}",
        f"  scenes   {len(plan.scenes)}",
    ]
    for scene in plan.scenes:
        tiles = scene.tiles(tiling.tile)
        size = f"{scene.shape[1]}x{scene.shape[0]} px, {tiles} tiles" if scene.shape else "size ?"
        lines.append(f"    [{scene.index}] {redact(scene.source)} ({size})")
        lines.append(f"        store  {scene.store}")
        for path, fmt in scene.exports:
            lines.append(f"        export {path} ({fmt})")
    stream.write("\n".join(lines) + "\n")
    if w.cluster.type in ("slurm", "pbs"):
        stream.write(f"job script ({w.cluster.type}, not submitted):\n")
        stream.write(job_script(w.cluster, name=plan.name) + "\n")


def run(
    path_or_spec: str | os.PathLike[str] | Mapping[str, Any] | Workflow,
    *,
    cluster: str | None = None,
    resume: bool = False,
    dry_run: bool = False,
    overwrite: bool = False,
    overrides: Mapping[str, Any] | None = None,
    client: Any = None,
    progress: bool = True,
    stream: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunReport:
    """Run a workflow file (or mapping) on a local or batch cluster.

    Parameters
    ----------
    path_or_spec
        A workflow YAML file, a mapping with its keys, or a :class:`~workflows.spec.Workflow`.
    cluster
        ``"local"``, ``"slurm"``, ``"pbs"`` or a scheduler address; overrides ``cluster.type``.
    resume
        Continue an interrupted run: skip complete scenes and up-to-date exports, recompute
        only unfinished tiles.
    dry_run
        Validate and print the plan (and the batch job script) without running anything.
    overwrite
        Replace existing outputs.
    overrides
        The top settings layer, a nested mapping (the CLI's ``--set``).
    client
        An existing :class:`distributed.Client` to use instead of starting the cluster.
    progress
        Show the progress bar.
    stream
        Where the plan and the table are printed (``sys.stdout``).
    environ
        Environment for ``GIGASEG_WORKFLOW__*`` settings (``os.environ``).

    Returns
    -------
    RunReport
        Per scene and in total; also written as JSON to ``output.report``.

    Raises
    ------
    ConfigError
        Before any work, for every invalid key, missing input or colliding output.
    GigasegError, OSError
        The first scene failure, after the other scenes finished and the report was written.
    KeyboardInterrupt
        On Ctrl-C, after the work was cancelled, unfinished stores were marked
        ``interrupted``, the cluster stopped and the report written (status interrupted).
    """
    out = stream or sys.stdout
    if resume and overwrite:
        from pipeline.errors import ConfigError

        raise ConfigError("--resume and --overwrite exclude each other; pick one")
    the_plan = plan(
        path_or_spec,
        cluster=cluster,
        overrides=overrides,
        resume=resume,
        overwrite=overwrite,
        environ=environ,
    )
    workflow = the_plan.workflow
    report = RunReport(
        workflow=the_plan.name,
        cluster=(
            describe(workflow.cluster) if client is None else f"client {client.scheduler.address}"
        ),
        model={"path": str(the_plan.model.path), "sha256": the_plan.model.sha256},
        report_path=str(the_plan.report),
        source=str(the_plan.source) if the_plan.source else None,
        dry_run=dry_run,
        resume=resume,
        scenes=[SceneReport(input=redact(s.source), store=str(s.store)) for s in the_plan.scenes],
    )
    if dry_run:
        _print_plan(the_plan, out, resume=resume, overwrite=overwrite)
        for scene, record in zip(the_plan.scenes, report.scenes, strict=True):
            record.status = "planned"
            record.tiles_total = scene.tiles(workflow.tiling.tile) or 0
            record.megapixels = scene.megapixels or 0.0
            record.exports = [ExportRecord(str(p), f, "planned") for p, f in scene.exports]
        if workflow.cluster.type in ("slurm", "pbs"):
            report.job_script = job_script(workflow.cluster, name=the_plan.name)
        return report

    previous = _previous_exports(the_plan.report) if resume else {}
    started = time.perf_counter()
    report.started = datetime.now(UTC).isoformat(timespec="seconds")
    errors: list[BaseException] = []
    log = ClusterLog()
    with Interrupt() as interrupt:
        try:
            if client is not None or (resume and _nothing_to_do(the_plan, previous)):
                interrupt.client = client
                _execute(the_plan, report, client, resume, overwrite, progress, previous, errors)
            else:
                _execute_on_cluster(
                    the_plan, report, log, interrupt, resume, overwrite, progress, previous, errors
                )
        except KeyboardInterrupt:
            interrupt.received = True
    if client is None:
        report.cluster_log = log.to_dict()
    cause = _stop_cause(report, log, interrupted=interrupt.received)
    if cause is not None:
        errors.insert(0, cause)
    report.seconds = time.perf_counter() - started
    report.finished = datetime.now(UTC).isoformat(timespec="seconds")
    report.write()
    out.write(report.table() + "\n")
    if errors:
        raise errors[0]
    return report


def _stop_cause(report: RunReport, log: ClusterLog, *, interrupted: bool) -> BaseException | None:
    """Record a Ctrl-C or a cluster failure on the report; return what the run raises."""
    cause: BaseException
    if interrupted:
        # Scenes that did not finish were cancelled: their stores say so (predict marks them
        # interrupted), and so does the report; the CLI exits 130.
        report.interrupted = True
        report.error, status, cause = "interrupted (SIGINT)", "interrupted", KeyboardInterrupt()
    elif log.error is not None:
        # The cluster's failure is the cause; scene errors are its cancelled futures.
        report.error, status, cause = str(log.error), "failed", log.error
    else:
        return None
    for record in report.scenes:
        if record.status in ("failed", "pending"):
            record.status, record.error = status, report.error
    return cause


def _execute_on_cluster(
    plan: Plan,
    report: RunReport,
    log: ClusterLog,
    interrupt: Interrupt,
    resume: bool,
    overwrite: bool,
    progress: bool,
    previous: Mapping[str, Any],
    errors: list[BaseException],
) -> None:
    """Start the workflow's cluster, run every scene on it, and stop it (jobs cancelled)."""
    try:
        with connect(plan.workflow.cluster, name=plan.name, log=log) as own_client:
            interrupt.client = own_client
            _execute(plan, report, own_client, resume, overwrite, progress, previous, errors)
    except ClusterError as exc:  # the cluster never started: nothing ran
        log.error = log.error or exc


def _nothing_to_do(plan: Plan, previous: Mapping[str, Any]) -> bool:
    """Whether a resumed run has every store finished and every export up to date."""
    return all(
        _finished(scene.store, plan, scene) is not None
        and all(
            _export_up_to_date(plan, path, fmt, export, scene.store, previous)
            for (path, fmt), export in zip(scene.exports, plan.workflow.exports, strict=True)
        )
        for scene in plan.scenes
    )


def _execute(
    plan: Plan,
    report: RunReport,
    client: Any,
    resume: bool,
    overwrite: bool,
    progress: bool,
    previous: Mapping[str, Any],
    errors: list[BaseException],
) -> None:
    from workflows.progress import MemoryMonitor, RunProgress

    tile = plan.workflow.tiling.tile
    bar = RunProgress([(s.tiles(tile), s.megapixels) for s in plan.scenes], enabled=progress)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with MemoryMonitor(client) if client is not None else _NoMonitor() as memory:

            def one(pair: tuple[Scene, SceneReport]) -> None:
                scene, record = pair
                start = time.perf_counter()
                try:
                    _run_scene(plan, scene, record, client, resume, overwrite, bar, previous)
                except Exception as exc:  # recorded; the other scenes go on
                    record.status = "failed"
                    record.error = " ".join(str(exc).split()) or type(exc).__name__
                    errors.append(exc)
                finally:
                    record.seconds = time.perf_counter() - start
                    record.peak_worker_memory = _max(
                        record.peak_worker_memory, memory.peak(start, time.perf_counter())
                    )

            threads = min(plan.workflow.scenes_in_flight, max(len(plan.scenes), 1))
            with ThreadPoolExecutor(threads, thread_name_prefix="gigaseg-scene") as pool:
                list(pool.map(one, zip(plan.scenes, report.scenes, strict=True)))
    finally:
        bar.close()


class _NoMonitor:
    """Stands in for :class:`~workflows.progress.MemoryMonitor` when no cluster runs."""

    def __enter__(self) -> _NoMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def peak(self, start: float | None = None, stop: float | None = None) -> int | None:
        return None


def _max(a: int | None, b: int | None) -> int | None:
    values = [v for v in (a, b) if v is not None]
    return max(values) if values else None


def _run_scene(
    plan: Plan,
    scene: Scene,
    record: SceneReport,
    client: Any,
    resume: bool,
    overwrite: bool,
    bar: Any,
    previous: Mapping[str, Any],
) -> None:
    import pipeline
    from pipeline.export.atomic import remove_stale_temporaries
    from pipeline.settings import ReadSettings

    w = plan.workflow
    record.megapixels = scene.megapixels or 0.0
    finished = _finished(scene.store, plan, scene) if resume else None
    if finished is not None:
        record.status = "skipped (complete)"
        before = finished.get("report") or {}
        record.tiles_total = int(before.get("tiles_total") or scene.tiles(w.tiling.tile) or 0)
        record.tiles_skipped = int(before.get("tiles_skipped") or 0)
        record.tiles_resumed = record.tiles_total - record.tiles_skipped
        bar.finish_scene(scene.index)
    else:
        predicted = pipeline.predict(
            str(scene.source),
            str(plan.model.path),
            str(scene.store),
            tiling=tiling_settings(w),
            inference=inference_settings(w),
            read=ReadSettings(
                bands=scene.bands,
                level=scene.level,
                mpp=scene.mpp,
                source_mpp=scene.source_mpp,
                tissue=scene.tissue,
                stain=w.read.stain,
                stain_target=scene.stain_target,
                strict=w.read.strict,
                assets=scene.assets,
            ),
            client=client,
            resume=resume,
            overwrite=overwrite,
            progress=False,
            on_tile=bar.callback(scene.index),
        )
        data = _as_dict(predicted)
        record.predict = data
        record.stages.update(stage_seconds(data, ("read", "infer", "write")))
        counts = tile_counts(data)
        record.tiles_computed, record.tiles_skipped, record.tiles_resumed = counts[:3]
        record.tiles_total = counts[3]
        record.predict_seconds = stage_seconds(data, ("total",))["total"]
        mpx = data.get("megapixels")
        if isinstance(mpx, int | float):
            record.megapixels_computed = float(mpx)
        peak = data.get("peak_worker_memory") or data.get("peak_memory")
        if isinstance(peak, int | float):
            record.peak_worker_memory = int(peak)
        record.status = "complete"
    identity = store_identity(scene.store)
    for (path, fmt), export in zip(scene.exports, w.exports, strict=True):
        settings = export_settings(fmt, export, w.vectorize)
        entry = ExportRecord(path=str(path), format=fmt, store=identity, settings=settings)
        record.exports.append(entry)
        if resume:
            known = read_record(path) or previous.get(str(path))
            entry.reason = stale_reason(path, identity, settings, known)
            if entry.reason is None:
                entry.status = "skipped (up to date)"
                entry.file = file_stamp(path)
                remove_stale_temporaries(path)  # left by a run killed while rewriting it
                continue
        path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        made = run_export(
            scene.store, path, settings, w.vectorize, export,
            client=client, overwrite=overwrite or resume,
        )  # fmt: skip
        entry.finish(made, time.perf_counter() - start, file_stamp(path))
        write_record(path, {"path": str(path), "store": identity, "settings": settings,
                            "file": entry.file})  # fmt: skip
        seconds = {"export": entry.seconds} if fmt == "cog" else None
        for stage, value in (
            seconds or vectorize_seconds(entry.report or {}, entry.seconds)
        ).items():
            record.stages[stage] += value


def tiling_settings(workflow: Workflow) -> Any:
    """Return the ``tiling`` section as :class:`pipeline.settings.TilingSettings`."""
    from pipeline.settings import TilingSettings

    return TilingSettings(**workflow.tiling.model_dump())


def inference_settings(workflow: Workflow) -> Any:
    """Return the ``inference`` section as :class:`pipeline.settings.InferenceSettings`."""
    from pipeline.settings import InferenceSettings

    return InferenceSettings(**workflow.inference.model_dump())


def _as_dict(report: Any) -> dict[str, Any]:
    if report is None:
        return {}
    to_dict: Callable[[], Any] | None = getattr(report, "to_dict", None)
    if to_dict is not None:
        return dict(to_dict())
    if isinstance(report, Mapping):
        return dict(report)
    return {"value": repr(report)}
