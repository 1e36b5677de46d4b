from pathlib import Path

import numpy as np
import pytest
import shapely
from affine import Affine

from pipeline.errors import ConfigError, InputError
from pipeline.sample import (
    IGNORE,
    Holdout,
    PatchSampler,
    Scene,
    open_image,
    open_labels,
    open_scene,
    parse_holdout,
)
from tests.pipeline.sample.synthetic import (
    ORIGIN,
    pixel_box,
    squares_scene,
    write_geojson,
    write_geotiff,
)

SAMPLE = Path(__file__).resolve().parents[3] / "sample"


class Recorder:
    """An image source that records every window it is asked for."""

    def __init__(self, image):
        self.image = image
        self.windows = []
        for name in ("height", "width", "bands", "georef", "path"):
            setattr(self, name, getattr(image, name))

    def read(self, row, col, height, width):
        self.windows.append((row, col, height, width))
        return self.image.read(row, col, height, width)


@pytest.mark.parametrize("holdout", [Holdout("cols", 0.8, 1.0), Holdout("rows", 0.3, 0.55)])
def test_sampler_never_reads_outside_the_image_and_respects_the_holdout(tmp_path, holdout):
    tif, labels, _ = squares_scene(tmp_path, size=97)
    image = Recorder(open_image(tif))
    scene = Scene(image, open_labels(labels, image, classes=["building"]))
    sampler = PatchSampler([scene], patch=24, holdout=holdout, foreground=0.5, val_multiple=8)
    rng = np.random.default_rng(1)
    for _ in range(400):
        patch = sampler.draw(rng)
        assert patch.image.shape == (1, 24, 24)
        assert patch.label.shape == (24, 24)
    first, last = holdout.pixels(97, 97)
    assert len(image.windows) >= 400
    for row, col, height, width in image.windows:
        assert row >= 0 and col >= 0
        assert row + height <= 97 and col + width <= 97
        start = row if holdout.axis == "rows" else col
        size = height if holdout.axis == "rows" else width
        assert start + size <= first or start >= last, "training window overlaps the hold-out"
    # training windows reach both sides of the band, and both image edges
    starts = {row if holdout.axis == "rows" else col for row, col, _, _ in image.windows}
    assert min(starts) == 0 or any(s < first for s in starts)
    image.windows.clear()
    covered = np.zeros((97, 97), dtype=int)
    for patch in sampler.validation():
        h, w = patch.label.shape
        assert h % 8 == 0 and w % 8 == 0
        covered[patch.row : patch.row + h, patch.col : patch.col + w] += patch.label != IGNORE
    for row, col, height, width in image.windows:
        start = row if holdout.axis == "rows" else col
        size = height if holdout.axis == "rows" else width
        assert first <= start and start + size <= last, "validation window leaves the hold-out"
    band = covered[first:last, :] if holdout.axis == "rows" else covered[:, first:last]
    assert (band == 1).all(), "every hold-out pixel is scored exactly once"
    assert covered.sum() == band.sum()


def test_foreground_draws_are_balanced(tmp_path):
    transform = Affine(1.0, 0, ORIGIN[0], 0, -1.0, ORIGIN[1])
    tif = write_geotiff(tmp_path / "sparse.tif", np.ones((128, 128), dtype=np.uint16))
    boxes = [pixel_box(transform, 10, 100, 18, 108), pixel_box(transform, 90, 20, 98, 28)]
    scene = open_scene(tif, write_geojson(tmp_path / "sparse.geojson", boxes))
    rng = np.random.default_rng(0)
    share = {}
    for foreground in (0.0, 1.0):
        sampler = PatchSampler([scene], patch=16, holdout=None, foreground=foreground)
        share[foreground] = np.mean([(sampler.draw(rng).label == 1).mean() for _ in range(200)])
    assert share[0.0] < 0.02  # 128 of 16384 pixels are foreground
    assert share[1.0] > 0.15
    sampler.close()


def test_nodata_windows_are_avoided_and_ignored(tmp_path):
    data = np.full((64, 64), 500, dtype=np.uint16)
    data[:, :40] = 0  # nodata on the left 40 columns
    tif = write_geotiff(tmp_path / "nodata.tif", data, nodata=0)
    labels = write_geojson(tmp_path / "l.geojson", [])
    scene = open_scene(tif, labels)
    sampler = PatchSampler([scene], patch=16, holdout=None, foreground=0, max_nodata=0.25)
    rng = np.random.default_rng(0)
    for _ in range(50):
        patch = sampler.draw(rng)
        nodata = patch.image[0] == 0
        assert nodata.mean() <= 0.25
        assert (patch.label[nodata] == IGNORE).all()
        assert (patch.label[~nodata] == 0).all()
    mean, std = sampler.statistics(rng, samples=8)
    assert mean == pytest.approx((500.0,))
    assert std[0] == pytest.approx(1e-6, abs=1e-5)


def test_statistics_match_the_pixels(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.normal([[[100.0]], [[20.0]]], [[[5.0]], [[2.0]]], (2, 80, 80)).astype(np.float32)
    tif = write_geotiff(tmp_path / "two.tif", data)
    scene = open_scene(tif, write_geojson(tmp_path / "l.geojson", []), bands=(2, 1))
    sampler = PatchSampler([scene], patch=32, holdout=None)
    mean, std = sampler.statistics(np.random.default_rng(0), samples=16)
    assert mean == pytest.approx((20.0, 100.0), rel=0.02)
    assert std == pytest.approx((2.0, 5.0), rel=0.1)


def test_errors_name_the_problem(tmp_path):
    tif, labels, _ = squares_scene(tmp_path, size=40)
    scene = open_scene(tif, labels)
    with pytest.raises(ConfigError, match="no 32x32 training window fits"):
        PatchSampler([scene], patch=32, holdout=Holdout("cols", 0.4, 0.6))
    with pytest.raises(InputError, match="ends outside"):
        scene.image.read(30, 0, 16, 16)
    with pytest.raises(ConfigError, match=r"bands \[3\] out of range .* has 1 band"):
        open_image(tif, bands=(3,))
    with pytest.raises(ConfigError, match="0 <= start < stop <= 1"):
        Holdout("cols", 0.9, 0.5)
    with pytest.raises(ConfigError, match="of the form"):
        parse_holdout("cols=0.8")
    assert parse_holdout("rows:0-0.25") == Holdout("rows", 0.0, 0.25)
    assert parse_holdout({"axis": "cols", "start": 0.5}) == Holdout("cols", 0.5, 1.0)


def test_same_seed_same_patches(tmp_path):
    tif, labels, _ = squares_scene(tmp_path, size=64)
    sampler = PatchSampler([open_scene(tif, labels)], patch=16, holdout=Holdout())
    a = [sampler.draw(np.random.default_rng([7, s])) for s in range(5)]
    b = [sampler.draw(np.random.default_rng([7, s])) for s in range(5)]
    for x, y in zip(a, b, strict=True):
        assert (x.row, x.col) == (y.row, y.col)
        np.testing.assert_array_equal(x.image, y.image)


def test_sampler_on_the_real_spacenet_chip():
    scene = open_scene(SAMPLE / "sample_geotiff.tif", SAMPLE / "geotiff_labels.geojson")
    sampler = PatchSampler([scene], patch=128, holdout=Holdout("cols", 0.8, 1.0), val_multiple=8)
    assert scene.image.georef.crs_obj.to_epsg() == 32616
    assert len(scene.labels.geometries) == 43
    full = scene.labels.window(0, 0, 900, 900)
    # 43 footprints with areas 18-377 m² cover ~8450 m² = ~33800 pixels of 0.25 m²
    area = shapely.area(shapely.union_all(scene.labels.geometries))
    assert full.sum() == pytest.approx(area / 0.25, rel=0.02)
    patch = sampler.draw(np.random.default_rng(0))
    assert patch.col + 128 <= 720
    sampler.close()


def test_two_scenes_are_both_sampled(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    scenes = [
        open_scene(*squares_scene(tmp_path / d, size=48, seed=i)[:2]) for i, d in enumerate("ab")
    ]
    sampler = PatchSampler(scenes, patch=16, holdout=Holdout())
    seen = {sampler.draw(np.random.default_rng(s)).scene for s in range(40)}
    assert seen == {0, 1}
    transform = Affine(1.0, 0, ORIGIN[0], 0, -1.0, ORIGIN[1])
    assert scenes[0].labels.window(0, 0, 48, 48).sum() > 0
    assert pixel_box(transform, 0, 0, 1, 1).area == 1.0


def test_real_nodata_collar_is_avoided(tmp_path):
    path = SAMPLE.parent / "tests" / "data" / "geotiff" / "RGB.byte.tif"
    if not path.is_file():
        pytest.skip("RGB.byte.tif test data missing")
    labels = write_geojson(tmp_path / "none.geojson", [], crs="EPSG:32618")
    scene = open_scene(path, labels, bands=(3, 2, 1))
    sampler = PatchSampler([scene], patch=64, holdout=Holdout("rows", 0.0, 0.2), max_nodata=0.1)
    rng = np.random.default_rng(0)
    fractions = [(sampler.draw(rng).label == IGNORE).mean() for _ in range(40)]
    assert max(fractions) <= 0.1  # the image is 32.6 % nodata collar
    sampler.close()


def test_training_scene_from_urls_equals_the_local_one(http_server):
    """Training samples read through the one reader edge: a URL image and URL labels."""
    from tests.servers import copy_to

    copy_to(http_server.root, SAMPLE / "sample_geotiff.tif")
    copy_to(http_server.root, SAMPLE / "geotiff_labels.geojson")
    remote = open_scene(
        http_server.url("sample_geotiff.tif"), http_server.url("geotiff_labels.geojson")
    )
    local = open_scene(SAMPLE / "sample_geotiff.tif", SAMPLE / "geotiff_labels.geojson")
    assert remote.image.georef == local.image.georef
    assert len(remote.labels.geometries) == len(local.labels.geometries) == 43
    for window in [(0, 0, 128, 128), (300, 410, 97, 131)]:
        pixels, valid = remote.image.read(*window)
        expected, expected_valid = local.image.read(*window)
        np.testing.assert_array_equal(pixels, expected)
        np.testing.assert_array_equal(valid, expected_valid)
        np.testing.assert_array_equal(remote.labels.window(*window), local.labels.window(*window))


def test_every_slide_format_is_trained_as_a_slide(tmp_path):
    """One list of slide formats: a .vms file goes to the slide reader, never to rasterio."""
    from pipeline.read import SLIDE_SUFFIXES, is_slide

    assert ".vms" in SLIDE_SUFFIXES and is_slide(tmp_path / "x.vms")
    fake = tmp_path / "scan.vms"
    fake.write_text("[Virtual Microscope Specimen]\n")
    with pytest.raises(InputError, match="is not a readable slide"):
        open_image(fake)
