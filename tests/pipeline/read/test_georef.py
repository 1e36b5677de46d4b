"""The one georeference type: constructors, store attributes, true per-axis slide downsample."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
import rasterio
from affine import Affine

import pipeline.read.georef as georef_module
from pipeline.errors import InputError
from pipeline.read import Georef, open_source
from pipeline.vectorize.georef import Frame

from .synthetic import TRANSFORM, write_geotiff, xy_image

DATA = Path(__file__).resolve().parents[2] / "data"
SVS = DATA / "wsi" / "CMU-1-Small-Region.svs"
LANDSAT = DATA / "geotiff" / "RGB.byte.tif"


def test_doctests() -> None:
    assert doctest.testmod(georef_module).failed == 0


def test_geotiff_georef_round_trips_through_store_attrs(tmp_path: Path) -> None:
    source = open_source(write_geotiff(tmp_path / "x.tif", xy_image(2, 20, 30)))
    georef = source.georef
    attrs = georef.to_attrs()
    assert set(attrs) == {"crs", "transform"}
    assert attrs["transform"] == list(TRANSFORM.to_gdal())
    assert Georef.from_attrs(attrs) == georef
    assert georef.kind == "geo" and georef.resolution == (10.0, 10.0)
    # equal to what rasterio itself says about the file
    with rasterio.open(tmp_path / "x.tif") as dataset:
        assert Georef.from_dataset(dataset) == georef
        assert georef.crs_obj == dataset.crs


def test_real_landsat_crs_and_window_shift() -> None:
    georef = open_source(LANDSAT).georef
    with rasterio.open(LANDSAT) as dataset:
        expected = dataset.transform @ Affine.translation(100, 40)  # col 100, row 40
        corner = dataset.xy(40, 100, offset="ul")
        assert georef.crs_obj.to_epsg() == dataset.crs.to_epsg() == 32618
    assert georef.shifted(40, 100).transform == expected
    assert georef.shifted(40, 100).transform @ (0, 0) == pytest.approx(corner)


def test_slide_georef_uses_the_levels_true_per_axis_downsample() -> None:
    import tiffslide

    with tiffslide.TiffSlide(str(SVS)) as slide:
        width0, height0 = slide.dimensions
        mpp_x = float(slide.properties["tiffslide.mpp-x"])
    source = open_source(SVS, mpp=mpp_x * 3)  # no level matches: resampled from level 0
    georef = source.georef
    assert georef.kind == "slide" and georef.level == 0
    assert georef.level0_shape == (height0, width0)
    assert georef.downsample == pytest.approx((3.0, 3.0))
    assert georef.pixel_mpp == pytest.approx((mpp_x * 3, mpp_x * 3))
    back = Georef.from_attrs(georef.to_attrs())
    assert back.downsample == pytest.approx(georef.downsample)
    assert back.mpp == pytest.approx(georef.mpp)


def test_fractional_per_axis_downsample_survives_attrs() -> None:
    georef = Georef.for_slide(
        downsample=(4.000_225, 4.000_54), mpp=(0.2498, 0.2502), level=2, level0_shape=(8001, 9003)
    )
    attrs = georef.to_attrs()
    assert attrs["downsample_xy"] == [4.000_225, 4.000_54]
    assert attrs["frame"] == "level0" and attrs["level"] == 2
    assert Georef.from_attrs(attrs) == georef
    # the older scalar attributes (mpp of the working pixel, one downsample) still read
    old = Georef.from_attrs({"mpp": 1.0, "downsample": 4.0, "level0_shape": [10, 10]})
    assert old.mpp == (0.25, 0.25) and old.downsample == (4.0, 4.0)


def test_attrs_without_georeference_are_pixels_and_bad_transform_is_refused() -> None:
    assert Georef.from_attrs({}).kind == "pixel"
    assert Georef.from_attrs({"transform": [0, 1, 0, 0, 0, 1]}) == Georef.pixel()
    with pytest.raises(InputError, match="6 numbers"):
        Georef.from_attrs({"crs": "EPSG:32618", "transform": [1, 2, 3]})


def test_same_grid_compares_crs_by_meaning() -> None:
    a = Georef.geo("EPSG:32618", TRANSFORM)
    b = Georef.geo(rasterio.crs.CRS.from_epsg(32618).to_wkt(), list(TRANSFORM.to_gdal()))
    assert a.same_grid(b)
    assert not a.same_grid(Georef.geo("EPSG:32617", TRANSFORM))
    assert not a.same_grid(a.shifted(0, 1))
    assert a.scaled(0.5, 0.5).resolution == (5.0, 5.0)


def test_vectorize_frame_is_built_from_the_georef() -> None:
    georef = Georef.geo("EPSG:4326", Affine(1e-4, 0, 10, 0, -1e-4, 60))
    frame = Frame.from_georef(georef, (40, 60))
    assert frame.kind == "geo" and frame.crs == georef.crs
    assert frame.work_crs != frame.crs  # geographic: a local equal-area working CRS
    slide = Frame.from_georef(
        Georef.for_slide(downsample=(2.0, 4.0), mpp=(0.5, 0.25), level=1, level0_shape=(8, 8)),
        (4, 2),
    )
    assert slide.kind == "slide" and slide.transform == (0.0, 2.0, 0.0, 0.0, 0.0, 4.0)
