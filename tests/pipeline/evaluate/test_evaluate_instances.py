"""``evaluate`` against an instance-label raster: detected or given, from vector and raster
predictions, refused for pixel metrics, and through the command line."""

import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from pipeline.errors import InputError
from pipeline.evaluate import evaluate
from tests.pipeline.evaluate.test_instances import scene
from tests.pipeline.sample.synthetic import ORIGIN, pixel_box, write_geojson, write_geotiff
from workflows.cli import main

TRANSFORM = Affine(0.5, 0, ORIGIN[0], 0, -0.5, ORIGIN[1])
AJI = (60 + 100 + 100 + 70) / (100 + 220 + 220 + 130 + 40)  # worked out in test_instances


@pytest.fixture
def truth(tmp_path):
    _, ids = scene()
    ids = np.where(ids == 9, 1000, ids).astype(np.uint16)  # ids above 255 stay distinct
    return write_geotiff(tmp_path / "nuclei.tif", ids[None], transform=TRANSFORM)


def _boxes(path):
    boxes = [(0, 0, 10, 6), (0, 6, 10, 10), (0, 20, 11, 40), (20, 23, 30, 33)]  # P1..P4
    return write_geojson(path, [pixel_box(TRANSFORM, *b) for b in boxes])


def test_vector_prediction_against_a_detected_instance_raster(tmp_path, truth):
    result = evaluate(_boxes(tmp_path / "pred.geojson"), truth)
    assert result.kind == "instances" and "detected" in result.note
    o = result.objects
    assert (o.tp, o.fp, o.fn) == (2, 2, 2) and o.f1 == pytest.approx(0.5)
    assert result.instances.aji == pytest.approx(AJI)
    assert result.counts == {"predicted": 4, "true": 4}
    data = json.loads(result.to_json())
    assert data["instances"]["aji"] == pytest.approx(AJI)
    assert "AJI (aggregated Jaccard)" in result.table()


def test_label_raster_prediction_is_split_into_regions(tmp_path, truth):
    labels = np.zeros((40, 50), np.uint8)
    labels[0:10, 0:10] = 1  # A exact
    labels[20:30, 23:33] = 1  # D shifted
    labels[35:38, 45:48] = 1  # a false positive of 9 px
    pred = write_geotiff(tmp_path / "labels.tif", labels[None], transform=TRANSFORM)
    result = evaluate(pred, truth)
    o = result.objects
    assert (o.tp, o.fp, o.fn) == (2, 1, 2)
    # A->A (100/100), D->P (70/130); B, C unmatched (+200); the 9 px prediction unused
    assert result.instances.aji == pytest.approx((100 + 70) / (100 + 130 + 200 + 9))
    assert result.pixels["foreground"]["tp"] == 170


def test_pixel_metrics_on_instance_ids_are_refused(tmp_path, truth):
    labels = np.zeros((1, 40, 50), np.uint8)
    pred = write_geotiff(tmp_path / "labels.tif", labels, transform=TRANSFORM)
    with pytest.raises(InputError, match=r"holds 4 distinct ids .* look like instance ids"):
        evaluate(pred, truth, kind="pixels")
    assert evaluate(pred, truth, kind="pixels", truth_instances=True).kind == "instances"


def test_class_rasters_still_score_pixels(tmp_path):
    mask = np.zeros((1, 40, 50), np.uint8)
    mask[0, 5:15, 5:15] = 1
    truth = write_geotiff(tmp_path / "mask.tif", mask, transform=TRANSFORM)
    pred = write_geotiff(tmp_path / "pred.tif", mask, transform=TRANSFORM)
    result = evaluate(pred, truth)
    assert result.kind == "pixels" and result.pixels["class_1"]["iou"] == 1.0


def test_command_line_truth_instances(tmp_path, truth, capsys):
    pred = _boxes(tmp_path / "pred.geojson")
    assert main(["evaluate", str(pred), str(truth), "--truth-instances"]) == 0
    out = capsys.readouterr().out
    assert "given" in out
    row = next(line for line in out.splitlines() if line.startswith("AJI"))
    assert row.split()[-1] == f"{AJI:.4f}"


# -- hand-made cases against a reference AJI, through files in different CRSs -----------

NODATA = np.iinfo(np.uint32).max
#: True objects (pixel boxes row0, col0, row1, col1) with ids above 65535 and 255.
OBJECTS = {70000: (5, 5, 15, 15), 300: (5, 25, 15, 35), 2: (25, 5, 35, 15)}


def kumar_aji(predicted, truth):
    """AJI as Kumar et al. 2017 define it, object by object (the slow, obvious way).

    For each true object G, the prediction S of highest IoU with it (among those that
    overlap it): C += |G & S|, U += |G | S|, S is used. A G without overlap adds |G| to U.
    Every prediction never used adds its area to U.
    """
    used, inter, union = set(), 0, 0
    for g in np.unique(truth[truth != 0]):
        gm = truth == g
        best, best_iou = None, 0.0
        for s in np.unique(predicted[gm & (predicted != 0)]):
            sm = predicted == s
            iou = (gm & sm).sum() / (gm | sm).sum()
            if iou > best_iou:
                best, best_iou = s, iou
        if best is None:
            union += gm.sum()
            continue
        sm = predicted == best
        inter += (gm & sm).sum()
        union += (gm | sm).sum()
        used.add(best)
    for s in np.unique(predicted[predicted != 0]):
        if s not in used:
            union += (predicted == s).sum()
    return inter / union if union else float("nan")


def _utm_truth(tmp_path, objects=OBJECTS):
    ids = np.zeros((40, 50), np.uint32)
    for value, (r0, c0, r1, c1) in objects.items():
        ids[r0:r1, c0:c1] = value
    ids[:, 47:] = NODATA  # nodata is background, not a 4th object
    return write_geotiff(tmp_path / "truth.tif", ids[None], transform=TRANSFORM, nodata=NODATA)


def _lonlat_boxes(path, boxes):
    """The boxes as RFC 7946 GeoJSON (EPSG:4326), the truth raster being in UTM 16N."""
    import shapely
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs("EPSG:32616", "EPSG:4326", always_xy=True)
    geoms = [
        shapely.transform(pixel_box(TRANSFORM, *b), lambda xy: np.column_stack(
            to_lonlat.transform(xy[:, 0], xy[:, 1])))
        for b in boxes
    ]  # fmt: skip
    return write_geojson(path, geoms, crs=None)


A, B, C = OBJECTS[70000], OBJECTS[300], OBJECTS[2]
CASES = {
    "perfect": ([A, B, C], (3, 0, 0)),
    "split": ([(5, 5, 10, 15), (10, 5, 15, 15), B, C], (3, 1, 0)),  # halves: IoU 0.5 each
    "merged": ([(5, 5, 15, 35), C], (1, 1, 2)),  # A + B in one: IoU 1/3 each
    "shift 1 px": ([(5, 6, 15, 16), B, C], (3, 0, 0)),  # IoU 90/110
    "shift half": ([(5, 10, 15, 20), B, C], (2, 1, 1)),  # IoU 50/150
    "empty prediction": ([], (0, 0, 3)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hand_made_cases_match_the_reference_aji(tmp_path, case):
    boxes, (tp, fp, fn) = CASES[case]
    truth = _utm_truth(tmp_path)
    result = evaluate(_lonlat_boxes(tmp_path / "pred.geojson", boxes), truth)
    assert result.kind == "instances" and result.counts["true"] == 3
    o = result.objects
    assert (o.tp, o.fp, o.fn) == (tp, fp, fn)
    predicted = np.zeros((40, 50), np.int32)
    for i, (r0, c0, r1, c1) in enumerate(boxes, start=1):
        predicted[r0:r1, c0:c1] = i
    with rasterio.open(truth) as dataset:
        ids = dataset.read(1)
    expected = kumar_aji(predicted, np.where(ids == NODATA, 0, ids))
    assert result.instances.aji == pytest.approx(expected, abs=1e-12)
    if case == "perfect":
        assert o.f1 == 1.0 and result.instances.aji == 1.0
    if case == "empty prediction":
        assert o.f1 == 0.0 and result.instances.aji == 0.0


def test_empty_truth_scores_every_prediction_as_false(tmp_path):
    truth = _utm_truth(tmp_path, objects={})
    pred = _lonlat_boxes(tmp_path / "pred.geojson", [A])
    result = evaluate(pred, truth, truth_instances=True)
    o = result.objects
    assert (o.tp, o.fp, o.fn) == (0, 1, 0) and result.instances.aji == 0.0


def test_truth_raster_over_http(tmp_path, http_server):
    from tests.servers import copy_to

    truth = copy_to(http_server.root, _utm_truth(tmp_path))
    pred = _lonlat_boxes(tmp_path / "pred.geojson", [A, B, C])
    result = evaluate(pred, http_server.url(truth.name))
    assert result.kind == "instances" and result.instances.aji == 1.0


def test_a_truth_too_large_to_hold_still_scores_pixels(tmp_path, monkeypatch):
    """Detection must not read a class raster whole: a large 0/1 truth scores pixels."""
    import importlib

    module = importlib.import_module("pipeline.evaluate.evaluate")  # the function shadows it
    monkeypatch.setattr(module, "MAX_POLYGONIZE_PIXELS", 1000)
    mask = np.zeros((1, 40, 50), np.uint8)
    mask[0, 5:15, 5:15] = 1
    truth = write_geotiff(tmp_path / "mask.tif", mask, transform=TRANSFORM)
    pred = write_geotiff(tmp_path / "pred.tif", mask, transform=TRANSFORM)
    assert evaluate(pred, truth).pixels["class_1"]["iou"] == 1.0
    # ids that look like instances are refused with the size, not scored as classes
    with pytest.raises(InputError, match=r"40x50 pixels, too many for instance metrics"):
        evaluate(pred, _utm_truth(tmp_path))


def test_prediction_nodata_is_background_not_an_object(tmp_path):
    """A label raster's nodata (a store's 255 where tiles were skipped) touching an object
    must not merge with it: identical objects score F1 1 and AJI 1."""
    truth = _utm_truth(tmp_path)
    labels = np.zeros((40, 50), np.uint8)
    for r0, c0, r1, c1 in OBJECTS.values():
        labels[r0:r1, c0:c1] = 1
    labels[15:40, 0:20] = 255  # touches A and C
    labels[25:35, 5:15] = 1  # C itself is data
    pred = write_geotiff(tmp_path / "labels.tif", labels[None], transform=TRANSFORM, nodata=255)
    result = evaluate(pred, truth)
    assert result.kind == "instances" and result.counts["predicted"] == 3
    assert result.objects.f1 == 1.0 and result.instances.aji == 1.0


def test_a_prediction_on_another_grid_is_refused(tmp_path):
    truth = _utm_truth(tmp_path)
    labels = np.zeros((1, 40, 50), np.uint8)
    shifted = Affine(0.5, 0, ORIGIN[0] + 3.0, 0, -0.5, ORIGIN[1])
    pred = write_geotiff(tmp_path / "labels.tif", labels, transform=shifted)
    with pytest.raises(InputError, match=r"same size but not the same grid"):
        evaluate(pred, truth, truth_instances=True)
