"""Output coordinates are exact pyproj transforms of pixel corners; areas are true m²."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyproj import Geod, Transformer
from rasterio.transform import Affine

from pipeline.vectorize import vectorize

from .helpers import blobs, write_geotiff

UTM = Affine(0.5, 0.0, 733601.0, 0.0, -0.5, 3725139.0)


def _features(path: Path) -> list[dict]:
    return json.loads(path.read_text())["features"]


def test_geojson_vertices_are_pyproj_transforms_of_pixel_corners(tmp_path: Path) -> None:
    labels = blobs((70, 90), seed=5, classes=2)
    tif = write_geotiff(tmp_path / "labels.tif", labels, transform=UTM)
    out = tmp_path / "out.geojson"
    vectorize(tif, out, chunk=32, workers=0, progress=False)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32616", always_xy=True)
    to_wgs = Transformer.from_crs("EPSG:32616", "EPSG:4326", always_xy=True)
    feats = _features(out)
    assert feats
    xy = np.concatenate(
        [shapely.get_coordinates(shapely.geometry.shape(f["geometry"])) for f in feats]
    )
    x, y = to_utm.transform(xy[:, 0], xy[:, 1])
    col = (np.asarray(x) - UTM.c) / UTM.a
    row = (np.asarray(y) - UTM.f) / UTM.e
    corner_col, corner_row = np.rint(col), np.rint(row)
    assert np.abs(col - corner_col).max() < 1e-4  # every vertex is a pixel corner
    assert np.abs(row - corner_row).max() < 1e-4
    mx, my = UTM.c + corner_col * UTM.a, UTM.f + corner_row * UTM.e
    lon, lat = to_wgs.transform(mx, my)
    assert np.abs(lon - xy[:, 0]).max() <= 1e-7
    assert np.abs(lat - xy[:, 1]).max() <= 1e-7


def test_geographic_crs_gets_true_square_metres(tmp_path: Path) -> None:
    labels = np.zeros((40, 60), np.uint8)
    labels[5:25, 10:50] = 1
    labels[30:35, 5:8] = 1
    step = 1e-4  # ~11 m x 5.6 m at 60° N
    transform = Affine(step, 0.0, 10.0, 0.0, -step, 60.0)
    tif = write_geotiff(tmp_path / "geo.tif", labels, crs="EPSG:4326", transform=transform)
    out = tmp_path / "out.geojson"
    vectorize(tif, out, chunk=16, workers=0, progress=False)
    geod = Geod(ellps="WGS84")
    feats = _features(out)
    assert len(feats) == 2
    for f in feats:
        geodesic, _ = geod.geometry_area_perimeter(shapely.geometry.shape(f["geometry"]))
        assert f["properties"]["area_m2"] == pytest.approx(abs(geodesic), rel=1e-5)
    big = max(f["properties"]["area_m2"] for f in feats)
    assert big == pytest.approx(800 * 11.13 * 5.58, rel=0.01)  # not square degrees


def test_min_area_and_fill_holes_in_metres_for_geographic_crs(tmp_path: Path) -> None:
    labels = np.zeros((40, 60), np.uint8)
    labels[5:25, 10:50] = 1
    labels[10:12, 20:22] = 0  # a hole of 4 px ~ 250 m²
    labels[30:32, 5:7] = 1  # a blob of 4 px ~ 250 m²
    transform = Affine(1e-4, 0.0, 10.0, 0.0, -1e-4, 60.0)
    tif = write_geotiff(tmp_path / "geo.tif", labels, crs="EPSG:4326", transform=transform)
    out = tmp_path / "out.geojson"
    vectorize(tif, out, chunk=16, workers=0, progress=False, min_area=300, fill_holes=300)
    feats = _features(out)
    assert len(feats) == 1
    geom = shapely.geometry.shape(feats[0]["geometry"])
    assert len(geom.interiors) == 0 and geom.is_valid
    out2 = tmp_path / "out2.geojson"
    vectorize(tif, out2, chunk=16, workers=0, progress=False, min_area=200, fill_holes=200)
    feats = _features(out2)
    assert len(feats) == 2
    assert any(len(shapely.geometry.shape(f["geometry"]).interiors) == 1 for f in feats)


def test_geojson_is_rfc7946(tmp_path: Path) -> None:
    labels = np.zeros((30, 30), np.uint8)
    labels[2:20, 2:20] = 1
    labels[6:10, 6:10] = 0  # a hole
    tif = write_geotiff(tmp_path / "l.tif", labels)
    out = tmp_path / "out.geojson"
    vectorize(tif, out, chunk=8, workers=0, progress=False)
    data = json.loads(out.read_text())
    assert data["type"] == "FeatureCollection" and "crs" not in data
    (feat,) = data["features"]
    geom = shapely.geometry.shape(feat["geometry"])
    assert geom.is_valid
    assert geom.exterior.is_ccw
    assert not geom.interiors[0].is_ccw
    lon, lat = geom.exterior.coords[0]
    assert -180 <= lon <= 180 and -90 <= lat <= 90
    assert set(feat["properties"]) >= {"id", "class", "class_id", "area_m2"}
    assert feat["id"] == feat["properties"]["id"]
