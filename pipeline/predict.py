"""``pipeline.predict``: read -> tile -> infer -> stitch for one large image.

The client plans the tile grid, opens the store and submits one future per tile. Each task
(:func:`run_tile`, on a worker) reads its window from the source (one handle per process),
runs the model (loaded once per process from its path, never pickled), and writes exactly its
core chunks to the store. The client consumes results with ``as_completed``: it keeps a bounded
number of tasks in flight, updates the ``tiles`` ledger and the progress bar, and marks the
store ``complete`` only when every tile is done or skipped.

Where the tasks run (this process, a LocalCluster, a scheduler) is the runner's choice
(:mod:`pipeline.runner`); :func:`run_tile` is the per-task seam. :func:`predict` is re-exported
as ``pipeline.predict``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import (
    ApproximateWarning,
    CheckpointError,
    ConfigError,
    GigasegError,
    InputError,
    ModelOutputError,
    StoreError,
)
from pipeline.export.atomic import check_not_input
from pipeline.infer import autotune
from pipeline.infer.feed import (
    bottleneck,
    get_feed,
    note_reader_seconds,
    reader_seconds,
    recommend_readers,
)
from pipeline.infer.measure import measure_halo
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
    NonFiniteOutputError,
    Predictor,
    encode_seconds,
    model_seconds,
    resolve_device,
    resolve_precision,
)
from pipeline.infer.tile import Submitted, encode_tile
from pipeline.infer.tta import with_tta
from pipeline.read.geotiff import GeoTiffSource
from pipeline.read.location import location_exists
from pipeline.read.mask import fill_invalid, invalid_mask
from pipeline.read.open import open_source
from pipeline.read.resolution import check_resolution, geotiff_pixel_size, slide_target
from pipeline.read.slide import SlideSource
from pipeline.read.source import Source, Validity
from pipeline.read.stain import StainNormalizer, fit_slide
from pipeline.read.tissue import TissueMask, detect_tissue, parse_tissue
from pipeline.runner import Runner
from pipeline.settings import (
    InferenceSettings,
    ReadSettings,
    RunnerSettings,
    TilingSettings,
    split_options,
)
from pipeline.store import (
    DONE,
    PENDING,
    SKIPPED,
    TISSUE,
    complete_store,
    create_store,
    mark_tiles,
    set_status,
    source_id,
    write_core,
    write_mask,
)
from pipeline.store.claim import Claim, claim_store
from pipeline.store.verify import damaged_tiles
from pipeline.tile.grid import TileGrid, TilePlan, Window

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_MAX_PATCH",
    "NODATA_LABEL",
    "PredictReport",
    "TileJob",
    "TileResult",
    "complete_metadata",
    "fit_percentiles",
    "load_gigaseg",
    "predict",
    "run_tile",
    "tune_call_size",
]

#: Label stored where the source holds no data (nodata, mask band, NaN): not a class.
NODATA_LABEL = 255

#: The largest model call made by default; bigger tiles are cut into patches of this size.
DEFAULT_MAX_PATCH = 2048
#: Patches per model call when the batch is not tuned.
DEFAULT_BATCH = 4

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
        "pixel_size": meta.pixel_size,
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
    prefetch: int = 2
    tta: int = 1


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
    normalise_s: float = 0.0
    wait_s: float = 0.0
    encode_s: float = 0.0


_PREDICTORS: dict[ModelRef, Predictor] = {}
_PREDICTORS_LOCK = threading.Lock()


def _predictor(ref: ModelRef) -> Predictor:
    """Return this process's predictor for ``ref``, built once (task threads race to it)."""
    with _PREDICTORS_LOCK:
        if ref not in _PREDICTORS:
            network = cached_model(ref.info)
            _PREDICTORS[ref] = Predictor(
                network, ref.info, device=ref.device, precision=ref.precision, threads=ref.threads
            )
        return _PREDICTORS[ref]


def _peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def run_tile(job: TileJob, source: Source) -> TileResult:
    """Read, predict and write one tile (runs on a worker thread: a reader of the feed).

    ``source`` is passed beside the job so that a scattered array source (a future) is
    resolved by Dask and shipped once per worker, not once per task. With ``job.prefetch``
    the batches go through this process's :class:`~pipeline.infer.feed.Feed` (one model
    thread, a bounded queue); with 0 the model runs in this thread. Both compute the
    activation, labels and stored encoding on the model's device
    (:meth:`~pipeline.infer.predictor.Predictor.encode`), so their stores are identical.
    """
    start = time.perf_counter()
    box = source.read(job.plan.read)
    invalid = invalid_mask(source, job.plan.read, box)
    if invalid is not None:  # never fed raw: filled with the band means, stored as nodata
        box = fill_invalid(box, invalid, job.model.info.fill_values)
    read_s = time.perf_counter() - start
    predictor = _predictor(job.model)
    outputs = job.model.info.outputs or 1
    model_seconds(reset=True)
    reader_seconds(reset=True)
    encode_seconds(reset=True)
    feed = (
        get_feed(job.model, predictor, job.prefetch) if job.prefetch > 0 and job.tta == 1 else None
    )
    if job.tta > 1:  # each transform sees the whole window; averaged before encoding
        feed = None
        submit: Callable[[Any], Submitted] = functools.partial(
            _encode_tta, predictor, job.tta, job.probabilities, job.threshold
        )
    elif feed is not None:
        submit = functools.partial(
            feed.submit, probabilities=job.probabilities, threshold=job.threshold
        )
    else:
        submit = functools.partial(_encode_now, predictor, job.probabilities, job.threshold)
    try:
        stored, labels = encode_tile(
            submit, box, job.plan, batch=job.batch, outputs=outputs, dtype=job.probabilities
        )
    except NonFiniteOutputError as exc:
        _raise_nonfinite(exc, job)
    # seconds in the model (this thread's calls, or the feed thread's work for this tile)
    infer_s = model_seconds(reset=True) if feed is None else _feed_seconds(feed)
    normalise_s, wait_s = reader_seconds(reset=True)
    encode_s = encode_seconds(reset=True)  # host activation + encoding in this thread
    start = time.perf_counter()
    if invalid is not None:
        core, read = job.plan.core, job.plan.read
        hole = invalid[
            core.row_off - read.row_off : core.row_stop - read.row_off,
            core.col_off - read.col_off : core.col_stop - read.col_off,
        ]
        labels[hole] = NODATA_LABEL
        stored[:, hole] = np.nan if stored.dtype.kind == "f" else 0
    try:
        write_core(job.store, job.plan.core, stored, labels, job.run_id)
    except StoreError:
        raise
    except OSError as exc:  # disk full, quota, read-only: name the store, say what to do
        reason = exc.strerror or " ".join(str(exc).split())[:160]
        raise StoreError(
            f"cannot write tile {job.plan.index} of {job.store}: {reason}; free space there "
            "(or choose another --out) and rerun with --resume"
        ) from None
    write_s = time.perf_counter() - start
    return TileResult(
        job.plan.index,
        read_s,
        infer_s,
        write_s,
        _peak_rss(),
        predictor.precision,
        os.getpid(),
        normalise_s,
        wait_s,
        encode_s,
    )


def _raise_nonfinite(exc: NonFiniteOutputError, job: TileJob) -> None:
    """Fail the tile when the model gave NaN/Inf: stored, they would read as background."""
    core = job.plan.core
    raise ModelOutputError(
        f"model {job.model.info.path} gave {exc.count} non-finite (NaN/Inf) value(s) for tile "
        f"{job.plan.index} (rows {core.row_off}-{core.row_off + core.height}, cols "
        f"{core.col_off}-{core.col_off + core.width}); its weights may hold NaN/Inf or "
        "overflow at this precision: check the model, or try --precision fp32"
    ) from None


def _encode_now(
    predictor: Predictor, probabilities: str, threshold: float, raw: Any
) -> Future[Any]:
    """Run one batch in this thread and hand back a finished future (no feed)."""
    start = time.perf_counter()
    staged = predictor.stage(predictor.normalise(raw))
    note_reader_seconds(time.perf_counter() - start)
    future: Future[Any] = Future()
    future.set_result(predictor.encode_staged(predictor.upload(staged), probabilities, threshold))
    return future


def _encode_tta(
    predictor: Predictor, tta: int, probabilities: str, threshold: float, raw: Any
) -> Future[Any]:
    """Average ``tta`` transforms of one batch in probability space, then encode (no feed)."""
    from pipeline.stitch.assemble import to_labels
    from pipeline.store.encoding import to_stored

    probs = with_tta(predictor, tta)(raw)
    bad = int(probs.size - np.count_nonzero(np.isfinite(probs)))
    if bad:
        raise NonFiniteOutputError(bad)
    activation = predictor.info.activation
    labels = np.stack([to_labels(p, activation, threshold) for p in probs])
    future: Future[Any] = Future()
    future.set_result((to_stored(probs, probabilities), labels))
    return future


_FEED_SEEN: dict[int, float] = {}


def _feed_seconds(feed: Any) -> float:
    """Return the feed thread's busy seconds since this process last asked (a tile's share)."""
    busy = float(feed.stats().busy_s)
    with _FEED_LOCK:
        before = _FEED_SEEN.get(id(feed), 0.0)
        _FEED_SEEN[id(feed)] = busy
    return max(0.0, busy - before)


_FEED_LOCK = threading.Lock()


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
        default_factory=lambda: {
            "read": 0.0,
            "normalise": 0.0,
            "wait": 0.0,
            "encode": 0.0,
            "infer": 0.0,
            "write": 0.0,
            "total": 0.0,
        }
    )
    mpx_per_s: float = 0.0
    peak_worker_memory: int = 0
    precision: str = ""
    workers: int = 0
    halo: int = 0
    model_halo: int | None = None
    exact: bool | None = None
    status: str = "running"
    #: What bounded the run: model busy fraction, model / IO ceilings (Mpx/s), advice.
    bottleneck: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain data."""
        return asdict(self)


# --------------------------------------------------------------------------------------
# Option parsing


def _resolve_model(
    model: Any, halo: Any, classes: Any, card: Any = None
) -> tuple[ModelInfo, Any, int | None]:
    """Return the model with the user's overrides, its network, and the model's own halo.

    A card that says ``halo: measure`` has the halo probed by perturbation here.
    """
    path = str(model)
    kind = model_kind(path)
    info, network = describe_model(path, kind=kind, complete=complete_metadata, card=card)
    # the first layer's width sizes the model calls' memory (pipeline.infer.autotune)
    info = replace(info, extra={**info.extra, "width": autotune.first_width(network)})
    if info.halo is None and info.measure_halo and halo == "auto":
        forward = Predictor(network, info, device="cpu", precision="fp32").logits
        measured = measure_halo(
            forward,
            channels=int(info.in_channels or 1),
            alignment=info.alignment,
            fixed_size=info.fixed_size,
            model=Path(path).name,
        )
        info = replace(info, halo=measured.halo, receptive_field=2 * measured.radius + 1)
    model_halo = info.halo
    user_halo = None if halo == "auto" else int(halo)
    info = with_overrides(info, halo=user_halo, classes=classes)
    if info.halo is None:
        missing = ["halo", "input.layout", "output.activation"]
        if not info.classes:
            missing.append("classes")
        raise ConfigError(
            f"model {path} has no model card (none beside it as "
            f"{Path(path).stem}.card.yaml, none embedded), so these are unknown: "
            f"{', '.join(missing)}; write a card (gigaseg model-card {Path(path).name} drafts "
            "one) or give --halo N (its receptive-field radius; NCHW logits assumed)"
        )
    return info, network, model_halo


def _exactness(info: ModelInfo, model_halo: int | None) -> bool | None:
    """Whether tiles equal the whole-image result: the halo covers the receptive field.

    ``None`` when the model does not say its halo (a foreign model given ``--halo N``).
    A smaller halo is allowed but approximate: warn, and say so in the store and report.
    """
    if model_halo is None:
        return None
    used = int(info.halo or 0)
    if used >= model_halo:
        return True
    warnings.warn(
        f"halo {used} is smaller than model {info.name}'s {model_halo} (its receptive-field "
        "radius): tiles will differ from the whole-image result near their borders; the "
        "store records exact: false (use --halo auto for exact results)",
        ApproximateWarning,
        stacklevel=3,
    )
    return False


def _probe_outputs(info: ModelInfo, network: Any, count: int) -> int:
    """Run one tiny window to learn the number of output channels of a foreign model."""
    size = info.sizes.at_least(2 * (info.halo or 0) + info.alignment)
    predictor = Predictor(network, info, device="cpu", precision="fp32")
    try:
        out = predictor.logits(np.zeros((1, count, size, size), np.float32))
    except Exception as exc:
        reason = " ".join(str(exc).split())[:160]
        name = Path(info.path).name
        raise InputError(
            f"model {info.path} cannot run on {count} band(s) ({reason}); check --bands, or, "
            f"if its input is not NCHW or has a fixed size, give it a model card "
            f"(gigaseg model-card {name} drafts one)"
        ) from None
    return int(out.shape[1])


# --------------------------------------------------------------------------------------
# The entry point


def predict(
    source: Any,
    model: Any,
    store: str | Path,
    *,
    tiling: TilingSettings | None = None,
    inference: InferenceSettings | None = None,
    read: ReadSettings | None = None,
    runner: RunnerSettings | None = None,
    client: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    verify: bool = False,
    progress: bool = True,
    on_tile: Callable[[int, int], None] | None = None,
    **options: Any,
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
    tiling, inference, read, runner
        The settings objects of :mod:`pipeline.settings` (tile/patch/halo/batch;
        device/precision/probabilities/threshold/classes; bands/level/mpp/slide_backend;
        workers/scheduler/retries), passed whole from the CLI or a workflow.
    client
        An existing :class:`distributed.Client` to submit to (left running).
    resume, overwrite
        Finish an interrupted store (only tiles not done) / replace an existing one.
    verify
        With ``resume``: first check every done tile's chunks (:mod:`pipeline.store.verify`)
        and recompute the tiles whose chunks are missing or do not decode.
    progress
        Show a progress bar.
    on_tile
        Called as ``on_tile(done, total)`` after each tile.
    **options
        Any field of those settings by name (``tile=1024, workers=0``), applied on top.

    Returns
    -------
    PredictReport
        Tiles computed/skipped, per-stage seconds, megapixels per second, peak memory.
    """
    started = time.perf_counter()
    tiling, inference, read, runner = split_options(
        options,
        tiling or TilingSettings(),
        inference or InferenceSettings(),
        read or ReadSettings(),
        runner or RunnerSettings(),
    )
    store_path = str(Path(store).absolute())
    if resume and overwrite:
        raise ConfigError("give either --resume or --overwrite, not both")
    # an explicit device is checked at once; "auto" waits for the model (see _model_device)
    device = inference.device if inference.device == "auto" else resolve_device(inference.device)
    if not isinstance(source, (np.ndarray, Source)) and not location_exists(source):
        raise InputError(f"{source} does not exist; check the path")
    if not isinstance(source, (np.ndarray, Source)):
        check_not_input(store_path, source)  # --overwrite would delete its own input
    parse_tissue(read.tissue)
    run_id = uuid.uuid4().hex
    # Held until the run ends: a second run into this store fails here, at once; an
    # overwrite writes aside and replaces the old store only when complete.
    with claim_store(store_path, run_id, resume=resume, overwrite=overwrite) as claim:
        return _predict_claimed(
            claim, source, model, (tiling, inference, read, runner), device, client=client,
            resume=resume, overwrite=overwrite, verify=verify, progress=progress,
            on_tile=on_tile, started=started,
        )  # fmt: skip


def _model_device(info: ModelInfo, requested: str) -> str:
    """Return the device the model runs on: an ONNX session on the CPU, without asking torch.

    (Importing torch to look for a GPU cost an ONNX run a second of its start-up.)
    """
    return "cpu" if info.kind == "onnx" else resolve_device(requested)


def _predict_claimed(
    claim: Claim,
    source: Any,
    model: Any,
    settings: tuple[TilingSettings, InferenceSettings, ReadSettings, RunnerSettings],
    device: str,
    *,
    client: Any,
    resume: bool,
    overwrite: bool,
    verify: bool,
    progress: bool,
    on_tile: Callable[[int, int], None] | None,
    started: float,
) -> PredictReport:
    """Run :func:`predict` into a claimed store: tiles go to ``claim.path``."""
    tiling, inference, read, runner = settings
    store_path = str(claim.path)
    notes: list[str] = []
    info, src, model_halo = _open_inputs(
        source, model, tiling.halo, inference.classes, read, notes, inference.card
    )
    exact = _exactness(info, model_halo)
    device = _model_device(info, device)
    src, mask, normalizer = _tissue_and_stain(src, read, info, notes)
    grid = TileGrid(
        src.shape[0],
        src.shape[1],
        tiling.tile,
        int(info.halo or 0),
        info.alignment,
        info.sizes,
        info.padding,
    )
    with Runner(runner, client=client, tasks=len(grid)) as tasks:
        pixels = src.shape[0] * src.shape[1]
        patch, batch, tuned = _model_call_size(tiling, info, inference, tasks, src.count, pixels)
        grid.plan(0, 0, patch)  # validates the patch size
        attrs: dict[str, Any] = {
            "source": src.name,
            "source_id": source_id(src.name),
            "source_kind": type(src).__name__,
            "bands": list(src.bands),
            "shape": list(src.shape),
            "model": {**info.to_dict(), "halo": model_halo},
            "tile": tiling.tile,
            "patch": patch,
            "batch": batch,
            "patch_tuning": tuned,
            "halo": info.halo,
            "exact": exact,
            "labels_nodata": NODATA_LABEL,
            "precision": resolve_precision(inference.precision, device),
            "precision_requested": resolve_precision(inference.precision, device),
            "classes": list(info.classes),
            "class_colors": None
            if info.colors is None
            else [None if c is None else list(c) for c in info.colors],
            "activation": info.activation,
            "threshold": inference.threshold,
            "probabilities_dtype": inference.probabilities,
            "tta": inference.tta,
            "software": {"gigaseg": _software_version()},
            "run_id": claim.run_id,
            **({"nodata": src.nodata} if src.nodata is not None else {}),
            **{k: v for k, v in src.georef.to_attrs().items() if v is not None},
            "stain": None if normalizer is None else normalizer.to_dict(),
        }
        if mask is not None:
            attrs["tissue"] = mask.to_attrs()
        if notes:
            attrs["notes"] = list(notes)
        ledger = create_store(
            store_path,
            shape=src.shape,
            outputs=info.outputs or 1,
            tile=tiling.tile,
            grid_shape=grid.shape,
            probabilities=inference.probabilities,
            attrs=attrs,
            resume=resume,
            overwrite=overwrite,
        )
        if verify and resume:
            ledger = _reopen_damaged(store_path, ledger, attrs["run_id"])
        report = PredictReport(
            store=store_path,
            source=src.name,
            tiles_total=len(grid),
            halo=int(info.halo or 0),
            model_halo=model_halo,
            exact=exact,
            notes=list(notes),
        )
        try:
            # reads the whole file's mask (nodata): a corrupt block can fail here already
            validity = src.validity() if mask is None else mask.validity
            if mask is not None and mask.validity is not None:
                write_mask(store_path, TISSUE, mask.validity.mask, attrs["tissue"])
            todo = _split_tiles(grid, ledger, validity, src, store_path, attrs["run_id"], report)
        except Exception as exc:
            _mark_failed(report, exc, attrs["run_id"])
            raise
        ref = ModelRef(
            info, device=inference.device, precision=inference.precision, threads=tasks.threads
        )
        jobs = [
            TileJob(
                grid.plan(r, c, patch),
                ref,
                store_path,
                attrs["run_id"],
                inference.probabilities,
                inference.threshold,
                batch,
                inference.prefetch,
                inference.tta,
            )
            for r, c in todo
        ]
        tiles_started = time.perf_counter()
        _execute_or_mark(tasks, jobs, src, grid, report, progress, on_tile, attrs["run_id"])
        if report.tiles_computed:
            report.bottleneck = bottleneck(
                report.megapixels,
                time.perf_counter() - tiles_started,
                report.seconds["infer"],
                report.seconds["read"]
                + report.seconds["normalise"]
                + report.seconds["encode"]
                + report.seconds["write"],
                max(1, tasks.workers),
                tasks.slots(),
            )
    report.precision = report.precision or attrs["precision"]
    report.seconds["total"] = time.perf_counter() - started
    report.mpx_per_s = report.megapixels / report.seconds["total"] if report.megapixels else 0.0
    report.store = str(claim.store)
    complete_store(
        store_path,
        run_id=attrs["run_id"],
        precision=report.precision,
        report={k: v for k, v in report.to_dict().items() if k != "status"},
    )
    claim.commit()  # an overwrite's new store replaces the old one only now
    report.status = "complete"
    return report


def _mark_failed(report: PredictReport, exc: BaseException, run_id: str | None) -> None:
    """Never leave a store "running" after an error: mark it failed, and say why.

    Only this run's store; the original error is what the user must see, so a store that
    cannot be marked is left as it is.
    """
    reason = " ".join((str(exc) or type(exc).__name__).split())[:500]
    with contextlib.suppress(StoreError, OSError):
        set_status(report.store, "failed", run_id=run_id, error=reason)
    report.status = "failed"


def _execute_or_mark(
    tasks: Runner,
    jobs: list[TileJob],
    src: Source,
    grid: TileGrid,
    report: PredictReport,
    progress: bool,
    on_tile: Callable[[int, int], None] | None,
    run_id: str,
) -> None:
    """Run the tiles; a stopped run marks its store, a write error names it.

    Ctrl-C (or tasks cancelled by the workflow) marks the store ``interrupted``, never
    ``running`` or ``complete`` (``--resume`` finishes it); a task that fails marks it
    ``failed`` with the reason (:func:`_execute`), never complete. An ``OSError`` (disk full,
    quota) becomes one line naming the store.
    """
    from concurrent.futures import CancelledError

    try:
        _execute(tasks, jobs, src, grid, report, progress, on_tile)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | CancelledError):
            with contextlib.suppress(OSError):  # another run took the store over
                set_status(report.store, "interrupted", run_id=run_id)
        if isinstance(exc, OSError) and not isinstance(exc, GigasegError):
            reason = exc.strerror or " ".join(str(exc).split())[:160]
            raise StoreError(
                f"writing {report.store} failed: {reason}; free space there (or choose "
                "another --out) and rerun with --resume"
            ) from None
        raise


def _model_call_size(
    tiling: TilingSettings,
    info: ModelInfo,
    inference: InferenceSettings,
    tasks: Runner,
    channels: int,
    pixels: int,
) -> tuple[int, int, dict[str, Any] | None]:
    """Return the patch and batch of the model calls inside a task, and the tuning record.

    ``patch="auto"`` is measured once per machine + model (:mod:`pipeline.infer.autotune`)
    where the tasks run, for jobs large enough to pay for it; smaller jobs, ONNX sessions and
    valid-convolution models use the whole tile up to :data:`DEFAULT_MAX_PATCH`.
    """
    batch = None if tiling.batch == "auto" else int(tiling.batch)
    if info.fixed_size is not None:
        return _fixed_patch(info, tiling), batch or DEFAULT_BATCH, None
    width = info.extra.get("width")
    precision = resolve_precision(inference.precision, _model_device(info, inference.device))
    halo = int(info.halo or 0)

    def default_batch(patch: int) -> int:
        """:data:`DEFAULT_BATCH`, fewer where the call would not fit the memory budget."""
        window = info.sizes.at_least(patch + 2 * halo)  # same or valid padding alike
        return max(1, autotune.fit_batch(width, window, DEFAULT_BATCH, precision))

    if tiling.patch != "auto":
        return int(tiling.patch), batch or default_batch(int(tiling.patch)), None
    largest = min(tiling.tile, DEFAULT_MAX_PATCH) // info.alignment * info.alignment
    fitting = autotune.largest_fitting(
        [p for p in (largest // 4, largest // 2, largest) if p and p % info.alignment == 0],
        lambda p: p + 2 * halo,
        width,
        precision,
    )
    default = fitting[-1]
    if info.kind == "onnx" or info.padding != "same" or pixels < autotune.TUNE_MIN_PIXELS:
        return default, batch or default_batch(default), None
    ref = ModelRef(
        info, device=inference.device, precision=inference.precision, threads=tasks.threads
    )
    patch, tuned_batch, record = tasks.call(tune_call_size, ref, tiling.tile, channels)
    return patch, batch or tuned_batch, record


def _fixed_patch(info: ModelInfo, tiling: TilingSettings) -> int:
    """Return the patch of a fixed-input model (``input.size`` in its card).

    Such a model is run on windows of exactly its size: each patch core plus its halo fits
    in it, so every window is still cut from the same mirror-padded image and the output
    stays exact.
    """
    size = int(info.fixed_size or 0)
    halo = int(info.halo or 0)
    largest = (size - 2 * halo) // info.alignment * info.alignment
    if largest <= 0:
        raise ConfigError(
            f"model {info.path} takes a fixed {size}px input, which leaves no core "
            f"inside a halo of {halo}px; use a smaller --halo or a model with a larger input"
        )
    if tiling.patch == "auto":
        return min(tiling.tile, largest)
    if int(tiling.patch) > largest:
        raise ConfigError(
            f"patch {tiling.patch} plus a halo of {halo} on each side exceeds the model's fixed "
            f"{size}px input; use --patch {largest} or less"
        )
    return int(tiling.patch)


def tune_call_size(ref: ModelRef, tile: int, channels: int) -> tuple[int, int, dict[str, Any]]:
    """Measure (or recall) the fastest patch and batch for this model here (a task)."""
    predictor = _predictor(ref)
    halo = int(ref.info.halo or 0)
    key = "|".join(
        (
            autotune.machine_key(predictor.device),
            ref.info.sha256,
            predictor.device,
            predictor.precision,
            f"halo {halo}",
        )
    )
    chosen: tuple[int, int, dict[str, Any]] = autotune.choose_call_size(
        predictor,
        key=key,
        tile=tile,
        alignment=ref.info.alignment,
        halo=halo,
        channels=channels,
        window_of=lambda patch: patch + 2 * halo,
        width=ref.info.extra.get("width"),
        precision=predictor.precision,
    )
    return chosen


def _open_inputs(
    source: Any,
    model: Any,
    halo: int | str,
    classes: Any,
    read: ReadSettings,
    notes: list[str] | None = None,
    card: Any = None,
) -> tuple[ModelInfo, Source, int | None]:
    """Resolve the model (it may choose the bands), then open the source and cross-check.

    Returns the model (with the user's overrides), the source, and the model's own halo.
    The model's pixel size picks a slide's level when neither ``level`` nor ``mpp`` is given,
    and is checked against a GeoTIFF's (see :mod:`pipeline.read.resolution`); what was chosen
    is appended to ``notes``.
    """
    notes = [] if notes is None else notes
    info, network, model_halo = _resolve_model(model, halo, classes, card)
    wanted = read.bands if read.bands is not None else info.bands
    src = open_source(
        source,
        bands=wanted,
        level=read.level,
        mpp=read.mpp,
        slide_backend=read.slide_backend,
        source_mpp=read.source_mpp,
        assets=read.assets,
    )
    model_size = info.extra.get("pixel_size")
    model_size = None if model_size is None else float(model_size)
    if isinstance(src, SlideSource):
        if read.level is None and read.mpp is None:
            target, note = slide_target(model_size, src.mpp0, src.name)
            if note:
                notes.append(note)
            if target is not None:
                src = open_source(
                    source,
                    bands=wanted,
                    mpp=target,
                    slide_backend=read.slide_backend,
                    source_mpp=read.source_mpp,
                )
                how = "" if src.factor == 1.0 else f", resampled {src.factor:.3g}x"
                notes.append(
                    f"model pixel size {target:g} µm: reading {src.name} at level {src.level} "
                    f"({(src.georef.pixel_mpp or (0.0, 0.0))[0]:.4g} µm per pixel{how})"
                )
        notes.extend(src.notes)
    elif src.georef.kind == "geo":
        note = check_resolution(
            geotiff_pixel_size(src.georef), model_size, unit="m", name=src.name, strict=read.strict
        )
        if note:
            notes.append(note)
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
    if info.percentiles is not None and info.percentile_values is None:
        info = replace(info, percentile_values=fit_percentiles(src, info.percentiles))
    return info, src, model_halo


def _reopen_damaged(
    store_path: str, ledger: npt.NDArray[np.uint8], run_id: str
) -> npt.NDArray[np.uint8]:
    """Mark done tiles whose chunks are missing or corrupt pending again, so they rerun."""
    damaged = [d.index for d in damaged_tiles(store_path, ledger=ledger)]
    if damaged:
        mark_tiles(store_path, damaged, PENDING, run_id)
        ledger = ledger.copy()
        for index in damaged:
            ledger[index] = PENDING
    return ledger


def _tissue_and_stain(
    src: Source, read: ReadSettings, info: ModelInfo, notes: list[str]
) -> tuple[Source, TissueMask | None, StainNormalizer | None]:
    """Detect the slide's tissue and fit its stain normaliser; return the source to read."""
    mask = _tissue_mask(src, read.tissue)
    if mask is not None:
        notes.append(mask.note())
    normalizer = _stain(src, read, info, mask)
    if normalizer is not None:
        src = src.with_stain(normalizer)  # type: ignore[attr-defined]
        notes.append(f"stain: {read.stain} fitted on {src.name}'s tissue, applied to every tile")
    return src, mask, normalizer


def _tissue_mask(src: Source, tissue: str) -> TissueMask | None:
    """Return the tissue mask of a slide; ``None`` for other sources (nodata decides)."""
    if isinstance(src, SlideSource):
        return detect_tissue(src, tissue)
    if tissue != "auto":
        raise ConfigError(
            f"--tissue {tissue} applies to slides; {src.name} is a {type(src).__name__} whose "
            f"nodata/alpha mask decides which tiles are skipped{_as_slide_hint(src)}"
        )
    return None


def _as_slide_hint(src: Source) -> str:
    """How to read a TIFF without georeferencing as a slide, for the refusals of slide options."""
    if not isinstance(src, GeoTiffSource) or src.georef.crs is not None:
        return ""
    return "; to read this TIFF as a slide, add --level 0 (or --source-mpp UM)"


def _stain(
    src: Source, read: ReadSettings, info: ModelInfo, mask: TissueMask | None
) -> StainNormalizer | None:
    """Fit the stain normaliser of a slide (``None`` for ``--stain none``)."""
    if read.stain == "none":
        return None
    if not isinstance(src, SlideSource):
        raise ConfigError(
            f"--stain {read.stain} applies to slides; {src.name} is not a slide"
            f"{_as_slide_hint(src)}"
        )
    card = info.extra.get("stain")
    return fit_slide(src, read.stain, target=read.stain_target, card=card, tissue=mask)


def fit_percentiles(
    src: Source, percentiles: tuple[float, float], *, windows: int = 8, size: int = 256
) -> tuple[tuple[float, float], ...]:
    """Per-band ``(low, high)`` values at ``percentiles``, fitted once per source.

    Pixels come from a regular ``windows`` x ``windows`` grid of ``size``-pixel windows
    (the whole image when it is small), so the cost is bounded and the values are the same
    for every tile: percentile normalisation keeps the tiled == whole guarantee.
    """
    height, width = src.shape
    rows = np.linspace(0, max(height - size, 0), windows).astype(int)
    cols = np.linspace(0, max(width - size, 0), windows).astype(int)
    boxes = [
        src.read(Window(int(r), int(c), min(size, height), min(size, width)))
        for r in np.unique(rows)
        for c in np.unique(cols)
    ]
    pixels = np.concatenate([b.reshape(b.shape[0], -1) for b in boxes], axis=1)
    low = np.percentile(pixels, percentiles[0], axis=1)
    high = np.percentile(pixels, percentiles[1], axis=1)
    return tuple((float(a), float(b)) for a, b in zip(low, high, strict=True))


def _split_tiles(
    grid: TileGrid,
    ledger: Any,
    validity: Validity | None,
    src: Source,
    store_path: str,
    run_id: str,
    report: PredictReport,
) -> list[tuple[int, int]]:
    """Return the tiles to compute; mark those without data skipped in the ledger.

    GeoTIFF tiles are skipped when their core is entirely nodata; slide tiles when their core
    grown by the halo holds no tissue (see :mod:`pipeline.read.tissue`).
    """
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


def _readers(report: PredictReport, start: int) -> int:
    """Tasks to run at once in process: enough readers to keep the model thread busy.

    Until two tiles are measured, ``start``; then :func:`~pipeline.infer.feed.recommend_readers`
    from the model's and the readers' summed seconds (capped by the runner at one per core).
    """
    if report.tiles_computed < 2:
        return start
    seconds = report.seconds
    io_s = seconds["read"] + seconds["normalise"] + seconds["encode"] + seconds["write"]
    return recommend_readers(seconds["infer"], io_s, start)


def _execute(
    tasks: Runner,
    jobs: list[TileJob],
    src: Source,
    grid: TileGrid,
    report: PredictReport,
    progress: bool,
    on_tile: Callable[[int, int], None] | None,
) -> None:
    """Run the jobs with the runner and keep the ledger and the report."""
    precisions: set[str] = set()
    job_source: Any = src
    if isinstance(src.__dict__.get("array"), np.ndarray):
        job_source = tasks.share(src)
    report.workers = tasks.workers

    def keep(result: TileResult) -> None:
        mark_tiles(report.store, [result.index], DONE, jobs[0].run_id)
        report.tiles_computed += 1
        report.seconds["read"] += result.read_s
        report.seconds["infer"] += result.infer_s
        report.seconds["write"] += result.write_s
        report.seconds["normalise"] += result.normalise_s
        report.seconds["wait"] += result.wait_s
        report.seconds["encode"] += result.encode_s
        report.peak_worker_memory = max(report.peak_worker_memory, result.peak_rss)
        core = grid.core(*result.index)
        report.megapixels += core.height * core.width / 1e6
        precisions.add(result.precision)
        if on_tile is not None:
            on_tile(report.tiles_computed, len(jobs))

    results = tasks.map(
        run_tile,
        ((job, job_source) for job in jobs),
        total=len(jobs),
        progress=progress,
        desc="predict",
        unit="tile",
        on_result=keep,
        resources=tasks.gpu_resources(),
        width=lambda: _readers(report, tasks.slots()),
    )
    try:
        for _ in results:
            pass
    except Exception as exc:
        _mark_failed(report, exc, jobs[0].run_id if jobs else None)
        raise
    report.precision = ",".join(sorted(precisions))
