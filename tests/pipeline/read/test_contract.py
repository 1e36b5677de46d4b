"""One contract, every source kind: local GeoTIFF, COG over HTTP, S3, slide, Zarr, NumPy, STAC.

Each kind is opened through :func:`pipeline.read.open_source` and must honour the same
interface: reads equal the pixels (known exactly for every kind but the slide, whose reference
is tiffslide's own region read), mirrored boundless reads, window-independent values, a
:class:`~pipeline.read.Georef` that survives the store attributes, a picklable description
(tasks carry sources to workers), a JSON-able ``describe()``, per-pixel validity and a
bounded thumbnail.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import zarr

from pipeline.read import Georef, Source, open_source
from pipeline.tile.grid import Window
from tests.servers import copy_to

from .synthetic import CRS, TRANSFORM, write_geotiff, xy_image

SVS = Path(__file__).resolve().parents[2] / "data" / "wsi" / "CMU-1-Small-Region.svs"
KINDS = ["geotiff", "cog-http", "s3", "slide", "zarr", "numpy", "stac"]
IMAGE = xy_image(3, 96, 120)


def _write_cog(path: Path) -> Path:
    profile = {"driver": "COG", "width": 120, "height": 96, "count": 3, "dtype": "uint8",
               "crs": CRS, "transform": TRANSFORM, "blocksize": 32}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(IMAGE)
    return path


def _write_stac(folder: Path) -> Path:
    assets = {}
    for band, name in enumerate(["red", "green", "blue"]):
        profile = {"driver": "GTiff", "width": 120, "height": 96, "count": 1, "dtype": "uint8",
                   "crs": CRS, "transform": TRANSFORM, "tiled": True, "blockxsize": 32,
                   "blockysize": 32}  # fmt: skip
        with rasterio.open(folder / f"{name}.tif", "w", **profile) as dataset:
            dataset.write(IMAGE[band], 1)
        assets[name.upper()] = {
            "href": f"{name}.tif",
            "type": "image/tiff; application=geotiff",
            "roles": ["data"],
            "eo:bands": [{"name": name.upper(), "common_name": name}],
        }
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "x", "geometry": None,
            "properties": {}, "assets": assets, "links": []}  # fmt: skip
    path = folder / "item.json"
    path.write_text(json.dumps(item))
    return path


def _slide_reference(window: Window) -> np.ndarray:
    import tiffslide

    with tiffslide.TiffSlide(str(SVS)) as slide:
        region = slide.read_region(
            (window.col_off, window.row_off), 0, (window.width, window.height), as_array=True
        )
    return np.moveaxis(np.asarray(region)[..., :3], -1, 0)


@pytest.fixture(params=KINDS)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Source, Any]]:
    """``(source, reference)``: the reference is the whole image, or a reader for slides."""
    kind = request.param
    if kind == "geotiff":
        yield open_source(write_geotiff(tmp_path / "a.tif", IMAGE, compress="deflate")), IMAGE
    elif kind == "cog-http":
        server = request.getfixturevalue("http_server")
        _write_cog(server.root / "a.tif")
        yield open_source(server.url("a.tif")), IMAGE
    elif kind == "s3":
        s3 = request.getfixturevalue("s3_server")
        url = s3.put("contract", "a.tif", _write_cog(tmp_path / "a.tif"))
        yield open_source(url), IMAGE
    elif kind == "slide":
        yield open_source(SVS, slide_backend="tiffslide"), _slide_reference
    elif kind == "zarr":
        array = zarr.create_array(
            str(tmp_path / "a.zarr"), shape=IMAGE.shape, chunks=(3, 32, 32), dtype="uint8"
        )
        array[...] = IMAGE
        array.attrs.update(Georef.geo(CRS, TRANSFORM).to_attrs())
        yield open_source(tmp_path / "a.zarr"), IMAGE
    elif kind == "numpy":
        yield open_source(IMAGE), IMAGE
    else:
        server = request.getfixturevalue("http_server")
        item = _write_stac(server.root)
        copy_to(tmp_path, item)
        yield open_source(server.url("item.json"), assets=["red", "green", "blue"]), IMAGE


def _expected(reference: Any, window: Window) -> np.ndarray:
    if callable(reference):
        return np.asarray(reference(window))
    return np.asarray(
        reference[:, window.row_off : window.row_stop, window.col_off : window.col_stop]
    )


def test_reads_equal_the_pixels(case: tuple[Source, Any]) -> None:
    source, reference = case
    assert source.count == len(source.bands) == 3
    for window in (Window(0, 0, 32, 40), Window(17, 29, 50, 61)):
        got = source.read(window)
        assert got.shape == (3, window.height, window.width) and got.dtype == source.dtype
        np.testing.assert_array_equal(got, _expected(reference, window))


def test_boundless_reads_mirror_without_repeating_the_edge(case: tuple[Source, Any]) -> None:
    source, _ = case
    inside = source.read(Window(0, 0, 24, 24))
    corner = source.read(Window(-6, -5, 30, 29))
    np.testing.assert_array_equal(corner[:, 6:, 5:], inside)
    expected = np.pad(inside, ((0, 0), (6, 0), (5, 0)), mode="reflect")
    np.testing.assert_array_equal(corner, expected)
    height, width = source.shape
    far = source.read(Window(height - 10, width - 10, 16, 16))
    edge = source.read(Window(height - 10, width - 10, 10, 10))
    np.testing.assert_array_equal(far, np.pad(edge, ((0, 0), (0, 6), (0, 6)), mode="reflect"))


def test_values_do_not_depend_on_the_window(case: tuple[Source, Any]) -> None:
    source, _ = case
    whole = source.read(Window(8, 8, 64, 64))
    np.testing.assert_array_equal(whole[:, 13:37, 21:50], source.read(Window(21, 29, 24, 29)))


def test_georef_survives_store_attributes_and_pickling(case: tuple[Source, Any]) -> None:
    source, _ = case
    georef = source.georef
    assert isinstance(georef, Georef)
    assert Georef.from_attrs(json.loads(json.dumps(georef.to_attrs()))) == georef
    if georef.kind == "geo":
        assert georef.transform == TRANSFORM and georef.crs_obj.to_epsg() == 32618
    clone = pickle.loads(pickle.dumps(source))
    window = Window(5, 7, 20, 22)
    np.testing.assert_array_equal(clone.read(window), source.read(window))
    assert clone.georef == georef


def test_describe_validity_and_thumbnail(case: tuple[Source, Any]) -> None:
    source, _ = case
    info = json.loads(json.dumps(source.describe(), default=str))
    assert info["shape"] == list(source.shape) and info["bands"] == [1, 2, 3]
    window = Window(0, 0, 16, 16)
    valid = source.valid_pixels(window, source.read(window))
    assert valid.shape == (16, 16) and valid.dtype == bool
    pixels, mask = source.thumbnail(48)
    assert pixels.shape[0] == 3 and max(pixels.shape[1:]) <= 48 and mask.shape == pixels.shape[1:]
