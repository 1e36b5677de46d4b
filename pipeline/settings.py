"""Stage settings: one frozen object per concern, each option declared once.

A run of ``predict`` is described by four small immutable objects: :class:`ReadSettings`
(which pixels), :class:`TilingSettings` (the tile grid and the model-call size),
:class:`InferenceSettings` (device, precision, stored encoding) and :class:`RunnerSettings`
(where the tasks run). They are built once at the boundary (CLI, workflow file or keyword
arguments), checked there, and passed whole to the stage.

Each field carries its default, its help text and its command-line form in its metadata, so
the ``gigaseg`` options (:mod:`workflows.commands.options`) and the workflow schema's
defaults and descriptions (:mod:`workflows.spec`) are derived from this one declaration.

Examples
--------
>>> TilingSettings(tile=1024).patch
'auto'
>>> tiling, runner = split_options({"tile": 512, "workers": 0}, TilingSettings(), RunnerSettings())
>>> tiling.tile, runner.workers
(512, 0)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any, TypeVar

from pipeline.errors import ConfigError
from pipeline.store.encoding import PROBABILITY_DTYPES

__all__ = [
    "DEVICES",
    "PRECISIONS",
    "PROBABILITIES",
    "InferenceSettings",
    "ReadSettings",
    "RunnerSettings",
    "TilingSettings",
    "default_of",
    "help_of",
    "option",
    "parse_auto_int",
    "parse_bands",
    "parse_scheduler_address",
    "split_options",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PROBABILITIES = PROBABILITY_DTYPES  # the store owns the encodings
DEVICES = "auto, cpu, cuda or cuda:N"

S = TypeVar("S")


def option(
    default: Any,
    help: str,
    *,
    cli: str | None = None,
    parse: Callable[[str], Any] | None = None,
    choices: tuple[Any, ...] | None = None,
    metavar: str | None = None,
) -> Any:
    """Declare a settings field with its help text and command-line form.

    Parameters
    ----------
    default
        The one default of the option (CLI, workflow file and Python API).
    help
        One line of help, shown by ``--help`` and in the workflow schema.
    cli
        The flag (default: ``--`` + the field name with ``-`` for ``_``); ``""`` for none.
    parse
        Turns the command-line text into the value (default: the field's own check).
    choices, metavar
        As :meth:`argparse.ArgumentParser.add_argument`.
    """
    meta = {"help": help, "cli": cli, "parse": parse, "choices": choices, "metavar": metavar}
    return field(default=default, metadata=meta)


def help_of(cls: type, name: str) -> str:
    """Return the help text of field ``name`` of a settings class."""
    return str(_field(cls, name).metadata.get("help", ""))


def default_of(cls: type, name: str) -> Any:
    """Return the default of field ``name`` of a settings class."""
    value = _field(cls, name).default
    if value is MISSING:
        raise KeyError(name)
    return value


def _field(cls: type, name: str) -> Field[Any]:
    for item in fields(cls):
        if item.name == name:
            return item
    raise KeyError(name)


def parse_auto_int(name: str, value: Any, *, minimum: int = 1) -> int | str:
    """Return ``"auto"`` or an integer ``>= minimum`` (text such as ``"512"`` accepted).

    ``None`` means ``"auto"``.

    >>> parse_auto_int("patch", "512"), parse_auto_int("patch", "auto")
    (512, 'auto')
    """
    if value is None or value == "auto":
        return "auto"
    return _parse_int(name, value, minimum, also="auto or ")


def _parse_int(name: str, value: Any, minimum: int, also: str = "") -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name} {value!r} must be {also}an integer >= {minimum}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} {value!r} must be {also}an integer >= {minimum}") from None
    if number < minimum or (isinstance(value, float) and number != value):
        raise ConfigError(f"{name} {value!r} must be {also}an integer >= {minimum}")
    return number


def parse_bands(value: Any) -> tuple[int, ...] | None:
    """1-based band numbers from ``"1,2,3"`` or a sequence; ``None`` stays ``None``.

    >>> parse_bands("3,2,1")
    (3, 2, 1)
    """
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        bands = tuple(int(str(item).strip()) for item in items if str(item).strip())
    except ValueError:
        raise ConfigError(f"bands {value!r} must be 1-based band numbers, e.g. 1,2,3") from None
    if not bands or min(bands) < 1:
        raise ConfigError(f"bands {value!r} must be 1-based band numbers, e.g. 1,2,3")
    return bands


def parse_assets(value: Any) -> tuple[str, ...] | None:
    """STAC asset keys or common names from ``"red,green,blue"`` or a sequence.

    >>> parse_assets("red, nir")
    ('red', 'nir')
    """
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    assets = tuple(str(item).strip() for item in items if str(item).strip())
    if not assets:
        raise ConfigError(f"assets {value!r} name no asset; give keys or names, e.g. red,green")
    return assets


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class ReadSettings:
    """Which pixels of the source are read."""

    bands: tuple[int, ...] | None = option(
        None, "1-based source bands in the model's order, e.g. 1,2,3 (default: the model's)"
    )
    level: int | None = option(None, "slide pyramid level", parse=int)
    mpp: float | None = option(None, "slide target microns per pixel", parse=float)
    slide_backend: str = option(
        "auto", "slide reader", cli="", choices=("auto", "openslide", "tiffslide")
    )
    source_mpp: float | None = option(
        None, "microns per level-0 pixel, for a slide that records none", parse=float
    )
    tissue: str = option(
        "auto",
        "slide tissue mask: polarity from the slide (auto), none (off), forced, or a "
        "GeoJSON/QuPath annotation or mask raster",
        metavar="auto|off|brightfield|fluorescence|FILE",
    )
    stain: str = option(
        "none",
        "slide stain normalisation, fitted once per slide on its tissue",
        choices=("none", "macenko", "reinhard"),
    )
    stain_target: str | None = option(
        None,
        "stain reference: an image or a JSON of fitted parameters (default: the model "
        "card's, else Macenko's standard H&E)",
        metavar="FILE",
    )
    strict: bool = option(
        False,
        "refuse a GeoTIFF whose pixel size differs from the model's by more than 1.5x",
    )
    assets: tuple[str, ...] | None = option(
        None,
        "STAC item assets to stack, by key or eo:bands common name, e.g. red,green,blue",
        metavar="A,B,...",
    )

    def __post_init__(self) -> None:
        _set(self, "bands", parse_bands(self.bands))
        if self.source_mpp is not None and not float(self.source_mpp) > 0:
            raise ConfigError(f"source_mpp {self.source_mpp} must be > 0 microns per pixel")
        if self.stain not in ("none", "macenko", "reinhard"):
            raise ConfigError(f"stain {self.stain!r} is not one of none, macenko, reinhard")
        if self.stain == "none" and self.stain_target is not None:
            raise ConfigError("--stain-target needs --stain macenko or reinhard")
        _set(self, "tissue", "auto" if self.tissue is None else str(self.tissue))
        _set(self, "strict", bool(self.strict))
        _set(self, "assets", parse_assets(self.assets))
        if self.level is not None:
            _set(self, "level", _parse_int("level", self.level, 0))
        if self.mpp is not None and not float(self.mpp) > 0:
            raise ConfigError(f"mpp {self.mpp} must be > 0 microns per pixel")
        if self.level is not None and self.mpp is not None:
            raise ConfigError("give --level or --mpp, not both")


@dataclass(frozen=True)
class TilingSettings:
    """The tile grid (tasks) and the model calls inside a task."""

    tile: int = option(
        2048, "core tile of one task, a multiple of the model's alignment", parse=int
    )
    patch: int | str = option(
        "auto",
        "model call size inside a task: auto (measured once per machine and model, "
        "cached; small jobs use the tile up to 2048) or pixels",
        metavar="auto|N",
    )
    halo: int | str = option(
        "auto", "context pixels per side: auto (exact, the receptive field) or pixels",
        metavar="auto|N",
    )  # fmt: skip
    batch: int | str = option(
        "auto", "patches per model call: auto (chosen with the patch) or a number",
        metavar="auto|N",
    )  # fmt: skip

    def __post_init__(self) -> None:
        _set(self, "tile", _parse_int("tile", self.tile, 1))
        _set(self, "patch", parse_auto_int("patch", self.patch))
        _set(self, "halo", parse_auto_int("halo", self.halo, minimum=0))
        _set(self, "batch", parse_auto_int("batch", self.batch))
        if isinstance(self.patch, int) and self.patch > self.tile:
            raise ConfigError(f"patch ({self.patch}) must not exceed tile ({self.tile})")


@dataclass(frozen=True)
class InferenceSettings:
    """Where and how the model runs, and how its output is stored."""

    device: str = option("auto", f"compute device: {DEVICES}")
    precision: str = option(
        "auto", "compute precision; auto is bf16 where the hardware has it", choices=PRECISIONS
    )
    probabilities: str = option("uint8", "stored probability encoding", choices=PROBABILITIES)
    threshold: float = option(
        0.5, "probability at or above which a one-class model labels a pixel", parse=float
    )
    classes: tuple[str, ...] | None = option(
        None, "class names (or a count) for a model file without gigaseg metadata"
    )
    prefetch: int = option(
        2,
        "normalised batches queued ahead of each worker's model thread (0: the model runs in "
        "the task's own thread)",
        parse=int,
    )
    tta: int = option(
        1,
        "test-time augmentation: transforms averaged (1 off, 2 flip, 4 flips, 8 dihedral)",
        parse=int,
        choices=(1, 2, 4, 8),
    )
    card: str | None = option(
        None, "model card YAML/JSON (default: MODEL.card.yaml beside the model, or embedded)"
    )

    def __post_init__(self) -> None:
        from pipeline.infer.tta import parse_tta

        _set(self, "prefetch", _parse_int("prefetch", self.prefetch, 0))
        _set(self, "tta", parse_tta(self.tta))
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.probabilities not in PROBABILITIES:
            raise ConfigError(
                f"probabilities {self.probabilities!r} is not one of {', '.join(PROBABILITIES)}"
            )
        try:
            threshold = float(self.threshold)
        except (TypeError, ValueError):
            raise ConfigError(f"threshold {self.threshold!r} is not a number") from None
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold {self.threshold} is not between 0 and 1")
        _set(self, "threshold", threshold)
        _set(self, "classes", _parse_classes(self.classes))


def _parse_classes(classes: Any) -> tuple[str, ...] | None:
    if classes is None:
        return None
    if isinstance(classes, int) and not isinstance(classes, bool):
        return tuple(f"class{i}" for i in range(classes))
    if isinstance(classes, str):
        if classes.strip().isdigit():
            return _parse_classes(int(classes))
        return tuple(item.strip() for item in classes.split(",") if item.strip())
    return tuple(str(item) for item in classes)


@dataclass(frozen=True)
class RunnerSettings:
    """Where tasks run: in this process, on a local cluster, or on a running scheduler."""

    workers: int | None = option(
        None,
        "local worker processes; 0 runs in this process (default: in process unless the "
        "machine has several GPUs or many cores)",
        parse=int,
    )
    scheduler: str | None = option(None, "address of a running Dask scheduler")
    retries: int = option(2, "times a failed task is retried on the cluster", cli="")

    def __post_init__(self) -> None:
        if self.workers is not None:
            _set(self, "workers", _parse_int("workers", self.workers, 0))
        _set(self, "retries", _parse_int("retries", self.retries, 0))
        if self.scheduler is not None and self.workers is not None:
            raise ConfigError("give --workers or --scheduler, not both")
        if self.scheduler is not None:
            _set(self, "scheduler", parse_scheduler_address(self.scheduler))


def parse_scheduler_address(address: str) -> str:
    """Check a Dask scheduler address (``tcp://HOST:PORT``, ``tls://...``) and return it.

    >>> parse_scheduler_address("tcp://127.0.0.1:8786")
    'tcp://127.0.0.1:8786'
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(str(address))
        if scheme in ("tcp", "tls"):
            parse_host_port(location)
    except (ValueError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise ConfigError(
            f"scheduler address {str(address)[:100]!r} is malformed ({reason}); "
            "give tcp://HOST:PORT"
        ) from None
    return str(address)


def split_options(options: Mapping[str, Any], *settings: Any) -> tuple[Any, ...]:
    """Apply keyword options to the settings objects that declare them.

    Each name must be a field of exactly one of ``settings``; unknown names raise a
    :class:`ConfigError` that suggests the closest one.

    Returns
    -------
    tuple
        The settings, in the order given, with the options applied (new objects).
    """
    owners: dict[str, int] = {}
    for i, item in enumerate(settings):
        for f in fields(item):
            owners[f.name] = i
    updates: list[dict[str, Any]] = [{} for _ in settings]
    for name, value in options.items():
        if name not in owners:
            close = difflib.get_close_matches(name, list(owners), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown option {name!r}{hint} (options: {', '.join(owners)})")
        updates[owners[name]][name] = value
    return tuple(
        replace(item, **update) if update else item
        for item, update in zip(settings, updates, strict=True)
    )
