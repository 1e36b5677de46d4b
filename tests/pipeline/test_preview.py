"""gigaseg preview: thumbnails of GeoTIFFs, slides and stores with masks and outlines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from PIL import Image

from pipeline.errors import InputError
from pipeline.preview import read_thumbnail, render_preview
from pipeline.vectorize import vectorize

DATA = Path(__file__).resolve().parents[1] / "data"


def _red(png: Path) -> np.ndarray:
    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    return (rgb[..., 0] > 200) & (rgb[..., 1] > 120) & (rgb[..., 1] < 200) & (rgb[..., 2] < 60)


def test_geotiff_outlines_land_on_the_buildings(tmp_path: Path) -> None:
    """Outlines exported as lon/lat GeoJSON are drawn where the labels are."""
    src = DATA / "spacenet" / "sample_geotiff.tif"
    with rasterio.open(src) as ds:
        profile = ds.profile
    labels = np.zeros((900, 900), np.uint8)
    labels[300:420, 450:600] = 1
    profile.update(dtype="uint8", nodata=None)
    with rasterio.open(tmp_path / "labels.tif", "w", **profile) as ds:
        ds.write(labels, 1)
    vectorize(tmp_path / "labels.tif", tmp_path / "v.geojson", workers=0, progress=False)
    png = render_preview(src, tmp_path / "p.png", vectors=tmp_path / "v.geojson", size=300)
    drawn = np.argwhere(_red(png))
    with Image.open(png) as image:
        assert image.size == (300, 300)
    assert drawn.size
    rows, cols = drawn[:, 0], drawn[:, 1]
    assert rows.min() >= 98 and rows.max() <= 141  # 300..420 px / 3
    assert cols.min() >= 148 and cols.max() <= 201  # 450..600 px / 3


def test_slide_preview_with_store_mask_and_qupath_outlines(tmp_path: Path) -> None:
    slide = DATA / "wsi" / "CMU-1-Small-Region.svs"
    labels = np.zeros((2967 // 4, 2220 // 4), np.uint8)  # segmented at downsample 4
    labels[100:200, 100:300] = 1
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    group.create_array("labels", shape=labels.shape, chunks=(128, 128), dtype="uint8")[:] = labels
    group.attrs.update(
        {
            "source": str(slide),
            "classes": ["tumour"],
            "status": "complete",
            "mpp": 2.0,
            "downsample": 4.0,
        }
    )
    vectorize(tmp_path / "s.zarr", tmp_path / "c.qupath.geojson", workers=0, progress=False)
    png = render_preview(
        tmp_path / "s.zarr", tmp_path / "p.png", vectors=tmp_path / "c.qupath.geojson", size=400
    )
    with Image.open(png) as image:
        assert image.size == (round(2220 * 400 / 2967), 400)
    drawn = np.argwhere(_red(png))
    scale = 400 / 2967
    assert abs(drawn[:, 0].min() - 400 * scale) <= 2 and abs(drawn[:, 0].max() - 800 * scale) <= 2
    assert abs(drawn[:, 1].min() - 400 * scale) <= 2 and abs(drawn[:, 1].max() - 1200 * scale) <= 2


def test_store_without_its_image_and_missing_files(tmp_path: Path) -> None:
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    group.create_array("labels", shape=(8, 8), chunks=(8, 8), dtype="uint8")
    group.attrs.update({"source": "/nowhere/scene.tif", "status": "complete"})
    with pytest.raises(
        InputError, match=r"names source image '/nowhere/scene.tif', which is not there"
    ):
        render_preview(tmp_path / "s.zarr", tmp_path / "p.png")
    with pytest.raises(InputError, match=r"nope.tif does not exist; check the path"):
        read_thumbnail(tmp_path / "nope.tif")
