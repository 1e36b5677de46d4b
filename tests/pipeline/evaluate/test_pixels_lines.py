import math

import numpy as np
import pytest
import shapely

from pipeline.evaluate import IGNORE, PixelCounts, line_metrics, pixel_metrics


def test_pixel_metrics_hand_cases():
    truth = np.zeros((4, 4), np.uint8)
    truth[:2, :2] = 1
    perfect = pixel_metrics(truth, truth)["class_1"]
    assert perfect["iou"] == perfect["dice"] == perfect["precision"] == perfect["recall"] == 1.0
    empty = pixel_metrics(np.zeros_like(truth), truth)["class_1"]
    assert empty["iou"] == 0.0 and empty["recall"] == 0.0 and math.isnan(empty["precision"])
    shifted = np.roll(truth, 1, axis=1)  # 2 of 4 pixels overlap
    scores = pixel_metrics(shifted, truth)["class_1"]
    assert scores["iou"] == pytest.approx(2 / 6) and scores["dice"] == pytest.approx(0.5)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 2, 2)
    both_empty = pixel_metrics(np.zeros((2, 2)), np.zeros((2, 2)))["class_1"]
    assert math.isnan(both_empty["iou"])


def test_ignored_pixels_are_not_scored_and_counts_accumulate():
    truth = np.array([[1, 1, IGNORE, IGNORE]])
    pred = np.array([[1, 0, 1, 0]])
    scores = pixel_metrics(pred, truth)["class_1"]
    assert (scores["tp"], scores["fp"], scores["fn"]) == (1, 0, 1)
    counts = PixelCounts(2)
    counts.update(np.array([[1, 2]]), np.array([[1, 1]]))
    counts.update(np.array([[2, 2]]), np.array([[2, 0]]))
    out = counts.to_dict(("a", "b"))
    assert out["a"]["iou"] == pytest.approx(0.5) and out["b"]["iou"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="differ"):
        counts.update(np.zeros((2, 2)), np.zeros((3, 3)))


def test_line_metrics():
    road = shapely.LineString([(0, 0), (100, 0)])
    same = line_metrics([road], [road], buffer=3)
    assert same.precision == pytest.approx(1.0) and same.recall == pytest.approx(1.0)
    near = line_metrics([shapely.LineString([(0, 2), (100, 2)])], [road], buffer=3)
    assert near.f1 == pytest.approx(1.0)
    far = line_metrics([shapely.LineString([(0, 10), (100, 10)])], [road], buffer=3)
    assert far.precision == 0.0 and far.recall == 0.0 and far.f1 == 0.0
    # half found, plus a spurious 50 m: precision 50/100, recall 50/100 (flat ends)
    partial = line_metrics(
        [shapely.LineString([(0, 0), (50, 0)]), shapely.LineString([(0, 50), (50, 50)])],
        [road],
        buffer=1,
    )
    assert partial.precision == pytest.approx(0.5)
    assert partial.recall == pytest.approx(0.51, abs=0.011)  # round cap adds 1 m
    assert partial.predicted_length == 100 and partial.true_length == 100
    assert math.isnan(line_metrics([], [road]).precision)
    with pytest.raises(ValueError, match="buffer"):
        line_metrics([road], [road], buffer=0)
