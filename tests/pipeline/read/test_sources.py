"""One contract suite for every reader: boundless mirrored reads equal np.pad of the image."""

from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.errors import ConfigError, InputError
from pipeline.read import ArraySource, GeoTiffSource, SlideSource, ZarrSource, open_source
from pipeline.tile import Window, reflect_pad
from tests.pipeline.read.synthetic import TRANSFORM, write_geotiff, xy_image

DATA = Path(__file__).parents[2] / "data"
SVS = DATA / "wsi" / "CMU-1-Small-Region.svs"
LANDSAT = DATA / "geotiff" / "RGB.byte.tif"
COG = DATA / "geotiff" / "cogeo.tif"

WINDOWS = [
    Window(0, 0, 10, 12),
    Window(-7, -5, 20, 30),  # crosses the top-left corner
    Window(30, 40, 25, 25),  # crosses the bottom-right corner
    Window(-60, -70, 150, 170),  # pads larger than the image
]


def _array_source(tmp_path):
    return ArraySource(xy_image(3, 37, 53)), xy_image(3, 37, 53)


def _zarr_source(tmp_path):
    image = xy_image(2, 37, 53)
    path = tmp_path / "image.zarr"
    zarr.create_array(str(path), data=image, chunks=(1, 16, 16))
    return ZarrSource(path), image


def _geotiff_source(tmp_path):
    image = xy_image(3, 37, 53)
    return GeoTiffSource(write_geotiff(tmp_path / "x.tif", image)), image


def _band_subset(tmp_path):
    image = xy_image(4, 37, 53)
    return GeoTiffSource(write_geotiff(tmp_path / "x.tif", image), bands=[4, 2]), image[[3, 1]]


@pytest.mark.parametrize("factory", [_array_source, _zarr_source, _geotiff_source, _band_subset])
@pytest.mark.parametrize("window", WINDOWS)
def test_boundless_read_is_the_reflect_pad(tmp_path, factory, window):
    source, image = factory(tmp_path)
    padded = reflect_pad(image, (200, 200), (200, 200))
    expected = padded[
        :,
        window.row_off + 200 : window.row_stop + 200,
        window.col_off + 200 : window.col_stop + 200,
    ]
    got = source.read(window)
    assert got.dtype == image.dtype
    assert np.array_equal(got, expected)


def test_geotiff_georeference_and_nodata_mask(tmp_path):
    image = xy_image(3, 64, 96)
    image[:, :, :40] = 0
    source = GeoTiffSource(write_geotiff(tmp_path / "x.tif", image, nodata=0))
    assert source.georef.kind == "geo"
    assert source.georef.transform == TRANSFORM
    assert source.georef.to_attrs()["transform"] == list(TRANSFORM.to_gdal())
    assert source.georef.crs_obj.to_epsg() == 32618
    assert source.nodata == 0
    validity = source.validity()
    assert validity is not None
    assert not validity.any(Window(0, 0, 64, 32))
    assert validity.any(Window(0, 32, 64, 32))


def test_geotiff_without_mask_is_all_valid(tmp_path):
    source = GeoTiffSource(write_geotiff(tmp_path / "x.tif", xy_image(1, 20, 20)))
    assert source.validity() is None


def test_landsat_collar_mask():
    source = open_source(LANDSAT)
    assert isinstance(source, GeoTiffSource)
    assert source.shape == (718, 791)
    validity = source.validity()
    assert validity is not None
    assert 0.5 < validity.mask.mean() < 0.8  # the file's nodata collar is ~33 %


def test_jpeg_cog_reads():
    source = open_source(COG)
    block = source.read(Window(500, 500, 40, 40))
    assert block.shape == (3, 40, 40)
    assert block.std() > 0


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_svs_level0_frame_and_mpp(backend):
    source = open_source(SVS, slide_backend=backend)
    assert isinstance(source, SlideSource)
    assert source.shape == (2967, 2220)
    assert source.georef.kind == "slide"
    assert source.georef.pixel_mpp == pytest.approx((0.499, 0.499))
    assert source.georef.downsample == (1.0, 1.0)
    block = source.read(Window(-4, -4, 16, 16))
    inside = source.read(Window(0, 0, 12, 12))
    assert np.array_equal(block[:, 4:, 4:], inside)
    assert np.array_equal(block[:, 3, 4:], inside[:, 1])  # mirrored, edge not repeated


def test_backends_agree():
    a = open_source(SVS, slide_backend="openslide").read(Window(1000, 700, 64, 64))
    b = open_source(SVS, slide_backend="tiffslide").read(Window(1000, 700, 64, 64))
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2  # same JPEG tiles, two decoders


def test_slide_resampled_mpp_is_window_independent():
    source = open_source(SVS, mpp=0.998)  # twice level 0: box mean of 2 x 2
    assert source.shape == (1483, 1110)
    assert source.georef.pixel_mpp == pytest.approx((0.998, 0.998))
    assert source.georef.downsample == (2.0, 2.0)
    whole = source.read(Window(100, 100, 64, 64))
    part = source.read(Window(120, 130, 20, 20))
    assert np.array_equal(whole[:, 20:40, 30:50], part)
    odd = open_source(SVS, mpp=0.7)  # no integer ratio: nearest pixel
    whole = odd.read(Window(100, 100, 64, 64))
    assert np.array_equal(whole[:, 20:40, 30:50], odd.read(Window(120, 130, 20, 20)))


def test_slide_tissue_mask():
    validity = open_source(SVS).validity()
    assert validity is not None
    assert 0.05 < validity.mask.mean() < 0.95


def test_slide_levels_it_cannot_serve():
    with pytest.raises(ConfigError, match="level 3 is not available"):
        open_source(SVS, level=3)
    with pytest.raises(ConfigError, match="finer than"):
        open_source(SVS, mpp=0.1)


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_source(tmp_path / "missing.tif")
    text = tmp_path / "text.tif"
    text.write_text("not an image")
    with pytest.raises(InputError, match="not a readable raster image"):
        open_source(text)
    good = write_geotiff(tmp_path / "ok.tif", xy_image(3, 64, 64), compress="deflate")
    data = good.read_bytes()
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="corrupt"):
        open_source(corrupt)
    with pytest.raises(ConfigError, match=r"bands \[1, 5\] out of range .* has 3 band"):
        open_source(good, bands="1,5")


def test_handles_are_cached_per_process(tmp_path):
    from pipeline.read import source as source_module

    path = write_geotiff(tmp_path / "x.tif", xy_image(1, 8, 8))
    first = GeoTiffSource(path)
    second = GeoTiffSource(path)
    assert first._handle()[0] is second._handle()[0]
    assert ("rasterio", str(path), *source_module.file_stamp(str(path))) in source_module._HANDLES
