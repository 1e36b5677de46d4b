"""Writers: RFC 7946 GeoJSON, GeoJSONSeq, GeoParquet metadata, GPKG/FlatGeobuf, QuPath rules,
and files that appear under their final name only when complete."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from pyproj import CRS

from pipeline.errors import ConfigError
from pipeline.export import FeatureBatch, Field, Schema, open_writer

FIELDS = (
    Field("id", "int"),
    Field("class_id", "int"),
    Field("class", "str"),
    Field("area_m2", "float"),
    Field("mean_probability", "float"),
)
UTM = CRS.from_epsg(32616).to_wkt()


def _batch() -> FeatureBatch:
    cw_square = shapely.Polygon([(0, 0), (0, 10), (10, 10), (10, 0)])  # clockwise exterior
    holed = shapely.Polygon(
        [(20, 0), (30, 0), (30, 10), (20, 10)], [[(22, 2), (24, 2), (24, 4), (22, 4)]]
    )
    multi = shapely.MultiPolygon([shapely.box(40, 0, 41, 1), shapely.box(41, 1, 42, 2)])
    geoms = np.array([cw_square, holed, multi], object)
    return FeatureBatch(
        geoms,
        {
            "id": np.array([7, 8, 9]),
            "class_id": np.array([1, 1, 2]),
            "class": np.array(["building", "building", "road"], object),
            "area_m2": np.array([100.0, 96.0, 2.0]),
            "mean_probability": np.array([0.9, np.nan, 0.7]),
        },
    )


def _write(path: Path, fmt: str, crs: str | None = "EPSG:4326", **kw: str) -> None:
    writer = open_writer(
        path, fmt, Schema(FIELDS, crs, "polygon", {1: "building", 2: "road"}), **kw
    )
    writer.write(_batch())
    writer.write(_batch())
    writer.close()


def test_geojson_rfc7946_orientation_and_members(tmp_path: Path) -> None:
    out = tmp_path / "x.geojson"
    _write(out, "geojson")
    data = json.loads(out.read_text())
    assert set(data) == {"type", "features"}  # no crs member
    assert len(data["features"]) == 6
    for feat in data["features"]:
        geom = shapely.geometry.shape(feat["geometry"])
        assert geom.is_valid
        for poly in shapely.get_parts(geom):
            assert poly.exterior.is_ccw
            assert all(not ring.is_ccw for ring in poly.interiors)
    assert data["features"][1]["properties"]["mean_probability"] is None  # NaN -> null


def test_geojsonseq_rfc8142_and_newline_delimited(tmp_path: Path) -> None:
    _write(tmp_path / "x.geojsons", "geojsonseq")
    text = (tmp_path / "x.geojsons").read_text()
    records = text.split("\x1e")[1:]
    assert len(records) == 6 and all(r.endswith("\n") for r in records)
    _write(tmp_path / "x.geojsonl", "geojsonseq")
    lines = (tmp_path / "x.geojsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [7, 8, 9, 7, 8, 9]


def test_geoparquet_metadata_and_crs(tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    _write(out, "geoparquet", crs=UTM)
    schema = pq.read_schema(out)
    geo = json.loads(schema.metadata[b"geo"])
    column = geo["columns"]["geometry"]
    assert geo["primary_column"] == "geometry" and column["encoding"] == "WKB"
    assert CRS.from_json_dict(column["crs"]) == CRS.from_epsg(32616)
    table = pq.read_table(out)
    assert table.num_rows == 6
    geoms = shapely.from_wkb(table.column("geometry").to_pylist())
    assert all(g.is_valid for g in geoms)
    assert table.column("mean_probability").null_count == 2


@pytest.mark.parametrize(("fmt", "ext"), [("gpkg", "gpkg"), ("flatgeobuf", "fgb")])
def test_ogr_formats_read_back(tmp_path: Path, fmt: str, ext: str) -> None:
    import pyogrio

    out = tmp_path / f"x.{ext}"
    _write(out, fmt, crs=UTM)
    info = pyogrio.read_info(out)
    assert info["features"] == 6
    assert CRS.from_user_input(info["crs"]) == CRS.from_epsg(32616)
    assert list(info["fields"]) == ["id", "class_id", "class", "area_m2", "mean_probability"]
    assert not list(tmp_path.glob(".*tmp*"))


def test_qupath_rules(tmp_path: Path) -> None:
    out = tmp_path / "x.qupath.geojson"
    batch = _batch()
    bad = FeatureBatch(
        np.array(
            [
                shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2)]),
                shapely.LineString([(0, 0), (1, 1)]),
            ],
            object,
        ),
        {k: v[:2] for k, v in batch.columns.items()},
    )
    writer = open_writer(out, "qupath", Schema(FIELDS, None), object_type="annotation")
    writer.write(batch)
    writer.write(bad)
    writer.close()
    assert writer.skipped == 2  # a bow-tie and a line are not valid QuPath polygons
    data = json.loads(out.read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 3
    for feat in data["features"]:
        props = feat["properties"]
        assert props["objectType"] == "annotation"
        name, color = props["classification"]["name"], props["classification"]["color"]
        assert name in {"building", "road"}
        assert len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color)
        assert shapely.geometry.shape(feat["geometry"]).is_valid
        assert feat["geometry"]["type"] in {"Polygon", "MultiPolygon"}
        assert len(feat["id"]) == 36  # a UUID
        assert all(isinstance(v, float | int) for v in props["measurements"].values())
    with pytest.raises(ConfigError, match=r"objectType must be one of detection, annotation"):
        open_writer(tmp_path / "y.qupath.geojson", "qupath", Schema(FIELDS), object_type="cell")


@pytest.mark.parametrize(
    ("fmt", "ext"),
    [
        ("geojson", "geojson"),
        ("geoparquet", "parquet"),
        ("gpkg", "gpkg"),
        ("qupath", "qupath.geojson"),
    ],
)
def test_final_name_only_when_complete(tmp_path: Path, fmt: str, ext: str) -> None:
    out = tmp_path / f"x.{ext}"
    writer = open_writer(out, fmt, Schema(FIELDS, "EPSG:4326"))
    writer.write(_batch())
    assert not out.exists()  # still under its temporary name
    # (GPKG is written by a thread that may not have created its temporary yet)
    assert [p for p in tmp_path.iterdir() if p != writer.tmp] == []
    writer.abort()
    assert list(tmp_path.iterdir()) == []  # aborted: nothing left, final name never appeared
    with open_writer(out, fmt, Schema(FIELDS, "EPSG:4326")) as w:
        w.write(_batch())
    assert out.exists() and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_geojson_streams_without_holding_features(tmp_path: Path) -> None:
    """The file grows batch by batch: text is flushed long before close."""
    out = tmp_path / "big.geojson"
    writer = open_writer(out, "geojson", Schema(FIELDS, "EPSG:4326"))
    big = FeatureBatch.concat([_batch()] * 4000)
    for _ in range(3):
        writer.write(big)
    size = writer.tmp.stat().st_size
    writer.close()
    assert size > 0.9 * out.stat().st_size
