"""Slides read level-native: fractional Aperio downsamples, OME-TIFF SubIFDs, per-axis
downsample, --source-mpp, and OpenSlide's stated limitation."""

import numpy as np
import pytest
import tifffile
from shapely.geometry import Point

from pipeline.errors import ConfigError
from pipeline.read import SlideSource, open_source
from pipeline.read.georef import Georef
from pipeline.read.slide import choose_level, ome_physical_size
from pipeline.tile import Window
from pipeline.vectorize.georef import Frame
from tests.pipeline.read.slides import (
    textured,
    write_generic,
    write_leica_scn,
    write_ome,
    write_ome_series,
    write_svs,
)


@pytest.fixture(scope="module")
def svs(tmp_path_factory):
    # odd level-0 size: levels 500x601 (downsample 2.002 x 2.0017) and 250x300 (4.004 x 4.01)
    path = tmp_path_factory.mktemp("svs") / "fractional.svs"
    return write_svs(path, textured(1001, 1203, seed=3), levels=3, tile=128)


def _level(path, level):
    with tifffile.TiffFile(path) as tiff:
        return np.moveaxis(tiff.series[0].levels[level].asarray(), -1, 0)


@pytest.mark.parametrize("level", [1, 2])
def test_fractional_levels_read_their_own_pixels(svs, level):
    source = open_source(svs, level=level)
    assert isinstance(source, SlideSource) and source.backend == "tiffslide"
    assert source.level_native and not source.notes
    truth = _level(svs, level)
    assert source.shape == truth.shape[1:]
    # any window, wherever it starts, is a slice of the level (no resampling by position)
    for r, c in [(0, 0), (37, 91), (101, 5), (truth.shape[1] - 40, truth.shape[2] - 33)]:
        assert np.array_equal(source.read(Window(r, c, 40, 33)), truth[:, r : r + 40, c : c + 33])
    height0, width0 = 1001, 1203
    dx, dy = source.georef.downsample
    assert (dy, dx) == (height0 / truth.shape[1], width0 / truth.shape[2])
    assert dy != dx and dx != 2**level  # fractional and different per axis
    assert source.georef.pixel_mpp[0] == pytest.approx(0.499 * dx)
    assert source.georef.level0_shape == (height0, width0)


def test_openslide_resamples_fractional_levels_and_says_so(svs):
    source = open_source(svs, level=1, slide_backend="openslide")
    assert not source.level_native
    assert "not exactly whole-level inference" in source.notes[0]
    truth = _level(svs, 1)
    read = source.read(Window(37, 91, 40, 33))
    assert not np.array_equal(read, truth[:, 37:77, 91:124])  # the bug the native path fixes
    level0 = open_source(svs, level=0, slide_backend="openslide")
    assert level0.level_native and not level0.notes


def test_level_coordinates_map_to_level0_per_axis(svs):
    source = open_source(svs, level=1)
    rows, cols = source.shape
    # the level's far corner is level 0's far corner, on both axes (through the store attrs)
    georef = Georef.from_attrs(source.georef.to_attrs())
    assert georef.transform @ (cols, rows) == pytest.approx((1203, 1001))
    frame = Frame.from_georef(georef, source.shape)
    assert frame.to_map(Point(cols, rows)).coords[0] == pytest.approx((1203, 1001))


def test_ome_subifd_pyramid_and_physical_size(tmp_path):
    image = textured(301, 403, seed=4)
    path = write_ome(tmp_path / "s.ome.tif", image, physical_size=(260.0, 250.0), unit="nm")
    source = open_source(path)
    assert isinstance(source, SlideSource)
    info = source.describe()
    assert [lv["dimensions"] for lv in info["levels"]] == [[403, 301], [201, 150], [100, 75]]
    assert source.mpp0_yx == pytest.approx((0.26, 0.25))
    level2 = open_source(path, level=2)
    assert np.array_equal(level2.read(Window(3, 5, 20, 30)), _level(path, 2)[:, 3:23, 5:35])
    assert level2.georef.pixel_mpp[0] == pytest.approx(0.25 * 403 / 100)
    # a target resolution picks the matching level without resampling
    assert open_source(path, mpp=0.5).level == 1


def test_ome_physical_size_parsing():
    ns = 'xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"'
    xml = f'<OME {ns}><Image><Pixels PhysicalSizeX="0.5" PhysicalSizeY="0.5"/></Image></OME>'
    assert ome_physical_size(xml) == (0.5, 0.5)
    xml = f'<OME {ns}><Image><Pixels PhysicalSizeX="1" PhysicalSizeXUnit="mm"/></Image></OME>'
    assert ome_physical_size(xml) == (1000.0, 1000.0)  # Y is optional: square pixels
    xml = f'<OME {ns}><Image><Pixels PhysicalSizeX="1" PhysicalSizeXUnit="furlong"/></Image></OME>'
    assert ome_physical_size(xml) is None  # a unit it does not know: no resolution
    assert ome_physical_size("not xml") is None


def test_source_mpp_supplies_a_missing_resolution(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, textured(256, 320), photometric="rgb", tile=(64, 64))
    with pytest.raises(
        ConfigError, match="records no microns per pixel; give it with --source-mpp"
    ):
        open_source(path, mpp=1.0)
    source = open_source(path, source_mpp=0.5, mpp=1.0)
    assert source.georef.pixel_mpp[0] == pytest.approx(1.0) and source.shape == (128, 160)
    with pytest.raises(ConfigError, match="must be a positive number"):
        open_source(path, source_mpp=-1)


def test_source_mpp_over_a_recorded_one_is_noted(svs):
    source = open_source(svs, source_mpp=0.25)
    assert source.mpp0 == 0.25 and "records 0.499" in source.notes[0]


def test_choose_level_tolerance_and_resampling():
    assert choose_level([0.2527, 0.5055, 1.011], 0.5) == (1, 1.0)
    assert choose_level([0.25, 0.5], 0.5 * 1.5) == (1, 1.5)
    with pytest.raises(ConfigError, match="finer than"):
        choose_level([0.5, 1.0], 0.2)


# generic pyramids: levels that tifffile gives as separate series (issue 10)
GENERIC_SIZES = [(333, 401), (166, 133), (80, 61), (39, 29)]  # dy != dx, fractional


@pytest.mark.parametrize(
    "layout",
    [
        {"subifds": False, "compression": "jpeg"},  # reduced pages, JPEG YCbCr tiles
        {"subifds": True},  # SubIFDs, tiled
        {"subifds": True, "tile": None},  # SubIFDs, striped
    ],
)
def test_generic_pyramid_levels_are_found_and_read_natively(tmp_path, layout):
    path = write_generic(tmp_path / "g.tif", textured(333, 401, seed=6), GENERIC_SIZES, **layout)
    source = open_source(path)  # no --level: a pyramid without georeferencing is a slide
    assert isinstance(source, SlideSource) and source.level_shapes == GENERIC_SIZES
    with tifffile.TiffFile(path) as tiff:
        truths = [np.moveaxis(series.asarray(), -1, 0) for series in tiff.series]
    for level in (1, 3):
        source = open_source(path, level=level)
        truth = truths[level]
        assert np.array_equal(source.read(Window(0, 0, *source.shape)), truth)
        assert np.array_equal(source.read(Window(5, 3, 11, 17)), truth[:, 5:16, 3:20])
        dx, dy = source.georef.downsample
        assert (dy, dx) == (333 / truth.shape[1], 401 / truth.shape[2])


def test_ome_levels_as_series_skip_the_label(tmp_path):
    sizes = [(301, 403), (150, 201), (75, 100)]
    path = write_ome_series(tmp_path / "s.ome.tif", textured(301, 403, seed=2), sizes)
    source = open_source(path, level=2)
    assert source.level_shapes == sizes and source.mpp0_yx == pytest.approx((0.25, 0.25))
    with tifffile.TiffFile(path) as tiff:
        truth = np.moveaxis(tiff.series[2].asarray(), -1, 0)
    assert np.array_equal(source.read(Window(7, 9, 30, 41)), truth[:, 7:37, 9:50])
    assert open_source(path, mpp=0.5).level == 1


def test_rgba_slide_reads_rgb(tmp_path):
    image = np.concatenate([textured(130, 150), np.full((130, 150, 1), 255, np.uint8)], -1)
    path = write_generic(tmp_path / "a.tif", image, [(130, 150), (65, 75)], extrasamples=[2])
    source = open_source(path, level=1)
    assert source.count == 3 and "RGBA" in source.notes[0]
    with tifffile.TiffFile(path) as tiff:
        truth = np.moveaxis(tiff.pages[1].asarray(), -1, 0)[:3]
    assert np.array_equal(source.read(Window(0, 0, 65, 75)), truth)


def test_an_svs_thumbnail_label_and_macro_are_not_pyramid_levels():
    """Aperio marks its label and macro images reduced-resolution: they are still not levels."""
    from pathlib import Path

    import tiffslide

    from pipeline.read.slide import native_levels

    svs = Path(__file__).parents[2] / "data" / "wsi" / "CMU-1-Small-Region.svs"
    with tiffslide.TiffSlide(svs) as slide:
        names = [s.name for s in slide.ts_tifffile.series]
        levels = native_levels(slide)
    assert names[1:] == ["Thumbnail", "Label", "Macro"]
    assert levels == ([(0, 0)], [(2967, 2220)])


def test_rasters_gdal_wrote_and_label_maps_stay_rasters(tmp_path):
    # gigaseg's own exports of a slide store are COGs without georeferencing: they must open
    # as rasters (GeoTiffSource), not as slides, for vectorize/evaluate/info (issue 10)
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from pipeline.read.open import is_slide

    labels = np.zeros((300, 400), np.uint8)
    labels[50:100, 60:200] = 1
    profile = {"driver": "COG", "width": 400, "height": 300, "count": 1, "dtype": "uint8",
               "blocksize": 64, "overview_resampling": "nearest"}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "cog.tif", "w", **profile) as dataset:
            dataset.write(labels, 1)
        gtiff = {**profile, "driver": "GTiff", "tiled": True, "blockxsize": 64,
                 "blockysize": 64, "nodata": 255}  # fmt: skip
        del gtiff["blocksize"], gtiff["overview_resampling"]
        with rasterio.open(tmp_path / "gtiff.tif", "w", **gtiff) as dataset:
            dataset.write(labels, 1)
        with rasterio.open(tmp_path / "gtiff.tif", "r+") as dataset:
            dataset.build_overviews([2, 4])
    sizes = [(300, 400), (150, 200)]
    palette = tmp_path / "palette.tif"
    with tifffile.TiffWriter(palette) as tiff:
        colormap = np.zeros((3, 256), np.uint16)
        for height, width in sizes:
            level = labels[: height * 2 : 300 // height, : width * 2 : 400 // width]
            tiff.write(level, tile=(64, 64), photometric="palette", colormap=colormap,
                       subfiletype=0 if height == 300 else 1, metadata=None)  # fmt: skip
    for name in ("cog.tif", "gtiff.tif", "palette.tif"):
        assert not is_slide(tmp_path / name), name
        assert type(open_source(tmp_path / name)).__name__ == "GeoTiffSource"
    slide = write_generic(tmp_path / "g.tif", textured(300, 400), sizes)
    assert is_slide(slide)


def test_a_leica_scn_of_several_regions_is_read_through_openslide(tmp_path):
    """tiffslide composes SCN regions only by resampling: auto hands the slide to OpenSlide,
    which places each region at its collection offset, and keeps tiffslide's nm-derived mpp."""
    first, second = textured(96, 128, seed=1), textured(64, 64, seed=2)
    path = write_leica_scn(tmp_path / "two.scn", [(40, 20, first), (300, 120, second)])
    source = open_source(path)
    assert isinstance(source, SlideSource) and source.backend == "openslide"
    assert source.mpp0_yx == (0.5, 0.5)
    assert source.level_native  # integer downsamples: OpenSlide reads level 1 as stored
    got = source.read(Window(20, 40, 96, 128))
    assert np.array_equal(got, np.moveaxis(first, -1, 0))
    assert np.array_equal(source.read(Window(120, 300, 64, 64)), np.moveaxis(second, -1, 0))
    assert (source.read(Window(0, 0, 10, 10)) == 255).all()  # no scan there: white glass
