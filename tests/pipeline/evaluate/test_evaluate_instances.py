"""``evaluate`` against an instance-label raster: detected or given, from vector and raster
predictions, refused for pixel metrics, and through the command line."""

import json

import numpy as np
import pytest
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
