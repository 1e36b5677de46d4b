"""The workflow file: a pydantic model, layered settings and errors that name the key.

A workflow file (YAML) describes one job: the inputs (paths or globs, many scenes per run), the
model, tiling, inference, outputs (templated per input), vectorization, exports and the cluster.
It is checked here before any work starts; everything that needs the file system or the model
(globs, collisions, tile alignment) is checked next, in :mod:`workflows.plan`.

Settings come in layers, each overriding the one before, as dask-jobqueue's ``jobqueue.yaml``
does: the shipped ``defaults.yaml``, then the environment (``GIGASEG_WORKFLOW__TILING__TILE=512``,
values parsed as YAML), then the workflow file, then the command line (``--set tiling.tile=512``,
``--cluster slurm``). Mappings merge key by key; lists and scalars replace.

Every error names the key path, e.g. ``tiling.tile: must be a positive integer, got 'big'``, and
all problems are reported at once in one :class:`~pipeline.errors.ConfigError`.
"""

from __future__ import annotations

import difflib
import os
import re
import string
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.errors import ConfigError, short_repr
from pipeline.settings import (
    InferenceSettings,
    ReadSettings,
    TilingSettings,
    default_of,
    help_of,
)
from pipeline.vectorize.settings import VectorizeSettings
from workflows.yamlfile import load_yaml

__all__ = [
    "DEFAULTS_PATH",
    "ENV_PREFIX",
    "EXPORT_FORMATS",
    "FORMAT_NOTES",
    "PLACEHOLDERS",
    "Cluster",
    "Export",
    "Inference",
    "InputSpec",
    "JobQueue",
    "LocalSettings",
    "Output",
    "Read",
    "Tiling",
    "Vectorize",
    "Workflow",
    "format_key",
    "load_defaults",
    "load_workflow",
    "merge",
    "parse_set",
    "parse_workflow",
    "settings_from_env",
]

#: The shipped defaults, the lowest settings layer.
DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")
#: Environment variables ``GIGASEG_WORKFLOW__A__B=value`` set key ``a.b``.
ENV_PREFIX = "GIGASEG_WORKFLOW__"
#: Names usable in output templates, filled per input.
PLACEHOLDERS: dict[str, str] = {
    "dir": "output.dir (itself templated with {workflow} only)",
    "stem": "the input's file name without its extension",
    "name": "the input's file name",
    "parent": "the name of the input's folder",
    "index": "the input's position in the expanded input list (0-based)",
    "workflow": "the workflow's name (the file's stem when name is not set)",
}
#: Export formats (those of ``pipeline.vectorize``, and ``cog`` for ``pipeline.export``'s
#: raster export) and the extensions that select them; ``format: null`` in a file means
#: "from the extension" (longest extension wins).
EXPORT_FORMATS: dict[str, tuple[str, ...]] = {
    "geojson": (".geojson", ".json"),
    "geojsonseq": (".geojsons", ".geojsonl", ".geojsonseq", ".ndjson", ".jsonl"),
    "geoparquet": (".parquet", ".geoparquet"),
    "gpkg": (".gpkg",),
    "flatgeobuf": (".fgb",),
    "qupath": (".qupath.geojson", ".qupath.json"),
    "cog": (".tif", ".tiff"),
}
FORMAT_NOTES: dict[str, str] = {
    "geojson": "GeoJSON, RFC 7946 (EPSG:4326)",
    "geojsonseq": "newline-delimited GeoJSON features (EPSG:4326)",
    "geoparquet": "GeoParquet in the source CRS (fast for large outputs)",
    "gpkg": "GeoPackage in the source CRS",
    "flatgeobuf": "FlatGeobuf in the source CRS",
    "qupath": "QuPath GeoJSON for slides, level-0 pixel coordinates",
    "cog": "Cloud-Optimized GeoTIFF of the labels (or of one class's probabilities)",
}

_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")


def _doc(cls: type, name: str) -> str:
    """Return a settings field's help as a schema description (capitalised, full stop)."""
    text = help_of(cls, name)
    return text[:1].upper() + text[1:] + "."


def _parse_bytes(value: str) -> int:
    from dask.utils import parse_bytes

    try:
        return int(parse_bytes(value))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"must be a size such as 16GB or 4GiB, got {short_repr(value)}") from exc


class _Section(BaseModel):
    """Base of every section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_template(value: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as exc:
        message = f"bad template {short_repr(value)} ({exc}); use {{stem}}-style placeholders"
        raise ValueError(message) from exc
    for name in fields:
        if name not in allowed:
            valid = ", ".join("{" + a + "}" for a in allowed)
            raise ValueError(f"unknown placeholder {{{name}}} in {short_repr(value)}; use {valid}")
    return value


class InputSpec(_Section):
    """One input entry: a path or glob, with optional per-input read overrides.

    A plain string in ``inputs`` is short for ``{path: STRING}``.
    """

    path: str = Field(
        min_length=1,
        description="Path or glob (`*`, `?`, `[..]`, `**`) of scenes or slides, relative to "
        "`root`; or a URL (`http(s)://`, `s3://` (globs listed), `gs://`, `az://`), a GDAL "
        "`/vsi*/` path, or a STAC item JSON.",
    )
    bands: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, description="1-based source bands, in the model's order (overrides `read.bands`)."
    )
    level: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Slide pyramid level (overrides `read.level`)."
    )
    mpp: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Target microns per pixel for slides (overrides `read.mpp`)."
    )
    source_mpp: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Microns per level-0 pixel of this slide (overrides `read.source_mpp`)."
    )
    tissue: str | None = Field(
        None,
        description="This slide's tissue mask: a keyword or a file relative to `root` "
        "(overrides `read.tissue`).",
    )
    assets: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        description="STAC item assets to stack, by key or `eo:bands` common name "
        "(overrides `read.assets`).",
    )

    @model_validator(mode="after")
    def _level_or_mpp(self) -> InputSpec:
        if self.level is not None and self.mpp is not None:
            raise ValueError("give level or mpp, not both")
        return self


class Read(_Section):
    """How every input is read, unless an input entry overrides it."""

    bands: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, description="1-based source bands in the model's order; null: the checkpoint's."
    )
    level: Annotated[int, Field(ge=0)] | None = Field(None, description="Slide pyramid level.")
    mpp: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Target microns per pixel for slides (picks the level)."
    )
    # Defaults and descriptions of the slide options come from pipeline.settings.ReadSettings.
    source_mpp: Annotated[float, Field(gt=0)] | None = Field(
        default_of(ReadSettings, "source_mpp"), description=_doc(ReadSettings, "source_mpp")
    )
    tissue: str = Field(
        default_of(ReadSettings, "tissue"),
        description=_doc(ReadSettings, "tissue") + " (`auto|off|brightfield|fluorescence` or "
        "a file relative to `root`).",
    )
    stain: Literal["none", "macenko", "reinhard"] = Field(
        default_of(ReadSettings, "stain"), description=_doc(ReadSettings, "stain")
    )
    stain_target: str | None = Field(
        default_of(ReadSettings, "stain_target"),
        description=_doc(ReadSettings, "stain_target") + " (relative to `root`).",
    )
    strict: bool = Field(
        default_of(ReadSettings, "strict"), description=_doc(ReadSettings, "strict")
    )
    assets: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        description="STAC item assets stacked into one source, by key or `eo:bands` common "
        "name (red, green, blue, nir...), in the model's band order.",
    )

    @model_validator(mode="after")
    def _level_or_mpp(self) -> Read:
        if self.level is not None and self.mpp is not None:
            raise ValueError("give level or mpp, not both")
        if self.stain == "none" and self.stain_target is not None:
            raise ValueError("stain_target needs stain: macenko or reinhard")
        return self


class Tiling(_Section):
    """The tile grid. ``tile`` and ``patch`` must be multiples of the model's alignment."""

    # Defaults and descriptions come from pipeline.settings.TilingSettings (declared once).

    tile: Annotated[int, Field(gt=0)] = Field(
        default_of(TilingSettings, "tile"), description=_doc(TilingSettings, "tile")
    )
    patch: Literal["auto"] | Annotated[int, Field(gt=0)] = Field(
        default_of(TilingSettings, "patch"), description=_doc(TilingSettings, "patch")
    )
    halo: Literal["auto"] | Annotated[int, Field(ge=0)] = Field(
        default_of(TilingSettings, "halo"), description=_doc(TilingSettings, "halo")
    )
    batch: Literal["auto"] | Annotated[int, Field(gt=0)] = Field(
        default_of(TilingSettings, "batch"), description=_doc(TilingSettings, "batch")
    )

    @field_validator("patch", "batch", mode="before")
    @classmethod
    def _auto_or_positive(cls, value: Any) -> Any:
        if value is None:
            return "auto"  # older files: a null patch ran the tile whole
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if value == "auto" or (is_int and value > 0):
            return value
        raise ValueError(f"must be auto or an integer > 0, got {short_repr(value)}")

    @field_validator("halo", mode="before")
    @classmethod
    def _halo(cls, value: Any) -> Any:
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if value == "auto" or (is_int and value >= 0):
            return value
        raise ValueError(f"must be auto or an integer >= 0, got {short_repr(value)}")

    @model_validator(mode="after")
    def _patch_fits(self) -> Tiling:
        if isinstance(self.patch, int) and self.patch > self.tile:
            raise ValueError(f"patch ({self.patch}) must not exceed tile ({self.tile})")
        return self


class Inference(_Section):
    """Where and how the model runs."""

    # Defaults and descriptions come from pipeline.settings.InferenceSettings (declared once).

    device: str = Field(
        default_of(InferenceSettings, "device"), description=_doc(InferenceSettings, "device")
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default_of(InferenceSettings, "precision"),
        description=_doc(InferenceSettings, "precision"),
    )
    probabilities: Literal["uint8", "float16", "float32"] = Field(
        default_of(InferenceSettings, "probabilities"),
        description=_doc(InferenceSettings, "probabilities"),
    )
    threshold: Annotated[float, Field(ge=0, le=1)] = Field(
        default_of(InferenceSettings, "threshold"),
        description=_doc(InferenceSettings, "threshold"),
    )
    prefetch: Annotated[int, Field(ge=0)] = Field(
        default_of(InferenceSettings, "prefetch"),
        description=_doc(InferenceSettings, "prefetch"),
    )
    tta: Literal[1, 2, 4, 8] = Field(
        default_of(InferenceSettings, "tta"), description=_doc(InferenceSettings, "tta")
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.match(r"^(auto|cpu|mps|cuda(:\d+)?)$", value):
            raise ValueError(f"must be auto, cpu, mps, cuda or cuda:N, got {short_repr(value)}")
        return value


class Output(_Section):
    """Where results go. Templates take the placeholders listed in the schema page."""

    dir: str = Field("out", description="Output folder, `{dir}` in templates; relative to `root`.")
    store: str = Field(
        "{dir}/{stem}.zarr", description="Zarr store per input (probabilities, labels, tiles)."
    )
    report: str = Field(
        "{dir}/gigaseg-report.json", description="Run report (JSON); {dir} and {workflow} only."
    )

    @field_validator("dir")
    @classmethod
    def _dir_template(cls, value: str) -> str:
        return _check_template(value, ("workflow",))

    @field_validator("store")
    @classmethod
    def _store_template(cls, value: str) -> str:
        return _check_template(value, PLACEHOLDERS)

    @field_validator("report")
    @classmethod
    def _report_template(cls, value: str) -> str:
        return _check_template(value, ("dir", "workflow"))


class Vectorize(_Section):
    """Label raster -> polygons (or centre-lines), applied to every export.

    Defaults and descriptions come from :class:`pipeline.vectorize.settings.VectorizeSettings`,
    which the exports are given whole.
    """

    classes: list[str] | None = Field(
        default_of(VectorizeSettings, "classes"), description=_doc(VectorizeSettings, "classes")
    )
    threshold: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default_of(VectorizeSettings, "threshold"),
        description=_doc(VectorizeSettings, "threshold"),
    )
    min_area: Annotated[float, Field(ge=0)] = Field(
        default_of(VectorizeSettings, "min_area"),
        description=_doc(VectorizeSettings, "min_area"),
    )
    fill_holes: Annotated[float, Field(ge=0)] = Field(
        default_of(VectorizeSettings, "fill_holes"),
        description=_doc(VectorizeSettings, "fill_holes"),
    )
    simplify: Annotated[float, Field(ge=0)] = Field(
        default_of(VectorizeSettings, "simplify"),
        description=_doc(VectorizeSettings, "simplify"),
    )
    regularize: bool = Field(
        default_of(VectorizeSettings, "regularize"),
        description=_doc(VectorizeSettings, "regularize"),
    )
    centerlines: bool = Field(
        default_of(VectorizeSettings, "centerlines"),
        description=_doc(VectorizeSettings, "centerlines"),
    )
    connectivity: Literal[4, 8] = Field(
        default_of(VectorizeSettings, "connectivity"),
        description=_doc(VectorizeSettings, "connectivity"),
    )
    chunk: Annotated[int, Field(gt=0)] | None = Field(
        default_of(VectorizeSettings, "chunk"), description=_doc(VectorizeSettings, "chunk")
    )
    instances: Literal["boundary", "distance", "none"] | None = Field(
        default_of(VectorizeSettings, "instances"),
        description=_doc(VectorizeSettings, "instances"),
    )
    reach: Annotated[float, Field(ge=0)] | None = Field(
        default_of(VectorizeSettings, "reach"), description=_doc(VectorizeSettings, "reach")
    )
    min_separation: Annotated[float, Field(ge=0)] | None = Field(
        default_of(VectorizeSettings, "min_separation"),
        description=_doc(VectorizeSettings, "min_separation"),
    )
    marker_threshold: Annotated[float, Field(ge=0)] | None = Field(
        default_of(VectorizeSettings, "marker_threshold"),
        description=_doc(VectorizeSettings, "marker_threshold"),
    )
    min_marker_area: Annotated[float, Field(ge=0)] | None = Field(
        default_of(VectorizeSettings, "min_marker_area"),
        description=_doc(VectorizeSettings, "min_marker_area"),
    )


class Export(_Section):
    """One output per input: vector outlines, or a raster (``cog``) of the store."""

    path: str = Field(description="Output file template, e.g. `{dir}/{stem}.geojson`.")
    format: (
        Literal["geojson", "geojsonseq", "geoparquet", "gpkg", "flatgeobuf", "qupath", "cog"] | None
    ) = Field(None, description="Format; null infers it from the extension.")
    object_type: Literal["detection", "annotation"] = Field(
        "detection", description="QuPath `objectType` of exported outlines (qupath only)."
    )
    crs: str | None = Field(
        None,
        description="Output CRS of gpkg/flatgeobuf/geoparquet (e.g. `EPSG:3857`); null: the "
        "source's. GeoJSON stays EPSG:4326.",
    )
    class_name: str | None = Field(
        None, description="cog only: export this class's probabilities; null: the labels."
    )
    resampling: Literal["mode", "nearest", "average"] | None = Field(
        None,
        description="cog only: overview resampling; null: mode (labels), average (probabilities).",
    )
    compress: Literal["deflate", "zstd", "lzw"] = Field(
        "deflate", description="cog only: compression."
    )

    @field_validator("path")
    @classmethod
    def _path_template(cls, value: str) -> str:
        return _check_template(value, PLACEHOLDERS)

    @model_validator(mode="after")
    def _format_known(self) -> Export:
        if self.format is None and export_format(self.path) is None:
            raise ValueError(
                f"cannot infer the format of {self.path!r} from its extension; set format to "
                f"one of {', '.join(EXPORT_FORMATS)}"
            )
        fmt = self.resolved_format
        if fmt == "cog":
            if self.crs is not None:
                raise ValueError("crs: a cog export keeps the store's grid and CRS; drop crs")
            from pipeline.export.raster import raster_settings

            raster_settings(
                class_name=self.class_name, resampling=self.resampling, compress=self.compress
            )
        else:
            for key in ("class_name", "resampling"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: applies to cog exports only, not {fmt}")
            from pipeline.vectorize.run import parse_output_crs

            parse_output_crs(self.crs, fmt)
        return self

    @property
    def resolved_format(self) -> str:
        """The format named or inferred from the extension."""
        return self.format or export_format(self.path) or "geojson"


def export_format(path: str) -> str | None:
    """Return the export format a file extension implies, or ``None``.

    >>> export_format("{stem}.qupath.geojson"), export_format("a.parquet"), export_format("a.x")
    ('qupath', 'geoparquet', None)
    """
    name = Path(path).name.lower()
    pairs = sorted(
        ((ext, fmt) for fmt, exts in EXPORT_FORMATS.items() for ext in exts),
        key=lambda pair: -len(pair[0]),
    )
    return next((fmt for ext, fmt in pairs if name.endswith(ext)), None)


class LocalSettings(_Section):
    """A ``distributed.LocalCluster`` on this machine."""

    n_workers: Annotated[int, Field(gt=0)] | None = Field(
        None, description="Worker processes; null sizes the cluster to the machine."
    )
    threads_per_worker: Annotated[int, Field(gt=0)] | None = Field(
        None, description="Threads per worker; null sizes to the machine."
    )
    memory_limit: str | Annotated[int, Field(gt=0)] | None = Field(
        "auto", description="Per worker, e.g. `4GiB`; auto splits the machine's memory."
    )
    dashboard_address: str | None = Field(
        "127.0.0.1:0", description="Dashboard address; loopback by default, null disables it."
    )

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, str) and value != "auto":
            _parse_bytes(value)
        return value


class TlsFiles(_Section):
    """TLS certificate files (PEM) for dask's ``Security``, readable by the jobs."""

    tls_ca_file: str = Field(description="Certificate authority that signed the certificates.")
    tls_cert: str = Field(description="Certificate of this node (scheduler, workers, client).")
    tls_key: str | None = Field(None, description="Its private key, if not inside tls_cert.")


class JobQueue(_Section):
    """A batch-scheduler cluster (SLURM or PBS) through dask-jobqueue; one job = N workers."""

    queue: str | None = Field(None, description="Partition (SLURM) or queue (PBS).")
    account: str | None = Field(None, description="Account/project charged for the jobs.")
    walltime: str = Field("01:00:00", description="Per job, `[D-]HH:MM:SS`.")
    cores: Annotated[int, Field(gt=0)] | None = Field(
        None, description="Cores per job (required for slurm/pbs)."
    )
    memory: str | None = Field(
        None, description="Memory per job, e.g. `16GB` (required for slurm/pbs)."
    )
    processes: Annotated[int, Field(gt=0)] | None = Field(
        None, description="Worker processes per job; null: one per GPU, else one."
    )
    gpus: Annotated[int, Field(ge=0)] = Field(
        0,
        description="GPUs per job: `--gres=gpu:N` (SLURM) or `ngpus=N` (PBS), and a `GPU` "
        "resource on each worker.",
    )
    python: str | None = Field(
        None, description="Python of the environment the workers run; null: this one."
    )
    prologue: list[str] = Field(
        default_factory=list, description="Shell lines run before the worker (module load ...)."
    )
    directives: list[str] = Field(
        default_factory=list, description="Extra scheduler directives, e.g. `--constraint=a100`."
    )
    interface: str | None = Field(
        None,
        description="Network interface the scheduler and workers listen on, e.g. `ib0`; null: "
        "the scheduler listens on every interface.",
    )
    security: Literal["temporary"] | TlsFiles | None = Field(
        None,
        description="TLS between scheduler, workers and client: `temporary` (self-signed, "
        "written next to the run for the jobs) or `{tls_ca_file, tls_cert, tls_key}`; null: "
        "plain TCP.",
    )
    min_jobs: Annotated[int, Field(ge=0)] = Field(0, description="Adaptive minimum of jobs.")
    max_jobs: Annotated[int, Field(gt=0)] = Field(
        1, description="Adaptive maximum; equal to min_jobs for a fixed size."
    )
    log_directory: str | None = Field(None, description="Where job stdout/stderr go.")
    local_directory: str | None = Field(None, description="Workers' scratch folder.")
    death_timeout: Annotated[int, Field(gt=0)] = Field(
        60, description="Seconds a worker waits for a lost scheduler."
    )
    start_timeout: Annotated[int, Field(gt=0)] | None = Field(
        600,
        description="Seconds a submitted job may take to connect its workers (queue wait "
        "included) before the run fails naming its state; null waits forever.",
    )
    lifetime: str | Annotated[int, Field(gt=0)] | None = Field(
        "auto",
        description="Workers retire after this (seconds or `50m`), staggered, and a fresh job "
        "takes over; auto: 85-95 % of the walltime; null: never.",
    )

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value: str) -> str:
        if not _WALLTIME.match(value):
            raise ValueError(f"must look like HH:MM:SS or D-HH:MM:SS, got {short_repr(value)}")
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_bytes(value)
        return value

    @field_validator("lifetime")
    @classmethod
    def _lifetime(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, str) and value != "auto":
            from dask.utils import parse_timedelta

            try:
                seconds = parse_timedelta(value, default="s")
            except (ValueError, KeyError, TypeError):
                raise ValueError(
                    f"must be auto, null or a duration like 50m, got {value!r}"
                ) from None
            if not seconds or seconds <= 0:
                raise ValueError(f"must be a positive duration, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JobQueue:
        if self.min_jobs > self.max_jobs:
            raise ValueError(f"min_jobs ({self.min_jobs}) exceeds max_jobs ({self.max_jobs})")
        if self.cores is not None and self.worker_processes > self.cores:
            raise ValueError(
                f"processes ({self.worker_processes}) exceeds cores ({self.cores}); "
                "each worker needs a core"
            )
        if self.gpus and self.gpus % self.worker_processes:
            raise ValueError(
                f"gpus ({self.gpus}) must be a multiple of processes ({self.worker_processes}) "
                "so each worker gets whole GPUs"
            )
        return self

    @property
    def worker_processes(self) -> int:
        """Workers per job: ``processes``, else one per GPU, else one."""
        return self.processes or self.gpus or 1


class Cluster(_Section):
    """Where the work runs. ``type`` picks one of the sections below (or ``address``)."""

    type: Literal["local", "slurm", "pbs", "address"] = Field(
        "local", description="local | slurm | pbs | address (``--cluster`` overrides)."
    )
    address: str | None = Field(
        None, description="Scheduler address when type is address, e.g. `tcp://host:8786`."
    )
    local: LocalSettings = Field(default_factory=LocalSettings)  # type: ignore[arg-type]
    slurm: JobQueue = Field(default_factory=JobQueue)  # type: ignore[arg-type]
    pbs: JobQueue = Field(default_factory=JobQueue)  # type: ignore[arg-type]

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(\w+://)?[\w.\-\[\]:]+:\d+$", value):
            raise ValueError(f"must look like tcp://HOST:PORT, got {short_repr(value)}")
        return value

    def missing(self) -> list[tuple[tuple[str, ...], str]]:
        """List settings the selected cluster type needs but lacks, as (key path, message)."""
        problems: list[tuple[tuple[str, ...], str]] = []
        if self.type == "address" and not self.address:
            problems.append(
                (("cluster", "address"), "required when cluster.type is address (tcp://HOST:PORT)")
            )
        if self.type in ("slurm", "pbs"):
            queue: JobQueue = getattr(self, self.type)
            for key, example in (("cores", "8"), ("memory", "32GB")):
                if getattr(queue, key) is None:
                    problems.append(
                        (
                            ("cluster", self.type, key),
                            f"required when cluster.type is {self.type} (e.g. {example})",
                        )
                    )
        return problems

    @property
    def settings(self) -> LocalSettings | JobQueue | None:
        """The section of the selected type (``None`` for ``address``)."""
        return None if self.type == "address" else getattr(self, self.type)


class Workflow(_Section):
    """A gigaseg workflow file."""

    version: Literal[1] = Field(1, description="Workflow file format version.")
    name: str | None = Field(None, description="Run name, `{workflow}`; null: the file's stem.")
    root: str | None = Field(
        None,
        description="Folder that relative paths start from; itself relative to the workflow "
        "file's folder. null: the current directory.",
    )
    inputs: list[InputSpec] = Field(
        min_length=1, description="Scenes or slides: paths, globs, or {path, bands, level, mpp}."
    )
    model: str = Field(
        min_length=1, description="Model file: gigaseg .safetensors, TorchScript .pt/.ts, .onnx."
    )
    read: Read = Field(default_factory=Read)  # type: ignore[arg-type]
    tiling: Tiling = Field(default_factory=Tiling)  # type: ignore[arg-type]
    inference: Inference = Field(default_factory=Inference)  # type: ignore[arg-type]
    output: Output = Field(default_factory=Output)  # type: ignore[arg-type]
    vectorize: Vectorize = Field(default_factory=Vectorize)  # type: ignore[arg-type]
    exports: list[Export] = Field(
        default_factory=list, description="Vector outputs per input; empty: rasters only."
    )
    scenes_in_flight: Annotated[int, Field(gt=0)] = Field(
        4, description="Scenes predicted at once on the shared cluster (keeps it busy)."
    )
    cluster: Cluster = Field(default_factory=Cluster)  # type: ignore[arg-type]

    @field_validator("inputs", mode="before")
    @classmethod
    def _inputs_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [{"path": item} if isinstance(item, str) else item for item in value]
        return value


# --------------------------------------------------------------------------------------------
# Layers


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into ``base``: mappings key by key, anything else replaced.

    >>> merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": [1]})
    {'a': {'b': 1, 'c': 3}, 'd': [1]}
    """
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_defaults() -> dict[str, Any]:
    """Read the shipped defaults (``workflows/defaults.yaml``)."""
    data = load_yaml(DEFAULTS_PATH.read_text(), source=str(DEFAULTS_PATH))
    return dict(data or {})


def _nest(keys: Sequence[str], value: Any) -> dict[str, Any]:
    nested: Any = value
    for key in reversed(keys):
        nested = {key: nested}
    return dict(nested)


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read settings from ``GIGASEG_WORKFLOW__A__B=value`` variables (values are YAML)."""
    environ = os.environ if environ is None else environ
    layer: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__") if k]
        if keys:
            layer = merge(layer, _nest(keys, _parse_value(environ[name], name)))
    return layer


def parse_set(assignments: Iterable[str]) -> dict[str, Any]:
    """Read settings from ``KEY.PATH=VALUE`` strings (the CLI's ``--set``; values are YAML).

    >>> parse_set(["tiling.tile=512", "cluster.slurm.prologue=[module load cuda]"])
    {'tiling': {'tile': 512}, 'cluster': {'slurm': {'prologue': ['module load cuda']}}}
    """
    layer: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        keys = [k for k in key.strip().split(".") if k]
        if not sep or not keys:
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. tiling.tile=512")
        layer = merge(layer, _nest(keys, _parse_value(raw, f"--set {key}")))
    return layer


def _parse_value(raw: str, where: str) -> Any:
    return load_yaml(raw, source=f"{where}: value {short_repr(raw)}") if raw.strip() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"workflow file {path} does not exist; check the path")
    data = load_yaml(path.read_text(), source=str(path))
    if data is None:
        raise ConfigError(f"{path}: the workflow file is empty; it needs at least inputs and model")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a workflow file is a mapping of keys (inputs, model...), "
            f"got a {type(data).__name__}"
        )
    return data


def load_workflow(
    source: str | os.PathLike[str] | Mapping[str, Any] | Workflow,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Workflow, Path | None]:
    """Read, layer and validate a workflow.

    Parameters
    ----------
    source
        A YAML file, a mapping with the same keys, or a :class:`Workflow`.
    overrides
        The top layer (from the command line), as a nested mapping.
    environ
        Environment to read ``GIGASEG_WORKFLOW__*`` from; ``os.environ`` when ``None``.

    Returns
    -------
    workflow, path
        The validated workflow, and the file it came from (``None`` for a mapping).

    Raises
    ------
    ConfigError
        Listing every problem with its key path.
    """
    path: Path | None = None
    if isinstance(source, Workflow):
        data: dict[str, Any] = source.model_dump()
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        path = Path(source)
        data = _read_yaml(path)
    layered = merge(merge(load_defaults(), settings_from_env(environ)), data)
    if overrides:
        layered = merge(layered, overrides)
    if path is not None and layered.get("name") is None:
        layered["name"] = path.stem
    return parse_workflow(layered, source=str(path) if path else "workflow"), path


def parse_workflow(data: Mapping[str, Any], *, source: str = "workflow") -> Workflow:
    """Validate a layered mapping, raising one :class:`ConfigError` listing every problem.

    >>> parse_workflow({"inputs": ["a.tif"], "model": "m.safetensors"}).tiling.tile
    2048
    """
    problems: list[str] = []
    workflow: Workflow | None = None
    try:
        workflow = Workflow.model_validate(dict(data))
    except ValidationError as exc:
        problems.extend(_located_errors(exc))
    cluster: Cluster | None = workflow.cluster if workflow is not None else None
    if cluster is None and isinstance(data.get("cluster"), Mapping):
        # Other sections failed; still check the cluster so every problem shows at once.
        try:
            cluster = Cluster.model_validate(dict(data["cluster"]))
        except ValidationError:
            cluster = None  # its own errors are already listed
    if cluster is not None:
        problems.extend(f"{format_key(loc)}: {msg}" for loc, msg in cluster.missing())
    if problems:
        raise_problems(source, problems)
    assert workflow is not None  # for mypy: problems is non-empty otherwise
    return workflow


def raise_problems(source: str, problems: Sequence[str]) -> typing.NoReturn:
    """Raise a :class:`ConfigError` for one or more ``key: message`` problems."""
    head = f"{source}: " if len(problems) == 1 else f"{source}: {len(problems)} problems: "
    raise ConfigError(head + "; ".join(problems))


def format_key(loc: Sequence[str | int]) -> str:
    """Dotted key path with list indices: ``('inputs', 0, 'path')`` -> ``inputs[0].path``.

    >>> format_key(("cluster", "slurm", "memory"))
    'cluster.slurm.memory'
    """
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + part
    return text or "(top level)"


def _located_errors(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False):
        loc, model = _clean_loc(error["loc"])
        problems.append(f"{format_key(loc)}: {_message(error, loc, model)}")
    return problems


def _clean_loc(loc: Sequence[str | int]) -> tuple[list[str | int], type[BaseModel] | None]:
    """Drop pydantic's union/type tags from ``loc``; return it with the model that holds it."""
    clean: list[str | int] = []
    model: type[BaseModel] | None = Workflow
    parent: type[BaseModel] | None = Workflow
    annotation: Any = None
    for part in loc:
        if isinstance(part, int):
            clean.append(part)
            annotation = _item_type(annotation)
            model = _model_of(annotation)
            continue
        if model is not None and part in model.model_fields:
            parent = model
            clean.append(part)
            annotation = model.model_fields[part].annotation
            model = _model_of(annotation)
        elif model is not None and (not clean or part == loc[-1]):
            clean.append(part)  # an unknown key: keep it so the path names it
        # else: a union member tag such as 'literal['auto']' or 'function-after[...]'
    return clean, parent if model is None or not clean else model


def _item_type(annotation: Any) -> Any:
    for arg in _union_args(annotation):
        if typing.get_origin(arg) in (list, tuple):
            args = typing.get_args(arg)
            return args[0] if args else None
    return None


def _union_args(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(annotation)
    return (annotation,)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for arg in _union_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _message(error: Mapping[str, Any], loc: Sequence[str | int], model: Any) -> str:  # noqa: PLR0911
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        valid = sorted(model.model_fields) if model is not None else []
        key = str(loc[-1]) if loc else ""
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key; {hint}valid keys: {', '.join(valid)}"
    if kind == "missing":
        return "required key is missing"
    if kind == "too_short":
        return f"must not be empty, got {short_repr(value)}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        keys = ", ".join(sorted(model.model_fields)) if model is not None else ""
        return f"must be a mapping (keys: {keys}), got {short_repr(value)}"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    for prefix in ("Input should", "Value should", "String should", "List should"):
        if message.startswith(prefix):
            message = "must" + message[len(prefix) :]
    if kind in ("greater_than", "greater_than_equal", "less_than_equal", "less_than"):
        return f"{message[0].lower()}{message[1:]}, got {short_repr(value)}"
    if kind.endswith("_type") or kind.endswith("_parsing") or kind in ("literal_error",):
        return f"{message[0].lower()}{message[1:]}, got {short_repr(value)}"
    return message[0].lower() + message[1:] if message else kind
