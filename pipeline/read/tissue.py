"""Which parts of a slide hold tissue: brightfield, fluorescence, or the user's own mask.

Tiles whose core grown by the halo holds no tissue are not read or run. The mask comes from a
low-resolution overview of the slide, read level-native (:meth:`SlideSource.pooled_overview`:
block means for the threshold, and a block is tissue when any of its pixels is, so an object
smaller than a mask pixel is not lost):

- ``brightfield``: tissue is darker than the glass (H&E, IHC): Otsu threshold, keep below.
- ``fluorescence``: objects are brighter than the dark background (DAPI, immunofluorescence):
  Otsu threshold, keep above.
- ``auto``: the polarity comes from the slide's metadata when it says (OME-XML channels with an
  emission wavelength or a fluorescence illumination; other than one or three channels, one
  16-bit channel, or three channel planes), else from its pixels (16-bit RGB too): the glass
  at the slide's border is brighter than the Otsu threshold in brightfield, darker in
  fluorescence. The choice and its reason are reported.
- ``off``: every tile is run.
- a file: a GeoJSON / QuPath annotation (polygons in level-0 pixels) or a mask raster (any
  size, stretched over the slide; non-zero is tissue).

The mask used is returned as a :class:`TissueMask` (recorded in the store by the caller).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import ConfigError, InputError
from pipeline.read.source import Validity

if TYPE_CHECKING:
    from pipeline.read.slide import SlideSource

__all__ = [
    "GLASS_CHROMA",
    "MIN_SEPARATION",
    "POLARITIES",
    "TISSUE_MODES",
    "TissueMask",
    "choose_polarity",
    "detect_tissue",
    "mask_from_file",
    "parse_tissue",
    "threshold_mask",
]

#: The ``--tissue`` keywords; any other value must be a file.
TISSUE_MODES = ("auto", "off", "brightfield", "fluorescence")
#: Tissue polarities: tissue darker than the background, or brighter.
POLARITIES = ("brightfield", "fluorescence")
_MASK_SIZE = 1024
#: Least share of the overview's intensity variance the Otsu split must explain to be taken
#: as tissue against background (one Gaussian mode: 2/pi = 0.64).
MIN_SEPARATION = 0.72
#: Most mean chroma (max - min over R, G, B, 8-bit) the brightfield background may have.
GLASS_CHROMA = 30


@dataclass(frozen=True)
class TissueMask:
    """The tissue mask a run used, and how it was made.

    Attributes
    ----------
    mode
        What was asked: ``auto``, ``off``, ``brightfield``, ``fluorescence`` or ``file``.
    polarity
        ``brightfield`` / ``fluorescence`` for a detected mask, else ``None``.
    reason
        Why ``auto`` chose the polarity (or why no mask is used).
    validity
        The mask and its scale (working pixels per mask pixel); ``None``: every tile runs.
    threshold
        The Otsu threshold on the overview's mean intensity.
    file
        The user's mask file.
    """

    mode: str
    polarity: str | None = None
    reason: str = ""
    validity: Validity | None = field(default=None, compare=False)
    threshold: float | None = None
    file: str | None = None

    def to_attrs(self) -> dict[str, Any]:
        """JSON-able record for the store (the mask itself is stored as an array)."""
        out: dict[str, Any] = {
            "mode": self.mode,
            "polarity": self.polarity,
            "reason": self.reason,
            "threshold": self.threshold,
            "file": self.file,
        }
        if self.validity is not None:
            out["scale"] = [float(v) for v in self.validity.scale]
            out["fraction"] = float(self.validity.mask.mean())
        return out

    def note(self) -> str:
        """One sentence for the user: what mask is used and why."""
        if self.validity is None:
            return f"tissue mask: none ({self.reason})"
        share = f"{100 * float(self.validity.mask.mean()):.0f}% of the slide"
        if self.mode == "file":
            return f"tissue mask: from {self.file} ({self.reason}; {share})"
        return f"tissue mask: {self.polarity} ({self.reason}; {share})"


def parse_tissue(value: Any) -> str:
    """Validate a ``--tissue`` value: a keyword of :data:`TISSUE_MODES` or an existing file."""
    text = "auto" if value is None else str(value)
    if text in TISSUE_MODES:
        return text
    if Path(text).is_file():
        return text
    raise ConfigError(
        f"--tissue {text!r} is neither one of {', '.join(TISSUE_MODES)} nor an existing file "
        "(a GeoJSON/QuPath annotation or a mask raster)"
    )


def _intensity(image: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """Mean over channels, smoothed (Gaussian, sigma 1 px), as float32 ``(rows, cols)``.

    The smoothing keeps sensor noise on dark fluorescence glass from crossing an Otsu
    threshold that sits close to the background when objects are sparse.
    """
    from scipy.ndimage import gaussian_filter

    gray = np.asarray(image, dtype=np.float32).mean(axis=0)
    smooth: npt.NDArray[np.float32] = gaussian_filter(gray, sigma=1.0, mode="nearest")
    return smooth


def threshold_mask(gray: npt.NDArray[Any], polarity: str) -> tuple[npt.NDArray[np.bool_], float]:
    """Otsu-threshold ``gray``: tissue below (brightfield) or above (fluorescence)."""
    from skimage.filters import threshold_otsu

    if polarity not in POLARITIES:
        raise ConfigError(f"tissue polarity {polarity!r} is not one of {', '.join(POLARITIES)}")
    threshold = float(threshold_otsu(gray))  # type: ignore[no-untyped-call]
    mask = gray < threshold if polarity == "brightfield" else gray > threshold
    return mask, threshold


def _metadata_polarity(source: SlideSource) -> str | None:  # noqa: PLR0911 (one rule a line)
    """Fluorescence when the file says so; ``None`` when it does not say."""
    if source.count not in (1, 3):
        return f"fluorescence (the slide has {source.count} channels, not RGB)"
    if np.dtype(source.dtype).itemsize > 1 and source.count == 1:
        return f"fluorescence (the slide has one {source.dtype} channel)"
    if source.count == 3 and source.backend == "tiffslide" and _separate_channels(source):
        return "fluorescence (the slide's three channels are separate planes, not RGB)"
    if source.backend != "tiffslide":
        return None
    xml = getattr(source._slide().ts_tifffile, "ome_metadata", None)
    if not xml:
        return None
    text = str(xml)
    if "EmissionWavelength" in text or 'IlluminationType="Epifluorescence"' in text:
        return "fluorescence (OME-XML channels have emission wavelengths / epifluorescence)"
    if 'IlluminationType="Transmitted"' in text:
        return "brightfield (OME-XML illumination is transmitted light)"
    return None


def _separate_channels(source: SlideSource) -> bool:
    """Whether the slide stores its channels as planes (``CYX``), as fluorescence does."""
    return str(source._slide().properties.get("tiffslide.series-axes")) == "CYX"


def choose_polarity(
    gray: npt.NDArray[Any], threshold: float, full_scale: float | None = None
) -> tuple[str, str]:
    """Tell the polarity from pixels: is the border (mostly glass) above or below Otsu.

    Tissue reaching the border of a brightfield slide (a crop, a large section) can put the
    border's median below the threshold; with ``full_scale`` (255 for 8-bit) a border in the
    upper half of the range is still brightfield glass (fluorescence background is dark).

    Returns
    -------
    polarity, reason
    """
    rows, cols = gray.shape
    ring = max(1, min(rows, cols) // 20)
    border = np.concatenate(
        [
            gray[:ring].ravel(),
            gray[-ring:].ravel(),
            gray[:, :ring].ravel(),
            gray[:, -ring:].ravel(),
        ]
    )
    background = float(np.median(border))
    if background >= threshold:
        return "brightfield", f"background {background:.0f} above threshold {threshold:.0f}"
    if full_scale is not None and background >= full_scale / 2:
        return "brightfield", (
            f"border {background:.0f} is below threshold {threshold:.0f} but bright "
            f"(of {full_scale:.0f}): tissue reaches the border"
        )
    return "fluorescence", f"background {background:.0f} below threshold {threshold:.0f}"


def _no_split(
    gray: npt.NDArray[Any],
    threshold: float,
    image: npt.NDArray[Any],
    source: SlideSource,
    polarity: str,
) -> str | None:
    """Say why the Otsu split is not tissue against background, or ``None`` when it is.

    Otsu splits any histogram, even one mode (a slide tissue fills entirely, or blank glass):
    the split is kept only when it explains at least :data:`MIN_SEPARATION` of the variance
    (0.64 for one Gaussian mode; 0.79 to 0.99 for slides with glass). In brightfield RGB the
    bright class must also look like glass: nearly grey, not stained.
    """
    values = gray.ravel().astype(np.float64)
    low, high = values[values <= threshold], values[values > threshold]
    total = float(values.var())
    if low.size == 0 or high.size == 0 or total <= 0:
        return "the overview is flat: no contrast to threshold"
    share = low.size / values.size
    effectiveness = share * (1 - share) * float(high.mean() - low.mean()) ** 2 / total
    if effectiveness < MIN_SEPARATION:
        return (
            f"no tissue/background contrast (Otsu explains {effectiveness:.2f} of the "
            f"variance, below {MIN_SEPARATION}): all tissue or all background"
        )
    if polarity == "brightfield" and source.count == 3 and image.dtype == np.uint8:
        bright = gray > threshold
        chroma = image.max(axis=0).astype(np.float32) - image.min(axis=0)
        colour = float(chroma[bright].mean())
        if colour > GLASS_CHROMA:
            return (
                f"its brightest part is stained (chroma {colour:.0f} > {GLASS_CHROMA}), not "
                "glass: tissue fills the slide"
            )
    return None


def detect_tissue(
    source: SlideSource, tissue: str = "auto", max_size: int = _MASK_SIZE
) -> TissueMask:
    """Build the tissue mask of ``source`` for a ``--tissue`` value (see the module doc)."""
    tissue = parse_tissue(tissue)
    if tissue == "off":
        return TissueMask("off", reason="--tissue off: every tile is run")
    if tissue not in TISSUE_MODES:
        return mask_from_file(tissue, source, max_size=max_size)
    image, low, high, scale = source.pooled_overview(max_size)
    gray = _intensity(image)
    if float(gray.max() - gray.min()) < 1e-6 * max(1.0, float(abs(gray).max())) or (
        np.dtype(source.dtype) == np.uint8 and float(gray.max() - gray.min()) < 8
    ):
        return TissueMask(tissue, reason="the overview is flat: no contrast to threshold")
    if tissue == "auto":
        said = _metadata_polarity(source)
        if said is not None:
            polarity, _, reason = said.partition(" (")
            reason = "from metadata: " + reason.rstrip(")")
            mask, threshold = threshold_mask(gray, polarity)
        else:
            _, threshold = threshold_mask(gray, "brightfield")
            full = 255.0 if np.dtype(source.dtype) == np.uint8 else None
            polarity, reason = choose_polarity(gray, threshold, full)
            reason = "from pixels: " + reason
            mask, threshold = threshold_mask(gray, polarity)
    else:
        polarity, reason = tissue, "as asked"
        mask, threshold = threshold_mask(gray, polarity)
    unsplit = _no_split(gray, threshold, image, source, polarity)
    if unsplit is not None:
        return TissueMask(
            tissue, polarity=polarity, reason=f"{unsplit}: every tile is run", threshold=threshold
        )
    # a block holding any tissue pixel is tissue: objects smaller than a block are kept
    mask |= low < threshold if polarity == "brightfield" else high > threshold
    return TissueMask(
        tissue,
        polarity=polarity,
        reason=reason,
        validity=Validity(mask, scale),
        threshold=threshold,
    )


def _load_polygons(path: Path) -> list[Any]:
    """Polygons of a GeoJSON FeatureCollection, a Feature, a geometry or a QuPath list."""
    from shapely.geometry import shape

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise InputError(f"tissue file {path} is not readable GeoJSON ({reason})") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        items = data.get("features") or []
    elif isinstance(data, list):
        items = data
    else:
        items = [data]
    polygons = []
    for item in items:
        geometry = item.get("geometry") if isinstance(item, dict) and "geometry" in item else item
        if not isinstance(geometry, dict) or geometry.get("type") not in (
            "Polygon",
            "MultiPolygon",
        ):
            continue
        try:
            polygons.append(shape(geometry))
        except Exception as exc:
            reason = " ".join(str(exc).split())
            raise InputError(f"tissue file {path} has a bad polygon ({reason})") from None
    if not polygons:
        raise InputError(
            f"tissue file {path} holds no Polygon/MultiPolygon features; give annotations in "
            "level-0 pixel coordinates (QuPath GeoJSON) or a mask raster"
        )
    return polygons


def _beyond(polygons: list[Any], source: SlideSource) -> str:
    """Warn when polygons reach well past the slide (not level-0 pixels?); else ``""``."""
    import shapely

    height0, width0 = source.georef.level0_shape or source.shape
    x0, y0, x1, y1 = shapely.total_bounds(np.asarray(polygons, dtype=object))
    if x0 < -0.1 * width0 or y0 < -0.1 * height0 or x1 > 1.1 * width0 or y1 > 1.1 * height0:
        return (
            f"; warning: they reach x {x0:.0f}..{x1:.0f}, y {y0:.0f}..{y1:.0f}, well beyond the "
            f"slide's level 0 ({width0} x {height0} pixels): are they in level-0 pixels of "
            "this slide?"
        )
    return ""


def mask_from_file(path: str, source: SlideSource, max_size: int = _MASK_SIZE) -> TissueMask:
    """Build the user's mask: GeoJSON/QuPath polygons (level-0 pixels) or a mask raster."""
    file = Path(path)
    rows, cols = source.shape
    factor = max(1.0, max(rows, cols) / max_size)
    out_shape = (max(1, round(rows / factor)), max(1, round(cols / factor)))
    scale = (rows / out_shape[0], cols / out_shape[1])
    if file.suffix.lower() in (".geojson", ".json"):
        from affine import Affine
        from rasterio.features import rasterize

        dx, dy = source.georef.downsample
        # mask pixel -> level-0 pixel
        transform = Affine(scale[1] * dx, 0.0, 0.0, 0.0, scale[0] * dy, 0.0)
        polygons = _load_polygons(file)
        mask = rasterize(
            polygons, out_shape=out_shape, transform=transform, all_touched=True
        ).astype(bool)
        reason = "polygons in level-0 pixels" + _beyond(polygons, source)
    else:
        mask = _read_mask_raster(file, (rows, cols), out_shape)
        reason = "mask raster stretched over the slide"
    if not mask.any():
        raise InputError(f"tissue file {path} marks no tissue inside {source.name}")
    return TissueMask("file", reason=reason, validity=Validity(mask, scale), file=str(path))


def _read_mask_raster(
    file: Path, shape: tuple[int, int], out_shape: tuple[int, int]
) -> npt.NDArray[np.bool_]:
    import warnings

    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(file) as dataset:
                height, width = dataset.height, dataset.width
                data = dataset.read(1, out_shape=out_shape, resampling=Resampling.nearest)
    except RasterioIOError as exc:
        reason = " ".join(str(exc).split())
        raise InputError(f"tissue file {file} is not a readable mask raster ({reason})") from None
    rows, cols = shape
    if abs((height / width) / (rows / cols) - 1) > 0.02:
        raise InputError(
            f"tissue mask {file} is {width}x{height} but the slide is {cols}x{rows}: their "
            "aspect ratios differ; give a mask of the whole slide"
        )
    mask: npt.NDArray[np.bool_] = data > 0
    return mask
