"""Road centre-lines: no breaks at chunk seams, spurs pruned, lengths in metres."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from rasterio.features import rasterize
from rasterio.transform import Affine

from pipeline.vectorize import prune_spurs, vectorize

from .helpers import write_geotiff

ROADS = [
    shapely.LineString([(0, 50), (200, 60)]).buffer(5),
    shapely.LineString([(100, 0), (110, 150)]).buffer(4),
    shapely.LineString([(30, 120), (180, 130), (190, 10)]).buffer(3),
]


def _lines(path: Path) -> list[dict]:
    return json.loads(path.read_text())["features"]


@pytest.fixture(scope="module")
def road_tif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    labels = rasterize(ROADS, out_shape=(150, 200), dtype="uint8")
    labels[10:20, 10:20] = 2  # a building, traced as a polygon
    path = tmp_path_factory.mktemp("roads") / "roads.tif"
    return write_geotiff(
        path,
        labels,
        transform=Affine(0.5, 0, 733601.0, 0, -0.5, 3725139.0),
        tags={"classes": '["background", "road", "building"]'},
    )


def _run(tif: Path, out: Path, chunk: int) -> list[dict]:
    vectorize(
        tif, out, chunk=chunk, workers=0, progress=False, centerlines=True, format="geojsonseq"
    )
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_centerlines_do_not_break_at_chunk_seams(road_tif: Path, tmp_path: Path) -> None:
    whole = _run(road_tif, tmp_path / "whole.geojsonl", 1000)
    lines_whole = [f for f in whole if f["geometry"]["type"] == "LineString"]
    assert len(lines_whole) >= 3
    for chunk in (23, 37):
        chunked = _run(road_tif, tmp_path / f"c{chunk}.geojsonl", chunk)
        lines = [f for f in chunked if f["geometry"]["type"] == "LineString"]
        assert len(lines) == len(lines_whole)
        total = sum(f["properties"]["length_m"] for f in lines)
        assert total == pytest.approx(
            sum(f["properties"]["length_m"] for f in lines_whole), rel=1e-6
        )
        assert {f["id"] for f in lines} == {f["id"] for f in lines_whole}
        polys = [f for f in chunked if f["geometry"]["type"] == "Polygon"]
        assert len(polys) == 1 and polys[0]["properties"]["class"] == "building"
        assert {f["properties"]["class"] for f in lines} == {"road"}


def test_centerline_length_in_metres(tmp_path: Path) -> None:
    labels = np.zeros((40, 300), np.uint8)
    labels[15:24, 10:290] = 1  # a straight road 280 px = 140 m long, 9 px wide
    tif = write_geotiff(tmp_path / "road.tif", labels)
    out = tmp_path / "road.geojson"
    vectorize(tif, out, chunk=64, workers=0, progress=False, centerlines=True)
    (feat,) = _lines(out)
    assert feat["geometry"]["type"] == "LineString"
    assert 130 < feat["properties"]["length_m"] < 141
    assert "length_m" in feat["properties"]


def test_prune_spurs_removes_short_dead_ends_only() -> None:
    main = [shapely.LineString([(0, 0), (50, 0)]), shapely.LineString([(50, 0), (100, 0)])]
    spur = shapely.LineString([(50, 0), (50, 4)])
    branch = shapely.LineString([(50, 0), (50, 40)])
    kept = prune_spurs(np.array([*main, spur, branch], object), 10.0)
    assert sorted(round(g.length) for g in kept) == [40, 50, 50]
