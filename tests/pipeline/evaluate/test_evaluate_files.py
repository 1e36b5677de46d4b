import json

import numpy as np
import pytest
import shapely
import zarr
from affine import Affine

from pipeline.errors import InputError
from pipeline.evaluate import evaluate
from tests.pipeline.sample.synthetic import (
    ORIGIN,
    pixel_box,
    to_lonlat,
    write_geojson,
    write_geotiff,
)

TRANSFORM = Affine(1.0, 0, ORIGIN[0], 0, -1.0, ORIGIN[1])


@pytest.fixture
def truth(tmp_path):
    boxes = [pixel_box(TRANSFORM, 10, 10, 20, 20), pixel_box(TRANSFORM, 40, 40, 50, 60)]
    return write_geojson(tmp_path / "truth.geojson", boxes), boxes


def test_lonlat_prediction_against_utm_truth(tmp_path, truth):
    path, boxes = truth
    # prediction in RFC 7946 lon/lat (as gigaseg exports it): one exact, one missed, one extra
    pred = [to_lonlat(boxes[0]), to_lonlat(pixel_box(TRANSFORM, 70, 70, 80, 80))]
    pred_path = write_geojson(tmp_path / "pred.geojson", pred, crs=None)
    result = evaluate(pred_path, path)
    assert result.kind == "buildings" and result.crs == "EPSG:32616"
    o = result.objects
    assert (o.tp, o.fp, o.fn) == (1, 1, 1) and o.f1 == pytest.approx(0.5)
    assert o.mean_iou == pytest.approx(1.0, abs=1e-6)
    data = json.loads(result.to_json())
    assert data["objects"]["f1"] == pytest.approx(0.5) and data["counts"] == {
        "predicted": 2,
        "true": 2,
    }
    row = next(line for line in result.table().splitlines() if line.startswith("object F1"))
    assert row.split()[-1] == "0.5000"


def test_raster_prediction_scores_pixels_and_objects(tmp_path, truth):
    path, _ = truth
    labels = np.zeros((80, 90), np.uint8)
    labels[10:20, 10:20] = 1
    labels[40:50, 40:55] = 1  # 3/4 of the second box
    tif = write_geotiff(tmp_path / "labels.tif", labels, transform=TRANSFORM)
    result = evaluate(tif, path)
    pixels = result.pixels["class_1"]
    assert (pixels["tp"], pixels["fp"], pixels["fn"]) == (250, 0, 50)
    assert result.objects.tp == 2  # IoU 1.0 and 0.75
    # probabilities are thresholded
    probs = write_geotiff(tmp_path / "p.tif", labels.astype(np.float32) * 0.9, transform=TRANSFORM)
    assert evaluate(probs, path, threshold=0.95).objects.fp == 0
    assert evaluate(probs, path, threshold=0.95).objects.tp == 0


def test_gigaseg_store_prediction(tmp_path, truth):
    path, _ = truth
    store = tmp_path / "scene.zarr"
    group = zarr.open_group(
        str(store),
        mode="w",
        attributes={
            "crs": "EPSG:32616",
            "transform": list(TRANSFORM.to_gdal()),
            "classes": ["building"],
        },
    )
    labels = group.create_array("labels", shape=(80, 90), dtype="uint8", chunks=(40, 45))
    data = np.zeros((80, 90), np.uint8)
    data[10:20, 10:20] = 1
    labels[:] = data
    result = evaluate(store, path)
    assert result.pixels["building"]["iou"] == pytest.approx(100 / 300)
    assert (result.objects.tp, result.objects.fn) == (1, 1)


def test_roads_are_scored_by_length(tmp_path):
    y = ORIGIN[1] - 50
    road = shapely.LineString([(ORIGIN[0], y), (ORIGIN[0] + 100, y)])
    truth = write_geojson(tmp_path / "roads.geojson", [road])
    pred = write_geojson(
        tmp_path / "pred.geojson",
        [shapely.LineString([(ORIGIN[0], y + 1), (ORIGIN[0] + 60, y + 1)])],
    )
    result = evaluate(pred, truth, buffer=2.0)
    assert result.kind == "roads"
    assert result.lines.precision == pytest.approx(1.0)
    assert result.lines.recall == pytest.approx(0.617, abs=0.01)
    assert "length recall" in result.table()


def test_vector_prediction_needs_a_mask_for_pixel_truth(tmp_path):
    truth = write_geotiff(tmp_path / "t.tif", np.zeros((8, 8), np.uint8), transform=TRANSFORM)
    pred = write_geojson(tmp_path / "p.geojson", [])
    with pytest.raises(InputError, match="pixel metrics need a prediction raster"):
        evaluate(pred, truth)
    with pytest.raises(InputError, match="does not exist"):
        evaluate(tmp_path / "nope.tif", truth)


def test_road_raster_needs_centre_lines_but_scores_pixels_with_a_mask(tmp_path):
    y = ORIGIN[1] - 20.5
    road = shapely.LineString([(ORIGIN[0], y), (ORIGIN[0] + 60, y)])
    truth = write_geojson(tmp_path / "roads.geojson", [road])
    labels = np.zeros((40, 60), np.uint8)
    labels[18:23, :] = 1  # a 5 m wide road, centred on row 20
    tif = write_geotiff(tmp_path / "roads.tif", labels, transform=TRANSFORM)
    with pytest.raises(InputError, match="centre-lines"):
        evaluate(tif, truth)
    lines = write_geojson(tmp_path / "lines.geojson", [road])
    result = evaluate(lines, truth, mask=tif, line_width=5.0)
    assert result.lines.f1 == pytest.approx(1.0)
    assert result.pixels["class_1"]["iou"] == pytest.approx(1.0)
