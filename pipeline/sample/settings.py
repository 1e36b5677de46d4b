"""Training-data settings (the ``data:`` section of a training config), parsed and checked."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.read.location import is_remote, redact
from pipeline.sample.region import Holdout, parse_holdout

__all__ = ["SampleSettings", "parse_sample_settings"]


@dataclass(frozen=True)
class SampleSettings:
    """Where training patches come from and how they are drawn.

    Attributes
    ----------
    images, labels
        One label file (vector or raster) per image.
    classes
        Class names; class id = index + 1 (0 is background).
    bands
        1-based bands in model order (all when ``None``).
    level
        Slide pyramid level.
    label_property
        Vector property naming each feature's class (every feature is class 1 when ``None``).
    line_width
        Width in metres that line labels (roads) are buffered to.
    boundary
        Boundary width (metres for georeferenced images, microns for slides): when set, the
        targets are interior / boundary / background (one extra ``boundary`` output channel)
        for a model whose touching objects ``vectorize --instances boundary`` separates.
    patch
        Training window size (pixels).
    holdout
        Validation band (``None``: no validation).
    foreground
        Fraction of draws centred on a labelled object.
    max_nodata
        Redraw windows with more nodata than this fraction.
    statistics_samples
        Windows read to estimate the per-band mean and std.
    """

    images: tuple[Path | str, ...]
    labels: tuple[Path | str, ...]
    classes: tuple[str, ...] = ("building",)
    bands: tuple[int, ...] | None = None
    level: int = 0
    label_property: str | None = None
    line_width: float | None = None
    boundary: float | None = None
    patch: int = 256
    holdout: Holdout | None = field(default_factory=Holdout)
    foreground: float = 0.5
    max_nodata: float = 0.5
    statistics_samples: int = 32

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able description (paths as strings, URLs without credentials)."""
        return {
            "images": [redact(p) for p in self.images],
            "labels": [redact(p) for p in self.labels],
            "classes": list(self.classes),
            "bands": None if self.bands is None else list(self.bands),
            "level": self.level,
            "label_property": self.label_property,
            "line_width": self.line_width,
            "boundary": self.boundary,
            "patch": self.patch,
            "holdout": None if self.holdout is None else self.holdout.to_dict(),
            "foreground": self.foreground,
            "max_nodata": self.max_nodata,
            "statistics_samples": self.statistics_samples,
        }


def _paths(value: Any, key: str, base: Path) -> tuple[Path | str, ...]:
    """Local paths anchored at ``base``; URLs and ``/vsi*/`` paths kept as written."""
    if isinstance(value, str | Path):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"data.{key} must be a path or a non-empty list of paths")
    out: list[Path | str] = []
    for item in value:
        if is_remote(item):
            out.append(str(item))
            continue
        path = Path(str(item))
        out.append(path if path.is_absolute() else base / path)
    return tuple(out)


def parse_sample_settings(data: dict[str, Any], base: str | Path = ".") -> SampleSettings:
    """Build :class:`SampleSettings` from a mapping; relative paths are taken from ``base``.

    Parameters
    ----------
    data
        The ``data:`` section (``images`` and ``labels`` required).
    base
        Directory relative paths are resolved against (the config file's folder).

    Returns
    -------
    SampleSettings
        The checked settings.
    """
    data = dict(data or {})
    known = {f.name for f in fields(SampleSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown data keys {unknown}; valid keys: {sorted(known)}")
    for key in ("images", "labels"):
        if key not in data:
            raise ConfigError(f"data.{key} is required (image paths and their label files)")
    base = Path(base)
    images = _paths(data.pop("images"), "images", base)
    labels = _paths(data.pop("labels"), "labels", base)
    if len(images) != len(labels):
        raise ConfigError(
            f"data.images has {len(images)} entries but data.labels has {len(labels)}; "
            "give one label file per image"
        )
    try:
        _coerce(data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad value in data settings: {exc}") from exc
    if "holdout" in data:
        data["holdout"] = parse_holdout(data["holdout"])
    if not data.get("classes", ("x",)):
        raise ConfigError("data.classes must name at least one class")
    return SampleSettings(images=images, labels=labels, **data)


def _coerce(data: dict[str, Any]) -> None:
    """Convert YAML scalars to the types :class:`SampleSettings` holds, in place."""
    if "classes" in data:
        classes = data["classes"]
        data["classes"] = (classes,) if isinstance(classes, str) else tuple(map(str, classes))
    if data.get("bands") is not None:
        data["bands"] = tuple(int(b) for b in data["bands"])
    for key in ("level", "patch", "statistics_samples"):
        if key in data:
            data[key] = int(data[key])
    for key in ("foreground", "max_nodata"):
        if key in data:
            data[key] = float(data[key])
    for key in ("line_width", "boundary"):
        if data.get(key) is not None:
            data[key] = float(data[key])
    if data.get("boundary") is not None and data["boundary"] <= 0:
        raise ValueError(f"data.boundary must be a positive width, got {data['boundary']}")
