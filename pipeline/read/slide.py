"""Whole-slide images (SVS, NDPI, OME-TIFF, pyramidal TIFF, MRXS...), read level-native.

The working frame is one pyramid level, or a target resolution in microns per pixel. A tile of
level L reads **level L's own pixels**: through tifffile (via tiffslide's Zarr view of each
level) a window of a level is a slice of that level's array, so the same level pixel has the
same value whichever tile reads it, and tiled output equals whole-level inference even where a
level's downsample is fractional (Aperio: 2.0005, 4.0002...). OpenSlide is used only for the
formats tifffile cannot read (MRXS, VMS, SCN, BIF...); its ``read_region`` takes level-0
coordinates and resamples the leftover fraction of a pixel, so at a level whose downsample is
not an integer its tiles are *not* exact (the source says so in :attr:`SlideSource.notes`).

When no level matches a target resolution, pixels are resampled from the next finer level with
a rule that depends only on the pixel position (box mean for integer ratios, nearest
otherwise), so two tiles sharing a pixel agree on its value. Coordinates keep the link to
level 0 with the level's true per-axis downsample (level-0 size / level size, per axis).
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import ConfigError, InputError
from pipeline.read.georef import Georef
from pipeline.read.source import Source, Validity, cached_handle, file_stamp, parse_bands
from pipeline.tile.grid import Window

if TYPE_CHECKING:
    from pipeline.read.stain import StainNormalizer

__all__ = [
    "LEVEL_TOLERANCE",
    "SLIDE_BACKENDS",
    "SLIDE_SUFFIXES",
    "SlideSource",
    "choose_level",
    "ome_physical_size",
    "open_slide",
]

#: File suffixes always opened as slides.
SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
#: Slide readers: ``tiffslide`` (level-native, tifffile formats) and ``openslide``.
SLIDE_BACKENDS = ("auto", "tiffslide", "openslide")
#: A level serves a target resolution without resampling when their pixel sizes differ by at
#: most this ratio (Aperio levels are 2.0005x, 4.0002x... apart; scanners round mpp).
LEVEL_TOLERANCE = 1.1

_UNITS_UM = {
    "pm": 1e-6,
    "Å": 1e-4,
    "nm": 1e-3,
    "µm": 1.0,
    "um": 1.0,
    "μm": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}


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


def _auto_backend(path: str) -> str:
    """Pick tiffslide (level-native) where tifffile reads the slide as stored, else OpenSlide.

    tiffslide reads a file's own pyramid pages, which is what makes tiles exact at every
    level. Two layouts it opens but cannot read as stored go to OpenSlide when it is
    installed: a Leica SCN of several regions (tiffslide composes them only by resampling)
    and a Ventana BIF (its tiles overlap, which only OpenSlide stitches).
    """
    try:
        import tiffslide

        with tiffslide.TiffSlide(path) as slide:
            composite = slide.zarr_group.attrs.get("tiffslide.series-composition") is not None
            vendor = slide.properties.get("tiffslide.vendor")
        if not composite and vendor != "ventana" and not path.lower().endswith(".bif"):
            return "tiffslide"
    except Exception:
        pass
    try:
        import openslide  # noqa: F401
    except ImportError:
        return "tiffslide"  # let the open (or _layout) fail with tiffslide's reason
    return "openslide"


def _tiffslide_mpp(path: str) -> tuple[float, float] | None:
    """Microns per pixel ``(y, x)`` that tiffslide finds where OpenSlide records none.

    OpenSlide gives no ``mpp`` for a Leica SCN; tiffslide derives it from the collection's
    nanometre sizes, so a slide read through OpenSlide keeps its resolution.
    """
    try:
        import tiffslide

        with tiffslide.TiffSlide(path) as slide:
            x = slide.properties.get("tiffslide.mpp-x")
            y = slide.properties.get("tiffslide.mpp-y") or x
    except Exception:
        return None
    return (float(y), float(x)) if x else None


def ome_physical_size(xml: str | None) -> tuple[float, float] | None:
    """Microns per pixel ``(y, x)`` of the first OME image, from ``PhysicalSizeY/X``.

    Units (``PhysicalSizeXUnit``, µm by default) are converted to micrometres.

    >>> ome_physical_size('<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
    ...     '<Image><Pixels PhysicalSizeX="250" PhysicalSizeXUnit="nm" PhysicalSizeY="0.26"/>'
    ...     '</Image></OME>')
    (0.26, 0.25)

    Where only one axis is given (``PhysicalSizeY`` is optional in OME-XML), pixels are
    taken as square:

    >>> ome_physical_size('<OME><Image><Pixels PhysicalSizeX="0.5"/></Image></OME>')
    (0.5, 0.5)
    """
    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    sizes: list[float | None] = []
    for axis in ("Y", "X"):
        value = pixels.get(f"PhysicalSize{axis}")
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        if value is None:
            sizes.append(None)
            continue
        if unit not in _UNITS_UM:
            return None
        sizes.append(float(value) * _UNITS_UM[unit])
    y, x = (sizes[0] or sizes[1]), (sizes[1] or sizes[0])  # one axis given: square pixels
    if y is None or x is None or y <= 0 or x <= 0:
        return None
    return y, x


def _yx_shape(shape: tuple[int, ...], axes: str) -> tuple[int, int]:
    """Rows and columns of a series shape with ``axes`` (``YXS``, ``CYX`` or ``YX``)."""
    return int(shape[axes.index("Y")]), int(shape[axes.index("X")])


#: tifffile's names of a slide's associated images (lower case): not pyramid levels.
_ASSOCIATED = {"thumbnail", "label", "macro", "overview"}


def native_levels(slide: Any) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Return the pyramid of a tiffslide slide: ``(series, level)``, ``(rows, cols)`` per level.

    tifffile gives SVS, NDPI and OME SubIFD pyramids as the levels of one series, but a
    generic pyramidal TIFF (reduced-resolution pages or SubIFDs, as libvips and QuPath write
    them) and an OME-TIFF with one level per image as separate series, which tiffslide would
    drop. When the main series has one level, the following series with the same axes, dtype
    and channels, each smaller on both axes than the last level, are its levels if they are
    marked reduced-resolution (``NewSubfileType`` bit 0), or if their aspect ratio is the main
    one's within 2 % (labels and macro images are not). Associated images (tifffile's series
    named Thumbnail, Label, Macro or Overview: Aperio marks its label and macro images
    reduced-resolution too) are never levels.
    """
    tiff = slide.ts_tifffile
    main = int(slide.properties.get("tiffslide.series-index", 0))
    first = tiff.series[main]
    axes = first.axes
    levels = [(main, i) for i in range(len(first.levels))]
    dims = [_yx_shape(level.shape, axes) for level in first.levels]
    if len(first.levels) > 1 or axes not in ("YXS", "CYX", "YX"):
        return levels, dims
    height0, width0 = dims[0]
    channels = [n for n, a in zip(first.shape, axes, strict=True) if a not in "YX"]
    for index, series in enumerate(tiff.series):
        if index <= main or series.axes != axes or series.dtype != first.dtype:
            continue
        if [n for n, a in zip(series.shape, axes, strict=True) if a not in "YX"] != channels:
            continue
        height, width = _yx_shape(series.shape, axes)
        if not (height < dims[-1][0] and width < dims[-1][1]):
            continue
        if str(getattr(series, "name", "")).lower() in _ASSOCIATED:
            continue  # an SVS/NDPI thumbnail, label or macro image, never a level
        page = series.keyframe
        reduced = bool(int(getattr(page, "subfiletype", 0)) & 1)
        aspect = (height0 / height) / (width0 / width)
        if reduced or abs(aspect - 1) <= 0.02:
            levels.append((index, 0))
            dims.append((height, width))
    return levels, dims


def choose_level(
    level_mpp: list[float], target: float, tolerance: float = LEVEL_TOLERANCE
) -> tuple[int, float]:
    """Pick the level that serves ``target`` microns per pixel, and the resampling factor.

    A level within ``tolerance`` of the target is used as is (factor 1.0, the closest such
    level); otherwise the nearest finer level is resampled by ``target / its mpp``.

    >>> choose_level([0.25, 0.5001, 1.0004], 0.5)
    (1, 1.0)
    >>> choose_level([0.25, 0.5, 1.0], 0.75)
    (1, 1.5)
    """
    ratios = [max(mpp, target) / min(mpp, target) for mpp in level_mpp]
    close = [i for i, r in enumerate(ratios) if r <= tolerance]
    if close:
        return min(close, key=lambda i: ratios[i]), 1.0
    finer = [i for i, mpp in enumerate(level_mpp) if mpp < target]
    if not finer:
        raise ConfigError(
            f"mpp {target:g} is finer than the slide can serve (level 0 is "
            f"{level_mpp[0]:g} mpp); use --mpp >= {level_mpp[0]:g}"
        )
    best = max(finer, key=lambda i: level_mpp[i])
    return best, target / level_mpp[best]


class SlideSource(Source):
    """A slide read at one pyramid level, level-native, or at a target resolution.

    Parameters
    ----------
    path
        Slide file.
    level
        Pyramid level to read (default 0, unless ``mpp`` is given).
    mpp
        Target microns per pixel: a level within :data:`LEVEL_TOLERANCE` is read as is,
        otherwise the nearest finer level is resampled.
    bands
        1-based channels (all by default: RGB for brightfield, every channel for fluorescence).
    backend
        ``"tiffslide"`` (level-native), ``"openslide"`` (formats only it reads; exact at level 0
        and at integer downsamples only) or ``"auto"`` (tiffslide when tifffile reads the file).
    source_mpp
        Microns per level-0 pixel, for a slide that records none (or records a wrong one).

    Notes
    -----
    :meth:`with_stain` returns a copy whose reads are stain-normalised; :meth:`overview` is
    always the raw pixels (the normaliser is fitted on it).

    Attributes
    ----------
    level_downsample
        ``(rows, cols)`` level-0 pixels per pixel of the chosen level.
    notes
        What the reader decided or could not guarantee, in sentences for the user.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        level: int | None = None,
        mpp: float | None = None,
        bands: Any = None,
        backend: str = "auto",
        source_mpp: float | None = None,
    ) -> None:
        self.path = str(path)
        self.name = self.path
        self.notes: list[str] = []
        self.stain: StainNormalizer | None = None
        if backend not in SLIDE_BACKENDS:
            raise ConfigError(
                f"slide backend {backend!r} is not one of {', '.join(SLIDE_BACKENDS)}"
            )
        if not Path(self.path).exists():
            raise InputError(f"{self.path} does not exist; check the path")
        self.backend = _auto_backend(self.path) if backend == "auto" else backend
        if level is not None and mpp is not None:
            raise ConfigError("give either --level or --mpp for a slide, not both")
        slide = self._slide()
        # tiffslide: (series, level) of each pyramid level, with reduced-resolution series
        # (generic pyramidal TIFF, OME levels as series) joined to the main one
        self._levels: list[tuple[int, int]] = []
        if self.backend == "tiffslide":
            self._levels, dims = native_levels(slide)
        else:
            dims = [(int(h), int(w)) for w, h in slide.level_dimensions]
        self.level_shapes = dims
        self.mpp0_yx = self._recorded_mpp(slide, source_mpp)
        self.mpp0 = None if self.mpp0_yx is None else self.mpp0_yx[1]
        height0, width0 = dims[0]
        per_axis = [(height0 / h, width0 / w) for h, w in dims]
        nlevels = len(dims)
        if level is not None and not 0 <= level < nlevels:
            raise ConfigError(
                f"level {level} is not available in {self.path}: it has levels 0..{nlevels - 1}"
            )
        self.level = 0 if level is None else int(level)
        self.factor = 1.0  # working pixels -> pixels of self.level
        if mpp is not None:
            if self.mpp0 is None:
                raise ConfigError(
                    f"{self.path} records no microns per pixel; give it with --source-mpp, "
                    "or use --level"
                )
            level_mpp = [self.mpp0 * dx for _, dx in per_axis]
            self.level, self.factor = choose_level(level_mpp, float(mpp))
        self.level_downsample = per_axis[self.level]
        dy, dx = (d * self.factor for d in self.level_downsample)
        self.downsample = dx
        lh, lw = dims[self.level]
        self.level_shape = (lh, lw)
        self.shape = (int(lh / self.factor), int(lw / self.factor))
        count, dtype = self._layout()
        if bands is None and self._has_alpha(count):
            bands = [1, 2, 3]
            self.notes.append(f"{self.path} is RGBA: reading its RGB bands (alpha dropped)")
        self.bands = parse_bands(bands, count, self.name)
        self.dtype = np.dtype(dtype)
        self.level_native = self.backend == "tiffslide" or all(
            abs(d - round(d)) < 1e-9 for d in self.level_downsample
        )
        if not self.level_native:
            self.notes.append(
                f"{self.path} is read through OpenSlide, which resamples level {self.level} "
                f"(downsample {self.level_downsample[0]:.4f} x {self.level_downsample[1]:.4f}) "
                "from level-0 coordinates: tiles are not "
                "exactly whole-level inference at this level; read level 0 or a tifffile format "
                "for the exact guarantee"
            )
        # The level's true per-axis downsample (level-0 size / level size) times the
        # resampling factor: Aperio levels are e.g. 4.0002 x 4.0005, not the rounded mean.
        self.georef = Georef.for_slide(
            downsample=(dx, dy),
            mpp=None if self.mpp0_yx is None else (self.mpp0_yx[1], self.mpp0_yx[0]),
            level=self.level,
            level0_shape=(height0, width0),
        )

    # ----------------------------------------------------------------------------------
    # Opening

    def _handle(self) -> tuple[Any, Any]:
        return cached_handle(
            ("slide", self.backend, self.path, *file_stamp(self.path)),
            lambda: open_slide(self.path, self.backend),
        )

    def _slide(self) -> Any:
        return self._handle()[0]

    def _recorded_mpp(self, slide: Any, source_mpp: float | None) -> tuple[float, float] | None:
        """Level-0 microns per pixel ``(y, x)``: the user's, the vendor's, or OME-XML's."""
        props = slide.properties
        recorded: tuple[float, float] | None = None
        x = props.get(f"{self.backend}.mpp-x") or props.get("openslide.mpp-x")
        y = props.get(f"{self.backend}.mpp-y") or props.get("openslide.mpp-y") or x
        if x:
            recorded = (float(y), float(x))
        if recorded is None and self.backend == "tiffslide":
            recorded = ome_physical_size(getattr(slide.ts_tifffile, "ome_metadata", None))
        if recorded is None and self.backend == "openslide":
            recorded = _tiffslide_mpp(self.path)
        if source_mpp is not None:
            if not float(source_mpp) > 0:
                raise ConfigError(f"--source-mpp {source_mpp} must be a positive number")
            if recorded is not None and abs(recorded[1] / float(source_mpp) - 1) > 0.01:
                self.notes.append(
                    f"{self.path} records {recorded[1]:g} µm per pixel; using --source-mpp "
                    f"{float(source_mpp):g} instead"
                )
            return float(source_mpp), float(source_mpp)
        return recorded

    def _layout(self) -> tuple[int, np.dtype[Any]]:
        """Channel count and dtype of a read (OpenSlide: always RGB uint8)."""
        if self.backend == "openslide":
            return 3, np.dtype(np.uint8)
        slide = self._slide()
        if slide.zarr_group.attrs.get("tiffslide.series-composition") is not None:
            raise InputError(
                f"{self.path} is a composite of several TIFF series, which tiffslide reads only "
                "through resampling; install OpenSlide (pip install openslide-bin "
                "openslide-python), which gigaseg then uses for it"
            )
        axes = slide.properties["tiffslide.series-axes"]
        array = self._level_array(slide, self.level)
        if axes == "YXS":
            return int(array.shape[2]), np.dtype(array.dtype)
        if axes == "CYX":
            return int(array.shape[0]), np.dtype(array.dtype)
        if axes == "YX":
            return 1, np.dtype(array.dtype)
        raise InputError(f"{self.path} has image axes {axes!r}; gigaseg reads YXS, CYX or YX")

    def _has_alpha(self, count: int) -> bool:
        """Whether a 4-sample RGB level carries an alpha channel (TIFF ``ExtraSamples``)."""
        if self.backend != "tiffslide" or count != 4:
            return False
        series, _ = self._levels[self.level]
        page = self._slide().ts_tifffile.series[series].keyframe
        extras = tuple(int(v) for v in (getattr(page, "extrasamples", None) or ()))
        return int(page.photometric) == 2 and any(v in (1, 2) for v in extras)

    # ----------------------------------------------------------------------------------
    # Reading

    def _read_level(
        self, window: Window, level: int | None = None, step: int = 1
    ) -> npt.NDArray[Any]:
        """Read an in-level box of ``level`` (default: the working level) as ``(C, rows, cols)``.

        ``step`` > 1 keeps every ``step``-th pixel (tifffile formats only: overviews).
        """
        level = self.level if level is None else level
        slide, lock = self._handle()
        try:
            with lock:
                if self.backend == "tiffslide":
                    return self._read_native(slide, window, level, step)
                return self._read_openslide(slide, window, level)
        except InputError:
            raise
        except Exception as exc:
            reason = " ".join(str(exc).split())
            raise InputError(f"{self.path}: cannot read region {window} ({reason})") from None

    def _level_array(self, slide: Any, level: int) -> Any:
        """Return the Zarr array of ``level`` (tiffslide's group, or a joined series)."""
        series, index = self._levels[level]
        if series == int(slide.properties.get("tiffslide.series-index", 0)):
            return slide.zarr_group[str(index)]
        cache = slide.__dict__.setdefault("_gigaseg_level_arrays", {})
        if (series, index) not in cache:
            import zarr

            store = slide.ts_tifffile.series[series].aszarr(level=index)
            cache[series, index] = zarr.open_array(store, mode="r")
        return cache[series, index]

    def _read_native(
        self, slide: Any, window: Window, level: int, step: int = 1
    ) -> npt.NDArray[Any]:
        array = self._level_array(slide, level)
        rows = slice(window.row_off, window.row_stop, step)
        cols = slice(window.col_off, window.col_stop, step)
        axes = slide.properties["tiffslide.series-axes"]
        if axes == "YXS":
            return np.moveaxis(np.asarray(array[rows, cols, :]), -1, 0)
        if axes == "CYX":
            return np.asarray(array[:, rows, cols])
        return np.asarray(array[rows, cols])[None]

    def _read_openslide(self, slide: Any, window: Window, level: int) -> npt.NDArray[Any]:
        ds = float(slide.level_downsamples[level])
        location = (round(window.col_off * ds), round(window.row_off * ds))
        region = slide.read_region(location, level, (window.width, window.height))
        rgba = np.asarray(region)
        rgb = rgba[..., :3].copy()
        if rgba.shape[-1] == 4:
            rgb[rgba[..., 3] == 0] = 255  # transparent (no scan) reads as white background
        return np.moveaxis(rgb, -1, 0)

    def with_stain(self, normalizer: StainNormalizer | None) -> SlideSource:
        """Return a copy whose reads are stain-normalised by ``normalizer`` (fitted once).

        The normaliser maps each RGB pixel on its own, so tiles and the whole level agree.
        """
        if normalizer is not None and (self.count != 3 or self.dtype != np.uint8):
            raise ConfigError(
                f"stain normalisation needs 8-bit RGB, but {self.path} is read as "
                f"{self.count} {self.dtype} band(s); use --stain none"
            )
        out = copy.copy(self)
        out.stain = normalizer
        return out

    def _read_box(self, window: Window) -> npt.NDArray[Any]:
        box = self._read_resampled(window, [band - 1 for band in self.bands])
        if self.stain is not None:
            box = self.stain(box)
        return box

    def _read_resampled(self, window: Window, index: list[int]) -> npt.NDArray[Any]:
        if self.factor == 1.0:
            return self._read_level(window)[index]
        lh, lw = self.level_shape
        k = round(self.factor)
        if abs(self.factor - k) < 1e-9:
            box = Window(
                window.row_off * k, window.col_off * k, window.height * k, window.width * k
            )
            pixels = self._read_level(box)[index].astype(np.float32)
            count = len(index)
            mean = pixels.reshape(count, window.height, k, window.width, k).mean(axis=(2, 4))
            if np.issubdtype(self.dtype, np.integer):
                mean = np.rint(mean)
            return mean.astype(self.dtype)
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

    def overview(self, max_size: int = 1024) -> tuple[npt.NDArray[Any], tuple[float, float]]:
        """Return a low-resolution view of the working frame, ``(C, rows, cols)`` of the bands.

        Read level-native from the coarsest level at least ``max_size`` on its long side (or
        the finest when none is), then subsampled by an integer step to ``<= max_size``.

        Returns
        -------
        image, scale
            The overview and the working pixels per overview pixel ``(rows, cols)``.
        """
        return self._overview(max_size, exact=False)

    def _overview(
        self, max_size: int, *, exact: bool
    ) -> tuple[npt.NDArray[Any], tuple[float, float]]:
        size = max(1, int(max_size))
        large = [i for i, (h, w) in enumerate(self.level_shapes) if max(h, w) >= size]
        level = large[-1] if large else 0
        height, width = self.level_shapes[level]
        # exact: the largest step that keeps >= max_size pixels (then resized down to it);
        # otherwise the smallest step that fits in max_size. Strided reads stay chunk-bounded.
        long = max(height, width)
        step = max(1, long // size) if exact else max(1, int(np.ceil(long / size)))
        if self.backend == "openslide":
            slide, lock = self._handle()
            with lock:
                thumb = slide.get_thumbnail((size, size)).convert("RGB")
            image = np.moveaxis(np.asarray(thumb), -1, 0)
        else:
            image = self._read_level(Window(0, 0, height, width), level, step)
        image = image[[band - 1 for band in self.bands]]
        rows, cols = self.shape
        return image, (rows / image.shape[1], cols / image.shape[2])

    def pooled_overview(
        self, max_size: int = 1024, band_bytes: int = 64 << 20
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.float32], npt.NDArray[np.float32], Any]:
        """Return an overview that keeps what striding would drop, for tissue detection.

        :meth:`overview` keeps every ``step``-th pixel of a level, so an object smaller than
        the step (a nucleus on a slide without a level near the overview's size) may not be
        in it. Here every pixel of that level is read (in row bands of about ``band_bytes``)
        and each ``step x step`` block gives its mean colour and the lowest and highest of
        its channel-mean intensity (smoothed, Gaussian sigma 1 px, against sensor noise).

        Returns
        -------
        image, low, high, scale
            The block-mean overview ``(C, rows, cols)`` in the source dtype, the block minimum
            and maximum intensity ``(rows, cols)`` (float32), and the working pixels per
            overview pixel ``(rows, cols)``. OpenSlide formats give the thumbnail for all.
        """
        from scipy.ndimage import gaussian_filter

        size = max(1, int(max_size))
        large = [i for i, (h, w) in enumerate(self.level_shapes) if max(h, w) >= size]
        level = large[-1] if large else 0
        height, width = self.level_shapes[level]
        step = max(1, int(np.ceil(max(height, width) / size)))  # as overview() strides
        if self.backend != "tiffslide" or step == 1:
            image, scale = self.overview(max_size)
            gray = np.asarray(image, dtype=np.float32).mean(axis=0)
            return image, gray, gray, scale
        out_rows, out_cols = -(-height // step), -(-width // step)
        bands = [band - 1 for band in self.bands]
        per_row = width * len(bands) * 4 * 3
        rows_per = max(1, band_bytes // max(1, per_row * step)) * step
        mean = np.empty((len(bands), out_rows, out_cols), np.float32)
        low = np.empty((out_rows, out_cols), np.float32)
        high = np.empty((out_rows, out_cols), np.float32)
        reach = 4  # the Gaussian's radius (sigma 1, truncated at 4): bands overlap by it
        for start in range(0, height, rows_per):
            rows = min(rows_per, height - start)
            top, stop = max(0, start - reach), min(height, start + rows + reach)
            read = self._read_level(Window(top, 0, stop - top, width), level)[bands]
            read = read.astype(np.float32)
            # replicate the image's own edges only, as mode "nearest" on the whole level does
            edges = ((reach - (start - top), reach - (stop - start - rows)), (0, 0))
            gray = np.pad(read.mean(axis=0), edges, mode="edge")
            smooth = gaussian_filter(gray, sigma=1.0, mode="nearest")[reach : reach + rows]
            pixels = read[:, start - top : start - top + rows]
            pad = ((0, -rows % step), (0, -width % step))
            pixels = np.pad(pixels, ((0, 0), *pad), mode="edge")
            smooth = np.pad(smooth, pad, mode="edge")
            r0, r1 = start // step, start // step + pixels.shape[1] // step
            blocks = (pixels.shape[1] // step, step, out_cols, step)
            mean[:, r0:r1] = pixels.reshape(len(bands), *blocks).mean(axis=(2, 4))
            low[r0:r1] = smooth.reshape(blocks).min(axis=(1, 3))
            high[r0:r1] = smooth.reshape(blocks).max(axis=(1, 3))
        if np.issubdtype(self.dtype, np.integer):
            mean = np.rint(mean)
        rows, cols = self.shape
        return mean.astype(self.dtype), low, high, (rows / out_rows, cols / out_cols)

    def valid_pixels(self, window: Window, pixels: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
        """Blank brightfield background (8-bit, every band >= 250: white glass) is invalid."""
        if self.dtype != np.uint8:
            return np.ones((window.height, window.width), dtype=bool)
        return ~np.all(pixels >= 250, axis=0)

    def thumbnail(self, max_size: int = 1024) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        """Return a thumbnail of the selected bands whose long side is ``max_size``, all valid.

        Like OpenSlide's ``get_thumbnail``: the level-native overview resized (area average
        for 8-bit, nearest otherwise) to keep the aspect ratio.
        """
        from PIL import Image

        pixels, _ = self._overview(max_size, exact=True)
        rows, cols = self.shape
        factor = max(rows / max_size, cols / max_size, 1.0)
        height, width = max(1, round(rows / factor)), max(1, round(cols / factor))
        if pixels.shape[1:] != (height, width):
            if pixels.dtype == np.uint8:
                pixels = np.stack(
                    [
                        np.asarray(Image.fromarray(band).resize((width, height), Image.BOX))
                        for band in pixels
                    ]
                )
            else:
                r = (np.arange(height) * pixels.shape[1] / height).astype(int)
                c = (np.arange(width) * pixels.shape[2] / width).astype(int)
                pixels = pixels[:, r[:, None], c[None, :]]
        return pixels, np.ones(pixels.shape[1:], dtype=bool)

    def validity(self, max_size: int = 1024) -> Validity | None:
        """Tissue mask (``auto`` polarity); see :mod:`pipeline.read.tissue` for the options."""
        from pipeline.read.tissue import detect_tissue

        return detect_tissue(self, "auto", max_size=max_size).validity

    def describe(self) -> dict[str, Any]:
        """Add the pyramid to the summary."""
        info = super().describe()
        height0, width0 = self.level_shapes[0]
        info["levels"] = [
            {
                "dimensions": [w, h],
                "downsample": [height0 / h, width0 / w],
                "mpp": None if self.mpp0 is None else self.mpp0 * width0 / w,
            }
            for h, w in self.level_shapes
        ]
        info["mpp0"] = self.mpp0
        info["backend"] = self.backend
        info["level_native"] = self.level_native
        if self.notes:
            info["notes"] = list(self.notes)
        return info
