import math

import numpy as np
import pytest
import shapely

from pipeline.evaluate import match_objects


def boxes(n, size=10.0, gap=5.0):
    step = size + gap
    return [shapely.box(i * step, 0, i * step + size, size) for i in range(n)]


def test_perfect():
    truth = boxes(5)
    m = match_objects(truth, truth)
    assert (m.tp, m.fp, m.fn, m.f1, m.mean_iou) == (5, 0, 0, 1.0, 1.0)


def test_empty_cases():
    assert match_objects([], []).f1 == 1.0
    m = match_objects([], boxes(3))
    assert (m.tp, m.fp, m.fn, m.f1, m.recall) == (0, 0, 3, 0.0, 0.0)
    assert math.isnan(m.precision)
    m = match_objects(boxes(2), [])
    assert (m.tp, m.fp, m.fn, m.f1, m.precision) == (0, 2, 0, 0.0, 0.0)


def test_shifted():
    truth = [shapely.box(0, 0, 10, 10)]
    # shift by 2: IoU = 80 / 120 = 0.667 -> a match
    small = match_objects([shapely.box(2, 0, 12, 10)], truth)
    assert small.tp == 1 and small.mean_iou == pytest.approx(80 / 120)
    # shift by 4: IoU = 60 / 140 = 0.43 -> a false positive and a false negative
    large = match_objects([shapely.box(4, 0, 14, 10)], truth)
    assert (large.tp, large.fp, large.fn, large.f1) == (0, 1, 1, 0.0)


def test_split_object():
    truth = [shapely.box(0, 0, 10, 10)]
    # two halves with a sliver missing: each IoU < 0.5 -> nothing matches
    halves = [shapely.box(0, 0, 4.9, 10), shapely.box(5.1, 0, 10, 10)]
    m = match_objects(halves, truth)
    assert (m.tp, m.fp, m.fn) == (0, 2, 1)
    assert (m.splits, m.split_predictions, m.merges) == (1, 2, 0)
    # a big piece (IoU 0.7) and a small one: the big one matches, the small one is a FP
    m = match_objects([shapely.box(0, 0, 7, 10), shapely.box(7.5, 0, 10, 10)], truth)
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)
    assert m.matches.tolist() == [[0, 0]]


def test_merged_objects():
    truth = [shapely.box(0, 0, 10, 10), shapely.box(12, 0, 22, 10)]
    merged = [shapely.box(0, 0, 22, 10)]  # IoU with each = 100 / 220
    m = match_objects(merged, truth)
    assert (m.tp, m.fp, m.fn) == (0, 1, 2)
    assert (m.merges, m.merged_truths, m.splits) == (1, 2, 0)
    assert m.to_dict()["merges"] == 1 and m.to_dict()["splits"] == 0
    # one big and one small neighbour merged: matches the big one only (one-to-one)
    truth = [shapely.box(0, 0, 20, 10), shapely.box(21, 0, 23, 10)]
    m = match_objects([shapely.box(0, 0, 23, 10)], truth)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)


def test_greedy_one_to_one_prefers_the_best_pair():
    truth = [shapely.box(0, 0, 10, 10)]
    good, fair = shapely.box(0.5, 0, 10.5, 10), shapely.box(3, 0, 13, 10)
    m = match_objects([fair, good], truth)
    assert m.tp == 1 and m.matches.tolist() == [[1, 0]]
    assert m.fp == 1


def test_threshold_is_inclusive_and_checked():
    truth = [shapely.box(0, 0, 10, 10)]
    half = [shapely.box(0, 0, 5, 10)]  # IoU exactly 0.5
    assert match_objects(half, truth).tp == 1
    with pytest.raises(ValueError, match="iou_threshold"):
        match_objects(half, truth, iou_threshold=0)


def test_invalid_geometries_are_repaired():
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    assert not bowtie.is_valid
    m = match_objects([bowtie], [bowtie])
    assert m.tp == 1


def test_scales_with_a_spatial_index():
    # 40 000 objects on a grid, predictions shifted by 1 (IoU 0.82): linear-ish, seconds
    n = 200
    xs, ys = np.meshgrid(np.arange(n) * 20.0, np.arange(n) * 20.0)
    truth = shapely.box(xs.ravel(), ys.ravel(), xs.ravel() + 10, ys.ravel() + 10)
    pred = shapely.box(xs.ravel() + 1, ys.ravel(), xs.ravel() + 11, ys.ravel() + 10)
    m = match_objects(pred, truth)
    assert m.tp == n * n and m.f1 == 1.0
    assert m.mean_iou == pytest.approx(90 / 110)


def test_merges_and_splits_are_counted_beside_f1():
    truth = boxes(6)  # 10 m boxes 5 m apart
    three_merged = [shapely.box(0, 0, 40, 10)]  # holds truths 0, 1 and 2
    two_merged = [shapely.box(45, 0, 70, 10)]  # holds truths 3 and 4
    cut = [shapely.box(75, 0, 79.5, 10), shapely.box(80.5, 0, 85, 10)]  # truth 5 in 2 pieces
    m = match_objects(three_merged + two_merged + cut, truth)
    assert (m.merges, m.merged_truths) == (2, 5)
    assert (m.splits, m.split_predictions) == (1, 2)
    assert (m.tp, m.f1) == (0, 0.0)
    # a prediction that only grazes a second truth is no merge; a perfect match is neither
    grazing = [shapely.box(0, 0, 17, 10)]  # all of truth 0, 2 m of truth 1
    assert match_objects(grazing, truth[:2]).merges == 0
    assert (match_objects(truth, truth).merges, match_objects(truth, truth).splits) == (0, 0)
