"""``pipeline.predict``: read -> tile -> infer -> stitch for one large image.

The client plans the tile grid, opens the store and submits one future per tile. Each task
(:func:`run_tile`, on a worker) reads its window from the source (one handle per process),
runs the model (loaded once per process from its path, never pickled), and writes exactly its
core chunks to the store. The client consumes results with ``as_completed``: it keeps a bounded
number of tasks in flight, updates the ``tiles`` ledger and the progress bar, and marks the
store ``complete`` only when every tile is done or skipped.

This module is importable as a callable: ``pipeline.predict(source, model, store, ...)``.
"""

from __future__ import annotations

import os
import resource
import sys
import time
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import CheckpointError, ConfigError, InputError
from pipeline.infer.model import (
    ModelInfo,
    ModelRef,
    cached_model,
    describe_model,
    model_kind,
    register_loader,
    with_overrides,
)
from pipeline.infer.predictor import (
    PRECISIONS,
    Predictor,
    model_seconds,
    resolve_device,
    resolve_precision,
)
from pipeline.infer.tile import predict_tile
from pipeline.read.open import open_source
from pipeline.read.slide import SlideSource
from pipeline.read.source import Source
from pipeline.stitch.assemble import parse_probabilities, to_labels, to_stored
from pipeline.stitch.zarr_writer import (
    DONE,
    SKIPPED,
    create_store,
    mark_tiles,
    set_status,
    write_core,
)
from pipeline.tile.grid import TileGrid, TilePlan

__all__ = [
    "DEFAULT_MAX_PATCH",
    "PredictReport",
    "TileJob",
    "TileResult",
    "complete_metadata",
    "load_gigaseg",
    "predict",
    "run_tile",
]

#: The largest model call made by default; bigger tiles are cut into patches of this size.
DEFAULT_MAX_PATCH = 2048

register_loader("gigaseg", "pipeline.predict:load_gigaseg")


def _software_version() -> str:
    try:
        return version("gigaseg")
    except PackageNotFoundError:
        return "0+unknown"


# --------------------------------------------------------------------------------------
# Model loading (the only place that touches ``unet``, lazily)


def _geometry(model: Any) -> dict[str, Any]:
    return {
        "halo": int(model.halo),
        "alignment": int(model.alignment),
        "padding": str(model.padding),
        "sizes_first": int(model.valid_input_size(1)),
        "receptive_field": int(model.receptive_field),
    }


def load_gigaseg(path: str) -> tuple[Any, dict[str, Any]]:
    """Load a gigaseg checkpoint with :func:`unet.load`; return ``(model, metadata)``."""
    import unet

    try:
        model, meta = unet.load(path)
    except CheckpointError:
        raise
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{path} is not a loadable gigaseg checkpoint ({reason})") from None
    arch = dict(meta.architecture)
    info = {
        "name": Path(path).stem,
        "sha256": meta.sha256,
        "architecture": arch,
        "in_channels": arch.get("in_channels"),
        "classes": list(meta.classes),
        "outputs": arch.get("classes", len(meta.classes)),
        "activation": meta.activation,
        "bands": None if meta.bands is None else list(meta.bands),
        "mean": None if meta.mean is None else list(meta.mean),
        "std": None if meta.std is None else list(meta.std),
        **_geometry(model),
    }
    return model, info


def complete_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """Add the geometry of a gigaseg architecture to TorchScript/ONNX export metadata."""
    if not meta or meta.get("halo") is not None or not meta.get("architecture"):
        return meta
    import unet

    arch = dict(meta["architecture"])
    model = unet.UNet(**unet.Architecture.from_dict(arch).to_dict())
    arch = model.architecture.to_dict()
    out = dict(meta)
    out.update({k: v for k, v in _geometry(model).items() if out.get(k) is None})
    out.setdefault("in_channels", arch.get("in_channels"))
    if out.get("outputs") is None and arch.get("classes") is not None:
        out["outputs"] = arch["classes"]
    return out


# --------------------------------------------------------------------------------------
# The task


@dataclass(frozen=True)
class TileJob:
    """Everything one task needs (small and picklable: no pixels, no network)."""

    plan: TilePlan
    model: ModelRef
    store: str
    run_id: str
    probabilities: str
    threshold: float
    batch: int


@dataclass(frozen=True)
class TileResult:
    """What a task reports back: its index, stage seconds, memory and the precision used."""

    index: tuple[int, int]
    read_s: float
    infer_s: float
    write_s: float
    peak_rss: int
    precision: str
    pid: int


_PREDICTORS: dict[ModelRef, Predictor] = {}


def _predictor(ref: ModelRef) -> Predictor:
    if ref not in _PREDICTORS:
        network = cached_model(ref.info)
        _PREDICTORS[ref] = Predictor(
            network, ref.info, device=ref.device, precision=ref.precision, threads=ref.threads
        )
    return _PREDICTORS[ref]


def _peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def run_tile(job: TileJob, source: Source) -> TileResult:
    """Read, predict and write one tile (runs on a worker).

    ``source`` is passed beside the job so that a scattered array source (a future) is
    resolved by Dask and shipped once per worker, not once per task.
    """
    start = time.perf_counter()
    box = source.read(job.plan.read)
    read_s = time.perf_counter() - start
    predictor = _predictor(job.model)
    outputs = job.model.info.outputs or 1
    model_seconds(reset=True)
    probs = predict_tile(predictor, box, job.plan, batch=job.batch, outputs=outputs)
    infer_s = model_seconds(reset=True)  # time in the model, not waiting for it
    start = time.perf_counter()
    labels = to_labels(probs, job.model.info.activation, job.threshold)
    stored = to_stored(probs, job.probabilities)
    write_core(job.store, job.plan.core, stored, labels, job.run_id)
    write_s = time.perf_counter() - start
    return TileResult(
        job.plan.index, read_s, infer_s, write_s, _peak_rss(), predictor.precision, os.getpid()
    )


# --------------------------------------------------------------------------------------
# The report


@dataclass
class PredictReport:
    """The outcome of a run (``to_dict()`` is JSON-able)."""

    store: str
    source: str
    tiles_total: int = 0
    tiles_computed: int = 0
    tiles_skipped: int = 0
    tiles_already_done: int = 0
    megapixels: float = 0.0
    seconds: dict[str, float] = field(
        default_factory=lambda: {"read": 0.0, "infer": 0.0, "write": 0.0, "total": 0.0}
    )
    mpx_per_s: float = 0.0
    peak_worker_memory: int = 0
    precision: str = ""
    workers: int = 0
    status: str = "running"

    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain data."""
        return asdict(self)


# --------------------------------------------------------------------------------------
# Option parsing


def _parse_int(name: str, value: Any, minimum: int = 1) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} {value!r} is not an integer") from None
    if number < minimum or (number != value and not isinstance(value, str)):
        raise ConfigError(f"{name} {value!r} must be an integer >= {minimum}")
    return number


def _parse_classes(classes: Any) -> tuple[str, ...] | None:
    if classes is None:
        return None
    if isinstance(classes, int):
        return tuple(f"class{i}" for i in range(classes))
    if isinstance(classes, str):
        if classes.isdigit():
            return _parse_classes(int(classes))
        return tuple(item.strip() for item in classes.split(",") if item.strip())
    return tuple(str(item) for item in classes)


def _resolve_model(model: Any, halo: Any, classes: Any) -> tuple[ModelInfo, Any]:
    path = str(model)
    kind = model_kind(path)
    info, network = describe_model(path, kind=kind, complete=complete_metadata)
    user_halo = None if halo in (None, "auto") else _parse_int("halo", halo, minimum=0)
    info = with_overrides(info, halo=user_halo, classes=_parse_classes(classes))
    if info.halo is None:
        raise ConfigError(
            f"model {path} carries no gigaseg metadata, so its halo is unknown; give --halo N "
            "(its receptive-field radius in pixels)"
        )
    return info, network


def _probe_outputs(info: ModelInfo, network: Any, count: int) -> int:
    """Run one tiny window to learn the number of output channels of a foreign model."""
    size = info.sizes.at_least(2 * (info.halo or 0) + info.alignment)
    predictor = Predictor(network, info, device="cpu", precision="fp32")
    try:
        out = predictor.logits(np.zeros((1, count, size, size), np.float32))
    except Exception as exc:
        reason = " ".join(str(exc).split())[:160]
        raise InputError(
            f"model {info.path} cannot run on {count} band(s) ({reason}); check --bands"
        ) from None
    return int(out.shape[1])


# --------------------------------------------------------------------------------------
# Cluster


def _default_workers() -> tuple[int, int]:
    """Workers and torch threads per worker for this machine (one worker per GPU)."""
    import torch

    cores = os.cpu_count() or 1
    gpus = torch.cuda.device_count()
    if gpus:
        return gpus, max(1, cores // gpus)
    workers = max(1, cores // 8)
    return workers, max(1, cores // workers)


class _Cluster:
    """The client to submit to: a given one, a scheduler address, or a new LocalCluster."""

    def __init__(self, workers: int | None, scheduler: str | None, client: Any) -> None:
        self.owned: list[Any] = []
        self.threads: int | None = None
        if client is not None:
            self.client = client
            return
        from distributed import Client, LocalCluster

        if scheduler is not None:
            self.client = Client(scheduler)  # type: ignore[no-untyped-call]
            self.owned.append(self.client)
            return
        default_workers, threads = _default_workers()
        n_workers = default_workers if workers is None else workers
        cores = os.cpu_count() or 1
        self.threads = threads if workers is None else max(1, cores // n_workers)
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=n_workers,
            threads_per_worker=2,  # one task in the model, the next one reading
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            silence_logs=40,
        )
        self.client = Client(cluster)  # type: ignore[no-untyped-call]
        self.owned += [self.client, cluster]

    def gpu_resources(self) -> dict[str, int] | None:
        info = self.client.scheduler_info(n_workers=-1)
        gpus = [w.get("resources", {}).get("GPU", 0) for w in info["workers"].values()]
        return {"GPU": 1} if gpus and all(gpus) else None

    def slots(self) -> int:
        info = self.client.scheduler_info(n_workers=-1)
        return max(1, sum(int(w.get("nthreads", 1)) for w in info["workers"].values()))

    def close(self) -> None:
        for item in self.owned:
            item.close()


def _run_local(jobs: list[TileJob], source: Source) -> Iterator[TileResult]:
    for job in jobs:
        yield run_tile(job, source)


def _run_distributed(
    cluster: _Cluster, jobs: list[TileJob], source: Any, retries: int = 2
) -> Iterator[TileResult]:
    """Submit tiles as futures, at most ``2 x worker threads`` in flight, yield as they finish."""
    from distributed import as_completed

    client = cluster.client
    resources = cluster.gpu_resources()
    pending = iter(jobs)
    active: set[Any] = set()

    def submit(job: TileJob) -> Any:
        future = client.submit(
            run_tile, job, source, retries=retries, resources=resources, pure=False
        )
        active.add(future)
        return future

    first = [submit(job) for job in _take(pending, 2 * cluster.slots())]
    stream = as_completed(first)  # type: ignore[no-untyped-call]
    try:
        for future in stream:
            active.discard(future)
            result: TileResult = future.result()
            future.release()
            for job in _take(pending, 1):
                stream.add(submit(job))  # type: ignore[no-untyped-call]
            yield result
    finally:
        if active:
            client.cancel(list(active))


def _take(iterator: Iterator[TileJob], count: int) -> Iterator[TileJob]:
    for _ in range(count):
        try:
            yield next(iterator)
        except StopIteration:
            return


# --------------------------------------------------------------------------------------
# The entry point


def predict(
    source: Any,
    model: Any,
    store: str | Path,
    *,
    tile: int = 2048,
    patch: int | None = None,
    halo: int | str = "auto",
    batch: int = 4,
    device: str = "auto",
    precision: str = "auto",
    bands: Any = None,
    level: int | None = None,
    mpp: float | None = None,
    probabilities: str = "uint8",
    threshold: float = 0.5,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_tile: Callable[[int, int], None] | None = None,
    classes: Any = None,
    slide_backend: str = "auto",
) -> PredictReport:
    """Segment ``source`` with ``model`` tile by tile into the Zarr store ``store``.

    Parameters
    ----------
    source
        GeoTIFF/COG/VRT, slide (SVS, NDPI, pyramidal TIFF), Zarr array path, or NumPy array.
    model
        Path of a gigaseg ``.safetensors`` checkpoint, a TorchScript ``.pt``/``.ts`` or an ONNX
        ``.onnx`` file.
    store
        Output Zarr v3 group (``*.zarr``).
    tile
        Core tile of one task (a multiple of the model's alignment).
    patch
        Model call size inside a task (default: the whole tile up to
        :data:`DEFAULT_MAX_PATCH`).
    halo
        ``"auto"`` (the model's receptive-field halo) or pixels; a smaller halo than the
        model's is approximate.
    batch
        Patches per model call.
    device, precision
        ``auto|cpu|cuda|cuda:N`` and ``auto|fp32|bf16|fp16``.
    bands
        1-based source bands (default: the checkpoint's, else all).
    level, mpp
        Slide pyramid level or target microns per pixel.
    probabilities
        Stored encoding: ``uint8`` (p*255), ``float16`` or ``float32``.
    threshold
        Probability for label 1 of a one-channel (sigmoid) model; multi-class uses argmax.
    workers, scheduler, client
        A new LocalCluster with ``workers`` processes (default: sized to the machine; ``0``
        runs in this process without Dask), or a scheduler address, or an existing client.
    resume, overwrite
        Finish an interrupted store (only tiles not done) / replace an existing one.
    progress
        Show a progress bar.
    on_tile
        Called as ``on_tile(done, total)`` after each tile.
    classes
        Class names (or a count) for a model file without gigaseg metadata.
    slide_backend
        ``auto``, ``openslide`` or ``tiffslide``.

    Returns
    -------
    PredictReport
        Tiles computed/skipped, per-stage seconds, megapixels per second, peak memory.
    """
    started = time.perf_counter()
    store_path = str(Path(store).absolute())
    tile = _parse_int("tile", tile)
    patch = None if patch is None else _parse_int("patch", patch)
    batch = _parse_int("batch", batch)
    probabilities = parse_probabilities(probabilities)
    _check_options(precision, threshold, resume, overwrite, workers, device, source)
    info, src = _open_inputs(source, model, halo, classes, bands, level, mpp, slide_backend)
    grid = TileGrid(
        src.shape[0],
        src.shape[1],
        tile,
        int(info.halo or 0),
        info.alignment,
        info.sizes,
        info.padding,
    )
    if patch is None:
        patch = min(tile, DEFAULT_MAX_PATCH // info.alignment * info.alignment)
    grid.plan(0, 0, patch)  # validates the patch size

    attrs: dict[str, Any] = {
        "source": src.name,
        "source_kind": type(src).__name__,
        "bands": list(src.bands),
        "shape": list(src.shape),
        "model": info.to_dict(),
        "tile": tile,
        "patch": patch,
        "halo": info.halo,
        "precision": resolve_precision(precision, resolve_device(device)),
        "classes": list(info.classes),
        "activation": info.activation,
        "threshold": float(threshold),
        "probabilities_dtype": probabilities,
        "software": {"gigaseg": _software_version()},
        "run_id": uuid.uuid4().hex,
        **{k: v for k, v in src.georef.items() if v is not None},
    }
    ledger = create_store(
        store_path,
        shape=src.shape,
        outputs=info.outputs or 1,
        tile=tile,
        grid_shape=grid.shape,
        probabilities=probabilities,
        attrs=attrs,
        resume=resume,
        overwrite=overwrite,
    )
    report = PredictReport(store=store_path, source=src.name, tiles_total=len(grid))
    todo = _split_tiles(grid, ledger, src, store_path, attrs["run_id"], report)
    ref = ModelRef(info, device=device, precision=precision)
    jobs = [
        TileJob(
            grid.plan(r, c, patch),
            ref,
            store_path,
            attrs["run_id"],
            probabilities,
            float(threshold),
            batch,
        )
        for r, c in todo
    ]
    _execute(jobs, src, grid, report, workers, scheduler, client, progress, on_tile)
    report.precision = report.precision or attrs["precision"]
    report.seconds["total"] = time.perf_counter() - started
    report.mpx_per_s = report.megapixels / report.seconds["total"] if report.megapixels else 0.0
    set_status(
        store_path,
        "complete",
        precision=report.precision,
        report={k: v for k, v in report.to_dict().items() if k != "status"},
    )
    report.status = "complete"
    return report


def _check_options(
    precision: str,
    threshold: float,
    resume: bool,
    overwrite: bool,
    workers: int | None,
    device: str,
    source: Any,
) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"threshold {threshold} is not between 0 and 1")
    if resume and overwrite:
        raise ConfigError("give either --resume or --overwrite, not both")
    if workers is not None and int(workers) < 0:
        raise ConfigError(f"workers {workers} must be >= 0")
    resolve_device(device)
    if not isinstance(source, (np.ndarray, Source)) and not Path(str(source)).exists():
        raise InputError(f"{source} does not exist; check the path")


def _open_inputs(
    source: Any,
    model: Any,
    halo: Any,
    classes: Any,
    bands: Any,
    level: int | None,
    mpp: float | None,
    slide_backend: str,
) -> tuple[ModelInfo, Source]:
    """Resolve the model (it may choose the bands), then open the source and cross-check."""
    info, network = _resolve_model(model, halo, classes)
    src = open_source(
        source,
        bands=bands if bands is not None else info.bands,
        level=level,
        mpp=mpp,
        slide_backend=slide_backend,
    )
    if info.in_channels is not None and src.count != info.in_channels:
        raise InputError(
            f"{src.name} gives {src.count} band(s) {list(src.bands)} but model {info.path} "
            f"expects {info.in_channels}; choose bands with --bands"
        )
    if info.outputs is None:
        outputs = _probe_outputs(info, network, src.count)
        info = with_overrides(info, classes=tuple(f"class{i}" for i in range(outputs)))
    if info.mean is not None and len(info.mean) != src.count:
        raise InputError(
            f"model {info.path} normalises {len(info.mean)} band(s) but {src.name} gives "
            f"{src.count}; choose bands with --bands"
        )
    return info, src


def _split_tiles(
    grid: TileGrid, ledger: Any, src: Source, store_path: str, run_id: str, report: PredictReport
) -> list[tuple[int, int]]:
    """Return the tiles to compute; mark those without data skipped in the ledger.

    GeoTIFF tiles are skipped when their core is entirely nodata; slide tiles when their core
    grown by the halo holds no tissue.
    """
    validity = src.validity()
    margin = grid.halo if isinstance(src, SlideSource) else 0
    todo: list[tuple[int, int]] = []
    new_skips: list[tuple[int, int]] = []
    for index in grid.indices():
        state = int(ledger[index])
        if state == DONE:
            report.tiles_already_done += 1
        elif state == SKIPPED:
            report.tiles_skipped += 1
        elif validity is not None and not validity.any(grid.core(*index), margin):
            report.tiles_skipped += 1
            new_skips.append(index)
        else:
            todo.append(index)
    mark_tiles(store_path, new_skips, SKIPPED, run_id)
    return todo


def _execute(
    jobs: list[TileJob],
    src: Source,
    grid: TileGrid,
    report: PredictReport,
    workers: int | None,
    scheduler: str | None,
    client: Any,
    progress: bool,
    on_tile: Callable[[int, int], None] | None,
) -> None:
    """Run the jobs (in this process or on a cluster) and keep the ledger and report."""
    cluster = None if workers == 0 else _Cluster(workers, scheduler, client)
    bar = _progress_bar(len(jobs), progress)
    precisions: set[str] = set()
    try:
        if cluster is None:
            results = _run_local(jobs, src)
        else:
            job_source: Any = src
            if isinstance(src.__dict__.get("array"), np.ndarray):
                job_source = cluster.client.scatter(src, broadcast=True, hash=False)
            if cluster.threads is not None:
                jobs = [
                    replace(job, model=replace(job.model, threads=cluster.threads)) for job in jobs
                ]
            report.workers = len(cluster.client.scheduler_info(n_workers=-1)["workers"])
            results = _run_distributed(cluster, jobs, job_source)
        for done, result in enumerate(results, start=1):
            mark_tiles(report.store, [result.index], DONE, jobs[0].run_id)
            report.tiles_computed += 1
            report.seconds["read"] += result.read_s
            report.seconds["infer"] += result.infer_s
            report.seconds["write"] += result.write_s
            report.peak_worker_memory = max(report.peak_worker_memory, result.peak_rss)
            core = grid.core(*result.index)
            report.megapixels += core.height * core.width / 1e6
            precisions.add(result.precision)
            if bar is not None:
                bar.update(1)
            if on_tile is not None:
                on_tile(done, len(jobs))
    finally:
        if bar is not None:
            bar.close()
        if cluster is not None:
            cluster.close()
    report.precision = ",".join(sorted(precisions))


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="tile", desc="predict", file=sys.stderr)


class _CallableModule(types.ModuleType):
    """Lets ``pipeline.predict(...)`` call :func:`predict` although it is also a module."""

    def __call__(self, *args: Any, **kwargs: Any) -> PredictReport:
        return predict(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
