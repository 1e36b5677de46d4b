"""Tissue masks: brightfield and fluorescence polarity (auto from pixels or metadata), off,
and the user's own mask (GeoJSON/QuPath polygons or a raster)."""

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from pipeline.errors import ConfigError, InputError
from pipeline.read import open_source
from pipeline.read.tissue import detect_tissue, parse_tissue
from tests.pipeline.read.slides import brightfield, fluorescence, write_ome, write_svs

ROWS, COLS = 601, 803


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def _truth_at(mask, shape):
    rows = np.linspace(0, mask.shape[0] - 1, shape[0]).round().astype(int)
    cols = np.linspace(0, mask.shape[1] - 1, shape[1]).round().astype(int)
    return mask[rows[:, None], cols[None, :]]


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tissue")
    bright, bright_mask = brightfield(ROWS, COLS, seed=1)
    dark, dark_mask = fluorescence(ROWS, COLS, seed=2)
    return {
        "brightfield": (write_svs(folder / "he.svs", bright, levels=2, tile=128), bright_mask),
        "fluorescence": (write_svs(folder / "dapi.svs", dark, levels=2, tile=128), dark_mask),
    }


@pytest.mark.parametrize("kind", ["brightfield", "fluorescence"])
def test_auto_chooses_the_polarity_from_pixels(slides, kind):
    path, truth = slides[kind]
    mask = detect_tissue(open_source(path), "auto", max_size=256)
    assert mask.polarity == kind
    assert mask.reason.startswith("from pixels: background")
    assert _iou(mask.validity.mask, _truth_at(truth, mask.validity.mask.shape)) > 0.9
    assert kind in mask.note()
    wrong = "fluorescence" if kind == "brightfield" else "brightfield"
    inverted = detect_tissue(open_source(path), wrong, max_size=256)
    if inverted.validity is None:  # brightfield on fluorescence: the "glass" is stained
        assert kind == "fluorescence" and "not glass" in inverted.reason
    else:
        inverted_mask = inverted.validity.mask
        assert _iou(inverted_mask, _truth_at(truth, inverted_mask.shape)) < 0.1


def test_auto_reads_fluorescence_from_ome_metadata(tmp_path):
    image, truth = fluorescence(300, 400, seed=3)
    channels = (np.moveaxis(image, -1, 0)[:2].astype(np.uint16) * 200) + 1000  # bright offset
    path = write_ome(tmp_path / "if.ome.tif", channels, channels=["DAPI", "FITC"])
    source = open_source(path)
    assert source.count == 2 and source.dtype == np.uint16
    mask = detect_tissue(source, "auto")
    assert mask.polarity == "fluorescence" and mask.reason.startswith("from metadata")
    assert _iou(mask.validity.mask, _truth_at(truth, mask.validity.mask.shape)) > 0.9


def test_off_and_flat(slides, tmp_path):
    path, _ = slides["brightfield"]
    off = detect_tissue(open_source(path), "off")
    assert off.validity is None and off.to_attrs()["mode"] == "off"
    flat = write_svs(tmp_path / "flat.svs", np.full((200, 300, 3), 240, np.uint8), levels=1)
    assert detect_tissue(open_source(flat), "auto").validity is None


def test_user_polygons_in_level0_pixels(slides, tmp_path):
    path, _ = slides["brightfield"]
    box = [[100, 50], [300, 50], [300, 150], [100, 150], [100, 50]]  # x, y in level-0 pixels
    qupath = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [box]},
            "properties": {"objectType": "annotation", "classification": {"name": "Tissue"}},
        }
    ]
    file = tmp_path / "tissue.geojson"
    file.write_text(json.dumps(qupath))
    level1 = open_source(path, level=1)  # downsample ~2: mask pixels map through it
    mask = detect_tissue(level1, str(file))
    assert mask.mode == "file" and mask.file == str(file)
    rows, cols = np.nonzero(mask.validity.mask)
    srow, scol = mask.validity.scale
    dx, dy = level1.georef.downsample
    # the marked box, in level-0 pixels, within one mask pixel
    assert rows.min() * srow * dy == pytest.approx(50, abs=srow * dy + 1)
    assert (rows.max() + 1) * srow * dy == pytest.approx(150, abs=srow * dy + 1)
    assert cols.min() * scol * dx == pytest.approx(100, abs=scol * dx + 1)
    assert (cols.max() + 1) * scol * dx == pytest.approx(300, abs=scol * dx + 1)


def test_user_mask_raster(slides, tmp_path):
    path, _ = slides["brightfield"]
    picture = np.zeros((60, 80), np.uint8)
    picture[:30, :40] = 255  # top-left quarter
    file = tmp_path / "mask.png"
    Image.fromarray(picture).save(file)
    mask = detect_tissue(open_source(path), str(file))
    assert mask.validity.mask.mean() == pytest.approx(0.25, abs=0.02)
    assert mask.validity.mask[0, 0] and not mask.validity.mask[-1, -1]
    Image.fromarray(np.zeros((10, 80), np.uint8)).save(tmp_path / "thin.png")
    with pytest.raises(InputError, match="aspect ratios differ"):
        detect_tissue(open_source(path), str(tmp_path / "thin.png"))


def test_bad_tissue_values(tmp_path):
    with pytest.raises(ConfigError, match="neither one of auto, off, brightfield, fluorescence"):
        parse_tissue("bright")
    empty = tmp_path / "empty.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    assert parse_tissue(str(empty)) == str(empty)


# slides where Otsu's split is not tissue against glass (issue 10)


def _noise(rows, cols, level, sigma, seed):
    rng = np.random.default_rng(seed)
    return np.clip(level + rng.normal(0, sigma, (rows, cols, 3)), 0, 255).astype(np.uint8)


def test_a_slide_full_of_tissue_or_of_glass_runs_every_tile(tmp_path):
    rng = np.random.default_rng(4)
    pink = np.array([200.0, 110, 180]) + rng.normal(0, 20, (300, 400, 3))
    cases = {
        "full": np.clip(pink, 0, 255).astype(np.uint8),  # one stained mode, no glass
        "glass": _noise(300, 400, 236, 12, 5),  # noisy blank glass (not flat)
    }
    purple = np.array([120.0, 60, 150]) + rng.normal(0, 15, (300, 400, 3))
    nuclei = np.zeros((300, 400), bool)
    nuclei[::20, :] = True
    nuclei = np.logical_or.reduce([np.roll(nuclei, k, axis=0) for k in range(8)])
    two_stains = cases["full"].copy()
    two_stains[nuclei] = np.clip(purple, 0, 255).astype(np.uint8)[nuclei]
    cases["nuclei and stroma"] = two_stains  # bimodal, but the bright mode is pink, not glass
    for name, image in cases.items():
        path = write_svs(tmp_path / f"{name}.svs", image, levels=1, tile=128)
        for mode in ("auto", "brightfield"):
            mask = detect_tissue(open_source(path), mode)
            assert mask.validity is None, (name, mode, mask.reason)
            assert "every tile is run" in mask.note()


def test_brightfield_tissue_reaching_the_border_keeps_the_tissue(tmp_path):
    from tests.pipeline.read.slides import SVS

    with __import__("tifffile").TiffFile(SVS) as tiff:
        crop = tiff.series[0].asarray()[1000:1800, 600:1500].copy()  # real H&E, tissue at edges
    path = write_svs(tmp_path / "crop.svs", crop, levels=2, tile=128)
    mask = detect_tissue(open_source(path), "auto")
    assert mask.polarity == "brightfield" and "tissue reaches the border" in mask.reason
    assert mask.validity.mask.shape == (800, 900)  # one mask pixel per slide pixel here

    def blocks(a):  # share of each 50x50 block
        return a.reshape(16, 50, 18, 50).mean(axis=(1, 3))

    gray = crop.mean(axis=2)
    kept = blocks(mask.validity.mask)
    tissue, glass = blocks(gray < 200) > 0.2, blocks(gray > 225) > 0.9
    assert tissue.sum() > 100 and glass.sum() > 20
    assert (kept[tissue] > 0).all()  # every block with tissue would run
    assert (kept[glass] < 0.05).all()  # blocks of glass would be skipped


def test_objects_smaller_than_a_mask_pixel_are_kept(tmp_path):
    # sparse 5-pixel nuclei on a slide with no level near the mask's size: a strided
    # overview (every 8th pixel) missed 21 of 25; every block holding one is tissue (issue 10)
    rng = np.random.default_rng(7)
    image = rng.normal(200, 20, (1000, 1000)).clip(0).astype(np.uint16)
    rows, cols = np.mgrid[0:1000, 0:1000]
    centres = rng.uniform(50, 950, (25, 2))
    for cy, cx in centres:
        image[(rows - cy) ** 2 + (cols - cx) ** 2 <= 4] = 30000
    path = tmp_path / "dapi.ome.tif"
    tifffile.imwrite(path, image, tile=(128, 128), photometric="minisblack")
    source = open_source(path)
    mask = detect_tissue(source, "auto", max_size=128)
    assert mask.polarity == "fluorescence"
    tissue = mask.validity.mask
    sy, sx = mask.validity.scale
    kept = [bool(tissue[int(cy / sy), int(cx / sx)]) for cy, cx in centres]
    assert all(kept), sum(kept)
    assert tissue.mean() < 0.05  # and the background is still skipped
    # read in bands of 8 rows (overlapping for the smoothing): the same overview
    whole = source.pooled_overview(128)
    banded = source.pooled_overview(128, band_bytes=1)
    for a, b in zip(whole[:3], banded[:3], strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("kind", ["brightfield", "fluorescence"])
def test_16_bit_rgb_is_judged_by_its_pixels(tmp_path, kind):
    # 16-bit RGB is not fluorescence by itself: an H&E scan saved at 16 bits kept its glass
    # and skipped its tissue (IoU 0.002) when the bit depth decided (issue 10)
    make = brightfield if kind == "brightfield" else fluorescence
    image, truth = make(300, 400, seed=1)
    path = tmp_path / "rgb16.tif"
    tifffile.imwrite(path, image.astype(np.uint16) * 257, photometric="rgb", tile=(64, 64))
    mask = detect_tissue(open_source(path, level=0), "auto", max_size=256)
    assert mask.polarity == kind and mask.reason.startswith("from pixels")
    assert _iou(mask.validity.mask, _truth_at(truth, mask.validity.mask.shape)) > 0.9


def test_three_fluorescence_planes_are_fluorescence(tmp_path):
    image, _ = fluorescence(200, 240, seed=3)
    planes = np.ascontiguousarray(np.moveaxis(image, -1, 0)).astype(np.uint16)
    path = tmp_path / "planes.ome.tif"
    tifffile.imwrite(path, planes, photometric="minisblack", tile=(64, 64))
    mask = detect_tissue(open_source(path), "auto", max_size=256)
    assert mask.polarity == "fluorescence" and "separate planes" in mask.reason


def test_qupath_annotations_with_holes_multipolygons_and_a_bare_list(slides, tmp_path):
    path, _ = slides["brightfield"]  # 601 x 803 level 0
    ring = [[[100, 100], [700, 100], [700, 500], [100, 500], [100, 100]],
            [[300, 200], [500, 200], [500, 400], [300, 400], [300, 200]]]  # fmt: skip
    multi = [[[[720, 520], [790, 520], [790, 590], [720, 590], [720, 520]]]]
    features = [
        {"type": "Feature", "id": "0b6c7e1e-0000-4000-8000-000000000001",
         "geometry": {"type": "Polygon", "coordinates": ring},
         "properties": {"objectType": "annotation",
                        "classification": {"name": "Tissue", "color": [0, 200, 0]}}},
        {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": multi},
         "properties": {"objectType": "annotation"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]},
         "properties": {"objectType": "annotation"}},
    ]  # fmt: skip
    source = open_source(path, level=1)
    dx, dy = source.georef.downsample
    for name, data in [("fc.geojson", {"type": "FeatureCollection", "features": features}),
                       ("qupath.json", features)]:  # fmt: skip
        file = tmp_path / name
        file.write_text(json.dumps(data))
        mask = detect_tissue(source, str(file))
        assert "warning" not in mask.reason
        sy, sx = mask.validity.scale

        def at(x, y, mask=mask, sx=sx, sy=sy):
            return bool(mask.validity.mask[int(y / dy / sy), int(x / dx / sx)])

        assert at(150, 150) and at(650, 450) and at(755, 555)  # ring and MultiPolygon
        assert not at(400, 300)  # the hole
        assert not at(50, 50) and not at(750, 300)  # outside
    # coordinates of another frame (here: level 0 x 4) are flagged, not silently clipped
    far = tmp_path / "far.geojson"
    scaled = [[[4 * x, 4 * y] for x, y in ring[0]]]
    far.write_text(json.dumps({"type": "Polygon", "coordinates": scaled}))
    flagged = detect_tissue(source, str(far))
    assert "well beyond the slide's level 0 (803 x 601" in flagged.note()  # what the run says
