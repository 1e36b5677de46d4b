"""Instance metrics on hand-made cases: a split object, a merge, a shifted object; the F1 and
AJI are worked out by hand in the comments."""

import numpy as np
import pytest

from pipeline.evaluate.instances import instance_metrics, looks_like_instances

SHAPE = (40, 50)


def scene():
    """Truth ids 1, 300, 7, 9 (any ids) and predictions P1..P4 (ids 5, 6, 8, 2)."""
    truth = np.zeros(SHAPE, np.int32)
    truth[0:10, 0:10] = 1  # A, 100 px
    truth[0:10, 20:30] = 300  # B, 100 px
    truth[0:10, 30:40] = 7  # C, 100 px, touching B
    truth[20:30, 20:30] = 9  # D, 100 px
    pred = np.zeros(SHAPE, np.int32)
    pred[0:10, 0:6] = 5  # P1: 60 px of A (IoU 0.6)
    pred[0:10, 6:10] = 6  # P2: the other 40 px of A (IoU 0.4): A was split
    pred[0:11, 20:40] = 8  # P3: B and C merged, one row more (220 px; IoU 100/220 each)
    pred[20:30, 23:33] = 2  # P4: D shifted by 3 columns (70 / 130 = 0.538)
    return pred, truth


def test_split_merge_shift_by_hand():
    pred, truth = scene()
    result = instance_metrics(pred, truth)
    o = result.objects
    # matched: P1-A (0.6), P4-D (0.538); unmatched: P2, P3 / B, C
    assert (o.tp, o.fp, o.fn) == (2, 2, 2) and o.f1 == pytest.approx(0.5)
    assert o.mean_iou == pytest.approx((0.6 + 70 / 130) / 2)
    # AJI: A->P1 (60/100), B->P3 (100/220), C->P3 (100/220), D->P4 (70/130); P2 unused (40)
    assert result.aji == pytest.approx((60 + 100 + 100 + 70) / (100 + 220 + 220 + 130 + 40))
    assert (result.predicted, result.true) == (4, 4)


def test_perfect_empty_and_disjoint():
    _, truth = scene()
    same = instance_metrics(truth * 3, truth)  # other ids, same objects
    assert same.objects.f1 == 1.0 and same.aji == 1.0
    empty = np.zeros(SHAPE, np.int32)
    missed = instance_metrics(empty, truth)
    assert missed.objects.f1 == 0.0 and missed.aji == 0.0
    assert np.isnan(instance_metrics(empty, empty).aji)
    shifted = np.roll(truth, 10, axis=0)  # no overlap at all
    assert instance_metrics(shifted, truth).aji == 0.0


def test_iou_threshold_is_inclusive_and_one_to_one():
    truth = np.zeros((4, 8), np.int32)
    truth[:, :4] = 1
    halves = np.zeros((4, 8), np.int32)
    halves[:2, :4], halves[2:, :4] = 1, 2  # both halves have IoU exactly 0.5
    result = instance_metrics(halves, truth)
    assert result.objects.tp == 1 and result.objects.fp == 1
    assert result.objects.matches.tolist() == [[0, 0]]  # ties: lowest index first


def test_instance_ids_are_told_from_class_ids():
    pred, truth = scene()
    assert looks_like_instances(truth) and looks_like_instances(pred)
    assert not looks_like_instances((truth > 0).astype(np.uint8))
    classes = np.zeros((10, 10), np.uint8)
    classes[0:2, 0:2] = classes[5:7, 5:7] = 1
    classes[0:2, 5:7] = 2  # two classes, class 1 in two places
    assert not looks_like_instances(classes, classes=2)
    assert not looks_like_instances(np.where(classes == 2, 1, classes) * 255)
    two = np.zeros((10, 10), np.uint8)
    two[0:2, 0:2], two[5:7, 5:7] = 1, 2  # two objects, one region each
    assert looks_like_instances(two)
