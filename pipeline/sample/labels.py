"""Label windows on an image's grid, from vector files or label rasters.

Vector labels are reprojected once to the image CRS and indexed in an STRtree; each window then
rasterizes only the geometries that touch it (pixel centres inside a polygon are labelled, as
``rasterio.features.rasterize`` does by default). Lines (roads) are buffered to a width in CRS
units (metres for projected CRSs) before rasterizing. Label rasters on another grid are warped
to the image grid with nearest-neighbour resampling through a ``WarpedVRT``, window by window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import shapely
from affine import Affine

from pipeline.errors import ConfigError, InputError
from pipeline.sample.boundary import boundary_targets
from pipeline.sample.source import ImageSource
from pipeline.sample.vectors import VectorLabels, read_vectors

__all__ = [
    "IGNORE",
    "LabelSource",
    "RasterLabels",
    "VectorLabelSource",
    "open_labels",
    "rasterize_window",
]

#: Label value for pixels the loss and metrics ignore (nodata, pixels counted elsewhere).
IGNORE = 255

_RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".vrt", ".img", ".png", ".jp2"})


class LabelSource(Protocol):
    """Labels for one image: an ``(h, w)`` uint8 class-id window on the image grid."""

    def window(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Return class ids (0 = background) for a window of the image grid."""
        ...

    def centres(self) -> np.ndarray:
        """Return ``(n, 2)`` (row, col) image-pixel points inside labelled objects."""
        ...


def rasterize_window(
    geometries: Sequence[Any] | np.ndarray,
    values: Sequence[int] | np.ndarray,
    transform: Affine,
    shape: tuple[int, int],
    dtype: str = "uint8",
) -> np.ndarray:
    """Burn geometries into a class-id array (pure computation).

    Parameters
    ----------
    geometries
        Polygons (or already-buffered lines) in the coordinates ``transform`` maps to.
    values
        Class id per geometry (1..254); later geometries overwrite earlier ones.
    transform
        The window's affine transform (pixel -> coordinates).
    shape
        ``(height, width)`` of the window.
    dtype
        Output type (``uint8`` for class ids; ``int32`` to burn one id per object).

    Returns
    -------
    numpy.ndarray
        ``shape`` of ``dtype``, 0 where no geometry covers a pixel centre.
    """
    from rasterio.features import rasterize

    if len(geometries) == 0:
        return np.zeros(shape, dtype=dtype)
    pairs = [
        (geometry, int(value))
        for geometry, value in zip(geometries, values, strict=True)
        if not geometry.is_empty
    ]
    if not pairs:
        return np.zeros(shape, dtype=dtype)
    return np.asarray(
        rasterize(pairs, out_shape=shape, transform=transform, fill=0, dtype=dtype),
        dtype=dtype,
    )


class VectorLabelSource:
    """Vector labels reprojected to an image's CRS, rasterized on demand.

    Parameters
    ----------
    labels
        Geometries read with :func:`pipeline.sample.vectors.read_vectors`.
    image
        The image whose grid the windows are on.
    classes
        Class names; a geometry's value (its ``label_property``) maps to ``index + 1``. With one
        class and no property, every geometry is class 1.
    line_width
        Width (CRS units, metres for projected CRSs; level-0 pixels for slides) that lines are
        buffered to; required when the labels hold lines.
    boundary
        Boundary width in pixels of the image grid: when given, each window holds
        interior / boundary / background targets
        (:func:`~pipeline.sample.boundary.boundary_targets`), the boundary class being
        ``len(classes) + 1``.
    """

    def __init__(
        self,
        labels: VectorLabels,
        image: ImageSource,
        *,
        classes: Sequence[str],
        line_width: float | None = None,
        boundary: float | None = None,
    ) -> None:
        # Slides have no CRS: their labels are level-0 pixel coordinates (QuPath GeoJSON
        # carries no ``crs`` member), so they are used as they are.
        image_crs = image.georef.crs_obj
        if labels.crs is not None and image_crs is not None:
            labels = labels.to_crs(image_crs)
        geometries = labels.geometries
        kinds = shapely.get_type_id(geometries) if len(geometries) else np.array([], dtype=int)
        is_line = np.isin(kinds, [1, 2, 5])  # LineString, LinearRing, MultiLineString
        if is_line.any():
            if line_width is None or line_width <= 0:
                raise ConfigError(
                    "labels contain lines but 'line_width' is not set; give the road width in "
                    "metres (e.g. line_width: 6)"
                )
            if image_crs is not None and image_crs.is_geographic:
                raise ConfigError(
                    f"cannot buffer lines by {line_width} m on geographic image {image.path}; "
                    "reproject the image to a projected CRS"
                )
            geometries = geometries.copy()
            geometries[is_line] = shapely.buffer(
                geometries[is_line], line_width / 2, cap_style="flat"
            )
        self.values = _class_values(labels.values, classes)
        keep = self.values > 0
        self.geometries = geometries[keep]
        self.values = self.values[keep]
        self._tree = shapely.STRtree(self.geometries)
        self._image = image
        self._inverse = ~image.georef.transform
        self.boundary = boundary
        self._boundary_class = len(classes) + 1

    def window(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Rasterize the geometries touching a window of the image grid.

        Parameters
        ----------
        row, col
            Top-left pixel of the window.
        height, width
            Window size in pixels.

        Returns
        -------
        numpy.ndarray
            ``(height, width)`` uint8 class ids.
        """
        if self.boundary is not None:
            return self._boundary_window(row, col, height, width, self.boundary)
        transform, hits = self._hits(row, col, height, width)
        return rasterize_window(
            self.geometries[hits], self.values[hits], transform, (height, width)
        )

    def _hits(self, row: int, col: int, height: int, width: int) -> tuple[Affine, np.ndarray]:
        """Return the window's transform and the sorted indexes of the geometries touching it."""
        transform = self._image.georef.transform @ Affine.translation(col, row)
        corners = [transform @ (0, 0), transform @ (width, height)]
        xs = [corner[0] for corner in corners]
        ys = [corner[1] for corner in corners]
        box = shapely.box(min(xs), min(ys), max(xs), max(ys))
        return transform, np.sort(self._tree.query(box, predicate="intersects"))

    def _boundary_window(
        self, row: int, col: int, height: int, width: int, radius: float
    ) -> np.ndarray:
        """Interior / boundary / background ids, from a window padded by the radius."""
        pad = math.ceil(radius)
        shape = (height + 2 * pad, width + 2 * pad)
        transform, hits = self._hits(row - pad, col - pad, *shape)
        ids = rasterize_window(
            self.geometries[hits], np.arange(1, len(hits) + 1), transform, shape, dtype="int32"
        )
        classes = np.concatenate([[0], self.values[hits]]).astype(np.uint8)[ids]
        targets = boundary_targets(ids, classes, radius, self._boundary_class)
        return targets[pad : pad + height, pad : pad + width]

    def centres(self) -> np.ndarray:
        """Return one interior point per geometry as ``(row, col)`` pixels (float)."""
        if len(self.geometries) == 0:
            return np.zeros((0, 2))
        points = shapely.point_on_surface(self.geometries)
        x, y = shapely.get_x(points), shapely.get_y(points)
        a, b, c, d, e, f = tuple(self._inverse)[:6]
        cols = a * x + b * y + c
        rows = d * x + e * y + f
        return np.column_stack([rows, cols])


class RasterLabels:
    """A label raster (class ids) read window by window on an image's grid.

    Parameters
    ----------
    path
        The label raster (band 1 holds class ids; its nodata becomes :data:`IGNORE`).
    image
        The image whose grid the windows are on; the label raster is warped to it
        (nearest neighbour) when its CRS, transform or size differ.
    """

    def __init__(self, path: str | Path, image: ImageSource) -> None:
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        from pipeline.read import Georef, open_dataset

        self.path = str(path)
        dataset: Any = open_dataset(self.path)
        grid = Georef.from_dataset(dataset)
        image_crs = image.georef.crs
        same_grid = (
            dataset.width == image.width
            and dataset.height == image.height
            and tuple(dataset.transform)[:6] == tuple(image.georef.transform)[:6]
            and (image_crs is None or grid.crs is None or grid.same_grid(image.georef))
        )
        self._nodata = dataset.nodata
        if same_grid:
            self._dataset: Any = dataset
        else:
            if image_crs is None:
                raise InputError(
                    f"label raster {self.path} is not on the grid of {image.path}, which has no "
                    "CRS to warp to; give a label raster of the same size"
                )
            self._dataset = WarpedVRT(
                dataset,
                crs=image_crs,
                transform=image.georef.transform,
                width=image.width,
                height=image.height,
                resampling=Resampling.nearest,
                nodata=self._nodata if self._nodata is not None else 0,
            )
        self._source = dataset
        self._centres: np.ndarray | None = None
        self._image = image

    def window(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Read class ids for a window of the image grid (nodata -> :data:`IGNORE`)."""
        from rasterio.windows import Window

        data = self._dataset.read(1, window=Window(col, row, width, height))
        labels: np.ndarray = data.astype(np.uint8)
        if self._nodata is not None:
            labels[data == self._nodata] = IGNORE
        return labels

    def centres(self, stride: int = 64, limit: int = 4096) -> np.ndarray:
        """Return foreground pixel positions found on a coarse scan (cached).

        The scan reads rows of blocks ``stride`` apart, so memory stays one strip wide.
        """
        if self._centres is None:
            found: list[tuple[int, int]] = []
            for row in range(stride // 2, self._image.height, stride):
                line = self.window(row, 0, 1, self._image.width)[0]
                cols = np.flatnonzero((line > 0) & (line != IGNORE))[::8]
                found.extend((row, int(col)) for col in cols)
                if len(found) >= limit:
                    break
            self._centres = np.asarray(found, dtype=float).reshape(-1, 2)
        return self._centres

    def close(self) -> None:
        """Close the raster(s)."""
        self._dataset.close()
        if self._source is not self._dataset:
            self._source.close()


def _class_values(values: Sequence[Any], classes: Sequence[str]) -> np.ndarray:
    if all(value is None for value in values):
        return np.ones(len(values), dtype=np.uint8)
    names = {name: index + 1 for index, name in enumerate(classes)}
    out = np.zeros(len(values), dtype=np.uint8)
    for position, value in enumerate(values):
        if value is None:
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[position] = int(value) if 0 < int(value) <= len(classes) else 0
        else:
            out[position] = names.get(str(value), 0)
    return out


def open_labels(
    path: str | Path,
    image: ImageSource,
    *,
    classes: Sequence[str],
    label_property: str | None = None,
    line_width: float | None = None,
    boundary: float | None = None,
) -> VectorLabelSource | RasterLabels:
    """Open labels for ``image``: a label raster by suffix, otherwise a vector file.

    Parameters
    ----------
    path
        GeoJSON/GeoPackage, or a label raster (``.tif``...).
    image
        The image the labels belong to.
    classes
        Class names (class id = index + 1).
    label_property
        Vector property holding the class name or id; every feature is class 1 when ``None``.
    line_width
        Buffer width for line labels (roads), in the image CRS units.
    boundary
        Boundary width in image pixels for interior / boundary / background targets (vector
        labels only: a class raster does not say where one object ends and the next begins).

    Returns
    -------
    VectorLabelSource or RasterLabels
        A label source on the image grid.
    """
    from pipeline.read.location import location_suffix

    if location_suffix(path) in _RASTER_SUFFIXES:
        if boundary is not None:
            raise ConfigError(
                f"boundary targets need vector labels (one polygon per object), but {path} is "
                "a label raster; give a GeoJSON/GeoPackage or remove 'boundary'"
            )
        return RasterLabels(path, image)
    vectors = read_vectors(path, prop=label_property)
    return VectorLabelSource(
        vectors, image, classes=classes, line_width=line_width, boundary=boundary
    )
