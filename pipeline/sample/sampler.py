"""Draw training patches from large images and plan validation windows in the hold-out band.

Windows are planned from the image shape alone and then read, never the other way round: a
training draw picks a scene, a top-left corner among those whose window stays inside the image
and outside the hold-out band, reads that window, and rasterizes its labels. A fraction of the
draws is centred (with jitter) on a labelled object, so rare foreground is seen often; windows
that are mostly nodata are redrawn. Validation windows tile the hold-out band; pixels already
covered by an earlier window are marked :data:`~pipeline.sample.labels.IGNORE` so every band
pixel is scored once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError
from pipeline.sample.labels import IGNORE, LabelSource, open_labels
from pipeline.sample.region import Holdout
from pipeline.sample.source import ImageSource, open_image

__all__ = ["Patch", "PatchSampler", "Scene", "boundary_pixels", "open_scene"]


@dataclass(frozen=True)
class Scene:
    """One image and its labels on the image grid."""

    image: ImageSource
    labels: LabelSource


@dataclass(frozen=True)
class Patch:
    """A window of pixels and labels.

    Attributes
    ----------
    image
        ``(bands, h, w)`` float32 raw pixel values (not normalised).
    label
        ``(h, w)`` uint8 class ids; :data:`IGNORE` where the pixel must not be scored.
    scene, row, col
        Where the window was read: scene index and top-left pixel.
    """

    image: np.ndarray
    label: np.ndarray
    scene: int
    row: int
    col: int


def _allowed(size: int, patch: int, band: tuple[int, int] | None) -> list[tuple[int, int]]:
    """Inclusive ranges of top-left positions whose window ``[t, t + patch)`` avoids ``band``."""
    if size < patch:
        return []
    if band is None:
        return [(0, size - patch)]
    first, last = band
    ranges = []
    if first - patch >= 0:
        ranges.append((0, first - patch))
    if last <= size - patch:
        ranges.append((last, size - patch))
    return ranges


def _clamp(position: int, ranges: list[tuple[int, int]]) -> int:
    """Move ``position`` to the nearest allowed position."""
    best, distance = ranges[0][0], None
    for low, high in ranges:
        candidate = min(max(position, low), high)
        if distance is None or abs(candidate - position) < distance:
            best, distance = candidate, abs(candidate - position)
    return best


def _uniform(rng: np.random.Generator, ranges: list[tuple[int, int]]) -> int:
    sizes = np.array([high - low + 1 for low, high in ranges], dtype=float)
    pick = int(rng.choice(len(ranges), p=sizes / sizes.sum()))
    low, high = ranges[pick]
    return int(rng.integers(low, high + 1))


class PatchSampler:
    """Training patches and validation windows over one or more scenes.

    Parameters
    ----------
    scenes
        Images with their labels.
    patch
        Square training window size in pixels (a multiple of the model's alignment).
    holdout
        The band of every scene kept for validation; ``None`` trains on everything and has no
        validation windows.
    foreground
        Fraction of draws centred on a labelled object (0 = uniform positions only).
    max_nodata
        Redraw windows whose nodata fraction exceeds this (up to ``tries`` times).
    tries
        Attempts per draw before a window is accepted as it is.
    val_multiple
        Validation window sizes are rounded down to a multiple of this (the model alignment).
    """

    def __init__(
        self,
        scenes: Sequence[Scene],
        *,
        patch: int,
        holdout: Holdout | None = None,
        foreground: float = 0.5,
        max_nodata: float = 0.5,
        tries: int = 20,
        val_multiple: int = 1,
    ) -> None:
        if not scenes:
            raise ConfigError("no scenes to sample from; give at least one image with labels")
        if patch <= 0:
            raise ConfigError(f"patch must be positive, got {patch}")
        if not 0.0 <= foreground <= 1.0:
            raise ConfigError(f"foreground must be in [0, 1], got {foreground}")
        self.scenes = tuple(scenes)
        self.patch = patch
        self.holdout = holdout
        self.foreground = foreground
        self.max_nodata = max_nodata
        self.tries = max(1, tries)
        self.val_multiple = max(1, val_multiple)
        self._rows: list[list[tuple[int, int]]] = []
        self._cols: list[list[tuple[int, int]]] = []
        self._centres: list[np.ndarray] = []
        weights = []
        for scene in self.scenes:
            height, width = scene.image.height, scene.image.width
            band = holdout.pixels(height, width) if holdout else None
            rows = _allowed(height, patch, band if holdout and holdout.axis == "rows" else None)
            cols = _allowed(width, patch, band if holdout and holdout.axis == "cols" else None)
            self._rows.append(rows)
            self._cols.append(cols)
            weights.append(
                sum(h - lo + 1 for lo, h in rows) * sum(h - lo + 1 for lo, h in cols)
                if rows and cols
                else 0
            )
            centres = scene.labels.centres()
            if holdout is not None and len(centres):
                inside = np.array(
                    [holdout.contains(height, width, r, c) for r, c in centres], dtype=bool
                )
                centres = centres[~inside]
            self._centres.append(centres)
        total = float(sum(weights))
        if total == 0:
            raise ConfigError(
                f"no {patch}x{patch} training window fits outside the hold-out band of any image "
                "(image too small); lower 'patch' or narrow 'holdout'"
            )
        self._weights = np.array(weights, dtype=float) / total

    def _window(self, rng: np.random.Generator, index: int) -> tuple[int, int]:
        rows, cols = self._rows[index], self._cols[index]
        centres = self._centres[index]
        if len(centres) and rng.random() < self.foreground:
            centre_row, centre_col = centres[int(rng.integers(len(centres)))]
            jitter = self.patch // 4
            row = int(centre_row) - self.patch // 2 + int(rng.integers(-jitter, jitter + 1))
            col = int(centre_col) - self.patch // 2 + int(rng.integers(-jitter, jitter + 1))
            return _clamp(row, rows), _clamp(col, cols)
        return _uniform(rng, rows), _uniform(rng, cols)

    def draw(self, rng: np.random.Generator) -> Patch:
        """Draw one training patch.

        Parameters
        ----------
        rng
            The random generator; the same generator state gives the same patch.

        Returns
        -------
        Patch
            Pixels and labels of a window outside the hold-out band.
        """
        index = int(rng.choice(len(self.scenes), p=self._weights))
        scene = self.scenes[index]
        for _ in range(self.tries):
            row, col = self._window(rng, index)
            pixels, valid = scene.image.read(row, col, self.patch, self.patch)
            if 1.0 - valid.mean() <= self.max_nodata:
                break
        label = scene.labels.window(row, col, self.patch, self.patch)
        label = np.where(valid, label, IGNORE).astype(np.uint8)
        return Patch(pixels, label, index, row, col)

    def validation(self, size: int | None = None) -> Iterator[Patch]:
        """Yield windows that tile the hold-out band of every scene, each pixel scored once.

        Parameters
        ----------
        size
            Window size (defaults to ``patch``); rounded down to ``val_multiple`` and capped
            by the band and image size.

        Yields
        ------
        Patch
            Windows inside the band; overlapping pixels of later windows are :data:`IGNORE`.
        """
        if self.holdout is None:
            return
        size = size or self.patch
        for index, scene in enumerate(self.scenes):
            height, width = scene.image.height, scene.image.width
            first, last = self.holdout.pixels(height, width)
            if self.holdout.axis == "rows":
                region = (first, last, 0, width)
            else:
                region = (0, height, first, last)
            row0, row1, col0, col1 = region
            win_h = self._fit(size, row1 - row0)
            win_w = self._fit(size, col1 - col0)
            if win_h == 0 or win_w == 0:
                continue
            covered = np.zeros((row1 - row0, col1 - col0), dtype=bool)
            for row in _starts(row0, row1, win_h):
                for col in _starts(col0, col1, win_w):
                    pixels, valid = scene.image.read(row, col, win_h, win_w)
                    label = scene.labels.window(row, col, win_h, win_w)
                    seen = covered[row - row0 : row - row0 + win_h, col - col0 : col - col0 + win_w]
                    keep = valid & ~seen
                    seen[...] = True
                    yield Patch(
                        pixels, np.where(keep, label, IGNORE).astype(np.uint8), index, row, col
                    )

    def _fit(self, size: int, extent: int) -> int:
        return (min(size, extent) // self.val_multiple) * self.val_multiple

    def statistics(
        self, rng: np.random.Generator, samples: int = 32
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Estimate per-band mean and standard deviation from valid pixels of training draws.

        Parameters
        ----------
        rng
            The random generator.
        samples
            Number of training windows to read.

        Returns
        -------
        mean, std
            One value per band (std is at least 1e-6).
        """
        total: np.ndarray | None = None
        squares: np.ndarray | None = None
        count = 0
        for _ in range(samples):
            patch = self.draw(rng)
            valid = patch.label != IGNORE
            values = patch.image[:, valid].astype(np.float64)
            total = values.sum(axis=1) if total is None else total + values.sum(axis=1)
            squares = (
                (values**2).sum(axis=1) if squares is None else squares + (values**2).sum(axis=1)
            )
            count += values.shape[1]
        if total is None or squares is None or count == 0:
            raise ConfigError("no valid pixels found to estimate normalisation; check nodata")
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
        return tuple(float(v) for v in mean), tuple(float(max(v, 1e-6)) for v in std)

    def close(self) -> None:
        """Close every image and label source that can be closed."""
        for scene in self.scenes:
            for item in (scene.image, scene.labels):
                close = getattr(item, "close", None)
                if close is not None:
                    close()


def _starts(first: int, last: int, size: int) -> list[int]:
    starts = list(range(first, last - size + 1, size))
    if not starts or starts[-1] + size < last:
        starts.append(last - size)
    return starts


def boundary_pixels(image: ImageSource, width: float) -> float:
    """Convert a boundary width in metres (georeferenced) or microns (slides) to image pixels.

    Parameters
    ----------
    image
        The image: its georeference gives metres per pixel (projected CRS) or microns per
        pixel of the level read (slides that record their mpp).
    width
        The width in metres or microns.

    Returns
    -------
    float
        The width in pixels of the image grid.
    """
    georef = image.georef
    if georef.kind == "slide":
        if georef.pixel_mpp is None:
            raise ConfigError(
                f"{image.path} records no microns per pixel, so a boundary width in microns "
                "cannot be converted to pixels; use a slide with an mpp property"
            )
        return width / georef.pixel_mpp[0]
    crs = georef.crs_obj
    if crs is None:
        raise ConfigError(
            f"{image.path} has no georeference, so a boundary width in metres cannot be "
            "converted to pixels; use a georeferenced image"
        )
    if crs.is_geographic:
        raise ConfigError(
            f"boundary width is in metres but {image.path} is in geographic coordinates; "
            "reproject the image to a projected CRS"
        )
    return width / abs(georef.transform.a)


def open_scene(
    image: str | Path,
    labels: str | Path,
    *,
    classes: Sequence[str] = ("building",),
    bands: tuple[int, ...] | None = None,
    level: int = 0,
    label_property: str | None = None,
    line_width: float | None = None,
    boundary: float | None = None,
) -> Scene:
    """Open an image and its labels (vector file or label raster) as a :class:`Scene`.

    Parameters
    ----------
    image
        GeoTIFF/COG/VRT or slide.
    labels
        GeoJSON/GeoPackage (reprojected to the image CRS) or a label raster.
    classes
        Class names; class id = index + 1.
    bands
        1-based bands in model order; all when ``None``.
    level
        Slide pyramid level.
    label_property
        Vector property naming each feature's class.
    line_width
        Buffer width for line labels, in image CRS units (metres).
    boundary
        Boundary width (metres, or microns for slides) for interior / boundary / background
        targets; converted to pixels of the image grid with :func:`boundary_pixels`.

    Returns
    -------
    Scene
        Open readers; close them with :meth:`PatchSampler.close`.
    """
    source: ImageSource = open_image(image, bands=bands, level=level)
    try:
        label_source = open_labels(
            labels,
            source,
            classes=classes,
            label_property=label_property,
            line_width=line_width,
            boundary=None if boundary is None else boundary_pixels(source, boundary),
        )
    except BaseException:
        source.close()
        raise
    return Scene(source, label_source)
