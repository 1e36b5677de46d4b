"""Whole-slide images (SVS, NDPI, pyramidal TIFF...) through OpenSlide or tiffslide.

The working frame is one pyramid level, or a target resolution in microns per pixel. When no
level matches the target, pixels are resampled from the next finer level with a rule that
depends only on the pixel position (box mean for integer ratios, nearest otherwise), so two
tiles sharing a pixel agree on its value. Coordinates and the store keep the link to level 0:
``downsample`` level-0 pixels per working pixel, and ``mpp``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import ConfigError, InputError
from pipeline.read.georef import Georef
from pipeline.read.source import Source, Validity, cached_handle, file_stamp, parse_bands
from pipeline.tile.grid import Window

__all__ = ["SLIDE_SUFFIXES", "SlideSource", "open_slide"]

#: File suffixes always opened as slides.
SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")


def open_slide(path: str, backend: str) -> Any:
    """Open ``path`` with ``backend`` (``"openslide"`` or ``"tiffslide"``)."""
    if not Path(path).exists():
        raise InputError(f"{path} does not exist; check the path")
    try:
        if backend == "openslide":
            import openslide

            return openslide.OpenSlide(path)
        import tiffslide

        return tiffslide.TiffSlide(path)
    except Exception as exc:
        reason = " ".join(str(exc).split())
        raise InputError(f"{path} is not a readable slide ({reason})") from None


class SlideSource(Source):
    """A slide read at one pyramid level or at a target resolution.

    Parameters
    ----------
    path
        Slide file.
    level
        Pyramid level to read (default 0, unless ``mpp`` is given).
    mpp
        Target microns per pixel; the nearest finer level is resampled if none matches.
    bands
        1-based bands of RGB (all three by default).
    backend
        ``"openslide"``, ``"tiffslide"`` or ``"auto"`` (OpenSlide when installed).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        level: int | None = None,
        mpp: float | None = None,
        bands: Any = None,
        backend: str = "auto",
    ) -> None:
        self.path = str(path)
        self.name = self.path
        if backend == "auto":
            try:
                import openslide  # noqa: F401

                backend = "openslide"
            except ImportError:
                backend = "tiffslide"
        if backend not in ("openslide", "tiffslide"):
            raise ConfigError(f"slide backend {backend!r} is not 'openslide' or 'tiffslide'")
        self.backend = backend
        slide = self._slide()
        props = slide.properties
        mpp0 = props.get(f"{backend}.mpp-x") or props.get("openslide.mpp-x")
        self.mpp0 = float(mpp0) if mpp0 else None
        downsamples = [float(item) for item in slide.level_downsamples]
        nlevels = len(downsamples)
        if level is not None and mpp is not None:
            raise ConfigError("give either --level or --mpp for a slide, not both")
        if level is not None and not 0 <= level < nlevels:
            raise ConfigError(
                f"level {level} is not available in {self.path}: it has levels 0..{nlevels - 1}"
            )
        self.level = 0 if level is None else level
        self.factor = 1.0  # working pixels -> pixels of self.level
        if mpp is not None:
            if self.mpp0 is None:
                raise ConfigError(f"{self.path} records no microns per pixel; use --level instead")
            target = mpp / self.mpp0
            if target < 0.99:
                raise ConfigError(
                    f"mpp {mpp} is finer than {self.path} can serve (level 0 is "
                    f"{self.mpp0:g} mpp); use --mpp >= {self.mpp0:g}"
                )
            finer = [i for i, ds in enumerate(downsamples) if ds <= target * 1.01]
            self.level = finer[-1]
            ratio = target / downsamples[self.level]
            self.factor = 1.0 if abs(ratio - 1) < 0.01 else ratio
        self.downsample = downsamples[self.level] * self.factor
        width0, height0 = slide.dimensions
        lw, lh = slide.level_dimensions[self.level]
        self.level_shape = (lh, lw)
        self.shape = (int(lh / self.factor), int(lw / self.factor))
        self.bands = parse_bands(bands, 3, self.name)
        self.dtype = np.dtype(np.uint8)
        mpp_y = props.get(f"{backend}.mpp-y") or props.get("openslide.mpp-y")
        mpp0_xy = None if self.mpp0 is None else (self.mpp0, float(mpp_y or self.mpp0))
        # The level's true per-axis downsample (level-0 size / level size), times the
        # resampling factor: Aperio levels are e.g. 4.0002 x 4.0005, not the rounded mean.
        self.georef = Georef.for_slide(
            downsample=(width0 / lw * self.factor, height0 / lh * self.factor),
            mpp=mpp0_xy,
            level=self.level,
            level0_shape=(height0, width0),
        )

    def _handle(self) -> tuple[Any, Any]:
        return cached_handle(
            ("slide", self.backend, self.path, *file_stamp(self.path)),
            lambda: open_slide(self.path, self.backend),
        )

    def _slide(self) -> Any:
        return self._handle()[0]

    def _read_level(self, window: Window) -> npt.NDArray[np.uint8]:
        """Read an in-level box of ``self.level`` as ``(3, rows, cols)``."""
        slide, lock = self._handle()
        ds = float(slide.level_downsamples[self.level])
        location = (round(window.col_off * ds), round(window.row_off * ds))
        try:
            with lock:
                region = slide.read_region(location, self.level, (window.width, window.height))
        except Exception as exc:
            reason = " ".join(str(exc).split())
            raise InputError(f"{self.path}: cannot read region {window} ({reason})") from None
        rgba = np.asarray(region)
        rgb = rgba[..., :3].copy()
        if rgba.shape[-1] == 4:
            rgb[rgba[..., 3] == 0] = 255  # transparent (no scan) reads as white background
        return np.moveaxis(rgb, -1, 0)

    def _read_box(self, window: Window) -> npt.NDArray[Any]:
        index = [band - 1 for band in self.bands]
        if self.factor == 1.0:
            return self._read_level(window)[index]
        lh, lw = self.level_shape
        k = round(self.factor)
        if abs(self.factor - k) < 1e-9:
            box = Window(
                window.row_off * k, window.col_off * k, window.height * k, window.width * k
            )
            pixels = self._read_level(box).astype(np.float32)
            mean = pixels.reshape(3, window.height, k, window.width, k).mean(axis=(2, 4))
            resampled: npt.NDArray[Any] = np.rint(mean).astype(np.uint8)[index]
            return resampled
        rows = np.minimum(
            ((np.arange(window.row_off, window.row_stop) + 0.5) * self.factor).astype(int), lh - 1
        )
        cols = np.minimum(
            ((np.arange(window.col_off, window.col_stop) + 0.5) * self.factor).astype(int), lw - 1
        )
        r0, c0 = int(rows[0]), int(cols[0])
        box = Window(r0, c0, int(rows[-1]) - r0 + 1, int(cols[-1]) - c0 + 1)
        data = self._read_level(box)
        nearest: npt.NDArray[Any] = data[:, (rows - r0)[:, None], (cols - c0)[None, :]][index]
        return nearest

    def valid_pixels(self, window: Window, pixels: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
        """Blank background (every band >= 250: white glass, or transparent) is invalid."""
        return ~np.all(pixels >= 250, axis=0)

    def thumbnail(self, max_size: int = 1024) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        """Return the slide library's thumbnail (from its smallest level) of the selected bands."""
        slide, lock = self._handle()
        with lock:
            thumb = np.asarray(slide.get_thumbnail((max_size, max_size)).convert("RGB"))
        pixels = np.moveaxis(thumb, -1, 0)[[band - 1 for band in self.bands]]
        return pixels, np.ones(pixels.shape[1:], dtype=bool)

    def validity(self, max_size: int = 1024) -> Validity | None:
        """Tissue mask: Otsu threshold of a thumbnail (tissue is darker than the glass)."""
        from skimage.filters import threshold_otsu

        slide, lock = self._handle()
        with lock:
            thumb = np.asarray(slide.get_thumbnail((max_size, max_size)).convert("RGB"))
        gray = thumb.astype(np.float32).mean(axis=-1)
        if float(gray.max() - gray.min()) < 8:
            return None  # flat thumbnail: no contrast to threshold, keep every tile
        mask = gray < threshold_otsu(gray)  # type: ignore[no-untyped-call]
        height, width = self.shape
        return Validity(mask, (height / mask.shape[0], width / mask.shape[1]))

    def describe(self) -> dict[str, Any]:
        """Add the pyramid to the summary."""
        slide = self._slide()
        info = super().describe()
        info["levels"] = [
            {"dimensions": list(dims), "downsample": float(ds)}
            for dims, ds in zip(slide.level_dimensions, slide.level_downsamples, strict=True)
        ]
        info["mpp0"] = self.mpp0
        info["backend"] = self.backend
        return info
