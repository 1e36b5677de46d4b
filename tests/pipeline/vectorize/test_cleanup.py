"""Hole filling, simplification and building regularisation keep every geometry valid."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.features import rasterize, shapes

from pipeline.vectorize import (
    dominant_angle,
    fill_holes,
    regularize_building,
    simplify_valid,
    vectorize,
)

from .helpers import blobs, chunked


def _traced(geom: shapely.Geometry, size: int = 120) -> shapely.Geometry:
    mask = rasterize([geom], out_shape=(size, size), dtype="uint8")
    polys = [shapely.geometry.shape(g) for g, _ in shapes(mask, mask=mask > 0)]
    return max(polys, key=lambda p: p.area)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), tolerance=st.floats(0.3, 4.0))
def test_simplify_keeps_validity_and_count(seed: int, tolerance: float) -> None:
    labels = blobs((40, 40), seed=seed, sigma=1.5)
    exact = chunked(labels, 13, 4)
    simple = chunked(labels, 13, 4, simplify=tolerance)
    assert simple.keys() == exact.keys()
    for key, (_, geom, _) in simple.items():
        assert geom.is_valid and not geom.is_empty
        assert shapely.get_num_coordinates(geom) <= shapely.get_num_coordinates(exact[key][1])


def test_fill_holes_threshold() -> None:
    ring = (
        shapely.box(0, 0, 10, 10)
        .difference(shapely.box(2, 2, 3, 3))
        .difference(shapely.box(5, 5, 8, 8))
    )
    assert len(fill_holes(ring, 2.0).interiors) == 1
    assert len(fill_holes(ring, 10.0).interiors) == 0
    assert fill_holes(ring, 0.0) is ring


def test_simplify_valid_falls_back_instead_of_breaking() -> None:
    sliver = shapely.Polygon([(0, 0), (10, 0), (10, 0.01), (0, 0.02)])
    out = simplify_valid(sliver, 5.0)
    assert out.is_valid and not out.is_empty


@pytest.mark.parametrize("angle", [0.0, 12.0, 27.0, 45.0, 71.0])
def test_regularized_rectangle_has_right_angles_and_high_iou(angle: float) -> None:
    truth = shapely.affinity.rotate(shapely.box(30, 40, 80, 70), angle)
    traced = _traced(truth)
    out, score = regularize_building(traced, 1.0)
    assert out.is_valid
    assert score == pytest.approx(
        shapely.intersection(out, traced).area / shapely.union(out, traced).area
    )
    assert score > 0.9
    xy = np.asarray(out.exterior.coords)
    assert len(xy) == 5  # four corners
    d = np.diff(xy, axis=0)
    for a, b in zip(d, np.roll(d, -1, axis=0), strict=True):
        cos = abs(a @ b) / (np.hypot(*a) * np.hypot(*b))
        assert cos < 1e-9  # right angles
    assert math.degrees(dominant_angle(xy)) % 90 == pytest.approx(angle % 90, abs=3)


def test_regularized_l_shape_keeps_its_six_corners() -> None:
    ell = shapely.box(0, 0, 50, 15).union(shapely.box(0, 0, 15, 40))
    truth = shapely.affinity.translate(shapely.affinity.rotate(ell, 20, origin=(0, 0)), 40, 30)
    out, score = regularize_building(_traced(truth), 1.0)
    assert out.is_valid and score > 0.85
    assert len(out.exterior.coords) == 7


def test_vectorize_regularize_reports_iou_per_feature(tmp_path: Path) -> None:
    houses = [
        shapely.affinity.rotate(shapely.box(x, y, x + 14, y + 9), a)
        for x, y, a in [(5, 5, 10), (30, 8, 35), (10, 40, 60), (40, 40, 0)]
    ]
    labels = rasterize(houses, out_shape=(64, 64), dtype="uint8")
    out = tmp_path / "houses.parquet"
    vectorize(labels, out, chunk=20, workers=0, progress=False, regularize=True)
    table = pq.read_table(out).to_pylist()
    assert len(table) == 4
    for row in table:
        geom = shapely.from_wkb(row["geometry"])
        assert geom.is_valid
        assert 0.8 < row["iou_traced"] <= 1.0
