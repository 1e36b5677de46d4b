"""Training data: windowed patches from large images with vector or raster labels.

``source``   windowed readers (GeoTIFF through rasterio, slides through tiffslide)
``vectors``  GeoJSON / GeoPackage label files with their CRS
``labels``   labels on the image grid: reprojected + rasterized vectors, or warped rasters
``boundary`` interior / boundary / background targets for instance-aware training
``region``   the spatial validation hold-out band
``settings`` the ``data:`` section of a training config
``sampler``  training draws (foreground-balanced, nodata-avoiding) and validation windows
"""

from __future__ import annotations

from pipeline.sample.boundary import (
    BOUNDARY_NAME,
    boundary_classes,
    boundary_targets,
)
from pipeline.sample.labels import (
    IGNORE,
    LabelSource,
    RasterLabels,
    VectorLabelSource,
    open_labels,
    rasterize_window,
)
from pipeline.sample.region import Holdout, parse_holdout
from pipeline.sample.sampler import Patch, PatchSampler, Scene, boundary_pixels, open_scene
from pipeline.sample.settings import SampleSettings, parse_sample_settings
from pipeline.sample.source import ImageSource, SampleImage, open_image
from pipeline.sample.vectors import VectorLabels, read_vectors, reproject_geometries

__all__ = [
    "BOUNDARY_NAME",
    "IGNORE",
    "Holdout",
    "ImageSource",
    "LabelSource",
    "Patch",
    "PatchSampler",
    "RasterLabels",
    "SampleImage",
    "SampleSettings",
    "Scene",
    "VectorLabelSource",
    "VectorLabels",
    "boundary_classes",
    "boundary_pixels",
    "boundary_targets",
    "open_image",
    "open_labels",
    "open_scene",
    "parse_holdout",
    "parse_sample_settings",
    "rasterize_window",
    "read_vectors",
    "reproject_geometries",
]
